//! `NullChannel`: reads EOF, writes vanish, errors after close.

use std::io::{IoSlice, IoSliceMut, SeekFrom};

use transit_channel::io;
use transit_channel::{Channel, Condition, Error, NullChannel, ReadFlags, WriteFlags};

#[test]
fn reads_are_eof() {
    let mut ch = NullChannel::new();
    let mut buf = [9u8; 8];
    let n = ch
        .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
        .expect("read");
    assert_eq!((n, buf), (0, [9u8; 8]));
}

#[test]
fn writes_report_the_full_length() {
    let mut ch = NullChannel::new();
    let n = ch
        .writev(
            &[IoSlice::new(&[0u8; 1000]), IoSlice::new(b"abc")],
            &[],
            WriteFlags::empty(),
        )
        .expect("write");
    assert_eq!(n, 1003);
}

#[test]
fn seek_always_returns_zero() {
    let mut ch = NullChannel::new();
    assert_eq!(ch.seek(SeekFrom::Start(4096)).expect("seek"), 0);
    assert_eq!(ch.seek(SeekFrom::End(-5)).expect("seek"), 0);
}

#[test]
fn watch_is_always_ready() {
    let ch = NullChannel::new();
    assert_eq!(
        ch.watch_source().ready.get(),
        Condition::IN | Condition::OUT
    );
}

#[test]
fn every_operation_after_close_is_closed() {
    let mut ch = NullChannel::new();
    ch.set_name("devnull".to_owned());
    ch.close().expect("close");
    let err = io::write_all(&mut ch, b"x").expect_err("write");
    assert!(matches!(&err, Error::Closed { channel } if channel == "devnull"));
    let read = ch.readv(
        &mut [IoSliceMut::new(&mut [0u8; 1])],
        None,
        ReadFlags::empty(),
    );
    assert!(matches!(read, Err(Error::Closed { .. })), "{read:?}");
    assert!(matches!(
        ch.seek(SeekFrom::Start(0)),
        Err(Error::Closed { .. })
    ));
}

#[test]
fn read_all_on_null_is_clean_eof() {
    let mut ch = NullChannel::new();
    assert!(!io::read_all_eof(&mut ch, &mut [0u8; 4]).expect("eof"));
}

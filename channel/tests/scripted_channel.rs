//! `ScriptedChannel` itself: the trickle pattern, scripted steps, the call
//! record and the shared handle.

use std::io::{IoSlice, IoSliceMut};

use transit_channel::scripted::{Outcome, ReadCall, ReadStep, WriteStep};
use transit_channel::{Channel, Condition, Error, ReadFlags, ScriptedChannel, WriteFlags};

fn read_once(ch: &mut ScriptedChannel, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    let n = ch.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())?;
    buf.truncate(n);
    Ok(buf)
}

fn write_once(ch: &mut ScriptedChannel, data: &[u8]) -> Result<usize, Error> {
    ch.writev(&[IoSlice::new(data)], &[], WriteFlags::empty())
}

#[test]
fn trickle_reads_alternate_would_block_and_single_bytes_then_eof() {
    let mut ch = ScriptedChannel::trickle(b"ab".to_vec());
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(match read_once(&mut ch, 10) {
            Ok(bytes) => format!("{:?}", String::from_utf8_lossy(&bytes)),
            Err(Error::WouldBlock) => "WB".to_owned(),
            Err(e) => panic!("unexpected {e}"),
        });
    }
    assert_eq!(seen, ["WB", "\"a\"", "WB", "\"b\"", "WB", "\"\""]);
}

#[test]
fn trickle_writes_accept_one_byte_between_would_blocks() {
    let mut ch = ScriptedChannel::trickle(Vec::new());
    assert!(matches!(
        write_once(&mut ch, b"xyz"),
        Err(Error::WouldBlock)
    ));
    assert_eq!(write_once(&mut ch, b"xyz").expect("write"), 1);
    assert!(matches!(write_once(&mut ch, b"yz"), Err(Error::WouldBlock)));
    assert_eq!(write_once(&mut ch, b"yz").expect("write"), 1);
    assert_eq!(ch.written(), b"xy");
}

#[test]
fn a_read_never_crosses_into_the_next_chunk() {
    let mut ch = ScriptedChannel::new()
        .read(ReadStep::Data(b"abc".to_vec()))
        .read(ReadStep::Data(b"de".to_vec()));
    assert_eq!(read_once(&mut ch, 2).expect("read"), b"ab");
    assert_eq!(read_once(&mut ch, 10).expect("read"), b"c");
    assert_eq!(read_once(&mut ch, 10).expect("read"), b"de");
    assert_eq!(read_once(&mut ch, 10).expect("read"), b"");
}

#[test]
fn scripted_read_error_is_returned_once() {
    let mut ch = ScriptedChannel::new()
        .read(ReadStep::Error(Error::protocol("s", "boom")))
        .read(ReadStep::Data(b"ok".to_vec()));
    let err = read_once(&mut ch, 4).expect_err("error");
    assert_eq!(err.to_string(), "s: boom");
    assert_eq!(read_once(&mut ch, 4).expect("read"), b"ok");
}

#[test]
fn write_steps_apply_one_per_call_then_everything_is_accepted() {
    let mut ch = ScriptedChannel::new()
        .write(WriteStep::Accept(2))
        .write(WriteStep::WouldBlock)
        .write(WriteStep::Error(Error::closed("s")));
    assert_eq!(write_once(&mut ch, b"abcd").expect("write"), 2);
    assert!(matches!(write_once(&mut ch, b"cd"), Err(Error::WouldBlock)));
    assert!(matches!(
        write_once(&mut ch, b"cd"),
        Err(Error::Closed { .. })
    ));
    assert_eq!(write_once(&mut ch, b"cdef").expect("write"), 4);
    assert_eq!(ch.written(), b"abcdef");
}

#[test]
fn calls_are_recorded() {
    let mut ch = ScriptedChannel::new()
        .read(ReadStep::WouldBlock)
        .read(ReadStep::Data(b"hey".to_vec()));
    let log = ch.handle();
    let _ = read_once(&mut ch, 8);
    let _ = read_once(&mut ch, 8);
    assert_eq!(
        log.read_calls(),
        [
            ReadCall {
                requested: 8,
                wanted_fds: false,
                fds_received: 0,
                outcome: Outcome::WouldBlock
            },
            ReadCall {
                requested: 8,
                wanted_fds: false,
                fds_received: 0,
                outcome: Outcome::Bytes(3)
            },
        ]
    );
}

#[test]
fn handle_feeds_and_inspects_a_channel_that_moved_into_a_box() {
    let ch = ScriptedChannel::new();
    let log = ch.handle();
    let mut boxed: Box<dyn Channel> = Box::new(ch);
    log.push_read(ReadStep::Data(b"late".to_vec()));
    let mut buf = [0u8; 4];
    let n = boxed
        .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
        .expect("read");
    assert_eq!((n, &buf), (4, b"late"));
    boxed
        .writev(&[IoSlice::new(b"out")], &[], WriteFlags::empty())
        .expect("write");
    assert_eq!(log.take_written(), b"out");
    assert!(log.written().is_empty());
    assert_eq!(log.pending_reads(), 0);
}

#[test]
fn closed_channel_fails_and_records_the_failure() {
    let mut ch = ScriptedChannel::new().read(ReadStep::Data(b"x".to_vec()));
    let log = ch.handle();
    ch.close().expect("close");
    assert!(matches!(read_once(&mut ch, 1), Err(Error::Closed { .. })));
    assert_eq!(log.read_calls()[0].outcome, Outcome::Failed);
}

#[test]
fn watch_is_always_ready_and_channel_starts_non_blocking() {
    let ch = ScriptedChannel::new();
    assert!(!ch.is_blocking());
    assert_eq!(
        ch.watch_source().ready.get(),
        Condition::IN | Condition::OUT
    );
}

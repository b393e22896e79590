//! `BufferChannel`: in-memory, seekable, without QEMU's seek/append bugs.

use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use transit_channel::io;
use transit_channel::{
    BufferChannel, Channel, Condition, Error, Features, ReadFlags, WatchFds, WriteFlags,
};

fn read_rest(ch: &mut BufferChannel) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 3];
    loop {
        let n = ch
            .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
            .expect("read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn write_after_seeking_back_overwrites_in_place() {
    let mut ch = BufferChannel::new();
    io::write_all(&mut ch, b"abcdef").expect("write");
    assert_eq!(ch.seek(SeekFrom::Start(2)).expect("seek"), 2);
    io::write_all(&mut ch, b"XY").expect("write");
    assert_eq!(ch.position(), 4);
    assert_eq!(ch.as_slice(), b"abXYef");
}

#[test]
fn overwrite_that_runs_past_the_end_extends_the_data() {
    let mut ch = BufferChannel::from_vec(b"abcd".to_vec());
    ch.seek(SeekFrom::Start(3)).expect("seek");
    io::write_all(&mut ch, b"XYZ").expect("write");
    assert_eq!(ch.as_slice(), b"abcXYZ");
}

#[test]
fn write_after_seeking_past_the_end_zero_fills_the_gap_only() {
    let mut ch = BufferChannel::from_vec(b"head".to_vec());
    ch.seek(SeekFrom::Start(7)).expect("seek");
    io::write_all(&mut ch, b"tail").expect("write");
    assert_eq!(ch.as_slice(), b"head\0\0\0tail");
}

#[test]
fn seek_from_end_and_current_are_honoured() {
    let mut ch = BufferChannel::from_vec(b"0123456789".to_vec());
    assert_eq!(ch.seek(SeekFrom::End(-3)).expect("end"), 7);
    assert_eq!(ch.seek(SeekFrom::Current(-2)).expect("cur"), 5);
    assert_eq!(ch.seek(SeekFrom::Current(1)).expect("cur"), 6);
    assert_eq!(read_rest(&mut ch), b"6789");
}

#[test]
fn seek_to_a_negative_position_is_an_error_and_keeps_the_position() {
    let mut ch = BufferChannel::from_vec(b"abc".to_vec());
    ch.seek(SeekFrom::Start(1)).expect("seek");
    let err = ch.seek(SeekFrom::End(-4)).expect_err("negative");
    assert!(matches!(err, Error::Os { .. }), "{err:?}");
    assert!(ch.seek(SeekFrom::Current(-2)).is_err());
    assert_eq!(ch.position(), 1);
}

#[test]
fn reading_at_or_past_the_end_is_eof() {
    let mut ch = BufferChannel::from_vec(b"ab".to_vec());
    assert_eq!(read_rest(&mut ch), b"ab");
    ch.seek(SeekFrom::Start(10)).expect("seek");
    let mut buf = [0u8; 4];
    assert!(!io::read_all_eof(&mut ch, &mut buf).expect("eof"));
}

#[test]
fn vectored_write_and_read_round_trip() {
    let mut ch = BufferChannel::with_capacity(4);
    let n = ch
        .writev(
            &[
                IoSlice::new(b"one"),
                IoSlice::new(b""),
                IoSlice::new(b"two!"),
            ],
            &[],
            WriteFlags::empty(),
        )
        .expect("writev");
    assert_eq!(n, 7);
    ch.seek(SeekFrom::Start(0)).expect("seek");
    let (mut a, mut b) = ([0u8; 2], [0u8; 5]);
    let n = ch
        .readv(
            &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)],
            None,
            ReadFlags::empty(),
        )
        .expect("readv");
    assert_eq!((n, &a, &b), (7, b"on", b"etwo!"));
}

#[test]
fn positioned_io_leaves_the_position_alone() {
    let mut ch = BufferChannel::from_vec(b"abcdef".to_vec());
    ch.seek(SeekFrom::Start(1)).expect("seek");
    assert_eq!(ch.pwritev(&[IoSlice::new(b"ZZ")], 4).expect("pwrite"), 2);
    let mut buf = [0u8; 3];
    assert_eq!(
        ch.preadv(&mut [IoSliceMut::new(&mut buf)], 3)
            .expect("pread"),
        3
    );
    assert_eq!(&buf, b"dZZ");
    assert_eq!(ch.position(), 1);
    assert_eq!(ch.as_slice(), b"abcdZZ");
}

#[test]
fn close_frees_the_data_and_later_io_is_closed() {
    let mut ch = BufferChannel::from_vec(vec![1; 4096]);
    ch.close().expect("close");
    assert!(ch.is_empty());
    let read = ch.readv(
        &mut [IoSliceMut::new(&mut [0u8; 1])],
        None,
        ReadFlags::empty(),
    );
    assert!(matches!(read, Err(Error::Closed { .. })), "{read:?}");
    let write = ch.writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty());
    assert!(matches!(write, Err(Error::Closed { .. })), "{write:?}");
    assert!(matches!(
        ch.seek(SeekFrom::Start(0)),
        Err(Error::Closed { .. })
    ));
    ch.close().expect("second close is a no-op");
}

#[test]
fn fd_passing_is_unsupported() {
    let mut ch = BufferChannel::new();
    let mut raw = [0; 2];
    // SAFETY: `raw` is a valid array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(raw.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded; both fds are open and owned by nobody else.
    let (fd, _other) = unsafe { (OwnedFd::from_raw_fd(raw[0]), OwnedFd::from_raw_fd(raw[1])) };
    let err = ch
        .writev(&[IoSlice::new(b"x")], &[fd.as_fd()], WriteFlags::empty())
        .expect_err("fds");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    let mut fds = Vec::new();
    let err = ch
        .readv(
            &mut [IoSliceMut::new(&mut [0u8; 1])],
            Some(&mut fds),
            ReadFlags::empty(),
        )
        .expect_err("fds");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
}

#[test]
fn watch_is_always_ready_without_fds() {
    let ch = BufferChannel::new();
    let ws = ch.watch_source();
    assert_eq!(ws.fds, WatchFds::None);
    assert_eq!(ws.ready.get(), Condition::IN | Condition::OUT);
    assert!(ch.has_feature(Features::SEEKABLE));
}

#[test]
fn into_inner_returns_everything_written() {
    let mut ch = BufferChannel::new();
    io::write_all(&mut ch, b"abc").expect("write");
    io::write_all(&mut ch, b"def").expect("write");
    assert_eq!(ch.len(), 6);
    assert_eq!(ch.into_inner(), b"abcdef");
}

#[test]
fn zero_length_read_returns_zero_without_moving() {
    let mut ch = BufferChannel::from_vec(b"abc".to_vec());
    let n = ch
        .readv(&mut [IoSliceMut::new(&mut [])], None, ReadFlags::empty())
        .expect("read");
    assert_eq!((n, ch.position()), (0, 0));
}

#[test]
fn huge_seek_then_write_is_an_error_not_an_abort() {
    let mut ch = BufferChannel::new();
    ch.seek(SeekFrom::Start(u64::MAX / 2))
        .expect("seek is allowed");
    let err = io::write_all(&mut ch, b"x").expect_err("cannot allocate");
    assert!(matches!(err, Error::Os { .. }), "{err:?}");
}

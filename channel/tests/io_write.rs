//! The blocking write helpers (`write_all`, `writev_all`,
//! `writev_full_all`) driven by scripted channels: partial writes,
//! WouldBlock between bytes, fds with the first chunk only, errors.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use transit_channel::io;
use transit_channel::scripted::{Outcome, WriteStep};
use transit_channel::{Channel, Error, Features, ScriptedChannel};

/// A pipe as (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn writev_all_completes_through_partial_writes_and_would_block() {
    let mut ch = ScriptedChannel::new()
        .write(WriteStep::Accept(3))
        .write(WriteStep::WouldBlock)
        .write(WriteStep::Accept(1))
        .write(WriteStep::Accept(4));
    let log = ch.handle();
    let mut bufs = [
        IoSlice::new(b"abcd"),
        IoSlice::new(b"ef"),
        IoSlice::new(b"ghij"),
    ];
    io::writev_all(&mut ch, &mut bufs).expect("writev_all");
    assert_eq!(log.written(), b"abcdefghij");
    let offered: Vec<usize> = log.write_calls().iter().map(|c| c.offered).collect();
    // 10 offered, 3 taken, blocked, 1 taken, 4 taken, the last 2 with the
    // script exhausted (accept all).
    assert_eq!(offered, [10, 7, 7, 6, 2]);
}

#[test]
fn write_all_trickles_one_byte_per_call_between_would_blocks() {
    let mut ch = ScriptedChannel::trickle(Vec::new());
    let log = ch.handle();
    io::write_all(&mut ch, b"hello").expect("write_all");
    assert_eq!(log.written(), b"hello");
    let outcomes: Vec<Outcome> = log.write_calls().iter().map(|c| c.outcome).collect();
    let expected: Vec<Outcome> = (0..5)
        .flat_map(|_| [Outcome::WouldBlock, Outcome::Bytes(1)])
        .collect();
    assert_eq!(outcomes, expected);
}

#[test]
fn fds_are_sent_only_with_the_first_chunk() {
    let (r, _w) = pipe();
    let mut ch = ScriptedChannel::new()
        .with_features(Features::FD_PASS)
        .write(WriteStep::WouldBlock)
        .write(WriteStep::Accept(2))
        .write(WriteStep::Accept(2));
    let log = ch.handle();
    io::writev_full_all(&mut ch, &mut [IoSlice::new(b"abcd")], &[r.as_fd()]).expect("write");
    let fds: Vec<Vec<i32>> = log.write_calls().into_iter().map(|c| c.fds).collect();
    // Blocked: the fd is offered again; after 2 bytes went, never again.
    assert_eq!(fds, [vec![r.as_raw_fd()], vec![r.as_raw_fd()], vec![]]);
    assert_eq!(log.written(), b"abcd");
}

#[test]
fn write_error_propagates_with_the_channel_name() {
    let pipe_err = Error::os(
        "multifd-send-1",
        "write",
        std::io::Error::from_raw_os_error(libc::EPIPE),
    );
    let mut ch = ScriptedChannel::new()
        .with_name("multifd-send-1")
        .write(WriteStep::Accept(2))
        .write(WriteStep::Error(pipe_err));
    let log = ch.handle();
    let err = io::write_all(&mut ch, b"abcdef").expect_err("EPIPE");
    assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    assert!(err.to_string().starts_with("multifd-send-1: "), "{err}");
    assert_eq!(log.written(), b"ab");
}

#[test]
fn a_write_that_accepts_nothing_is_an_error_not_a_spin() {
    let mut ch = ScriptedChannel::new()
        .with_name("stuck")
        .write(WriteStep::Accept(0));
    let err = io::write_all(&mut ch, b"abc").expect_err("zero write");
    let io_err = std::io::Error::from(err);
    assert_eq!(io_err.kind(), std::io::ErrorKind::WriteZero);
    assert!(io_err.to_string().contains("stuck"), "{io_err}");
}

#[test]
fn zero_length_write_returns_at_once_without_calling_the_channel() {
    let mut ch = ScriptedChannel::new().write(WriteStep::Error(Error::closed("never")));
    let log = ch.handle();
    io::write_all(&mut ch, b"").expect("empty write");
    io::writev_all(&mut ch, &mut [IoSlice::new(b""), IoSlice::new(b"")]).expect("empty writev");
    assert!(log.write_calls().is_empty());
}

#[test]
fn fds_without_any_data_are_refused() {
    let (r, _w) = pipe();
    let mut ch = ScriptedChannel::new().with_features(Features::FD_PASS);
    let log = ch.handle();
    let err = io::writev_full_all(&mut ch, &mut [], &[r.as_fd()]).expect_err("no data");
    assert!(matches!(err, Error::Os { .. }), "{err:?}");
    assert!(log.write_calls().is_empty());
}

#[test]
fn writing_to_a_closed_channel_is_closed_error() {
    let mut ch = ScriptedChannel::new().with_name("gone");
    ch.close().expect("close");
    let err = io::write_all(&mut ch, b"x").expect_err("closed");
    assert!(
        matches!(&err, Error::Closed { channel } if channel == "gone"),
        "{err:?}"
    );
}

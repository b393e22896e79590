//! The blocking read helpers (`read_all`, `readv_all_eof`,
//! `readv_full_all_eof`, ...) driven by scripted channels: WouldBlock in the
//! middle of buffers, clean versus mid-stream EOF, fds with the first chunk
//! only, error propagation and fd cleanup.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use transit_channel::io;
use transit_channel::scripted::{Outcome, ReadStep};
use transit_channel::{Error, Features, ScriptedChannel};

/// A pipe as (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// True if writing to `w` fails with EPIPE, i.e. every read end is closed.
fn read_end_closed(w: &OwnedFd) -> bool {
    // SAFETY: `w` is open; we write one byte from a valid buffer. SIGPIPE is
    // ignored by the Rust runtime, so a closed read end yields EPIPE.
    let rc = unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPIPE)
}

#[test]
fn readv_all_fills_three_iovecs_with_would_block_before_every_byte() {
    let mut ch = ScriptedChannel::trickle(b"abcdefghij".to_vec());
    let log = ch.handle();
    let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 3], [0u8; 4]);
    let mut bufs = [
        IoSliceMut::new(&mut a),
        IoSliceMut::new(&mut b),
        IoSliceMut::new(&mut c),
    ];
    io::readv_all(&mut ch, &mut bufs).expect("readv_all");
    assert_eq!((&a, &b, &c), (b"abc", b"def", b"ghij"));
    let calls = log.read_calls();
    let blocks = calls
        .iter()
        .filter(|c| c.outcome == Outcome::WouldBlock)
        .count();
    assert_eq!(blocks, 10);
    // Each retry offers exactly what is still missing.
    let offered: Vec<usize> = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Bytes(1))
        .map(|c| c.requested)
        .collect();
    assert_eq!(offered, [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
}

#[test]
fn read_all_joins_chunks_split_across_iovec_boundaries() {
    let mut ch = ScriptedChannel::new()
        .read(ReadStep::Data(b"12".to_vec()))
        .read(ReadStep::WouldBlock)
        .read(ReadStep::Data(b"34567".to_vec()))
        .read(ReadStep::Data(b"89".to_vec()));
    let (mut a, mut b) = ([0u8; 4], [0u8; 5]);
    let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
    assert!(io::readv_all_eof(&mut ch, &mut bufs).expect("read"));
    assert_eq!((&a, &b), (b"1234", b"56789"));
}

#[test]
fn read_all_eof_returns_false_on_clean_eof() {
    let mut ch = ScriptedChannel::new().read(ReadStep::WouldBlock);
    let mut buf = [7u8; 4];
    assert!(!io::read_all_eof(&mut ch, &mut buf).expect("read"));
    assert_eq!(buf, [7u8; 4]);
}

#[test]
fn read_all_clean_eof_is_an_error_naming_channel_and_before_any_data() {
    let mut ch = ScriptedChannel::new().with_name("main-in");
    let mut buf = [0u8; 4];
    let err = io::read_all(&mut ch, &mut buf).expect_err("EOF must fail");
    match &err {
        Error::UnexpectedEof {
            channel,
            op,
            expected,
            missing,
        } => {
            assert_eq!(channel, "main-in");
            assert_eq!(*op, "read_all before any data");
            assert_eq!((*expected, *missing), (4, 4));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().contains("before any data"), "{err}");
}

#[test]
fn eof_after_partial_read_reports_missing_byte_count() {
    let mut ch = ScriptedChannel::new()
        .with_name("page-2")
        .read(ReadStep::Data(b"abc".to_vec()))
        .read(ReadStep::Eof);
    let mut buf = [0u8; 8];
    let err = io::read_all_eof(&mut ch, &mut buf).expect_err("mid EOF must fail");
    match err {
        Error::UnexpectedEof {
            channel,
            op,
            expected,
            missing,
        } => {
            assert_eq!(channel, "page-2");
            assert_eq!(op, "read_all_eof");
            assert_eq!((expected, missing), (8, 5));
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn mid_eof_message_says_how_many_bytes_were_missing() {
    let mut ch = ScriptedChannel::trickle(b"xy".to_vec()).with_name("ch0");
    let mut buf = [0u8; 6];
    let err = io::read_all(&mut ch, &mut buf).expect_err("mid EOF");
    assert_eq!(
        err.to_string(),
        "ch0: unexpected end of file during read_all: 4 of 6 bytes missing"
    );
}

#[test]
fn fds_are_requested_only_until_the_first_chunk_arrives() {
    let (r, _w) = pipe();
    let mut ch = ScriptedChannel::new()
        .with_features(Features::FD_PASS)
        .read(ReadStep::WouldBlock)
        .read(ReadStep::DataWithFds(b"ab".to_vec(), vec![r]))
        .read(ReadStep::WouldBlock)
        .read(ReadStep::Data(b"cd".to_vec()));
    let log = ch.handle();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4];
    let ok = io::readv_full_all_eof(&mut ch, &mut [IoSliceMut::new(&mut buf)], Some(&mut fds))
        .expect("read");
    assert!(ok);
    assert_eq!(&buf, b"abcd");
    assert_eq!(fds.len(), 1);
    let wanted: Vec<bool> = log.read_calls().iter().map(|c| c.wanted_fds).collect();
    assert_eq!(wanted, [true, true, false, false]);
}

#[test]
fn fds_with_zero_data_bytes_are_not_eof() {
    let (r, _w) = pipe();
    let mut ch = ScriptedChannel::new()
        .with_features(Features::FD_PASS)
        .read(ReadStep::DataWithFds(Vec::new(), vec![r]))
        .read(ReadStep::Data(b"xyz".to_vec()));
    let mut fds = Vec::new();
    let mut buf = [0u8; 3];
    let ok = io::readv_full_all_eof(&mut ch, &mut [IoSliceMut::new(&mut buf)], Some(&mut fds))
        .expect("read");
    assert!(ok);
    assert_eq!((&buf, fds.len()), (b"xyz", 1));
}

#[test]
fn eof_after_fds_only_is_unexpected_and_closes_the_fds() {
    let (r, w) = pipe();
    let mut ch = ScriptedChannel::new()
        .with_features(Features::FD_PASS)
        .read(ReadStep::DataWithFds(Vec::new(), vec![r]))
        .read(ReadStep::Eof);
    let mut fds = Vec::new();
    let mut buf = [0u8; 3];
    let err = io::readv_full_all_eof(&mut ch, &mut [IoSliceMut::new(&mut buf)], Some(&mut fds))
        .expect_err("EOF after fds");
    assert!(
        matches!(err, Error::UnexpectedEof { missing: 3, .. }),
        "{err:?}"
    );
    assert!(fds.is_empty());
    assert!(read_end_closed(&w), "received fd was not closed");
}

#[test]
fn error_closes_fds_received_by_this_call_but_keeps_earlier_ones() {
    let (old_r, old_w) = pipe();
    let (r, w) = pipe();
    let reset = Error::os(
        "sock-a",
        "read",
        std::io::Error::from_raw_os_error(libc::ECONNRESET),
    );
    let mut ch = ScriptedChannel::new()
        .with_name("sock-a")
        .with_features(Features::FD_PASS)
        .read(ReadStep::DataWithFds(b"a".to_vec(), vec![r]))
        .read(ReadStep::Error(reset));
    let mut fds = vec![old_r];
    let mut buf = [0u8; 2];
    let err = io::readv_full_all(&mut ch, &mut [IoSliceMut::new(&mut buf)], Some(&mut fds))
        .expect_err("scripted error");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET));
    assert_eq!(fds.len(), 1);
    assert!(read_end_closed(&w), "new fd was not closed");
    assert!(!read_end_closed(&old_w), "caller's earlier fd was closed");
}

#[test]
fn errors_propagate_unchanged_with_the_channel_name() {
    let mut ch = ScriptedChannel::new()
        .with_name("multifd-recv-3")
        .read(ReadStep::Data(b"ab".to_vec()))
        .read(ReadStep::Error(Error::protocol(
            "multifd-recv-3",
            "bad magic",
        )));
    let mut buf = [0u8; 4];
    let err = io::read_all(&mut ch, &mut buf).expect_err("error");
    assert_eq!(err.to_string(), "multifd-recv-3: bad magic");
}

#[test]
fn zero_length_read_returns_at_once_without_calling_the_channel() {
    let mut ch = ScriptedChannel::new().read(ReadStep::Error(Error::closed("never")));
    let log = ch.handle();
    assert!(io::read_all_eof(&mut ch, &mut []).expect("empty read"));
    io::readv_all(
        &mut ch,
        &mut [IoSliceMut::new(&mut []), IoSliceMut::new(&mut [])],
    )
    .expect("empty readv");
    assert!(log.read_calls().is_empty());
}

#[test]
fn leading_empty_iovecs_are_skipped() {
    let mut ch = ScriptedChannel::new().read(ReadStep::Data(b"hi".to_vec()));
    let log = ch.handle();
    let mut buf = [0u8; 2];
    let mut bufs = [IoSliceMut::new(&mut []), IoSliceMut::new(&mut buf)];
    io::readv_all(&mut ch, &mut bufs).expect("read");
    assert_eq!(&buf, b"hi");
    assert_eq!(log.read_calls()[0].requested, 2);
}

#[test]
fn asking_for_fds_without_fd_pass_is_unsupported() {
    let mut ch = ScriptedChannel::new().read(ReadStep::Data(b"ab".to_vec()));
    let mut fds = Vec::new();
    let mut buf = [0u8; 2];
    let err = io::readv_full_all(&mut ch, &mut [IoSliceMut::new(&mut buf)], Some(&mut fds))
        .expect_err("no FD_PASS");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
}

#[test]
fn works_through_dyn_channel() {
    let mut boxed: Box<dyn transit_channel::Channel> =
        Box::new(ScriptedChannel::trickle(b"dyn".to_vec()));
    let mut buf = [0u8; 3];
    io::read_all(&mut *boxed, &mut buf).expect("read");
    assert_eq!(&buf, b"dyn");
}

//! `FileChannel` over regular files and pipes: round trip, positioned I/O,
//! seekability probing, non-blocking pipes and waits.

use std::fs::OpenOptions;
use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use std::thread;
use std::time::Duration;

use transit_channel::io::{self, wait_blocking};
use transit_channel::{Channel, Condition, Error, Features, FileChannel, ReadFlags, WriteFlags};

/// A fresh directory under the system temp dir, removed on drop.
#[path = "common/temp_dir.rs"]
mod temp_dir;
use temp_dir::TempDir;

fn rw_create() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(true);
    o
}

/// A pipe as FileChannels (read end, write end).
fn pipe() -> (FileChannel, FileChannel) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (
        FileChannel::from_fd(r).expect("read end"),
        FileChannel::from_fd(w).expect("write end"),
    )
}

#[test]
fn write_seek_read_round_trip() {
    let dir = TempDir::new("round-trip");
    let mut ch = FileChannel::open(dir.join("f"), &rw_create()).expect("open");
    assert!(ch.has_feature(Features::SEEKABLE));
    let mut bufs = [IoSlice::new(b"hello, "), IoSlice::new(b"file")];
    io::writev_all(&mut ch, &mut bufs).expect("write");
    assert_eq!(ch.seek(SeekFrom::Start(0)).expect("seek"), 0);
    let mut buf = [0u8; 11];
    io::read_all(&mut ch, &mut buf).expect("read");
    assert_eq!(&buf, b"hello, file");
    assert!(!io::read_all_eof(&mut ch, &mut [0u8; 1]).expect("eof"));
    ch.close().expect("close");
    assert_eq!(
        std::fs::read(dir.join("f")).expect("read back"),
        b"hello, file"
    );
}

#[test]
fn positioned_io_leaves_the_file_position_alone() {
    let dir = TempDir::new("pread");
    let mut ch = FileChannel::open(dir.join("f"), &rw_create()).expect("open");
    io::write_all(&mut ch, b"0123456789").expect("write");
    ch.seek(SeekFrom::Start(3)).expect("seek");
    assert_eq!(ch.pwritev(&[IoSlice::new(b"ab")], 7).expect("pwrite"), 2);
    let mut buf = [0u8; 4];
    assert_eq!(
        ch.preadv(&mut [IoSliceMut::new(&mut buf)], 6)
            .expect("pread"),
        4
    );
    assert_eq!(&buf, b"6ab9");
    assert_eq!(ch.seek(SeekFrom::Current(0)).expect("tell"), 3);
}

#[test]
fn seek_end_and_current() {
    let dir = TempDir::new("seek");
    let mut ch = FileChannel::open(dir.join("f"), &rw_create()).expect("open");
    io::write_all(&mut ch, b"abcdefgh").expect("write");
    assert_eq!(ch.seek(SeekFrom::End(-2)).expect("end"), 6);
    assert_eq!(ch.seek(SeekFrom::Current(-1)).expect("cur"), 5);
    let mut buf = [0u8; 3];
    io::read_all(&mut ch, &mut buf).expect("read");
    assert_eq!(&buf, b"fgh");
}

#[test]
fn append_mode_writes_at_the_end() {
    let dir = TempDir::new("append");
    std::fs::write(dir.join("f"), b"old").expect("seed");
    let mut o = OpenOptions::new();
    o.append(true);
    let mut ch = FileChannel::open(dir.join("f"), &o).expect("open");
    io::write_all(&mut ch, b"+new").expect("write");
    ch.close().expect("close");
    assert_eq!(std::fs::read(dir.join("f")).expect("read"), b"old+new");
}

#[test]
fn create_mode_sets_permissions() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = TempDir::new("mode");
    let mut o = rw_create();
    o.mode(0o600);
    let ch = FileChannel::open(dir.join("f"), &o).expect("open");
    drop(ch);
    let mode = std::fs::metadata(dir.join("f"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "group/other bits set: {mode:o}");
}

#[test]
fn open_failure_names_the_path() {
    let dir = TempDir::new("missing");
    let missing = dir.join("no-such-file");
    let err = FileChannel::open(&missing, OpenOptions::new().read(true)).expect_err("missing");
    assert!(err.to_string().contains("no-such-file"), "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn pipe_is_not_seekable_and_positioned_read_is_unsupported() {
    let (mut r, _w) = pipe();
    assert!(!r.has_feature(Features::SEEKABLE));
    let err = r
        .preadv(&mut [IoSliceMut::new(&mut [0u8; 4])], 0)
        .expect_err("pipe");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(matches!(
        r.seek(SeekFrom::Start(0)),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn non_blocking_empty_pipe_read_would_block() {
    let (mut r, _w) = pipe();
    assert!(r.is_blocking());
    r.set_blocking(false).expect("nonblock");
    assert!(!r.is_blocking());
    let res = r.readv(
        &mut [IoSliceMut::new(&mut [0u8; 4])],
        None,
        ReadFlags::empty(),
    );
    assert!(matches!(res, Err(Error::WouldBlock)), "{res:?}");
}

#[test]
fn read_all_on_non_blocking_pipe_waits_for_a_slow_writer() {
    let (mut r, mut w) = pipe();
    r.set_blocking(false).expect("nonblock");
    let writer = thread::spawn(move || {
        for chunk in [&b"ab"[..], b"cd", b"ef"] {
            thread::sleep(Duration::from_millis(10));
            io::write_all(&mut w, chunk).expect("write");
        }
    });
    let mut buf = [0u8; 6];
    io::read_all(&mut r, &mut buf).expect("read_all");
    writer.join().expect("writer");
    assert_eq!(&buf, b"abcdef");
}

#[test]
fn wait_on_pipe_times_out_then_sees_in_after_a_write() {
    let (r, mut w) = pipe();
    let ws = r.watch_source();
    let got = wait_blocking(&ws, Condition::IN, Some(Duration::from_millis(20))).expect("wait");
    assert_eq!(got, Condition::empty());
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        io::write_all(&mut w, b"!").expect("write");
        w
    });
    let got = wait_blocking(&ws, Condition::IN, Some(Duration::from_secs(10))).expect("wait");
    let _w = writer.join().expect("writer");
    assert_eq!(got, Condition::IN);
}

#[test]
fn writing_to_a_pipe_without_reader_fails_naming_the_channel() {
    let (r, mut w) = pipe();
    drop(r);
    w.set_name("exec-stdin".to_owned());
    let err = io::write_all(&mut w, b"data").expect_err("EPIPE");
    assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    assert!(err.to_string().starts_with("exec-stdin: "), "{err}");
}

#[test]
fn zero_length_reads_return_zero() {
    let (mut r, _w) = pipe();
    r.set_blocking(false).expect("nonblock");
    let n = r
        .readv(&mut [], None, ReadFlags::empty())
        .expect("empty readv");
    assert_eq!(n, 0);
    assert!(io::read_all_eof(&mut r, &mut []).expect("empty read_all"));
}

#[test]
fn closed_channel_io_is_closed_and_watch_reports_nval() {
    let dir = TempDir::new("closed");
    let mut ch = FileChannel::open(dir.join("f"), &rw_create()).expect("open");
    ch.close().expect("close");
    ch.close().expect("second close");
    let res = ch.writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty());
    assert!(matches!(res, Err(Error::Closed { .. })), "{res:?}");
    let got = wait_blocking(&ch.watch_source(), Condition::IN, None).expect("wait");
    assert_eq!(got, Condition::NVAL);
}

#[test]
fn from_fd_of_a_regular_file_is_seekable() {
    let dir = TempDir::new("from-fd");
    let file = rw_create().open(dir.join("f")).expect("open");
    let ch = FileChannel::from_fd(OwnedFd::from(file)).expect("from_fd");
    assert!(ch.has_feature(Features::SEEKABLE));
    let fd = ch.fd().expect("open").as_raw_fd();
    assert!(ch.name().ends_with(&fd.to_string()), "{}", ch.name());
}

//! `io::wait_blocking`: readiness short-cut, poll on one fd and on fd
//! pairs, timeouts, HUP, and waits without fds.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::Duration;

use transit_channel::io::wait_blocking;
use transit_channel::Channel;
use transit_channel::{Condition, Readiness, ScriptedChannel, WatchFds, WatchSource};

/// Long enough that a correct implementation never hits it.
const LONG: Duration = Duration::from_secs(10);

/// A pipe as (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn watch(fds: WatchFds) -> WatchSource {
    WatchSource {
        fds,
        ready: Readiness::new(),
        name: "test-watch".to_owned(),
    }
}

fn write_byte(fd: &OwnedFd) {
    // SAFETY: `fd` is open; one byte from a valid buffer.
    let rc = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(rc, 1);
}

#[test]
fn readiness_bits_answer_without_polling() {
    let ch = ScriptedChannel::new();
    let got = wait_blocking(&ch.watch_source(), Condition::OUT, None).expect("wait");
    assert_eq!(got, Condition::OUT);
}

#[test]
fn empty_pipe_times_out_with_no_conditions() {
    let (r, _w) = pipe();
    let ws = watch(WatchFds::One(r.as_raw_fd()));
    let got = wait_blocking(&ws, Condition::IN, Some(Duration::from_millis(20))).expect("wait");
    assert_eq!(got, Condition::empty());
}

#[test]
fn pipe_becomes_readable_when_another_thread_writes() {
    let (r, w) = pipe();
    let ws = watch(WatchFds::One(r.as_raw_fd()));
    assert_eq!(
        wait_blocking(&ws, Condition::IN, Some(Duration::ZERO)).expect("wait"),
        Condition::empty()
    );
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        write_byte(&w);
        w
    });
    let got = wait_blocking(&ws, Condition::IN, Some(LONG)).expect("wait");
    let _w = writer.join().expect("writer");
    assert_eq!(got, Condition::IN);
}

#[test]
fn closed_writer_is_reported_as_hup() {
    let (r, w) = pipe();
    drop(w);
    let ws = watch(WatchFds::One(r.as_raw_fd()));
    let got = wait_blocking(&ws, Condition::IN, Some(LONG)).expect("wait");
    assert!(got.contains(Condition::HUP), "{got:?}");
}

#[test]
fn pair_polls_out_on_the_write_fd_only() {
    let (r1, _w1) = pipe(); // empty: never readable
    let (_r2, w2) = pipe(); // writable
    let ws = watch(WatchFds::Pair {
        read: r1.as_raw_fd(),
        write: w2.as_raw_fd(),
    });
    assert_eq!(
        wait_blocking(&ws, Condition::OUT, Some(LONG)).expect("wait"),
        Condition::OUT
    );
    assert_eq!(
        wait_blocking(&ws, Condition::IN, Some(Duration::from_millis(10))).expect("wait"),
        Condition::empty()
    );
}

#[test]
fn pair_polls_in_on_the_read_fd() {
    let (r1, w1) = pipe();
    let (r2, _w2) = pipe();
    write_byte(&w1);
    // The write fd of the pair is a read end: it would never be writable,
    // so only the read fd can satisfy IN.
    let ws = watch(WatchFds::Pair {
        read: r1.as_raw_fd(),
        write: r2.as_raw_fd(),
    });
    assert_eq!(
        wait_blocking(&ws, Condition::IN, Some(LONG)).expect("wait"),
        Condition::IN
    );
}

#[test]
fn watch_without_fds_wakes_when_another_thread_sets_readiness() {
    let ws = watch(WatchFds::None);
    let ready = ws.ready.clone();
    let setter = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        ready.insert(Condition::IN);
    });
    let got = wait_blocking(&ws, Condition::IN, Some(LONG)).expect("wait");
    setter.join().expect("setter");
    assert_eq!(got, Condition::IN);
}

#[test]
fn watch_without_fds_times_out() {
    let ws = watch(WatchFds::None);
    ws.ready.insert(Condition::OUT);
    let got = wait_blocking(&ws, Condition::IN, Some(Duration::from_millis(5))).expect("wait");
    assert_eq!(got, Condition::empty());
}

/// The deadline helpers: a read that gets nothing times out at its
/// deadline (typed `TimedOut`, whatever the channel's mode, which is
/// restored), one that gets its bytes returns them, and a clean end of
/// file before any byte is `Ok(false)` for the `_eof` form.
#[test]
fn reads_and_writes_until_a_deadline() {
    use std::time::{Duration, Instant};
    use transit_channel::io::{read_all_eof_until, read_all_until, write_all_until};
    use transit_channel::{Channel, SocketChannel};

    let (mut a, mut b) = SocketChannel::pair().unwrap();
    assert!(a.is_blocking());
    let t0 = Instant::now();
    let e = read_all_until(&mut a, &mut [0u8; 4], t0 + Duration::from_millis(150))
        .expect_err("nothing to read");
    assert!(e.is_timed_out(), "{e:?}");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(a.is_blocking(), "the mode is given back");

    let later = Instant::now() + Duration::from_secs(10);
    write_all_until(&mut b, b"ping", later).unwrap();
    let mut buf = [0u8; 4];
    read_all_until(&mut a, &mut buf, later).unwrap();
    assert_eq!(&buf, b"ping");
    drop(b);
    assert!(!read_all_eof_until(&mut a, &mut buf, later).unwrap());
}

/// `drain_until`: keeps the first bytes, reads to the peer's end of file,
/// and stops at the deadline when the peer never closes.
#[test]
fn drain_until_keeps_the_head_and_stops_at_eof_or_the_deadline() {
    use std::time::{Duration, Instant};
    use transit_channel::io::{drain_until, write_all};
    use transit_channel::{ReadFlags, SocketChannel};

    let (mut a, mut b) = SocketChannel::pair().unwrap();
    write_all(&mut b, &[7u8; 100_000]).unwrap();
    drop(b);
    let head = drain_until(&mut a, Instant::now() + LONG, 10, ReadFlags::empty());
    assert_eq!(head, vec![7u8; 10]);

    let (mut a, _b) = SocketChannel::pair().unwrap();
    let t0 = Instant::now();
    let head = drain_until(
        &mut a,
        t0 + Duration::from_millis(120),
        10,
        ReadFlags::empty(),
    );
    assert!(head.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(120));
    assert!(t0.elapsed() < LONG);
}

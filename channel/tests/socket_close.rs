//! Shutdown from another thread and close semantics of socket channels.

mod socket_util;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket_util::{connected, read_exact, write_all, BOUND};
use transit_channel::{
    Channel, Condition, Error, ReadFlags, Shutdown, SocketChannel, WatchFds, WriteFlags,
};

/// Wait (bounded) until thread `tid` of this process sleeps in the kernel.
fn wait_until_blocked(tid: i32) {
    let start = Instant::now();
    let stat = format!("/proc/self/task/{tid}/stat");
    loop {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        // The state follows the parenthesised command name.
        let state = s.rsplit(") ").next().and_then(|r| r.chars().next());
        if state == Some('S') {
            return;
        }
        assert!(start.elapsed() < BOUND, "reader thread never blocked");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Start a reader blocked in `readv` on `ch`; return the channel its result
/// arrives on.
fn blocked_reader(mut ch: SocketChannel) -> mpsc::Receiver<transit_channel::Result<usize>> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let mut buf = [0u8; 16];
        let r = ch.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
        let _ = tx.send(r);
    });
    wait_until_blocked(tid_rx.recv_timeout(BOUND).unwrap());
    rx
}

#[test]
fn shutdown_handle_wakes_a_blocked_tcp_reader() {
    let (_l, _client, server) = connected("tcp:127.0.0.1:0");
    let handle = server.shutdown_handle().unwrap();
    let done = blocked_reader(server);
    assert!(done.try_recv().is_err(), "reader returned before shutdown");
    handle.shutdown(Shutdown::Read).unwrap();
    let r = done.recv_timeout(BOUND).expect("reader woke up");
    assert_eq!(r.unwrap(), 0, "a shut-down read is EOF");
}

#[test]
fn shutdown_handle_wakes_a_blocked_unix_reader() {
    let (_a, b) = SocketChannel::pair().unwrap();
    let handle = b.shutdown_handle().unwrap();
    let done = blocked_reader(b);
    handle.shutdown(Shutdown::Both).unwrap();
    assert_eq!(done.recv_timeout(BOUND).unwrap().unwrap(), 0);
}

#[test]
fn shutdown_handle_wakes_a_blocked_accept() {
    let mut l = SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let handle = l.shutdown_handle().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = tx.send(l.accept().map(|_| ()));
    });
    wait_until_blocked(tid_rx.recv_timeout(BOUND).unwrap());
    handle.shutdown(Shutdown::Both).unwrap();
    let r = rx.recv_timeout(BOUND).expect("accept woke up");
    assert!(matches!(r, Err(Error::Os { .. })), "{r:?}");
}

#[test]
fn shutdown_handle_is_a_no_op_after_close_and_drop() {
    let (mut a, _b) = SocketChannel::pair().unwrap();
    let handle = a.shutdown_handle().unwrap();
    a.close().unwrap();
    handle.shutdown(Shutdown::Both).unwrap();
    let late = a.shutdown_handle().unwrap();
    late.shutdown(Shutdown::Both).unwrap();
    drop(a);
    handle.shutdown(Shutdown::Both).unwrap();
}

#[test]
fn shutdown_handle_after_drop_never_touches_a_reused_fd() {
    let (a, _b) = SocketChannel::pair().unwrap();
    let handle = a.shutdown_handle().unwrap();
    let number = a.as_raw_fd();
    drop(a); // the number is free now; the next socket usually reuses it
    let (mut e, mut f) = SocketChannel::pair().unwrap();
    let reused = e.as_raw_fd() == number || f.as_raw_fd() == number;
    handle.shutdown(Shutdown::Both).unwrap();
    // Whatever took the number is untouched.
    write_all(&mut e, b"alive");
    assert_eq!(read_exact(&mut f, 5), b"alive", "reused number: {reused}");
    write_all(&mut f, b"still");
    assert_eq!(read_exact(&mut e, 5), b"still");
}

#[test]
fn shutdown_write_gives_the_peer_eof_but_keeps_reading() {
    let (_l, mut client, mut server) = connected("tcp:127.0.0.1:0");
    client.shutdown(Shutdown::Write).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        server
            .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
            .unwrap(),
        0
    );
    write_all(&mut server, b"back");
    assert_eq!(read_exact(&mut client, 4), b"back");
}

#[test]
fn close_gives_the_peer_eof() {
    let (_l, mut client, mut server) = connected("tcp:127.0.0.1:0");
    client.close().unwrap();
    let mut buf = [0u8; 4];
    let r = server.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    assert_eq!(r.unwrap(), 0);
}

#[test]
fn io_after_close_is_closed_and_double_close_is_ok() {
    let (mut a, _b) = SocketChannel::pair().unwrap();
    a.close().unwrap();
    assert!(a.is_closed());
    let mut buf = [0u8; 1];
    let r = a.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    assert!(matches!(r, Err(Error::Closed { .. })), "{r:?}");
    let w = a.writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty());
    assert!(matches!(w, Err(Error::Closed { .. })), "{w:?}");
    assert!(matches!(a.set_blocking(false), Err(Error::Closed { .. })));
    assert!(matches!(a.flush(), Err(Error::Closed { .. })));
    assert!(matches!(a.set_delay(false), Err(Error::Closed { .. })));
    assert!(a.local_address().is_none());
    a.close().unwrap();
    let msg = Error::closed(a.name()).to_string();
    assert!(msg.contains("socketpair[0]"), "{msg}");
}

#[test]
fn errors_name_the_channel_and_the_operation() {
    let (mut a, b) = SocketChannel::pair().unwrap();
    drop(b);
    let err = a
        .writev(&[IoSlice::new(b"to nobody")], &[], WriteFlags::empty())
        .unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EPIPE),
        "{err}: no SIGPIPE, EPIPE"
    );
    let msg = err.to_string();
    assert!(msg.starts_with("socketpair[0]: sendmsg failed"), "{msg}");
}

#[test]
fn watch_source_before_and_after_close() {
    let (mut a, _b) = SocketChannel::pair().unwrap();
    let ws = a.watch_source();
    assert_eq!(ws.fds, WatchFds::One(a.as_raw_fd()));
    assert_eq!(ws.ready.get(), Condition::empty());
    assert_eq!(ws.name, "socketpair[0]");
    a.close().unwrap();
    let ws = a.watch_source();
    assert_eq!(ws.fds, WatchFds::None);
    assert_eq!(ws.ready.get(), Condition::HUP | Condition::NVAL);
}

#[test]
fn a_closed_channel_keeps_its_fd_number_reserved_and_hung_up() {
    let (mut a, _b) = SocketChannel::pair().unwrap();
    let number = a.as_raw_fd();
    a.close().unwrap();
    // A watch made before close keeps polling `number`: it must still be
    // ours (a placeholder) and report HUP, not a stranger's readiness.
    let mut pfd = libc::pollfd {
        fd: number,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; timeout 0.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert_eq!(r, 1);
    assert_ne!(pfd.revents & libc::POLLHUP, 0, "revents {:#x}", pfd.revents);
    assert_eq!(pfd.revents & libc::POLLNVAL, 0, "the number is still open");
}

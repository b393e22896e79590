//! Helpers shared by the `socket_*` integration tests: connected pairs over
//! loopback and UNIX sockets, unique temp dirs, bounded blocking I/O.

#![allow(dead_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsFd;

use std::time::{Duration, Instant};

use socket2::SockRef;
use transit_channel::{Channel, Error, ReadFlags, SocketAddress, SocketChannel, WriteFlags};

/// How long any blocking socket call in a test may wait.
pub const BOUND: Duration = Duration::from_secs(20);

#[path = "../common/temp_dir.rs"]
mod temp_dir;
#[allow(unused_imports)]
pub use temp_dir::TempDir;

/// Make every blocking read/write on `ch` give up after [`BOUND`] (it then
/// fails with WouldBlock instead of hanging the test).
pub fn bound(ch: &SocketChannel) {
    let s = SockRef::from(ch);
    s.set_read_timeout(Some(BOUND)).expect("SO_RCVTIMEO");
    s.set_write_timeout(Some(BOUND)).expect("SO_SNDTIMEO");
}

/// Listen on `addr`, connect, accept: (listener, client, server), all
/// bounded.
pub fn connected(addr: &str) -> (SocketChannel, SocketChannel, SocketChannel) {
    let addr: SocketAddress = addr.parse().expect("address");
    let mut listener = SocketChannel::listen_sync(&addr, 8).expect("listen");
    let local = listener.local_address().expect("listener address");
    let client = SocketChannel::connect_sync(&local).expect("connect");
    let server = listener.accept().expect("accept");
    bound(&client);
    bound(&server);
    (listener, client, server)
}

/// Write all of `data`.
pub fn write_all(ch: &mut SocketChannel, mut data: &[u8]) {
    while !data.is_empty() {
        let n = ch
            .writev(&[IoSlice::new(data)], &[], WriteFlags::empty())
            .expect("write");
        assert!(n > 0, "write made no progress");
        data = &data[n..];
    }
}

/// Read exactly `n` bytes (blocking channel).
pub fn read_exact(ch: &mut SocketChannel, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let r = ch
            .readv(
                &mut [IoSliceMut::new(&mut out[got..])],
                None,
                ReadFlags::empty(),
            )
            .expect("read");
        assert!(r > 0, "EOF after {got} of {n} bytes");
        got += r;
    }
    out
}

/// Poll `ch` for `events` for at most [`BOUND`]; the returned revents.
pub fn wait_for(ch: &impl AsFd, events: i16) -> i16 {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: ch.as_fd().as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, BOUND.as_millis() as i32) };
    assert!(r >= 0, "poll failed: {}", std::io::Error::last_os_error());
    pfd.revents
}

/// Retry `f` while it returns WouldBlock, for at most [`BOUND`].
pub fn retry<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let start = Instant::now();
    loop {
        match f() {
            Err(Error::WouldBlock) if start.elapsed() < BOUND => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other,
        }
    }
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

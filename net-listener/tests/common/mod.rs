//! Helpers shared by the listener tests: bounded main-loop iteration,
//! loopback clients, IPv6 availability and unique temp dirs.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use transit_channel::main_loop::{ControlFlow, MainContext};

/// The longest any test waits for something that should happen.
pub const BOUND: Duration = Duration::from_secs(20);

/// True if the kernel has the IPv6 loopback address (`::1` on `lo`).
pub fn have_ipv6_loopback() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| {
            t.lines()
                .any(|l| l.starts_with("00000000000000000000000000000001"))
        })
        .unwrap_or(false)
}

/// Iterate `ctx` until `done()` is true or [`BOUND`] passes; returns
/// `done()`. A 20 ms ticker keeps a blocking iteration from sleeping past
/// the bound.
pub fn iterate_until(ctx: &MainContext, mut done: impl FnMut() -> bool) -> bool {
    let ticker = ctx.timeout_add(Duration::from_millis(20), || ControlFlow::Continue);
    let deadline = Instant::now() + BOUND;
    while !done() && Instant::now() < deadline {
        ctx.iteration(true);
    }
    ctx.remove(ticker);
    done()
}

/// Iterate `ctx` for `d`, whatever happens.
pub fn iterate_for(ctx: &MainContext, d: Duration) {
    let ticker = ctx.timeout_add(Duration::from_millis(10), || ControlFlow::Continue);
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        ctx.iteration(true);
    }
    ctx.remove(ticker);
}

/// Connect to `addr` with a bounded connect timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, BOUND).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A unique, fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "transit-nl-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// How many fds this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

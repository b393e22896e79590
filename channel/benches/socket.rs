//! Socket channel benchmarks: small-message ping-pong latency over a UNIX
//! socketpair and over TCP loopback, and bulk throughput of 1 MiB writes
//! over TCP loopback. All blocking, one peer thread per benchmark.
//!
//! Run with `cargo bench -p transit-channel --bench socket`.

use std::hint::black_box;
use std::io::{IoSlice, IoSliceMut};
use std::thread::JoinHandle;

use criterion::{criterion_main, Criterion, Throughput};
use transit_channel::{Channel, ReadFlags, SocketAddress, SocketChannel, WriteFlags};

const PING: usize = 64;
const BULK: usize = 1 << 20;

fn write_all(ch: &mut SocketChannel, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match ch.writev(&[IoSlice::new(buf)], &[], WriteFlags::empty()) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf = &buf[n..],
        }
    }
    true
}

fn read_exact(ch: &mut SocketChannel, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match ch.readv(
            &mut [IoSliceMut::new(&mut buf[got..])],
            None,
            ReadFlags::empty(),
        ) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    true
}

/// A thread echoing PING-byte messages until EOF.
fn echo(mut ch: SocketChannel) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; PING];
        while read_exact(&mut ch, &mut buf) && write_all(&mut ch, &buf) {}
    })
}

fn tcp_pair() -> (SocketChannel, SocketChannel) {
    let addr: SocketAddress = "tcp:127.0.0.1:0".parse().expect("address");
    let mut l = SocketChannel::listen_sync(&addr, 1).expect("listen");
    let local = l.local_address().expect("bound");
    let mut c = SocketChannel::connect_sync(&local).expect("connect");
    let mut s = l.accept().expect("accept");
    c.set_delay(false).expect("nodelay");
    s.set_delay(false).expect("nodelay");
    (c, s)
}

fn ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("socket_ping_pong_64B");
    for kind in ["unix_socketpair", "tcp_loopback"] {
        let (mut a, b) = match kind {
            "unix_socketpair" => SocketChannel::pair().expect("socketpair"),
            _ => tcp_pair(),
        };
        let peer = echo(b);
        let msg = [7u8; PING];
        let mut back = [0u8; PING];
        g.bench_function(kind, |bench| {
            bench.iter(|| {
                assert!(write_all(&mut a, black_box(&msg)));
                assert!(read_exact(&mut a, &mut back));
            })
        });
        a.close().expect("close");
        peer.join().expect("echo thread");
    }
    g.finish();
}

fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("socket_bulk");
    g.throughput(Throughput::Bytes(BULK as u64));
    let (mut tx, mut rx) = tcp_pair();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; BULK];
        while let Ok(n) = rx.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()) {
            if n == 0 {
                break;
            }
        }
    });
    let data = vec![0xa5u8; BULK];
    g.bench_function("tcp_loopback_1MiB_writes", |bench| {
        bench.iter(|| assert!(write_all(&mut tx, black_box(&data))))
    });
    tx.close().expect("close");
    drain.join().expect("drain thread");
    g.finish();
}

/// The criterion group (its generated function has no doc of its own).
#[allow(missing_docs)]
mod group {
    use super::{bulk, ping_pong};
    criterion::criterion_group!(benches, ping_pong, bulk);
}
criterion_main!(group::benches);

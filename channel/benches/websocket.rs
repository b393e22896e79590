//! WebSocket throughput against plain TCP in the same run: 1 MiB blocking
//! writes over TCP loopback, a peer thread draining with 1 MiB reads.
//!
//! * `tcp_plain`: the socket alone (the reference).
//! * `ws_client_to_server`: client frames are masked (a copy and XOR on
//!   the sender, an XOR in place on the receiver).
//! * `ws_server_to_client`: server frames go out as header + the caller's
//!   buffer in one writev, no copy.
//!
//! The target is ws >= 0.8x plain TCP. After criterion's groups, a ratio
//! report alternates TCP and websocket transfers of 64 MiB (rounds
//! interleaved, so load from other processes hits both alike) and prints
//! the median GB/s of each and the ws/tcp ratios. Run with
//! `cargo bench -p transit-channel --bench websocket`.

use std::hint::black_box;
use std::io::IoSliceMut;
use std::thread::JoinHandle;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use transit_channel::websocket::{WebSocketChannel, WebSocketConfig};
use transit_channel::{io, Channel, ReadFlags, SocketAddress, SocketChannel};

const BULK: usize = 1 << 20;

fn tcp_pair() -> (SocketChannel, SocketChannel) {
    let addr: SocketAddress = "tcp:127.0.0.1:0".parse().expect("address");
    let mut l = SocketChannel::listen_sync(&addr, 1).expect("listen");
    let local = l.local_address().expect("bound");
    let c = SocketChannel::connect_sync(&local).expect("connect");
    let s = l.accept().expect("accept");
    (c, s)
}

/// (client, server) websockets over TCP loopback.
fn ws_pair() -> (WebSocketChannel, WebSocketChannel) {
    let (c, s) = tcp_pair();
    let srv = std::thread::spawn(move || {
        WebSocketChannel::server(Box::new(s), "/", WebSocketConfig::default())
            .handshake_blocking()
            .expect("server handshake")
    });
    let c = WebSocketChannel::client(Box::new(c), "localhost", "/", WebSocketConfig::default())
        .expect("client")
        .handshake_blocking()
        .expect("client handshake");
    (c, srv.join().expect("server thread"))
}

/// A thread reading 1 MiB at a time until EOF or error.
fn drain(mut ch: impl Channel + 'static) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; BULK];
        while let Ok(n) = ch.readv(
            &mut [IoSliceMut::new(&mut buf)],
            None,
            ReadFlags::RELAXED_EOF,
        ) {
            if n == 0 {
                break;
            }
        }
    })
}

fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("websocket_bulk_1MiB_writes");
    g.throughput(Throughput::Bytes(BULK as u64));
    let data = vec![0xa5u8; BULK];

    let (mut tx, rx) = tcp_pair();
    let peer = drain(rx);
    g.bench_function("tcp_plain", |b| {
        b.iter(|| io::write_all(&mut tx, black_box(&data)).expect("write"))
    });
    tx.close().expect("close");
    peer.join().expect("drain");

    let (mut tx, rx) = ws_pair();
    let peer = drain(rx);
    g.bench_function("ws_client_to_server", |b| {
        b.iter(|| io::write_all(&mut tx, black_box(&data)).expect("write"))
    });
    tx.bye().expect("bye");
    tx.close().expect("close");
    peer.join().expect("drain");

    let (rx, mut tx) = ws_pair();
    let peer = drain(rx);
    g.bench_function("ws_server_to_client", |b| {
        b.iter(|| io::write_all(&mut tx, black_box(&data)).expect("write"))
    });
    tx.bye().expect("bye");
    tx.close().expect("close");
    peer.join().expect("drain");
    g.finish();
}

/// Seconds to move `total` bytes through `tx` in 1 MiB writes and have
/// the peer thread drain them.
fn timed_transfer(mut tx: impl Channel, rx: impl Channel + 'static, total: usize) -> f64 {
    let data = vec![0x5au8; BULK];
    let start = Instant::now();
    let peer = drain(rx);
    for _ in 0..total / BULK {
        io::write_all(&mut tx, &data).expect("write");
    }
    let _ = tx.bye();
    tx.close().expect("close");
    peer.join().expect("drain");
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved rounds of plain TCP and both websocket directions.
fn ratio_report() {
    const TOTAL: usize = 64 << 20;
    const ROUNDS: usize = 9;
    let (mut tcp, mut c2s, mut s2c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (a, b) = tcp_pair();
        tcp.push(TOTAL as f64 / timed_transfer(a, b, TOTAL) / 1e9);
        let (c, s) = ws_pair();
        c2s.push(TOTAL as f64 / timed_transfer(c, s, TOTAL) / 1e9);
        let (c, s) = ws_pair();
        s2c.push(TOTAL as f64 / timed_transfer(s, c, TOTAL) / 1e9);
    }
    let (t, a, b) = (median(tcp), median(c2s), median(s2c));
    println!("websocket ratio report ({ROUNDS} interleaved rounds of 64 MiB, medians):");
    println!("  tcp_plain            {t:.2} GB/s");
    println!("  ws_client_to_server  {a:.2} GB/s  ratio {:.2}", a / t);
    println!("  ws_server_to_client  {b:.2} GB/s  ratio {:.2}", b / t);
}

/// The criterion group (its generated function has no doc of its own).
#[allow(missing_docs)]
mod group {
    use super::bulk;
    criterion::criterion_group!(benches, bulk);
}

fn main() {
    group::benches();
    ratio_report();
    Criterion::default().configure_from_args().final_summary();
}

//! TLS throughput: 256 MiB through a [`TlsChannel`] pair, a writer thread
//! sending 1 MiB `writev`s and this thread reading 1 MiB `readv`s, over a
//! UNIX socketpair and over TCP loopback, next to the same transfer without
//! TLS. Credentials are generated in process. Criterion reports GB/s
//! (`Throughput::Bytes`); the handshake is outside the timed part.
//!
//! Run with `cargo bench -p transit-channel --bench tls`.

use std::io::{IoSlice, IoSliceMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, Throughput};
use transit_channel::tls::generate::TestPki;
use transit_channel::tls::{TlsChannel, TlsCreds};
use transit_channel::{Channel, ReadFlags, SocketAddress, SocketChannel, WriteFlags};

const TOTAL: usize = 256 << 20;
const CHUNK: usize = 1 << 20;

fn tcp_pair() -> (SocketChannel, SocketChannel) {
    let addr: SocketAddress = "tcp:127.0.0.1:0".parse().expect("address");
    let mut l = SocketChannel::listen_sync(&addr, 1).expect("listen");
    let local = l.local_address().expect("bound");
    let c = SocketChannel::connect_sync(&local).expect("connect");
    let s = l.accept().expect("accept");
    (c, s)
}

fn pair(kind: &str) -> (SocketChannel, SocketChannel) {
    match kind {
        "unix_socketpair" => SocketChannel::pair().expect("socketpair"),
        _ => tcp_pair(),
    }
}

/// Connected (writer, reader) channels, with TLS if `creds` is given.
fn endpoints(
    kind: &str,
    creds: Option<&(Arc<TlsCreds>, Arc<TlsCreds>)>,
) -> (Box<dyn Channel>, Box<dyn Channel>) {
    let (a, b) = pair(kind);
    let Some((client, server)) = creds else {
        return (Box::new(a), Box::new(b));
    };
    let server = Arc::clone(server);
    let accept = std::thread::spawn(move || {
        let mut tls = TlsChannel::server(Box::new(b), server, None).expect("server");
        tls.handshake_blocking().expect("server handshake");
        tls
    });
    let mut tls = TlsChannel::client(Box::new(a), Arc::clone(client), "localhost").expect("client");
    tls.handshake_blocking().expect("client handshake");
    let server = accept.join().expect("server thread");
    (Box::new(tls), Box::new(server))
}

/// Move TOTAL bytes from `w` (on a thread) to `r`; the time of the move.
fn transfer(mut w: Box<dyn Channel>, mut r: Box<dyn Channel>) -> Duration {
    let writer = std::thread::spawn(move || {
        let data = vec![0x5au8; CHUNK];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(CHUNK);
            let mut off = 0;
            while off < n {
                off += w
                    .writev(&[IoSlice::new(&data[off..n])], &[], WriteFlags::empty())
                    .expect("write");
            }
            left -= n;
        }
        w.bye().expect("bye");
        w
    });
    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    while got < TOTAL {
        let n = r
            .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
            .expect("read");
        assert!(n > 0, "early end of file after {got} bytes");
        got += n;
    }
    let elapsed = start.elapsed();
    let _w = writer.join().expect("writer thread");
    elapsed
}

fn throughput(c: &mut Criterion) {
    let pki = TestPki::new().expect("CA");
    let creds = pki.loopback_creds().expect("creds");
    let mut g = c.benchmark_group("tls_256MiB_1MiB_writes");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));
    for kind in ["unix_socketpair", "tcp_loopback"] {
        for tls in [true, false] {
            let name = format!("{kind}/{}", if tls { "tls" } else { "plain" });
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (w, r) = endpoints(kind, tls.then_some(&creds));
                        total += transfer(w, r);
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
}

criterion_main!(benches);

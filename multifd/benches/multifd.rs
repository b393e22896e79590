//! Benchmarks of transit-multifd: an in-process transfer of a 256 MiB
//! image with 50 % zero pages over UNIX socket pairs (1 and 4 page
//! channels, 512 KiB and 1 MiB packets), and the throughput of the
//! zero-page scan and the page digest; and (`memory_1GiB`) what the same
//! passes and a 1 MiB copy cost when the bytes come from a 1 GiB image in
//! memory rather than from the cache, the gap between a real transfer and
//! a cache-resident benchmark such as plain `iperf3`.
//!
//! Image generation and destination pre-faulting happen outside the timed
//! part. Run with `cargo bench -p transit-multifd`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use transit_channel::{Channel, SocketChannel};
use transit_multifd::digest::{page_hash, Digest};
use transit_multifd::image::{Content, ImageSpec};
use transit_multifd::zero::is_zero;
use transit_multifd::{
    DestImage, Destination, Payload, Receiver, RecvConfig, SendConfig, Sender, SourceImage,
};

const SIZE: u64 = 256 << 20;

fn transfer(source: &'static [u8], channels: usize, payload: u32) -> Duration {
    let mut send: Vec<Box<dyn Channel>> = Vec::new();
    let mut recv: Vec<Box<dyn Channel>> = Vec::new();
    for _ in 0..=channels {
        let (a, b) = SocketChannel::pair().expect("socketpair");
        send.push(Box::new(a));
        recv.push(Box::new(b));
    }
    let dest = DestImage::anonymous(SIZE, true).expect("destination");
    let started = Instant::now();
    let rx = std::thread::spawn(move || {
        let mut rx = Receiver::new(RecvConfig::default(), Destination::Image(dest));
        for ch in recv {
            rx.accept_channel(ch)?;
        }
        rx.run()
    });
    let main = send.remove(0);
    let config = SendConfig {
        packet_payload: payload,
        ..SendConfig::default()
    };
    let mut tx = Sender::new(
        config,
        Payload::Image(SourceImage::from_static(source)),
        main,
        send,
    )
    .expect("sender");
    tx.send_all().expect("send");
    tx.finish().expect("finish");
    let outcome = rx.join().expect("receiver thread").expect("receive");
    let elapsed = started.elapsed();
    // Unmapping the destination is not part of the transfer.
    drop(outcome);
    elapsed
}

fn bench_transfer(c: &mut Criterion) {
    let spec = ImageSpec {
        size: SIZE,
        page_size: 4096,
        zero_ratio: 0.5,
        seed: 1,
        content: Content::Random,
    };
    let img = SourceImage::generate(&spec).expect("generate");
    let source: &'static [u8] = Box::leak(img.as_slice().to_vec().into_boxed_slice());
    drop(img);
    let mut g = c.benchmark_group("transfer_256MiB_50pct_zero_unix");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(SIZE));
    for channels in [1usize, 4] {
        for payload in [512 * 1024u32, 1024 * 1024] {
            let id = BenchmarkId::new(format!("{channels}ch"), format!("{}KiB", payload / 1024));
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| transfer(source, channels, payload))
                        .sum()
                })
            });
        }
    }
    g.finish();
}

/// The digest of every 4 KiB page of `image`, as a sender folds it.
fn digest_pages(image: &[u8]) -> Digest {
    let mut d = Digest::default();
    for (i, p) in image.chunks(4096).enumerate() {
        d.add(page_hash(i as u64 * 4096, p));
    }
    d
}

/// How many 4 KiB pages of `image` are zero, as a sender's scan finds.
fn zero_pages(image: &[u8]) -> usize {
    image.chunks(4096).filter(|p| is_zero(p)).count()
}

fn bench_scan(c: &mut Criterion) {
    let len = 64 << 20;
    // Touched memory: an untouched calloc buffer maps the kernel's single
    // zero page and would measure the cache, not memory.
    // black_box keeps LLVM from turning this into calloc.
    let mut zeros = black_box(vec![1u8; len]);
    black_box(&mut zeros[..]).fill(0);
    let spec = ImageSpec {
        size: len as u64,
        page_size: 4096,
        zero_ratio: 0.0,
        seed: 2,
        content: Content::Random,
    };
    let data = SourceImage::generate(&spec).expect("generate");
    let mut g = c.benchmark_group("page_ops_64MiB");
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("zero_scan_zero_pages", |b| {
        b.iter(|| zero_pages(black_box(&zeros[..])))
    });
    g.bench_function("zero_scan_data_pages", |b| {
        b.iter(|| zero_pages(black_box(data.as_slice())))
    });
    g.bench_function("digest_data_pages", |b| {
        b.iter(|| digest_pages(black_box(data.as_slice())))
    });
    g.finish();
}

fn bench_memory(c: &mut Criterion) {
    const GIB: usize = 1 << 30;
    const MIB: usize = 1 << 20;
    let spec = |zero_ratio| ImageSpec {
        size: GIB as u64,
        page_size: 4096,
        zero_ratio,
        seed: 3,
        content: Content::Random,
    };
    let data = SourceImage::generate(&spec(0.0)).expect("generate");
    let zeros = SourceImage::generate(&spec(1.0)).expect("generate");
    let mut dst = vec![1u8; MIB];
    let hot = vec![7u8; MIB];
    let mut g = c.benchmark_group("memory_1GiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(GIB as u64));
    g.bench_function("digest_data_pages_from_memory", |b| {
        b.iter(|| digest_pages(black_box(data.as_slice())))
    });
    g.bench_function("zero_scan_zero_pages_from_memory", |b| {
        b.iter(|| zero_pages(black_box(zeros.as_slice())))
    });
    // 1 GiB in 1 MiB copies: out of the image (what a sender's write
    // does) and out of one cache-resident buffer (what iperf3's does).
    g.bench_function("copy_1MiB_units_from_image", |b| {
        b.iter(|| {
            for chunk in black_box(data.as_slice()).chunks(MIB) {
                dst.copy_from_slice(chunk);
                black_box(&mut dst);
            }
        })
    });
    g.bench_function("copy_1MiB_units_from_a_hot_buffer", |b| {
        b.iter(|| {
            for _ in 0..GIB / MIB {
                dst.copy_from_slice(black_box(&hot));
                black_box(&mut dst);
            }
        })
    });
    g.finish();
}

#[allow(missing_docs)] // criterion_group! generates an undocumented fn
mod groups {
    use super::*;
    criterion_group!(benches, bench_scan, bench_transfer, bench_memory);
}
criterion_main!(groups::benches);

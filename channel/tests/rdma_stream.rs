//! RDMA channel over the in-process verbs model: byte streams in blocking
//! and non-blocking mode, chunking and coalescing, large transfers.

use std::io::{IoSlice, IoSliceMut};
use std::thread;
use std::time::{Duration, Instant};

use transit_channel::rdma::model::{pair, ModelConfig, Side};
use transit_channel::rdma::{RdmaChannel, RdmaConfig};
use transit_channel::{io, Channel, Error, ReadFlags, WriteFlags};

fn small() -> RdmaConfig {
    RdmaConfig {
        ring_depth: 4,
        slot_size: 256,
        send_depth: 4,
        ..RdmaConfig::default()
    }
}

/// Deterministic, position-dependent bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_exact_bounded(ch: &mut RdmaChannel, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    io::read_all(ch, &mut out).expect("read_all");
    out
}

#[test]
fn blocking_round_trip_both_directions() {
    let (mut a, mut b, _w) = pair("rt", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    io::write_all(&mut a, b"ping").unwrap();
    assert_eq!(read_exact_bounded(&mut b, 4), b"ping");
    io::write_all(&mut b, b"pong!").unwrap();
    assert_eq!(read_exact_bounded(&mut a, 5), b"pong!");
}

#[test]
fn messages_are_chunked_to_the_slot_size() {
    let cfg = small();
    let (mut a, mut b, _w) = pair("chunk", &ModelConfig::default(), &cfg).unwrap();
    let data = pattern(10_000, 1);
    let reader = thread::spawn(move || {
        let got = read_exact_bounded(&mut b, 10_000);
        (got, b)
    });
    io::write_all(&mut a, &data).unwrap();
    let (got, _b) = reader.join().unwrap();
    assert_eq!(got, data);
    // 240 payload bytes per 256-byte slot.
    assert_eq!(a.stats().data_sent, 10_000u64.div_ceil(240));
}

#[test]
fn small_slices_are_coalesced_into_one_message() {
    let (mut a, mut b, w) =
        pair("coalesce", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    let parts: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let n = a.writev(&slices, &[], WriteFlags::empty()).unwrap();
    assert_eq!(n, 100);
    assert_eq!(a.stats().data_sent, 1);
    let got = read_exact_bounded(&mut b, 100);
    assert_eq!(got, parts.concat());
    assert_eq!(w.stats(Side::A).sends_posted, 1);
}

#[test]
fn vectored_read_fills_buffers_in_order() {
    let (mut a, mut b, _w) = pair("readv", &ModelConfig::default(), &small()).unwrap();
    io::write_all(&mut a, &pattern(600, 2)).unwrap();
    let (mut x, mut y) = ([0u8; 250], [0u8; 350]);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < 600 && Instant::now() < deadline {
        let mut bufs = [
            IoSliceMut::new(&mut x[got.min(250)..]),
            IoSliceMut::new(&mut y[got.saturating_sub(250)..]),
        ];
        got += b.readv(&mut bufs, None, ReadFlags::empty()).unwrap();
    }
    let p = pattern(600, 2);
    assert_eq!((&x[..], &y[..]), (&p[..250], &p[250..]));
}

#[test]
fn non_blocking_read_with_nothing_queued_would_block() {
    let (_a, mut b, _w) = pair("nb", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    b.set_blocking(false).unwrap();
    let mut buf = [0u8; 8];
    let r = b.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    assert!(matches!(r, Err(Error::WouldBlock)), "{r:?}");
}

#[test]
fn non_blocking_round_trip() {
    let (mut a, mut b, _w) = pair("nbrt", &ModelConfig::default(), &small()).unwrap();
    a.set_blocking(false).unwrap();
    b.set_blocking(false).unwrap();
    let data = pattern(50_000, 3);
    let (mut sent, mut got) = (0usize, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 700];
    while got.len() < data.len() {
        assert!(
            Instant::now() < deadline,
            "transfer stalled at {}",
            got.len()
        );
        if sent < data.len() {
            match a.writev(&[IoSlice::new(&data[sent..])], &[], WriteFlags::empty()) {
                Ok(n) => sent += n,
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        match b.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()) {
            Ok(0) => panic!("unexpected EOF"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => thread::yield_now(),
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(got, data);
}

#[test]
fn large_transfer_is_byte_identical() {
    const LEN: usize = 64 << 20;
    let (mut a, mut b, w) = pair("large", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    let data = pattern(LEN, 4);
    let expect = data.clone();
    let writer = thread::spawn(move || {
        io::write_all(&mut a, &data).unwrap();
        a.close().unwrap();
    });
    let mut got = Vec::with_capacity(LEN);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = b
            .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    writer.join().unwrap();
    assert_eq!(got.len(), LEN);
    assert!(got == expect, "64 MiB arrived altered");
    assert_eq!(w.stats(Side::A).rnr_errors, 0);
}

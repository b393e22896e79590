//! RDMA channel flow control over the verbs model: credit exhaustion with a
//! slow reader, a bounded send queue, completions out of order across
//! queues, and both directions at once with tiny rings.

use std::io::{IoSlice, IoSliceMut};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use transit_channel::rdma::model::{pair, ModelConfig, Side};
use transit_channel::rdma::{RdmaChannel, RdmaConfig};
use transit_channel::{io, Channel, Error, ReadFlags, WriteFlags};

const LIMIT: Duration = Duration::from_secs(60);

fn cfg(ring: u32, slot: u32, sends: u32) -> RdmaConfig {
    RdmaConfig {
        ring_depth: ring,
        slot_size: slot,
        send_depth: sends,
        ..RdmaConfig::default()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Write without blocking until the channel says WouldBlock; bytes taken.
fn fill(ch: &mut RdmaChannel, data: &[u8]) -> usize {
    let mut n = 0;
    while n < data.len() {
        match ch.writev(&[IoSlice::new(&data[n..])], &[], WriteFlags::empty()) {
            Ok(k) => n += k,
            Err(Error::WouldBlock) => return n,
            Err(e) => panic!("write: {e}"),
        }
    }
    n
}

/// Non-blocking read of whatever is there (nothing on WouldBlock).
fn read_some(ch: &mut RdmaChannel, got: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    ch.set_blocking(false).unwrap();
    match ch.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()) {
        Ok(0) => panic!("unexpected EOF"),
        Ok(n) => got.extend_from_slice(&buf[..n]),
        Err(Error::WouldBlock) => thread::yield_now(),
        Err(e) => panic!("read: {e}"),
    }
}

fn read_n(ch: &mut RdmaChannel, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    io::read_all(ch, &mut v).unwrap();
    v
}

#[test]
fn slow_reader_exhausts_credits_and_writer_would_block() {
    // 4 data credits of 256-byte slots: 4 DATA messages of 240 payload
    // bytes fit before the reader reads (CREDIT/CLOSE have their own
    // control window and take none of them).
    let (mut a, mut b, w) = pair("credits", &ModelConfig::default(), &cfg(4, 256, 8)).unwrap();
    a.set_blocking(false).unwrap();
    let data = pattern(10_000, 1);
    let taken = fill(&mut a, &data);
    assert_eq!(taken, 4 * 240);
    // Still nothing while the reader sleeps: no credit came back.
    assert!(matches!(
        a.writev(&[IoSlice::new(&data[taken..])], &[], WriteFlags::empty()),
        Err(Error::WouldBlock)
    ));
    assert!(a.stats().credit_stalls > 0);
    // Reading returns credits; the writer resumes where it stopped.
    assert_eq!(read_n(&mut b, taken), data[..taken]);
    let mut sent = taken;
    let mut got = data[..taken].to_vec();
    let deadline = Instant::now() + LIMIT;
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "stalled at {}", got.len());
        sent += fill(&mut a, &data[sent..]);
        read_some(&mut b, &mut got);
    }
    assert_eq!(got, data);
    // The ring was never overrun: no SEND ever lacked a posted RECV.
    assert_eq!(w.stats(Side::A).rnr_errors, 0);
    // 4 data slots + 2 control slots.
    assert!(w.stats(Side::B).max_recv_posted <= 6);
}

#[test]
fn blocking_writer_waits_for_credits_then_finishes() {
    let (mut a, mut b, _w) = pair("block", &ModelConfig::default(), &cfg(4, 256, 8)).unwrap();
    let data = pattern(20_000, 2);
    let expect = data.clone();
    let (done_tx, done_rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        io::write_all(&mut a, &data).unwrap();
        done_tx.send(()).unwrap();
        a
    });
    // 20 000 bytes cannot fit in 4 messages: the writer must be blocked.
    assert!(done_rx.recv_timeout(Duration::from_millis(300)).is_err());
    let got = read_n(&mut b, expect.len());
    done_rx.recv_timeout(LIMIT).expect("writer finished");
    let _a = writer.join().unwrap();
    assert_eq!(got, expect);
}

#[test]
fn full_send_queue_stops_writes_without_overrunning_it() {
    let model = ModelConfig {
        max_send_wr: 2,
        ..ModelConfig::default()
    };
    let (mut a, mut b, w) = pair("sq", &model, &cfg(32, 1024, 32)).unwrap();
    a.set_blocking(false).unwrap();
    w.pause();
    let data = pattern(100_000, 3);
    let taken = fill(&mut a, &data);
    // Plenty of credits, but the device queue takes two SENDs.
    assert_eq!(taken, 2 * (1024 - 16));
    assert!(a.stats().queue_stalls > 0);
    assert_eq!(w.stats(Side::A).max_send_outstanding, 2);
    w.resume();
    let mut sent = taken;
    let mut got = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "stalled at {}", got.len());
        sent += fill(&mut a, &data[sent..]);
        read_some(&mut b, &mut got);
    }
    assert_eq!(got, data);
    let st = w.stats(Side::A);
    assert_eq!(st.queue_full, 0, "the engine posted into a full queue");
    assert_eq!(st.max_send_outstanding, 2);
}

/// Reordered completions and RNR errors seen by the model.
struct Seen {
    reordered: u64,
    rnr: u64,
}

/// Both sides write and read at once, each on its own thread, in
/// non-blocking mode. True if both received the other's bytes intact.
fn both_directions(model: ModelConfig, rdma: RdmaConfig, len: usize) -> (Seen, bool) {
    let (a, b, w) = pair("duplex", &model, &rdma).unwrap();
    let (tx, rx) = mpsc::channel();
    for (mut ch, seed) in [(a, 10u8), (b, 20u8)] {
        let tx = tx.clone();
        thread::spawn(move || {
            let out = pattern(len, seed);
            ch.set_blocking(false).unwrap();
            let (mut sent, mut got) = (0, Vec::with_capacity(len));
            let deadline = Instant::now() + LIMIT;
            while (sent < len || got.len() < len) && Instant::now() < deadline {
                if sent < len {
                    sent += fill(&mut ch, &out[sent..]);
                }
                if got.len() < len {
                    read_some(&mut ch, &mut got);
                }
            }
            let _ = tx.send((seed, got));
            ch
        });
    }
    let mut ok = true;
    for _ in 0..2 {
        let (seed, got) = rx.recv_timeout(LIMIT).expect("transfer finished");
        let other = if seed == 10 { 20 } else { 10 };
        ok &= got.len() == len && got == pattern(len, other);
    }
    let (sa, sb) = (w.stats(Side::A), w.stats(Side::B));
    (
        Seen {
            reordered: sa.reordered + sb.reordered,
            rnr: sa.rnr_errors + sb.rnr_errors,
        },
        ok,
    )
}

#[test]
fn both_directions_at_once_with_one_slot_rings_do_not_deadlock() {
    // One data slot per direction, 48 payload bytes per message: every
    // message needs its credit back before the next can go.
    let (st, ok) = both_directions(ModelConfig::default(), cfg(1, 64, 2), 100_000);
    assert!(ok, "data altered");
    assert_eq!(st.rnr, 0);
}

#[test]
fn completions_out_of_order_across_queues_keep_the_stream_intact() {
    let model = ModelConfig {
        reorder_seed: Some(0x5eed),
        ..ModelConfig::default()
    };
    let (st, ok) = both_directions(model, cfg(8, 512, 8), 2 << 20);
    assert!(ok, "data altered");
    assert!(st.reordered > 0, "the model did not reorder anything");
    assert_eq!(st.rnr, 0);
}

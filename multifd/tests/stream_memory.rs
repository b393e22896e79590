//! Stream mode keeps memory bounded whatever the stream length: a counting
//! allocator watches the peak of live heap bytes while 48 MiB stream
//! through (generated and checked on the fly, never stored).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use common::*;
use transit_multifd::{Destination, Payload, RecvConfig, SendConfig, Sender};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(l.size(), SeqCst) + l.size();
        PEAK.fetch_max(live, SeqCst);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), SeqCst);
        // SAFETY: `p` came from `alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const LEN: u64 = 48 << 20;

fn byte_at(pos: u64) -> u8 {
    (pos.wrapping_mul(0x9e37_79b9) >> 7) as u8
}

struct Gen(u64);

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(LEN - self.0) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.0 + i as u64);
        }
        self.0 += n as u64;
        Ok(n)
    }
}

/// Checks every byte against `byte_at`; reports through statics (the
/// sink comes back as a `Box<dyn Write>`).
struct Check(u64);

static SEEN: AtomicU64 = AtomicU64::new(0);
static BAD: AtomicU64 = AtomicU64::new(0);

impl Write for Check {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let bad = b
            .iter()
            .enumerate()
            .filter(|&(i, &x)| x != byte_at(self.0 + i as u64))
            .count();
        BAD.fetch_add(bad as u64, SeqCst);
        self.0 += b.len() as u64;
        SEEN.store(self.0, SeqCst);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn peak_heap_stays_bounded_while_48_mib_stream_through() {
    let chunk = 256 * 1024;
    let (mut send, recv) = unix_pairs(3);
    let before = LIVE.load(SeqCst);
    PEAK.store(before, SeqCst);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Writer(Box::new(Check(0))),
    );
    let main = send.remove(0);
    let stats = bounded(120, move || {
        let config = SendConfig {
            packet_payload: chunk,
            ..SendConfig::default()
        };
        let mut tx = Sender::new(config, Payload::Stream, main, send).unwrap();
        tx.send_stream(&mut Gen(0)).unwrap();
        tx.finish().unwrap()
    });
    let got = rx.join().unwrap().unwrap();
    assert_eq!(stats.stream_len, LEN);
    // 2 page channels x 2 buffers on each side = 8 chunks = 2 MiB, plus
    // the 4 MiB (and one chunk) the receiver holds back until the stream
    // is verified; allow bookkeeping and thread stacks' heap parts, far
    // below the 48 MiB.
    let peak = PEAK.load(SeqCst) - before;
    assert!(peak < 9 << 20, "peak heap {peak} bytes");
    assert!(stats.peak_buffers <= 4 && got.stats.peak_buffers <= 4);
    // The sink saw every byte, in order.
    assert_eq!(got.stats.stream_len, LEN);
    assert_eq!(SEEN.load(SeqCst), LEN);
    assert_eq!(BAD.load(SeqCst), 0);
}

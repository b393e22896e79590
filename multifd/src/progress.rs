//! Live counters and final statistics of a session.
//!
//! [`Progress`] is shared (`Arc`) between the channel threads, which bump
//! relaxed atomic counters once per packet, and any observer (a progress
//! bar on another thread) that calls [`Progress::snapshot`]. When a session
//! ends, the same snapshot is returned as [`Stats`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// A thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`), from a starting
/// point: user plus system time the calling thread used since
/// [`ThreadCpu::start`]. Read it on the thread that started it.
///
/// ```
/// use std::hint::black_box;
/// let cpu = transit_multifd::progress::ThreadCpu::start();
/// let v: u64 = (0..1_000_000u64).map(black_box).sum();
/// assert!(v > 0 && cpu.elapsed_ns() > 0);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpu {
    start_ns: u64,
}

impl ThreadCpu {
    /// The calling thread's CPU time so far, as the starting point.
    pub fn start() -> ThreadCpu {
        ThreadCpu {
            start_ns: thread_cpu_ns(),
        }
    }

    /// Nanoseconds of CPU the calling thread used since the start.
    pub fn elapsed_ns(self) -> u64 {
        thread_cpu_ns().saturating_sub(self.start_ns)
    }

    /// Seconds of CPU the calling thread used since the start.
    pub fn seconds(self) -> f64 {
        self.elapsed_ns() as f64 / 1e9
    }
}

/// CPU time of the calling thread in nanoseconds (0 if the clock is
/// unavailable, which Linux never does for this clock).
fn thread_cpu_ns() -> u64 {
    // SAFETY: an all-zero timespec is a valid value to be overwritten.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid and writable; the clock id is a constant.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Counters of one page channel.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    bytes: AtomicU64,
    wire_bytes: AtomicU64,
    pages: AtomicU64,
    zero_pages: AtomicU64,
    packets: AtomicU64,
    busy_ns: AtomicU64,
    cpu_ns: AtomicU64,
}

impl ChannelCounters {
    pub(crate) fn packet(&self, pages: u64, zero: u64, payload: u64, wire: u64) {
        self.pages.fetch_add(pages, Relaxed);
        self.zero_pages.fetch_add(zero, Relaxed);
        self.bytes.fetch_add(payload, Relaxed);
        self.wire_bytes.fetch_add(wire, Relaxed);
        self.packets.fetch_add(1, Relaxed);
    }

    /// Take back what [`packet`](Self::packet) counted for a packet that
    /// goes again over a new connection (its wire bytes stay: they did
    /// cross the wire).
    pub(crate) fn unpacket(&self, pages: u64, zero: u64, payload: u64) {
        self.pages.fetch_sub(pages, Relaxed);
        self.zero_pages.fetch_sub(zero, Relaxed);
        self.bytes.fetch_sub(payload, Relaxed);
        self.packets.fetch_sub(1, Relaxed);
    }

    /// A job that began at `since` is done; `cpu` is the thread's clock,
    /// started when the thread began serving the channel.
    pub(crate) fn busy(&self, since: Instant, cpu: ThreadCpu) {
        self.busy_ns
            .fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
        self.cpu_ns.store(cpu.elapsed_ns(), Relaxed);
    }

    fn snapshot(&self, id: u32) -> ChannelStats {
        ChannelStats {
            id,
            bytes: self.bytes.load(Relaxed),
            wire_bytes: self.wire_bytes.load(Relaxed),
            pages: self.pages.load(Relaxed),
            zero_pages: self.zero_pages.load(Relaxed),
            packets: self.packets.load(Relaxed),
            busy_seconds: self.busy_ns.load(Relaxed) as f64 / 1e9,
            cpu_seconds: self.cpu_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// Live counters of a session, readable from any thread.
#[derive(Debug)]
pub struct Progress {
    started: Mutex<Instant>,
    channels: Box<[ChannelCounters]>,
    syncs: AtomicU64,
    peak_buffers: AtomicU64,
    zc_flushes: AtomicU64,
    zc_copied: AtomicU64,
    kept: AtomicU64,
    reconnects: AtomicU64,
}

impl Progress {
    pub(crate) fn new(channels: u32) -> Progress {
        Progress {
            started: Mutex::new(Instant::now()),
            channels: (0..channels).map(|_| ChannelCounters::default()).collect(),
            syncs: AtomicU64::new(0),
            peak_buffers: AtomicU64::new(0),
            zc_flushes: AtomicU64::new(0),
            zc_copied: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    /// Restart the clock (when the data phase begins).
    pub(crate) fn restart(&self) {
        *crate::session::lock(&self.started) = Instant::now();
    }

    pub(crate) fn channel(&self, id: u32) -> &ChannelCounters {
        &self.channels[id as usize]
    }

    pub(crate) fn sync_done(&self) {
        self.syncs.fetch_add(1, Relaxed);
    }

    /// One zero-copy flush of a page channel; `copied` if the transport
    /// reported that its zero-copy writes fell back to copying.
    /// Count `pages` a delta transfer kept (the receiver had them).
    pub(crate) fn kept(&self, pages: u64) {
        self.kept.fetch_add(pages, Relaxed);
    }

    /// Take back kept pages counted for a packet sent again.
    pub(crate) fn unkept(&self, pages: u64) {
        self.kept.fetch_sub(pages, Relaxed);
    }

    /// A page channel's connection was lost and replaced.
    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    pub(crate) fn zero_copy_flush(&self, copied: bool) {
        self.zc_flushes.fetch_add(1, Relaxed);
        if copied {
            self.zc_copied.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn buffers_in_use(&self, n: u64) {
        self.peak_buffers.fetch_max(n, Relaxed);
    }

    /// Payload bytes moved so far, all channels.
    pub fn bytes(&self) -> u64 {
        self.channels.iter().map(|c| c.bytes.load(Relaxed)).sum()
    }

    /// Counters now.
    pub fn snapshot(&self) -> Stats {
        let channels: Vec<ChannelStats> = self
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| c.snapshot(i as u32))
            .collect();
        Stats {
            bytes: channels.iter().map(|c| c.bytes).sum(),
            wire_bytes: channels.iter().map(|c| c.wire_bytes).sum(),
            pages: channels.iter().map(|c| c.pages).sum(),
            zero_pages: channels.iter().map(|c| c.zero_pages).sum(),
            packets: channels.iter().map(|c| c.packets).sum(),
            syncs: self.syncs.load(Relaxed),
            seconds: crate::session::lock(&self.started).elapsed().as_secs_f64(),
            digest: 0,
            stream_len: 0,
            peak_buffers: self.peak_buffers.load(Relaxed),
            zero_copy_flushes: self.zc_flushes.load(Relaxed),
            zero_copy_copied: self.zc_copied.load(Relaxed),
            kept_pages: self.kept.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            channels,
        }
    }
}

/// Statistics of one page channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    /// Channel id.
    pub id: u32,
    /// Payload bytes (page or chunk data).
    pub bytes: u64,
    /// Bytes on the wire (headers and entries included).
    pub wire_bytes: u64,
    /// Normal pages (stream: data chunks).
    pub pages: u64,
    /// Zero pages (stream: zero chunks).
    pub zero_pages: u64,
    /// Packets, SYNC and END included.
    pub packets: u64,
    /// Seconds the channel's thread spent working on packets (scan, hash,
    /// I/O), as opposed to waiting for work.
    pub busy_seconds: f64,
    /// CPU time (user and system) of the channel's thread, up to its last
    /// finished packet: what moving this channel's bytes cost, waiting
    /// excluded. On a loopback socket the kernel's protocol work done on
    /// the thread's behalf is included.
    pub cpu_seconds: f64,
}

/// Statistics of a session (live with [`Progress::snapshot`], final from
/// `Sender::finish` / `Receiver::run`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Payload bytes, all channels.
    pub bytes: u64,
    /// Bytes on the page channels' wire.
    pub wire_bytes: u64,
    /// Normal pages.
    pub pages: u64,
    /// Zero pages.
    pub zero_pages: u64,
    /// Packets.
    pub packets: u64,
    /// Completed sync barriers.
    pub syncs: u64,
    /// Seconds since the session's data phase started.
    pub seconds: f64,
    /// Session digest (0 without verification or before the end).
    pub digest: u64,
    /// Stream length (stream mode) or image size.
    pub stream_len: u64,
    /// Stream mode: most chunk buffers in use at once on this side (the
    /// pool is bounded; this shows how much of it was needed). On the
    /// receiver, the chunks its writer holds back until the verdict (up
    /// to 4 MiB and one chunk) are not counted.
    pub peak_buffers: u64,
    /// Zero-copy sessions (sender): flushes of page channels, one per
    /// channel before every SYNC and END and on `Sender::image_mut`.
    pub zero_copy_flushes: u64,
    /// Of those, the flushes whose transport reported that its zero-copy
    /// writes fell back to copying ([`FlushOutcome::Copied`], always the
    /// case for `MSG_ZEROCOPY` over loopback); QEMU's
    /// `dirty-sync-missed-zero-copy`.
    ///
    /// [`FlushOutcome::Copied`]: transit_channel::FlushOutcome::Copied
    pub zero_copy_copied: u64,
    /// Pages a delta transfer did not send because the receiver's older
    /// copy had them ([`crate::delta`]); neither in `pages` nor in
    /// `zero_pages`.
    pub kept_pages: u64,
    /// Page channel connections lost and replaced during the session
    /// (see `SendConfig::reconnect`); the packets they had not delivered
    /// were sent again and are counted once.
    pub reconnects: u64,
    /// Per channel.
    pub channels: Vec<ChannelStats>,
}

impl Stats {
    /// Payload throughput in bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds
        } else {
            0.0
        }
    }
}

//! transit-multifd: parallel page streams of RAM-like images and byte
//! streams over any [`Channel`](transit_channel::Channel).
//!
//! A session is one *main* channel plus N *page* channels, each any
//! `Box<dyn Channel>` (TCP, UNIX, TLS, websocket, ...): the caller connects
//! or accepts them and hands them over. The [`Sender`] runs one thread per
//! page channel (`multifd-send-<i>`); a producer walks the image and hands
//! batches of page offsets round-robin to idle channels (double-buffered,
//! no copy); each worker finds zero pages, folds the digest while the page
//! is in cache, and writes header + pages with one `writev` straight from
//! the image. The [`Receiver`] classifies connections by their first bytes
//! in any arrival order, then runs one thread per channel (`multifd-recv-<i>`)
//! that `readv`s pages straight into a memory destination (or reads them
//! into a small buffer and `pwrite`s them to a file destination), skips
//! zero pages of a fresh destination, and meets the others at SYNC
//! barriers. A mapped file's holes travel as ranges, never read. At the
//! end the receiver compares totals and digest, checks that every page was
//! covered, puts the output in place ([`Receiver::run_with`]) and only then
//! answers with a verdict.
//!
//! Modules: [`wire`] (the format, slice-based decoders), [`image`]
//! (sources and destinations), [`output`] (what an output path means;
//! files that appear only when complete), [`zero`], [`digest`],
//! [`progress`] (live counters, final [`Stats`]), [`error`].
//!
//! Zero copy ([`SendConfig::zero_copy`], off by default like QEMU's
//! `zero-copy-send`): the sender registers the image once with every page
//! channel through the generic
//! [`Channel::register_region`](transit_channel::Channel::register_region)
//! (an RDMA channel registers it with the device; a socket with
//! `MSG_ZEROCOPY` needs nothing), writes each packet header with a normal
//! copy and the pages with
//! [`WriteFlags::ZERO_COPY`](transit_channel::WriteFlags::ZERO_COPY), and
//! flushes every page channel before each SYNC and END and before
//! [`Sender::image_mut`] hands the image out, so pages may change between
//! passes. A page channel without
//! [`Features::WRITE_ZERO_COPY`](transit_channel::Features::WRITE_ZERO_COPY)
//! fails the session at setup; [`Stats::zero_copy_copied`] counts flushes
//! whose writes fell back to copying (always so over loopback TCP). On the
//! in-process RDMA model the tests prove every page payload byte is gathered
//! from the registered image; that a real NIC reads it without a copy, and
//! what it gains, needs hardware.
//!
//! Idle timeout ([`SendConfig::idle_timeout`], [`RecvConfig::idle_timeout`],
//! default 60 s): one watchdog thread per session watches per-channel
//! progress and fails the session with [`Error::Timeout`], naming the
//! channel and the stage, through the same path as any failure (every
//! channel is shut down, the peer is told), so it works on every
//! transport. A channel in the middle of a packet (received or sent) is
//! idle on its own clock; a channel waiting for the peer's *next* packet
//! or record is idle only when no channel of the session moved for the
//! limit (a pass may leave a channel without packets, and the main
//! channel sees nothing between syncs). Never idle: waiting at a barrier
//! for the other channels, for a slow sink or for the sender's source
//! (sender side), and the sender's wait for the verdict, during which the
//! receiver's work (verify, fsync, rename) is local; a receiver that dies
//! then closes the connection, and TCP keep-alive catches a vanished
//! host. What stays unbounded by design: a receiver process stopped
//! (SIGSTOP) exactly between the End record and its verdict, which needs
//! a keep-alive record (a protocol version bump). On the receiver, a
//! stream source that produces nothing for the limit looks like a stalled
//! sender: raise the limit for such sources.
//!
//! Lost page channels ([`rejoin`], [`SendConfig::reconnect`],
//! [`RecvConfig::reconnect_wait`], off by default): a page channel whose
//! connection fails (or stalls past the idle timeout: the watchdog then
//! cuts it instead of failing the session) gets a new connection from the
//! caller's [`Reconnect`] function; the receiver, handed it through a
//! [`Rejoin`] handle, says which packet it applied last, and the sender
//! sends the rest again from what it kept (every packet until the
//! receiver acknowledged it, on the page channel). The main channel's loss
//! still ends the session.
//!
//! Other modules: [`rate`] (the bandwidth cap), [`compress`] (zstd per
//! packet), [`delta`] (sending only what the receiver lacks), [`undo`]
//! (the journal that makes an in-place delta crash-safe).
//!
//! Limits: images must fit in the address space (`usize`); the source must
//! not change during a pass (between passes it may, through
//! [`Sender::image_mut`]).
//!
//! # Example
//!
//! ```
//! use transit_multifd::image::{Content, ImageSpec, SourceImage};
//! use transit_multifd::{Destination, Payload, RecvConfig, Receiver, SendConfig, Sender};
//! use transit_channel::{Channel, SocketChannel};
//!
//! let spec = ImageSpec { size: 1 << 20, page_size: 4096, zero_ratio: 0.5, seed: 7, content: Content::Random };
//! let source = SourceImage::generate(&spec)?;
//! let expected = source.as_slice().to_vec();
//!
//! // Two page channels plus the main one, over UNIX socket pairs.
//! let mut send_side: Vec<Box<dyn Channel>> = Vec::new();
//! let mut recv_side: Vec<Box<dyn Channel>> = Vec::new();
//! for _ in 0..3 {
//!     let (a, b) = SocketChannel::pair()?;
//!     send_side.push(Box::new(a));
//!     recv_side.push(Box::new(b));
//! }
//! let receiver = std::thread::spawn(move || {
//!     let mut rx = Receiver::new(RecvConfig::default(), Destination::Memory { prefault: true });
//!     for ch in recv_side.into_iter().rev() {
//!         rx.accept_channel(ch)?; // any order
//!     }
//!     rx.run()
//! });
//! let main = send_side.remove(0);
//! let mut tx = Sender::new(SendConfig::default(), Payload::Image(source), main, send_side)?;
//! tx.send_all()?;
//! let sent = tx.finish()?;
//! let got = receiver.join().unwrap()?;
//! assert_eq!(got.image.unwrap().as_slice(), &expected[..]);
//! assert_eq!(sent.zero_pages, spec.zero_pages());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checksum;
pub mod compress;
pub mod copy;
pub mod delta;
pub mod digest;
pub mod dirty;
pub mod error;
mod fill;
pub mod image;
pub mod incoming;
pub mod output;
pub mod progress;
pub mod rate;
pub mod raw;
mod receiver;
pub mod rejoin;
pub mod room;
mod sender;
pub mod serve;
mod session;
pub mod undo;
mod watchdog;
pub mod wire;
pub mod zero;

pub use error::{ChannelId, Error, Result, Stage};
pub use image::{Content, DestImage, ImageSpec, SourceImage};
pub use progress::{ChannelStats, Progress, Stats};
pub use receiver::{null_peer, Accepted, Decider, Destination, Receiver, RecvConfig, RecvOutcome};
pub use rejoin::{Reconnect, Rejoin};
pub use sender::{give_up, Payload, SendConfig, Sender};
pub use session::AbortHandle;
pub use wire::{Compression, SessionHeader, Totals};

/// Fill `buf` from the kernel's random source (for session uuids and
/// temporary names); falls back to time and address entropy if the call
/// fails.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    let filled = match transit_channel::random::fill(buf) {
        Ok(()) => buf.len(),
        Err(_) => 0,
    };
    if filled < buf.len() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut x = t ^ (buf.as_ptr() as u64) ^ u64::from(std::process::id());
        for b in &mut buf[filled..] {
            x = x
                .wrapping_mul(0x5851_f42d_4c95_7f2d)
                .wrapping_add(0x1405_7b7e_f767_814f);
            *b = (x >> 56) as u8;
        }
    }
}

/// A new random session uuid (version 4 layout).
pub fn new_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    random_bytes(&mut u);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

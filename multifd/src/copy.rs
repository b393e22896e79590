//! Plain byte copies: one channel of bytes with no protocol (`transit
//! send/recv --raw`, `file:`), with the pieces a demanding copy needs: a
//! rate cap, holes for zero runs in a file, and an idle timeout that only
//! counts waits on the peer.
//!
//! A copy reads from a source ([`copy_image`]: a mapped or generated
//! image, whose all-zero pieces are handed over as such; [`copy_reader`]:
//! any reader; [`copy_from_channel`]: a channel, to its end of file) into a
//! [`Sink`] ([`ChannelSink`], [`FileSink`], [`WriteSink`]) in
//! [`COPY_BUF`] pieces, counting bytes into an `AtomicU64` that a progress
//! display and the [`IdleWatch`] read. Errors are typed ([`CopyError`]):
//! which side failed and the underlying error (a channel error keeps its
//! cause, e.g. a command's exit status).
//!
//! For a raw copy meeting a peer that speaks the framed protocol, see
//! [`crate::raw`].
//!
//! ```
//! use std::sync::atomic::AtomicU64;
//! use transit_multifd::copy::{copy_reader, WriteSink};
//!
//! let mut out = WriteSink(Vec::new());
//! let count = AtomicU64::new(0);
//! let n = copy_reader(&mut &b"hello"[..], "input", &mut out, &count)?;
//! assert_eq!((n, out.0.as_slice()), (5, &b"hello"[..]));
//! # Ok::<(), transit_multifd::copy::CopyError>(())
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use transit_channel::{io as chio, Channel, Shutdown, ShutdownHandle};

use crate::rate::{packet_limit, RateLimit};
use crate::SourceImage;

/// Buffer size of plain copies (loopback TCP wants ~1 MiB writes).
pub const COPY_BUF: usize = 1 << 20;

/// Why a plain copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Writing into the channel failed.
    #[error("send: {0}")]
    Send(transit_channel::Error),
    /// Reading from the channel failed.
    #[error("receive: {0}")]
    Receive(transit_channel::Error),
    /// Reading the source failed.
    #[error("read {what}: {source}")]
    Read {
        /// The source's name.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Writing the destination failed.
    #[error("write {what}: {source}")]
    Write {
        /// The destination's name.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// Where plain bytes go.
pub trait Sink {
    /// Write all of `buf`.
    fn put(&mut self, buf: &[u8]) -> Result<(), CopyError>;
    /// `buf` is all zeros: a sink that can leave a hole skips it.
    fn put_zeros(&mut self, buf: &[u8]) -> Result<(), CopyError> {
        self.put(buf)
    }
    /// Everything is written: flush, and make it durable where the sink
    /// can.
    fn done(&mut self) -> Result<(), CopyError> {
        Ok(())
    }
}

/// A channel as a sink; its writes are what the idle watch times.
pub struct ChannelSink<'a> {
    ch: &'a mut dyn Channel,
    idle: &'a IdleWatch,
    exited: Option<std::process::ExitStatus>,
    limit: Option<(RateLimit, usize)>,
}

impl<'a> ChannelSink<'a> {
    /// Write into `ch`, timed by `idle`.
    pub fn new(ch: &'a mut dyn Channel, idle: &'a IdleWatch) -> ChannelSink<'a> {
        ChannelSink {
            ch,
            idle,
            exited: None,
            limit: None,
        }
    }

    /// Cap the rate at `bytes_per_second`, in pieces of 25 ms worth of it
    /// so the flow stays even.
    pub fn with_limit(mut self, bytes_per_second: Option<u64>) -> ChannelSink<'a> {
        self.limit = bytes_per_second.map(|r| {
            let piece = packet_limit(COPY_BUF as u32, 512, r) as usize;
            (RateLimit::new(r), piece)
        });
        self
    }

    /// The exit status of a command whose end failed a write (the error
    /// says so already).
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.exited
    }
}

impl Sink for ChannelSink<'_> {
    fn put(&mut self, buf: &[u8]) -> Result<(), CopyError> {
        let piece = self.limit.as_ref().map_or(buf.len().max(1), |(_, p)| *p);
        for part in buf.chunks(piece) {
            if let Some((limit, _)) = &self.limit {
                limit.take(part.len() as u64, || false);
            }
            self.idle.waiting(true);
            let r = chio::write_all(self.ch, part).map_err(|e| {
                self.exited = e.exit_status();
                CopyError::Send(e)
            });
            self.idle.waiting(false);
            r?;
        }
        Ok(())
    }
}

/// A file as a sink, written at increasing offsets; zero runs become
/// holes (the length is set at the end with [`FileSink::finish`]).
pub struct FileSink {
    /// The file.
    pub file: File,
    /// Bytes so far (holes included).
    pub len: u64,
    /// What to call it in errors.
    pub name: String,
}

impl FileSink {
    /// Set the final length (a trailing hole).
    pub fn finish(&mut self) -> Result<(), CopyError> {
        self.file.set_len(self.len).map_err(|e| self.write_error(e))
    }

    fn write_error(&self, source: io::Error) -> CopyError {
        CopyError::Write {
            what: self.name.clone(),
            source,
        }
    }
}

impl Sink for FileSink {
    fn put(&mut self, buf: &[u8]) -> Result<(), CopyError> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(buf, self.len)
            .map_err(|e| self.write_error(e))?;
        self.len += buf.len() as u64;
        Ok(())
    }

    fn put_zeros(&mut self, buf: &[u8]) -> Result<(), CopyError> {
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Sets the final length (a trailing hole is part of the file).
    fn done(&mut self) -> Result<(), CopyError> {
        self.finish()
    }
}

/// Any writer (stdout, a device) as a sink.
pub struct WriteSink<W: Write>(pub W);

impl<W: Write> Sink for WriteSink<W> {
    fn put(&mut self, buf: &[u8]) -> Result<(), CopyError> {
        self.0.write_all(buf).map_err(|source| CopyError::Write {
            what: "output".into(),
            source,
        })
    }

    fn done(&mut self) -> Result<(), CopyError> {
        self.0.flush().map_err(|source| CopyError::Write {
            what: "output".into(),
            source,
        })
    }
}

/// Copy `image` into `sink` in [`COPY_BUF`] pieces, counting into `count`;
/// pieces that are all zero go through [`Sink::put_zeros`].
pub fn copy_image(
    image: &SourceImage,
    sink: &mut dyn Sink,
    count: &AtomicU64,
) -> Result<u64, CopyError> {
    for piece in image.as_slice().chunks(COPY_BUF) {
        if crate::zero::is_zero(piece) {
            sink.put_zeros(piece)?;
        } else {
            sink.put(piece)?;
        }
        count.fetch_add(piece.len() as u64, Ordering::Relaxed);
    }
    Ok(image.len() as u64)
}

/// Copy `reader` (called `name` in errors) to its end into `sink`,
/// counting into `count`.
pub fn copy_reader(
    reader: &mut dyn Read,
    name: &str,
    sink: &mut dyn Sink,
    count: &AtomicU64,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(CopyError::Read {
                    what: name.to_owned(),
                    source,
                })
            }
        };
        sink.put(&buf[..n])?;
        total += n as u64;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Read `ch` to end of file into `sink`, counting into `count`; the reads
/// are what `idle` times.
pub fn copy_from_channel(
    ch: &mut dyn Channel,
    sink: &mut dyn Sink,
    count: &AtomicU64,
    idle: &IdleWatch,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        idle.waiting(true);
        let read = ch.readv(
            &mut [io::IoSliceMut::new(&mut buf)],
            None,
            transit_channel::ReadFlags::empty(),
        );
        idle.waiting(false);
        let n = read.map_err(CopyError::Receive)?;
        if n == 0 {
            return Ok(total);
        }
        sink.put(&buf[..n])?;
        total += n as u64;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
struct Inner {
    waiting: AtomicBool,
    fired: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The idle timeout of a plain copy: the copy marks when it waits on the
/// channel ([`IdleWatch::waiting`]); only those waits count, so a slow
/// source on the sender (stdin) or a slow disk on the receiver is not the
/// peer's idling. When the byte counter has not moved for the whole limit
/// while the copy waits on the channel, the watch shuts the channel down
/// (the blocked read or write returns) and [`IdleWatch::fired`] says why
/// the copy failed. (A multifd session has its own idle timeout, in the
/// session.)
///
/// A running idle watch (or none: [`IdleWatch::off`]). Dropping it stops
/// the watch.
pub struct IdleWatch {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl IdleWatch {
    /// No watch: never fires.
    pub fn off() -> IdleWatch {
        IdleWatch {
            inner: Arc::new(Inner {
                waiting: AtomicBool::new(false),
                fired: AtomicBool::new(false),
                stop: Mutex::new(false),
                wake: Condvar::new(),
            }),
            thread: None,
        }
    }

    /// Watch `count` (bytes moved so far): after `limit` without progress
    /// while the copy waits on the channel, shut the channel down through
    /// `handle`. `None` limit or handle: [`off`](Self::off).
    pub fn start(
        limit: Option<Duration>,
        count: Arc<AtomicU64>,
        handle: Option<ShutdownHandle>,
    ) -> IdleWatch {
        let mut w = IdleWatch::off();
        let (Some(limit), Some(handle)) = (limit, handle) else {
            return w;
        };
        let inner = w.inner.clone();
        let tick = (limit / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
        w.thread = std::thread::Builder::new()
            .name("raw-idle".into())
            .spawn(move || {
                let mut last = count.load(Ordering::Relaxed);
                let mut since = Instant::now();
                let mut stop = inner.stop.lock().unwrap_or_else(|e| e.into_inner());
                while !*stop {
                    let now = count.load(Ordering::Relaxed);
                    if now != last || !inner.waiting.load(Ordering::Acquire) {
                        last = now;
                        since = Instant::now();
                    } else if since.elapsed() >= limit {
                        inner.fired.store(true, Ordering::Release);
                        let _ = handle.shutdown(Shutdown::Both);
                        return;
                    }
                    stop = inner
                        .wake
                        .wait_timeout(stop, tick)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })
            .ok();
        w
    }

    /// The copy starts (`true`) or stops (`false`) waiting on the channel.
    pub fn waiting(&self, on: bool) {
        self.inner.waiting.store(on, Ordering::Release);
    }

    /// True if the watch shut the channel down.
    pub fn fired(&self) -> bool {
        self.inner.fired.load(Ordering::Acquire)
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        *self.inner.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transit_channel::Channel;

    #[test]
    fn fires_only_while_waiting_without_progress() {
        let (a, _b) = transit_channel::SocketChannel::pair().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let limit = Some(Duration::from_millis(150));
        let w = IdleWatch::start(limit, count.clone(), a.shutdown_handle().ok());
        // Not waiting on the channel: a slow source is not idle.
        std::thread::sleep(Duration::from_millis(400));
        assert!(!w.fired());
        // Waiting, with progress every 50 ms: not idle.
        w.waiting(true);
        for _ in 0..8 {
            count.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!w.fired());
        // Waiting, no progress: fires within the limit and a few ticks.
        let t = Instant::now();
        while !w.fired() {
            assert!(t.elapsed() < Duration::from_secs(5), "did not fire");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(IdleWatch::off().thread.is_none());
    }
}
#[cfg(test)]
mod sink_tests {
    use super::*;

    #[test]
    fn a_file_sink_leaves_zero_pieces_as_holes() {
        let dir = std::env::temp_dir().join(format!("transit-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        // The last piece is zeros: only the file's length holds it.
        let mut image = vec![0u8; 4 * COPY_BUF];
        image[COPY_BUF * 2 + 5] = 7;
        let img = SourceImage::from_vec(image.clone());
        let mut sink = FileSink {
            file: File::create(&path).unwrap(),
            len: 0,
            name: "out".into(),
        };
        let count = AtomicU64::new(0);
        assert_eq!(
            copy_image(&img, &mut sink, &count).unwrap(),
            image.len() as u64
        );
        // done() sets the length (it did not: the file ended short).
        sink.done().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), image);
        use std::os::unix::fs::MetadataExt;
        // Three of the four pieces were never written.
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 <= 2 * COPY_BUF as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The sending side of a session: [`Sender`].
//!
//! Threads: the caller's thread is the producer (it walks the image or
//! reads the stream source and writes main-channel records); one thread per
//! page channel (`multifd-send-<i>`) does blocking I/O. Each worker has a
//! one-job slot: while it sends one batch the producer fills its slot with
//! the next (double buffering). Batches are vectors of page offsets taken
//! from a fixed pool, so nothing is allocated per page or packet.
//!
//! Errors: a failing worker records the first error, shuts down every page
//! channel (so the others wake) and wakes the producer; the producer then
//! waits up to a second for the receiver's error record on the main
//! channel (the reason is usually there), tells the receiver its own
//! reason, joins every thread and returns the error.

mod worker;

use worker::{Job, RawImage, Shared, State, Worker};

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use transit_channel::{io as chio, Channel, Condition, Features};

use crate::digest::Digest;
use crate::error::{ChannelId, Ctx, Error, Result, Stage};
use crate::image::SourceImage;
use crate::progress::{Progress, Stats};
use crate::session::{self, lock, read_record, write_record, AbortHandle, Failure, REASON_WAIT};
use crate::watchdog::{Activities, Wait, Watchdog};
use crate::wire::{
    self, Compression, InitPacket, Layout, Record, SessionHeader, Totals, VerdictStatus,
    PACKET_HEADER_LEN,
};

/// Parameters of a sending session.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Session uuid; a random one when `None`.
    pub uuid: Option<[u8; 16]>,
    /// Page size: a power of two in `512..=65536` (default 4096).
    pub page_size: u32,
    /// Payload bytes per packet (default 512 KiB): a multiple of the page
    /// size for images, the chunk size for streams.
    pub packet_payload: u32,
    /// Fold and compare a digest of every page (default on).
    pub verify: bool,
    /// Payload compression (only `None` exists).
    pub compression: Compression,
    /// How long to wait for the receiver to accept the session (default
    /// 30 s; `None` waits forever).
    pub handshake_timeout: Option<Duration>,
    /// Send page payloads without a copy (default off, like QEMU's
    /// `zero-copy-send` capability). Image sessions only. Every page
    /// channel must have [`Features::WRITE_ZERO_COPY`], or [`Sender::new`]
    /// fails before the handshake naming the channel; the image is
    /// registered once with each page channel
    /// ([`Channel::register_region`]), packet headers go with a normal
    /// copy, pages with [`WriteFlags::ZERO_COPY`](transit_channel::WriteFlags::ZERO_COPY),
    /// and every page channel is flushed before each SYNC and END (and in
    /// [`Sender::image_mut`]), so the image may change between passes.
    /// [`Stats::zero_copy_copied`] counts flushes whose writes fell back
    /// to copying.
    pub zero_copy: bool,
    /// Fail the session with [`Error::Timeout`] (naming the channel and
    /// the stage) when a page channel makes no progress writing a packet
    /// for this long: a receiver that stopped reading (default 60 s;
    /// `None` or zero: no limit). Waiting for the stream source or for
    /// the receiver's verdict is not idle: after the End record the
    /// receiver's work (verify, fsync, rename) is local, and a receiver
    /// that dies closes the connection or, on TCP, misses keep-alive
    /// probes. See "Idle timeout" in the [crate docs](crate).
    pub idle_timeout: Option<Duration>,
    /// Cap the session's rate at this many bytes per second (packet
    /// headers included), one budget shared by every page channel (see
    /// [`crate::rate`]); packets are cut to 25 ms worth of the rate so the
    /// flow stays even. `None` (default): no cap.
    pub max_bandwidth: Option<u64>,
    /// Compress data packets with zstd, always or where it is faster
    /// ([`Compress`](crate::compress::Compress); default off). The session
    /// header then announces [`Compression::Zstd`]; the receiver needs no
    /// setting. Not with [`zero_copy`](Self::zero_copy).
    pub compress: crate::compress::Compress,
    /// Survive the loss of a page channel's connection: open a new one
    /// with this and send again what the receiver had not applied (see
    /// [`crate::rejoin`]; the receiver needs
    /// [`RecvConfig::reconnect_wait`](crate::RecvConfig::reconnect_wait)).
    /// Each worker then keeps its packets until acknowledged, and asks for
    /// acknowledgements on the page channel (wire version 5). `None`
    /// (default): a lost channel fails the session.
    pub reconnect: Option<crate::rejoin::Reconnect>,
}

impl Default for SendConfig {
    fn default() -> SendConfig {
        SendConfig {
            uuid: None,
            page_size: wire::DEFAULT_PAGE_SIZE,
            packet_payload: wire::DEFAULT_PACKET_PAYLOAD,
            verify: true,
            compression: Compression::None,
            handshake_timeout: Some(Duration::from_secs(30)),
            zero_copy: false,
            idle_timeout: Some(Duration::from_secs(60)),
            max_bandwidth: None,
            compress: crate::compress::Compress::Off,
            reconnect: None,
        }
    }
}

/// What a sender sends.
#[derive(Debug)]
pub enum Payload {
    /// A RAM-like image, sent in passes with [`Sender::send_all`] and
    /// [`Sender::send_pass`].
    Image(SourceImage),
    /// A byte stream read from a [`Read`] with [`Sender::send_stream`].
    Stream,
}

/// The sending side of a multifd session.
///
/// Create it with the connected channels ([`Sender::new`] runs the
/// handshake), send with [`send_all`](Sender::send_all) /
/// [`send_pass`](Sender::send_pass) (images) or
/// [`send_stream`](Sender::send_stream), then [`finish`](Sender::finish)
/// to get the receiver's verdict and the statistics. Dropping a sender
/// that did not finish aborts the session.
pub struct Sender {
    session: SessionHeader,
    main: Box<dyn Channel>,
    main_ctx: Ctx,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    threads: Vec<JoinHandle<Digest>>,
    raw: Option<RawImage>,
    batch: Vec<u64>,
    /// Hole ranges queued for one HOLES packet: (offset, length) pairs,
    /// flattened.
    /// Delta transfer: the chunks the receiver already has.
    keep: Option<Arc<crate::delta::Keep>>,
    /// Ranges of kept pages for the next KEEP packet.
    kept: Vec<u64>,
    holes: Vec<u64>,
    next_channel: usize,
    epoch: u32,
    stream_len: u64,
    dead: Option<String>,
    done: bool,
    zero_copy: bool,
    activity: Arc<Activities>,
    watchdog: Option<Watchdog>,
    // Declared last: dropped after the threads are joined in `Drop`.
    image: Option<SourceImage>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("session", &self.session)
            .field("dead", &self.dead)
            .finish()
    }
}

/// The bytes of `image` that may hold data, in whole pages of
/// `page_size`: the pages of a file's data extents, or the whole image.
fn data_bytes(image: &SourceImage, page_size: u32) -> u64 {
    let ps = u64::from(page_size.max(1));
    let size = image.len() as u64;
    let Some(extents) = image.data_extents() else {
        return size.next_multiple_of(ps);
    };
    let mut pages = 0u64;
    let mut next = 0u64;
    for &(start, end) in extents {
        let (first, last) = ((start / ps).max(next), end.min(size).div_ceil(ps));
        pages += last.saturating_sub(first);
        next = next.max(last);
    }
    pages * ps
}

impl Sender {
    /// Start a session: send the session header on `main` and an init
    /// packet on each of `pages` (channel id = index), wait for the
    /// receiver's accept record, then start one thread per page channel.
    ///
    /// Channels are switched to blocking mode and renamed
    /// `multifd-main <name>` / `multifd-send-<i> <name>`.
    ///
    /// With [`SendConfig::zero_copy`], a page channel without
    /// [`Features::WRITE_ZERO_COPY`] fails the session here, before
    /// anything is sent.
    pub fn new(
        config: SendConfig,
        payload: Payload,
        mut main: Box<dyn Channel>,
        pages: Vec<Box<dyn Channel>>,
    ) -> Result<Sender> {
        let (layout, mut image) = match payload {
            Payload::Image(img) => (
                Layout::Image {
                    size: img.len() as u64,
                },
                Some(img),
            ),
            Payload::Stream => (Layout::Stream, None),
        };
        // Declared after `image`, so on every early return the page
        // channels (which may hold the image registered) are dropped, and
        // thereby closed, before the image.
        let mut pages = pages;
        if config.zero_copy && config.compress.is_on() {
            return Err(Error::Config(
                "zero_copy sends pages from the image as they are: it cannot compress them".into(),
            ));
        }
        if config.zero_copy && image.is_none() {
            return Err(Error::Config(
                "zero_copy needs an image session (stream chunks come from reused buffers)".into(),
            ));
        }
        let session = SessionHeader {
            version: wire::VERSION,
            uuid: config.uuid.unwrap_or_else(crate::new_uuid),
            page_size: config.page_size,
            channels: u32::try_from(pages.len()).unwrap_or(u32::MAX),
            layout,
            compression: if config.compress.is_on() {
                Compression::Zstd
            } else {
                config.compression
            },
            verify: config.verify,
            packet_payload: match config.max_bandwidth {
                // A slow cap gets small packets, evenly spaced.
                Some(rate) => crate::rate::packet_limit(
                    config.packet_payload,
                    match layout {
                        Layout::Image { .. } => config.page_size,
                        Layout::Stream => wire::MIN_PACKET_PAYLOAD,
                    },
                    rate,
                ),
                None => config.packet_payload,
            },
            data_bytes: image
                .as_ref()
                .map_or(0, |i| data_bytes(i, config.page_size)),
        };
        session
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let n = pages.len();

        let failure = Arc::new(Failure::default());
        let main_ctx = Ctx::new(ChannelId::Main, session::peer_of(&*main));
        let name = format!("multifd-main {}", main.name());
        main.set_name(name);
        main.set_blocking(true)
            .map_err(|e| main_ctx.io(Stage::Handshake, e))?;
        if let Ok(h) = main.shutdown_handle() {
            failure.set_main_handle(h);
        }
        let mut ctxs = Vec::with_capacity(n);
        for (i, ch) in pages.iter_mut().enumerate() {
            let ctx = Ctx::new(ChannelId::Page(i as u32), session::peer_of(&**ch));
            let name = format!("multifd-send-{i} {}", ch.name());
            ch.set_name(name);
            ch.set_blocking(true)
                .map_err(|e| ctx.io(Stage::Handshake, e))?;
            if config.zero_copy && !ch.has_feature(Features::WRITE_ZERO_COPY) {
                return Err(ctx.io(
                    Stage::Handshake,
                    transit_channel::Error::unsupported(
                        ch.name(),
                        "zero-copy write (SendConfig::zero_copy needs it on every page channel)",
                    ),
                ));
            }
            if let Ok(h) = ch.shutdown_handle() {
                failure.add_page_handle(h);
            }
            ctxs.push(ctx);
        }

        let raw = image.as_mut().map(|img| {
            let len = img.len();
            let base = match img.as_mut_slice() {
                Some(s) => s.as_mut_ptr(),
                None => img.as_slice().as_ptr().cast_mut(),
            };
            RawImage { base, len }
        });
        if let (true, Some(r)) = (config.zero_copy, raw) {
            for (ch, ctx) in pages.iter_mut().zip(&ctxs) {
                // SAFETY: the image stays allocated until every page
                // channel is closed: here `pages` is dropped before `image`
                // on every early return; later each worker owns its channel
                // and drops it when its thread ends, and the Sender joins
                // every worker before its `image` field is dropped (a
                // leaked Sender leaks both). The image changes only through
                // `image_mut`, which first flushes every page channel, so
                // no zero-copy write from it is pending.
                let registered = unsafe { ch.register_region(r.slice(0, r.len)) };
                match registered {
                    // No registration needed (or possible): the zero-copy
                    // writes go as they can, and the flushes say whether
                    // they copied.
                    Ok(()) | Err(transit_channel::Error::Unsupported { .. }) => {}
                    Err(e) => return Err(ctx.io(Stage::Handshake, e)),
                }
            }
        }

        // Handshake: header, init packets, then the receiver's answer (and
        // a delta's Have record).
        let keep = handshake(
            &config,
            &session,
            &mut main,
            &mut pages,
            &main_ctx,
            &ctxs,
            image.as_ref(),
        )?;

        let cap = session.pages_per_packet() as usize;
        let (free_batches, free_chunks) = pools(&session, n, config.reconnect.is_some());
        let chunk_pool = free_chunks.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots: (0..n).map(|_| None).collect(),
                busy: vec![false; n],
                free_batches,
                free_chunks,
                chunk_pool,
            }),
            work: (0..n).map(|_| Condvar::new()).collect(),
            idle: Condvar::new(),
            failure: failure.clone(),
        });
        failure.add_waker(shared.clone());
        let progress = Arc::new(Progress::new(session.channels));

        let packet_num = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let activity = Activities::new(n);
        let mut watched = ctxs.clone();
        watched.push(main_ctx.clone());
        let cuts =
            crate::rejoin::Cuts::new(pages.iter().map(|c| c.shutdown_handle().ok()).collect());
        // With reconnection, a page channel stalled mid-packet is cut and
        // replaced instead of failing the session.
        let on_stall: Option<crate::watchdog::OnStall> = config.reconnect.as_ref().map(|_| {
            let cuts = cuts.clone();
            Arc::new(move |i: usize, e: Error| cuts.cut(i, e)) as crate::watchdog::OnStall
        });
        let watchdog = Watchdog::start(
            config.idle_timeout,
            activity.clone(),
            watched,
            failure.clone(),
            on_stall,
        );
        let limit = config
            .max_bandwidth
            .map(|r| Arc::new(crate::rate::RateLimit::new(r)));
        let keep = keep.map(Arc::new);
        let mut threads = Vec::with_capacity(n);
        for (i, (ch, ctx)) in pages.into_iter().zip(ctxs).enumerate() {
            let worker = Worker {
                id: i,
                ch,
                ctx,
                session,
                shared: shared.clone(),
                progress: progress.clone(),
                raw,
                release: !config.zero_copy && image.as_ref().is_some_and(|i| i.is_mapped_file()),
                zero_copy: config.zero_copy,
                packet_num: packet_num.clone(),
                epoch: 0,
                digest: Digest::default(),
                hdr: Vec::with_capacity(PACKET_HEADER_LEN + cap * session.entry_len()),
                normal: Vec::with_capacity(cap),
                zero: Vec::with_capacity(cap),
                iov: Vec::with_capacity(cap + 1),
                activity: activity.clone(),
                limit: limit.clone(),
                packer: crate::compress::Packer::new(config.compress),
                keep: keep.clone(),
                reconnect: config.reconnect.clone(),
                held: std::collections::VecDeque::new(),
                pending_ack: None,
                since_ack: 0,
                ack_bytes: crate::rejoin::ack_bytes(&session),
                lost_since: None,
                unacked_reconnects: 0,
                freed: Vec::new(),
                cuts: cuts.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("multifd-send-{i}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    failure.fail(Error::data("spawn a sender thread", e), true);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(failure.take_error());
                }
            }
        }

        Ok(Sender {
            session,
            main,
            main_ctx,
            shared,
            progress,
            threads,
            raw,
            batch: Vec::with_capacity(cap),
            holes: Vec::with_capacity(2 * cap),
            keep,
            kept: Vec::with_capacity(2 * cap),
            next_channel: 0,
            epoch: 0,
            stream_len: 0,
            dead: None,
            done: false,
            zero_copy: config.zero_copy,
            activity,
            watchdog,
            image,
        })
    }

    /// The session header that was sent.
    pub fn session(&self) -> &SessionHeader {
        &self.session
    }

    /// Live counters, readable from any thread.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// A handle that aborts the session from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            failure: self.shared.failure.clone(),
        }
    }

    /// The source image (image mode).
    pub fn image(&self) -> Option<&[u8]> {
        // SAFETY: shared reads of the image, concurrent only with the
        // workers' shared reads; bounds are the image's own.
        self.raw.map(|r| unsafe { r.slice(0, r.len) })
    }

    /// The source image, writable, to change pages between passes. Waits
    /// until every worker is idle (no worker reads the image while the
    /// borrow lives). Fails for read-only images (a mapped file, static
    /// bytes) and in stream mode.
    pub fn image_mut(&mut self) -> Result<&mut [u8]> {
        self.check_alive()?;
        let writable = self.image.as_ref().is_some_and(|i| i.is_writable());
        let Some(r) = self.raw.filter(|_| writable) else {
            return Err(Error::Config(
                "the source image is read-only or this is a stream session".into(),
            ));
        };
        self.flush_batch()?;
        if self.zero_copy {
            // Zero-copy writes may still read the pages: wait for them.
            for i in 0..self.threads.len() {
                self.dispatch_to(i, Job::Flush)?;
            }
        }
        self.drain()?;
        // SAFETY: the pointer came from `as_mut_slice` of a writable image;
        // every worker is idle and cannot take a job while `&mut self` is
        // borrowed, and in zero-copy mode every page channel was flushed,
        // so this is the only access.
        Ok(unsafe { std::slice::from_raw_parts_mut(r.base, r.len) })
    }

    /// Send every page of the image, then a sync barrier (pass 1). The
    /// holes of a mapped file ([`SourceImage::data_extents`]) go as ranges
    /// of zero pages, never read.
    pub fn send_all(&mut self) -> Result<()> {
        let pages = self.session.page_count();
        let extents = self
            .image
            .as_ref()
            .and_then(|i| i.data_extents())
            .map(<[_]>::to_vec);
        match (extents, self.keep.is_some()) {
            (Some(ext), _) => self.send_sparse(&ext),
            (None, true) => self.send_sparse(&[(0, self.session.image_size())]),
            (None, false) => self.send_pass(0..pages),
        }
    }

    /// One pass over a file with holes: the pages of its data extents
    /// (zero pages among them found by scanning, as always), and the
    /// pages between them as hole ranges.
    fn send_sparse(&mut self, extents: &[(u64, u64)]) -> Result<()> {
        self.check_alive()?;
        let ps = u64::from(self.session.page_size);
        let size = self.session.image_size();
        let pages = self.session.page_count();
        let cap = self.session.pages_per_packet() as usize;
        let mut next = 0u64;
        for &(start, end) in extents {
            let (first, last) = (start / ps, end.min(size).div_ceil(ps));
            if first > next {
                self.queue_hole(next * ps, (first - next) * ps)?;
            }
            for idx in first.max(next)..last {
                let off = idx * ps;
                if self.keep.as_ref().is_some_and(|k| k.has(off)) {
                    self.queue_kept(off, (size - off).min(ps))?;
                    continue;
                }
                self.batch.push(off);
                if self.batch.len() == cap {
                    self.flush_batch()?;
                }
            }
            next = next.max(last);
        }
        if next < pages {
            self.queue_hole(next * ps, size - next * ps)?;
        }
        self.flush_kept()?;
        // Delta applies to the first pass only: later passes send pages.
        self.keep = None;
        self.sync()
    }

    /// Add a page the receiver keeps to the next KEEP packet (adjacent
    /// pages merge into one range).
    fn queue_kept(&mut self, offset: u64, len: u64) -> Result<()> {
        // Ranges of at most 4 MiB: the receiver copies each from its older
        // copy, and many ranges spread that over the channels.
        let n = self.kept.len();
        if n >= 2 && self.kept[n - 2] + self.kept[n - 1] == offset && self.kept[n - 1] < 4 << 20 {
            self.kept[n - 1] += len;
            return Ok(());
        }
        if self.kept.len() / 2 == self.session.pages_per_packet() as usize {
            self.flush_kept()?;
        }
        self.kept.extend_from_slice(&[offset, len]);
        Ok(())
    }

    /// Hand the queued kept ranges to an idle worker.
    fn flush_kept(&mut self) -> Result<()> {
        let full = take_ranges(&mut self.kept);
        full.map_or(Ok(()), |r| self.dispatch(Job::Keep(r)))
    }

    /// Queue a range of zero pages for the next HOLES packet.
    fn queue_hole(&mut self, offset: u64, len: u64) -> Result<()> {
        self.holes.extend_from_slice(&[offset, len]);
        if self.holes.len() / 2 == self.session.pages_per_packet() as usize {
            self.flush_holes()?;
        }
        Ok(())
    }

    /// Hand the queued hole ranges to an idle worker.
    fn flush_holes(&mut self) -> Result<()> {
        let full = take_ranges(&mut self.holes);
        full.map_or(Ok(()), |r| self.dispatch(Job::Holes(r)))
    }

    /// Send the pages with the given indices (strictly increasing, each
    /// below the page count), then a sync barrier: one pass of a live
    /// migration. Pages sent in an earlier pass are overwritten at the
    /// receiver, zero pages included. An invalid index ends the pass early
    /// (the pages before it are sent and synced) with an error.
    pub fn send_pass<I: IntoIterator<Item = u64>>(&mut self, pages: I) -> Result<()> {
        self.check_alive()?;
        if !matches!(self.session.layout, Layout::Image { .. }) {
            return Err(Error::Config("send_pass needs an image session".into()));
        }
        let count = self.session.page_count();
        let cap = self.session.pages_per_packet() as usize;
        let ps = u64::from(self.session.page_size);
        let mut prev: Option<u64> = None;
        for idx in pages {
            if idx >= count || prev.is_some_and(|p| idx <= p) {
                // Close the epoch so the pages already queued stay valid
                // and a retry may send them again.
                self.sync()?;
                return Err(Error::Config(format!(
                    "page index {idx} after {prev:?}: indices must increase strictly and stay below {count}"
                )));
            }
            prev = Some(idx);
            self.batch.push(idx * ps);
            if self.batch.len() == cap {
                self.flush_batch()?;
            }
        }
        self.sync()
    }

    /// Barrier: every page queued so far is applied at the receiver
    /// before any page queued later. Sends SYNC on every page channel and a
    /// sync record on the main channel, and waits until every worker has
    /// written its SYNC.
    pub fn sync(&mut self) -> Result<()> {
        self.check_alive()?;
        self.flush_batch()?;
        let epoch = self.epoch;
        for i in 0..self.threads.len() {
            self.dispatch_to(i, Job::Sync)?;
        }
        if let Err(e) = self.write_main(&Record::Sync { epoch }, Stage::Sync) {
            return Err(self.fail(e));
        }
        self.drain()?;
        self.epoch += 1;
        self.progress.sync_done();
        Ok(())
    }

    /// Stream mode: send everything `src` yields until end of file, as
    /// chunks of the packet payload size with their offsets; memory stays
    /// bounded by a pool of two chunk buffers per channel. May be called
    /// again to append. Returns the stream length so far.
    pub fn send_stream(&mut self, src: &mut dyn Read) -> Result<u64> {
        self.check_alive()?;
        if self.session.layout != Layout::Stream {
            return Err(Error::Config("send_stream needs a stream session".into()));
        }
        loop {
            let mut buf = self.take_chunk_buffer()?;
            let mut n = 0;
            while n < buf.len() {
                match src.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.return_chunk_buffer(buf);
                        return Err(self.fail(Error::data("read the stream source", e)));
                    }
                }
            }
            if n == 0 {
                self.return_chunk_buffer(buf);
                return Ok(self.stream_len);
            }
            let full = n == buf.len();
            let offset = self.stream_len;
            self.stream_len += n as u64;
            self.dispatch(Job::Chunk {
                buf,
                offset,
                len: n,
            })?;
            if !full {
                return Ok(self.stream_len);
            }
        }
    }

    /// End the session: send END on every page channel, join the workers,
    /// send the end record with the totals and digest, and wait for the
    /// receiver's verdict. Returns the statistics, or the error (a digest
    /// or totals mismatch fails both sides).
    pub fn finish(mut self) -> Result<Stats> {
        self.check_alive()?;
        self.flush_batch()?;
        for i in 0..self.threads.len() {
            self.dispatch_to(i, Job::End)?;
        }
        let mut digest = Digest::default();
        let mut panicked = false;
        for t in std::mem::take(&mut self.threads) {
            match t.join() {
                Ok(d) => digest.merge(d),
                Err(_) => panicked = true,
            }
        }
        if panicked {
            self.shared
                .failure
                .fail(Error::Aborted("a sender thread panicked".into()), false);
        }
        if self.shared.failure.is_failed() {
            return Err(self.fail_now());
        }
        let mut stats = self.progress.snapshot();
        let totals = Totals {
            pages: stats.pages,
            zero_pages: stats.zero_pages,
            bytes: stats.bytes,
            packets: stats.packets,
            stream_len: match self.session.layout {
                Layout::Image { size } => size,
                Layout::Stream => self.stream_len,
            },
            digest: if self.session.verify { digest.0 } else { 0 },
        };
        let ctx = self.main_ctx.clone();
        if let Err(e) = self.write_main(&Record::End(totals), Stage::End) {
            return Err(self.fail(e));
        }
        // Waiting for the verdict is not idle (see `SendConfig::idle_timeout`).
        self.watchdog.take();
        let verdict = read_record(&mut self.main, None, None, &ctx, Stage::End);
        let result = match verdict {
            Ok(Some(Record::Verdict { status, totals: r })) => {
                if status == VerdictStatus::Ok && r == totals {
                    Ok(())
                } else {
                    Err(Error::Mismatch {
                        sender: totals,
                        receiver: r,
                    })
                }
            }
            Ok(Some(Record::Error { code, message })) => Err(ctx.remote(Stage::End, code, message)),
            Ok(Some(_)) => Err(ctx.proto(
                Stage::End,
                wire::WireError::Unexpected("record instead of the verdict"),
            )),
            Ok(None) => Err(ctx.io(
                Stage::End,
                transit_channel::Error::UnexpectedEof {
                    channel: self.main.name().to_owned(),
                    op: "wait for the verdict",
                    expected: wire::RECORD_HEADER_LEN,
                    missing: wire::RECORD_HEADER_LEN,
                },
            )),
            Err(e) => Err(e),
        };
        self.done = true;
        if result.is_ok() {
            // Best effort: the receiver may already have closed.
            let _ = self.main.bye();
        }
        let _ = self.main.close();
        result?;
        stats.digest = totals.digest;
        stats.stream_len = totals.stream_len;
        Ok(stats)
    }

    /// Write a record on the main channel, watched by the idle timeout.
    fn write_main(&mut self, rec: &Record, stage: Stage) -> Result<()> {
        let a = self.activity.main();
        a.set(Wait::Mid(stage));
        let r = write_record(&mut self.main, rec, &self.main_ctx, stage);
        a.tick();
        a.set(Wait::Off);
        r
    }

    fn check_alive(&self) -> Result<()> {
        match &self.dead {
            Some(msg) => Err(Error::Aborted(format!("the session already failed: {msg}"))),
            // A failure not yet reported is reported by the next wait.
            None => Ok(()),
        }
    }

    /// Hand the producer's batch to an idle worker.
    fn flush_batch(&mut self) -> Result<()> {
        self.flush_holes()?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let spare = {
            let mut st = lock(&self.shared.state);
            st.free_batches.pop()
        };
        let spare = spare.unwrap_or_else(|| Vec::with_capacity(self.batch.capacity()));
        let full = std::mem::replace(&mut self.batch, spare);
        self.dispatch(Job::Pages(full))
    }

    /// Give `job` to the next worker with an empty slot (round robin).
    fn dispatch(&mut self, job: Job) -> Result<()> {
        let n = self.threads.len();
        let shared = self.shared.clone();
        let mut st = lock(&shared.state);
        loop {
            if shared.failure.is_failed() {
                drop(st);
                return Err(self.fail_now());
            }
            if let Some(i) = (0..n)
                .map(|k| (self.next_channel + k) % n)
                .find(|&i| st.slots[i].is_none())
            {
                st.slots[i] = Some(job);
                shared.work[i].notify_one();
                self.next_channel = (i + 1) % n;
                return Ok(());
            }
            st = shared.idle.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Give `job` to worker `i` once its slot is empty.
    fn dispatch_to(&mut self, i: usize, job: Job) -> Result<()> {
        let shared = self.shared.clone();
        let mut st = lock(&shared.state);
        loop {
            if shared.failure.is_failed() {
                drop(st);
                return Err(self.fail_now());
            }
            if st.slots[i].is_none() {
                st.slots[i] = Some(job);
                shared.work[i].notify_one();
                return Ok(());
            }
            st = shared.idle.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Wait until every worker is idle with an empty slot.
    fn drain(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let mut st = lock(&shared.state);
        loop {
            if shared.failure.is_failed() {
                drop(st);
                return Err(self.fail_now());
            }
            if st.slots.iter().all(Option::is_none) && st.busy.iter().all(|b| !b) {
                return Ok(());
            }
            st = shared.idle.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn take_chunk_buffer(&mut self) -> Result<Vec<u8>> {
        let shared = self.shared.clone();
        let mut st = lock(&shared.state);
        loop {
            if shared.failure.is_failed() {
                drop(st);
                return Err(self.fail_now());
            }
            if let Some(b) = st.free_chunks.pop() {
                let in_use = (st.chunk_pool - st.free_chunks.len()) as u64;
                self.progress.buffers_in_use(in_use);
                return Ok(b);
            }
            st = shared.idle.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn return_chunk_buffer(&self, b: Vec<u8>) {
        lock(&self.shared.state).free_chunks.push(b);
    }

    /// Record `e` as the session's error (if first) and run the failure
    /// path.
    fn fail(&mut self, e: Error) -> Error {
        self.shared.failure.fail(e, false);
        self.fail_now()
    }

    /// The failure path: learn the receiver's reason if it sent one, tell
    /// it ours, shut everything down, join every thread.
    fn fail_now(&mut self) -> Error {
        let failure = self.shared.failure.clone();
        // The receiver usually explains before it closes.
        let mut remote = None;
        let (stage, channel_error) = failure.first_stage().unwrap_or((Stage::End, false));
        if channel_error
            && chio::wait_blocking(&self.main.watch_source(), Condition::IN, Some(REASON_WAIT))
                .is_ok_and(|c| !c.is_empty())
        {
            let ctx = self.main_ctx.clone();
            if let Ok(Some(Record::Error { code, message })) = read_record(
                &mut self.main,
                session::deadline(Some(REASON_WAIT)),
                Some(REASON_WAIT),
                &ctx,
                Stage::End,
            ) {
                remote = Some(ctx.remote(stage, code, message));
            }
        }
        session::send_error_record(&mut self.main, &failure);
        failure.shutdown_main();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        let local = failure.take_error();
        let err = match (remote, &local) {
            // A local abort stays an abort.
            (_, Error::Aborted(_)) | (None, _) => local,
            (Some(r), _) => r,
        };
        self.dead = Some(err.to_string());
        self.done = true;
        err
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if !self.threads.is_empty() || !self.done {
            if !self.done {
                // Explain first, then close: the receiver reads the reason
                // before it sees the page channels go.
                let e = Error::Aborted("the sender was dropped".into());
                let rec = Record::Error {
                    code: wire::ErrorCode::Aborted,
                    message: e.to_string(),
                };
                let _ = chio::write_all(&mut self.main, &rec.to_bytes());
                self.shared.failure.fail(e, true);
                self.shared.failure.shutdown_main();
            }
            for t in std::mem::take(&mut self.threads) {
                let _ = t.join();
            }
        }
    }
}

/// Say why a sender gives up on channels that carried nothing yet (a
/// connect or a handshake failed before their first bytes): a peer that
/// took one of them (a `--raw` receiver reading plain bytes) then fails
/// naming it, instead of taking their end for an empty transfer. An Error
/// record "the sender gave up: `why`", best effort, never blocking.
pub fn give_up(chans: &mut [Box<dyn Channel>], why: &dyn std::fmt::Display) {
    let rec = Record::Error {
        code: wire::ErrorCode::Aborted,
        message: format!("the sender gave up: {why}"),
    }
    .to_bytes();
    for ch in chans {
        let _ = ch.set_blocking(false);
        let _ = chio::write_all(ch, &rec);
    }
}

/// The handshake: the session header and the init packets out, the
/// receiver's accept in, and after an accept with `have` its Have record,
/// compared with the image: what the receiver already has (delta).
fn handshake(
    config: &SendConfig,
    session: &SessionHeader,
    main: &mut Box<dyn Channel>,
    pages: &mut [Box<dyn Channel>],
    main_ctx: &Ctx,
    ctxs: &[Ctx],
    image: Option<&SourceImage>,
) -> Result<Option<crate::delta::Keep>> {
    if let Err(e) = chio::write_all(main, &session.encode()) {
        let e = main_ctx.io(Stage::Handshake, e);
        give_up(pages, &e);
        return Err(e);
    }
    for (i, ch) in pages.iter_mut().enumerate() {
        let init = InitPacket {
            version: wire::VERSION,
            uuid: session.uuid,
            channel_id: i as u32,
            rejoin: false,
        };
        if let Err(e) = chio::write_all(ch, &init.encode()) {
            // The receiver may have refused the session and closed
            // everything: its reason is on the main channel.
            let reason = read_record(
                main,
                session::deadline(Some(REASON_WAIT)),
                Some(REASON_WAIT),
                main_ctx,
                Stage::Handshake,
            );
            let e = match reason {
                Ok(Some(Record::Error { code, message })) => {
                    main_ctx.remote(Stage::Handshake, code, message)
                }
                _ => ctxs[i].io(Stage::Handshake, e),
            };
            give_up(&mut pages[i + 1..], &e);
            return Err(e);
        }
    }
    let deadline = session::deadline(config.handshake_timeout);
    let have = match read_record(
        main,
        deadline,
        config.handshake_timeout,
        main_ctx,
        Stage::Handshake,
    )? {
        Some(Record::Accept { channels, have }) if channels == session.channels => have,
        Some(Record::Accept { channels, .. }) => {
            return Err(main_ctx.proto(
                Stage::Handshake,
                wire::WireError::ChannelCountMismatch {
                    found: session.channels,
                    expected: channels,
                },
            ))
        }
        Some(Record::Error { code, message }) => {
            return Err(main_ctx.remote(Stage::Handshake, code, message))
        }
        Some(_) => {
            return Err(main_ctx.proto(
                Stage::Handshake,
                wire::WireError::Unexpected("record instead of the accept record"),
            ))
        }
        None => {
            return Err(main_ctx.io(
                Stage::Handshake,
                transit_channel::Error::UnexpectedEof {
                    channel: main.name().to_owned(),
                    op: "wait for the accept record",
                    expected: wire::RECORD_HEADER_LEN,
                    missing: wire::RECORD_HEADER_LEN,
                },
            ))
        }
    };
    // Delta: the receiver holds an older copy and says which chunks it
    // has; those go as KEEP ranges.
    let keep = match (have, image) {
        (false, _) => None,
        (true, None) => {
            return Err(main_ctx.proto(
                Stage::Handshake,
                wire::WireError::Unexpected("a have record in a stream session"),
            ))
        }
        (true, Some(img)) => {
            match read_record(
                main,
                deadline,
                config.handshake_timeout,
                main_ctx,
                Stage::Handshake,
            )? {
                Some(Record::Have { chunk_size, hashes })
                    if chunk_size >= session.page_size
                        && chunk_size.is_multiple_of(session.page_size) =>
                {
                    Some(crate::delta::Keep::compare(
                        img.as_slice(),
                        img.data_extents(),
                        chunk_size,
                        hashes,
                    ))
                }
                Some(Record::Error { code, message }) => {
                    return Err(main_ctx.remote(Stage::Handshake, code, message))
                }
                _ => {
                    return Err(main_ctx.proto(
                        Stage::Handshake,
                        wire::WireError::Unexpected("no valid have record after the accept"),
                    ))
                }
            }
        }
    };
    Ok(keep)
}

/// The producer's buffers for `n` workers: 2 page batches per worker plus
/// spares (image mode), or 2 chunk buffers per worker (stream mode), and
/// with reconnection the chunks a worker may hold until acknowledged
/// ([`crate::rejoin::stream_held`]; page batches held are replaced by new
/// ones as needed).
fn pools(session: &SessionHeader, n: usize, held: bool) -> (Vec<Vec<u64>>, Vec<Vec<u8>>) {
    let per = 2 + if held {
        crate::rejoin::stream_held(session)
    } else {
        0
    };
    let cap = session.pages_per_packet() as usize;
    match session.layout {
        Layout::Image { .. } => (
            (0..2 * n + 2).map(|_| Vec::with_capacity(cap)).collect(),
            Vec::new(),
        ),
        Layout::Stream => (
            Vec::new(),
            (0..per * n)
                .map(|_| vec![0u8; session.packet_payload as usize])
                .collect(),
        ),
    }
}

/// The queued ranges, if any, leaving an empty queue of the same capacity.
fn take_ranges(queue: &mut Vec<u64>) -> Option<Vec<u64>> {
    if queue.is_empty() {
        return None;
    }
    let spare = Vec::with_capacity(queue.capacity());
    Some(std::mem::replace(queue, spare))
}

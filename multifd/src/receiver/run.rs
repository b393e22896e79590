//! A running receive session: the channel threads ([`Reader`]), the SYNC
//! [`Barrier`], the shared destination image with its page bitmaps, and the
//! main thread's record loop ([`Run`]).

use std::io::IoSliceMut;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use std::os::fd::{AsRawFd, RawFd};

use transit_channel::{io as chio, Channel};

use super::stream::{write_stream, Chunk, StreamEnd, StreamShared, StreamState};
use super::{Conn, RecvOutcome, Target};
use crate::digest::{page_hash, zero_hash, Digest};
use crate::error::{Ctx, Error, Result, Stage};
use crate::fill::Filler;
use crate::image::{pwrite_all, zero_file_range, DestImage};
use crate::progress::{Progress, ThreadCpu};
use crate::rejoin::{Cuts, Rejoins};
use crate::session::{self, lock, read_record, write_record, Failure, Wake};
use crate::undo::{Change, Journal};
use crate::watchdog::{Activities, Wait, Watchdog};
use crate::wire::{
    self, Layout, PacketFlags, PacketHeader, Record, SessionHeader, Totals, VerdictStatus,
    WireError, PACKET_HEADER_LEN, STREAM_ENTRY_LEN,
};

/// The destination image shared by the channel threads, with the
/// per-epoch claim bitmap, the "received data before" bitmap and the
/// coverage bitmap (pages claimed in any epoch so far: sent or declared
/// zero at least once).
struct ImageShared {
    image: DestImage,
    base: *mut u8,
    /// The file of a file destination (pages are written with `pwrite`);
    /// `None` for memory.
    file: Option<RawFd>,
    /// An in-place update's undo journal: what a write or a zeroing is
    /// about to change is saved there first.
    undo: Option<Arc<Journal>>,
    /// Pages holding data now (their written bit is set), and the most the
    /// sender announced (`SessionHeader::data_bytes`).
    data_pages: AtomicU64,
    data_limit: u64,
    /// Taken around each `pwrite` to a file destination (see
    /// `recv_pages_to_file`).
    writing: Mutex<()>,
    pages: u64,
    claimed: Box<[AtomicU64]>,
    written: Box<[AtomicU64]>,
    covered: Box<[AtomicU64]>,
    /// Fresh memory placed with `UFFDIO_COPY` (no clear, no fault a
    /// page); dropped, which makes the range plain memory again, before
    /// the image is handed back.
    filler: Option<Filler>,
}

// SAFETY: `base` points into `image`, owned by this value. Threads write
// disjoint pages: a page is claimed (atomically) before any access in an
// epoch, and epochs are ordered by the barrier's mutex.
unsafe impl Send for ImageShared {}
// SAFETY: as above.
unsafe impl Sync for ImageShared {}

impl ImageShared {
    fn new(mut image: DestImage, session: &SessionHeader) -> ImageShared {
        let pages = session.page_count();
        let words = pages.div_ceil(64) as usize;
        let fill = if image.is_fresh() { 0 } else { u64::MAX };
        // Pages that may hold data at once, as the sender announced (a
        // caller's image that held data before is not counted).
        let data_limit = if image.is_fresh() {
            session.data_bytes.div_ceil(u64::from(session.page_size))
        } else {
            u64::MAX
        };
        let untouched = image.is_untouched_memory()
            && (session.page_size as usize).is_multiple_of(crate::fill::page_size());
        image.mark_used();
        let base = image.ptr();
        let filler = if untouched {
            Filler::register(base, image.len())
        } else {
            None
        };
        let file = image.file().map(|f| f.as_raw_fd());
        let undo = image.undo().cloned();
        ImageShared {
            image,
            base,
            file,
            undo,
            // A caller's image that held data before has every written
            // bit set: count them, so zero pages and holes over them
            // balance.
            data_pages: AtomicU64::new(if fill == 0 { 0 } else { pages }),
            data_limit,
            writing: Mutex::new(()),
            pages,
            claimed: (0..words).map(|_| AtomicU64::new(0)).collect(),
            written: (0..words).map(|_| AtomicU64::new(fill)).collect(),
            covered: (0..words).map(|_| AtomicU64::new(0)).collect(),
            filler,
        }
    }

    /// Place `src` at `off` of a memory destination whose pages are
    /// filled ([`Filler`]), else copy it there.
    ///
    /// # Safety
    /// The range is inside the image and claimed by the caller this epoch.
    unsafe fn place(&self, off: u64, src: &[u8]) -> std::io::Result<()> {
        match &self.filler {
            // SAFETY: page offsets are page-aligned (checked when the
            // filler was made) and the caller's alone.
            Some(f) => unsafe { f.fill(self.base.add(off as usize), src) },
            None => {
                // SAFETY: forwarded from the caller.
                unsafe { self.slice_mut(off, src.len()) }.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Claim page `idx` for this epoch; false if it was claimed already.
    fn claim(&self, idx: u64) -> bool {
        let bit = 1u64 << (idx % 64);
        self.claimed[(idx / 64) as usize].fetch_or(bit, Relaxed) & bit == 0
    }

    /// Give back a claim of this epoch (a packet cut short by a lost
    /// connection: it comes again over the new one).
    fn unclaim(&self, idx: u64) {
        let bit = 1u64 << (idx % 64);
        self.claimed[(idx / 64) as usize].fetch_and(!bit, Relaxed);
    }

    /// Close an epoch: fold its claims into the coverage and clear them.
    /// Runs while no channel thread touches the claims (at a barrier, or
    /// after every thread ended), so the hot path pays nothing for
    /// coverage.
    fn close_epoch(&self) {
        for (c, w) in self.covered.iter().zip(self.claimed.iter()) {
            c.fetch_or(w.swap(0, Relaxed), Relaxed);
        }
    }

    /// Pages sent or declared zero at least once (call after
    /// [`close_epoch`](Self::close_epoch)).
    fn covered_pages(&self) -> u64 {
        let all: u64 = self
            .covered
            .iter()
            .map(|w| u64::from(w.load(Relaxed).count_ones()))
            .sum();
        all.min(self.pages)
    }

    /// Set the written bit of each page of `pages`; false if more pages
    /// now hold data than the sender announced.
    fn set_written(&self, pages: impl Iterator<Item = u64>) -> bool {
        let mut new = 0;
        for idx in pages {
            let bit = 1u64 << (idx % 64);
            new += u64::from(self.written[(idx / 64) as usize].fetch_or(bit, Relaxed) & bit == 0);
        }
        new == 0 || self.data_pages.fetch_add(new, Relaxed) + new <= self.data_limit
    }

    /// True if page `idx` holds data (its written bit is set).
    fn is_written(&self, idx: u64) -> bool {
        let bit = 1u64 << (idx % 64);
        self.written[(idx / 64) as usize].load(Relaxed) & bit != 0
    }

    /// Clear the written bit; true if it was set.
    fn take_written(&self, idx: u64) -> bool {
        let bit = 1u64 << (idx % 64);
        let was = self.written[(idx / 64) as usize].fetch_and(!bit, Relaxed) & bit != 0;
        if was {
            self.data_pages.fetch_sub(1, Relaxed);
        }
        was
    }

    /// Claim pages `first..first + count` for this epoch, a word at a time;
    /// false if any of them was claimed already.
    fn claim_range(&self, first: u64, count: u64) -> bool {
        let mut fresh = true;
        for_words(first, count, |w, mask| {
            fresh &= self.claimed[w].fetch_or(mask, Relaxed) & mask == 0;
        });
        fresh
    }

    /// Clear the written bits of pages `first..first + count`; call `f`
    /// with each page whose bit was set (it received data before).
    fn take_written_range(&self, first: u64, count: u64, mut f: impl FnMut(u64)) {
        for_words(first, count, |w, mask| {
            let mut was = self.written[w].fetch_and(!mask, Relaxed) & mask;
            self.data_pages
                .fetch_sub(u64::from(was.count_ones()), Relaxed);
            while was != 0 {
                f(w as u64 * 64 + u64::from(was.trailing_zeros()));
                was &= was - 1;
            }
        });
    }

    /// Zero `len` bytes at `off` of the destination (a page that held
    /// data before): in memory, or by punching a hole in the file (zeros
    /// written where the file system cannot punch).
    fn zero(&self, off: u64, len: usize) -> std::io::Result<()> {
        match self.file {
            // Filled memory: the pages are dropped (present or not, they
            // read as zero once the filler is gone), never touched.
            None if self.filler.is_some() => {
                let os_page = crate::fill::page_size();
                let end = (off as usize + len).div_ceil(os_page) * os_page;
                // SAFETY: page-aligned pages of our own private anonymous
                // mapping, claimed by the caller this epoch.
                let r = unsafe {
                    libc::madvise(
                        self.base.add(off as usize).cast(),
                        end - off as usize,
                        libc::MADV_DONTNEED,
                    )
                };
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // SAFETY: the caller claimed the page this epoch.
            None => unsafe { self.slice_mut(off, len) }.fill(0),
            Some(fd) => zero_file_range(fd, off, len as u64)?,
        }
        Ok(())
    }

    /// Zero the runs `(offset, length)` of the destination (claimed by the
    /// caller this epoch), saving what they hold in the undo journal
    /// first (one append and sync for them all).
    fn zero_runs(&self, runs: &[(u64, u64)]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        if let Some(u) = &self.undo {
            u.save(runs, Change::Zero)
                .map_err(|e| undo_failed(u, runs[0].0, e))?;
        }
        for &(o, l) in runs {
            self.zero(o, l as usize)
                .map_err(|e| Error::data(format!("zero the destination at offset {o}"), e))?;
        }
        Ok(())
    }

    /// # Safety
    /// The range is inside the image and claimed by the caller this epoch.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut<'a>(&self, off: u64, len: usize) -> &'a mut [u8] {
        // SAFETY: the caller guarantees bounds and exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off as usize), len) }
    }
}

/// Call `f(word, mask)` for each bitmap word that pages
/// `first..first + count` touch.
fn for_words(first: u64, count: u64, mut f: impl FnMut(usize, u64)) {
    let end = first + count;
    let mut i = first;
    while i < end {
        let bit = i % 64;
        let n = (64 - bit).min(end - i);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << bit
        };
        f((i / 64) as usize, mask);
        i += n;
    }
}

/// `pread` exactly `buf.len()` bytes at `off`.
fn pread_exact(fd: RawFd, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        // SAFETY: pread writes at most the given length into the live
        // slice `buf[done..]`.
        let n = unsafe {
            libc::pread(
                fd,
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                (off + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        done += n as usize;
    }
    Ok(())
}

/// The error of a failed save to the undo journal `u` (before writing at
/// `off`).
fn undo_failed(u: &Journal, off: u64, e: std::io::Error) -> Error {
    Error::data(
        format!(
            "save what offset {off} holds in the undo journal {}",
            u.path().display()
        ),
        e,
    )
}

/// Hash (into `digest`, if given) the pages `offsets` whose bytes follow
/// each other in `buf`, while they are in cache, and `pwrite` each run of
/// contiguous pages to the file, one run at a time under `one_at_a_time`
/// if given (page channels contend on the file's inode lock otherwise).
/// With an undo journal, what the runs hold is saved there first, all of
/// them in one append and sync.
fn write_pages(
    fd: RawFd,
    buf: &[u8],
    offsets: &[u64],
    session: &SessionHeader,
    digest: Option<&mut Digest>,
    one_at_a_time: Option<&Mutex<()>>,
    undo: Option<&Journal>,
) -> Result<()> {
    if let (Some(u), Some(&first)) = (undo, offsets.first()) {
        let runs: Vec<(u64, u64)> = session::runs(offsets, session)
            .map(|(o, l)| (o, l as u64))
            .collect();
        u.save(&runs, Change::Write)
            .map_err(|e| undo_failed(u, first, e))?;
    }
    if let Some(d) = digest {
        let mut pos = 0usize;
        for &o in offsets {
            let len = session.page_len(o);
            d.add(page_hash(o, &buf[pos..pos + len]));
            pos += len;
        }
    }
    let mut at = 0usize;
    for (off, len) in session::runs(offsets, session) {
        let _g = one_at_a_time.map(lock);
        pwrite_all(fd, &buf[at..at + len], off)
            .map_err(|e| Error::data(format!("write the destination at offset {off}"), e))?;
        at += len;
    }
    Ok(())
}

/// The SYNC barrier: N channel threads plus the main thread. Wakes with
/// `false` when the session fails.
///
/// A party that ends its part of the session (a page channel's END
/// packet, the main channel's End record) *departs*: it can never reach a
/// later barrier. So a barrier some party waits at when another departs,
/// or that a party reaches after another departed, can never complete: it
/// fails the session at once with [`WireError::BarrierAfterEnd`] naming
/// the channel that ended, instead of waiting for a party that will
/// never come.
struct Barrier {
    st: Mutex<BarrierState>,
    cv: Condvar,
    parties: u32,
    failure: Arc<Failure>,
    on_complete: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct BarrierState {
    /// Parties waiting at the open barrier.
    arrived: u32,
    /// The open barrier's epoch (barriers completed so far).
    epoch: u32,
    /// The first party that departed, and what it sent.
    ended: Option<(Ctx, &'static str)>,
}

impl Barrier {
    /// Wait until every party arrived; false if the session failed (or
    /// this call failed it: a party already departed).
    fn wait(&self) -> bool {
        let mut g = lock(&self.st);
        if self.failure.is_failed() {
            return false;
        }
        if let Some((ctx, ended)) = &g.ended {
            let e = ctx.proto(
                Stage::Sync,
                WireError::BarrierAfterEnd {
                    ended,
                    epoch: g.epoch,
                },
            );
            drop(g);
            self.failure.fail(e, true);
            return false;
        }
        g.arrived += 1;
        if g.arrived == self.parties {
            (self.on_complete)();
            g.arrived = 0;
            g.epoch += 1;
            self.cv.notify_all();
            return true;
        }
        let epoch = g.epoch;
        while g.epoch == epoch {
            if self.failure.is_failed() {
                return false;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        true
    }

    /// The party on `ctx`'s channel ended (`ended` says how): it will
    /// never wait here again. False if that breaks a barrier others wait
    /// at (the session is failed then).
    fn depart(&self, ctx: &Ctx, ended: &'static str) -> bool {
        let mut g = lock(&self.st);
        if g.arrived > 0 {
            let e = ctx.proto(
                Stage::Sync,
                WireError::BarrierAfterEnd {
                    ended,
                    epoch: g.epoch,
                },
            );
            drop(g);
            self.failure.fail(e, true);
            return false;
        }
        if g.ended.is_none() {
            g.ended = Some((ctx.clone(), ended));
        }
        true
    }
}

impl Wake for Barrier {
    fn wake(&self) {
        let _g = lock(&self.st);
        self.cv.notify_all();
    }
}

enum Kind {
    Image(Arc<ImageShared>),
    Stream(Arc<StreamShared>),
}

/// A running session on the receiving side.
pub(super) struct Run {
    session: SessionHeader,
    progress: Arc<Progress>,
    failure: Arc<Failure>,
    barrier: Arc<Barrier>,
    image: Option<Arc<ImageShared>>,
    /// Each page thread hands back its digest and its channel: the
    /// channels stay open until the verdict is written (see `finish`).
    threads: Vec<JoinHandle<(Digest, Box<dyn Channel>)>>,
    writer: Option<JoinHandle<StreamEnd>>,
    activity: Arc<Activities>,
    /// The idle timeout (stops when the run is dropped).
    _watchdog: Option<Watchdog>,
}

/// How a run goes beyond its channels and destination.
pub(super) struct RunOptions {
    /// The main channel, and the idle timeout over it and the page
    /// channels.
    pub(super) idle: (Ctx, Option<std::time::Duration>),
    /// Delta: the chunk size and hashes of the older copy (the Have
    /// record).
    pub(super) have: Option<Arc<(u32, Vec<u64>)>>,
    /// Where lost page channels come back, and how long each may stay
    /// lost.
    pub(super) rejoin: Option<(Arc<Rejoins>, std::time::Duration)>,
}

impl Run {
    /// Start the channel threads (and the stream writer, and the idle
    /// timeout's watchdog).
    pub(super) fn start(
        session: SessionHeader,
        progress: Arc<Progress>,
        failure: Arc<Failure>,
        target: Target,
        conns: Vec<Conn>,
        opts: RunOptions,
    ) -> Run {
        let RunOptions { idle, have, rejoin } = opts;
        let n = conns.len();
        let cuts = Cuts::new(conns.iter().map(|c| c.ch.shutdown_handle().ok()).collect());
        if let Some((r, _)) = &rejoin {
            r.open(session, cuts.clone());
            failure.add_waker(r.clone());
        }
        let (kind_of, image, stream, sink) = match target {
            Target::Image(img) => {
                let shared = Arc::new(ImageShared::new(img, &session));
                (Some(shared.clone()), Some(shared), None, None)
            }
            Target::Stream(w) => {
                let chunk = session.packet_payload as usize;
                let shared = Arc::new(StreamShared {
                    st: Mutex::new(StreamState::new(n, chunk)),
                    cv: Condvar::new(),
                    failure: failure.clone(),
                    progress: progress.clone(),
                });
                failure.add_waker(shared.clone());
                (None, None, Some(shared), Some(w))
            }
        };
        // Weak: the image is taken back out of its Arc at the end.
        let claims = kind_of.as_ref().map(Arc::downgrade);
        let window = stream.as_ref().map(Arc::downgrade);
        let sync_progress = progress.clone();
        let barrier = Arc::new(Barrier {
            st: Mutex::new(BarrierState::default()),
            cv: Condvar::new(),
            parties: n as u32 + 1,
            failure: failure.clone(),
            on_complete: Box::new(move || {
                if let Some(c) = claims.as_ref().and_then(std::sync::Weak::upgrade) {
                    c.close_epoch();
                }
                if let Some(w) = window.as_ref().and_then(std::sync::Weak::upgrade) {
                    w.barrier_done();
                }
                sync_progress.sync_done();
            }),
        });
        failure.add_waker(barrier.clone());

        let activity = Activities::new(n);
        let ctxs: Vec<Ctx> = conns.iter().map(|c| c.ctx.clone()).collect();
        let mut watched = ctxs.clone();
        watched.push(idle.0);
        // Taking rejoins, a page channel stalled mid-packet is cut and
        // waits for the sender's new connection instead of failing the
        // session.
        let on_stall: Option<crate::watchdog::OnStall> = rejoin.as_ref().map(|_| {
            let cuts = cuts.clone();
            Arc::new(move |i: usize, e: Error| cuts.cut(i, e)) as crate::watchdog::OnStall
        });
        let watchdog =
            Watchdog::start(idle.1, activity.clone(), watched, failure.clone(), on_stall);
        let mut run = Run {
            session,
            progress,
            failure,
            barrier,
            image,
            threads: Vec::with_capacity(n),
            writer: None,
            activity,
            _watchdog: watchdog,
        };
        if let (Some(shared), Some(sink)) = (stream.clone(), sink) {
            let spawned = std::thread::Builder::new()
                .name("multifd-recv-writer".into())
                .spawn(move || write_stream(shared, sink, ctxs));
            match spawned {
                Ok(h) => run.writer = Some(h),
                Err(e) => {
                    run.failure
                        .fail(Error::data("spawn the stream writer thread", e), true);
                }
            }
        }
        let cap = session.pages_per_packet() as usize;
        for (i, conn) in conns.into_iter().enumerate() {
            let kind = match (&run.image, &stream) {
                (Some(img), _) => Kind::Image(img.clone()),
                (None, Some(s)) => Kind::Stream(s.clone()),
                (None, None) => unreachable!("a target is an image or a stream"),
            };
            let reader = Reader {
                id: i,
                ch: conn.ch,
                ctx: conn.ctx,
                session,
                progress: run.progress.clone(),
                failure: run.failure.clone(),
                barrier: run.barrier.clone(),
                kind,
                epoch: 0,
                last_packet: None,
                applied: None,
                rejoin: rejoin.clone(),
                cuts: cuts.clone(),
                digest: Digest::default(),
                entries: vec![0u8; cap * session.entry_len().max(wire::HOLE_ENTRY_LEN)],
                offsets: Vec::with_capacity(cap),
                holes: Vec::with_capacity(cap),
                iov: Vec::with_capacity(cap),
                buf: match &run.image {
                    Some(img) if img.file.is_some() => vec![0u8; session.packet_payload as usize],
                    _ => Vec::new(),
                },
                cpu: ThreadCpu::default(),
                activity: run.activity.clone(),
                zbuf: Vec::new(),
                unpack: None,
                have: have.clone(),
                writer: match (&run.image, session.channels) {
                    (Some(img), _) => FileWriter::start(
                        img.clone(),
                        session,
                        run.failure.clone(),
                        session.packet_payload as usize,
                    ),
                    _ => None,
                },
            };
            let spawned = std::thread::Builder::new()
                .name(format!("multifd-recv-{i}"))
                .spawn(move || reader.run());
            match spawned {
                Ok(h) => run.threads.push(h),
                Err(e) => {
                    run.failure
                        .fail(Error::data("spawn a receiver thread", e), true);
                    break;
                }
            }
        }
        run
    }

    /// Read main-channel records until the end record; returns the
    /// sender's totals.
    pub(super) fn serve_main(&mut self, main: &mut Conn) -> Result<Totals> {
        let mut epoch = 0u32;
        loop {
            if self.failure.is_failed() {
                return Err(self.failure.take_error());
            }
            let watch = self.activity.main();
            watch.set(Wait::Next(Stage::Sync));
            let rec = read_record(&mut main.ch, None, None, &main.ctx, Stage::Sync);
            watch.tick();
            watch.set(Wait::Off);
            match rec {
                Err(_) | Ok(None) if self.failure.is_failed() => {
                    return Err(self.failure.take_error())
                }
                Err(e) => return Err(e),
                Ok(None) => {
                    return Err(main.ctx.io(
                        Stage::Sync,
                        transit_channel::Error::UnexpectedEof {
                            channel: main.ch.name().to_owned(),
                            op: "wait for a sync or end record",
                            expected: wire::RECORD_HEADER_LEN,
                            missing: wire::RECORD_HEADER_LEN,
                        },
                    ))
                }
                Ok(Some(Record::Sync { epoch: e })) => {
                    if e != epoch {
                        return Err(main.ctx.proto(
                            Stage::Sync,
                            WireError::Epoch {
                                found: e,
                                expected: epoch,
                            },
                        ));
                    }
                    if !self.barrier.wait() {
                        return Err(self.failure.take_error());
                    }
                    epoch += 1;
                }
                Ok(Some(Record::End(t))) => {
                    // No Sync record can follow: a page channel waiting
                    // at (or later reaching) a barrier waits in vain.
                    if !self.barrier.depart(&main.ctx, "End record") {
                        return Err(self.failure.take_error());
                    }
                    return Ok(t);
                }
                Ok(Some(Record::Error { code, message })) => {
                    return Err(main.ctx.remote(Stage::Sync, code, message))
                }
                Ok(Some(_)) => {
                    return Err(main.ctx.proto(
                        Stage::Sync,
                        WireError::Unexpected("record from the sender (accept or verdict)"),
                    ))
                }
            }
        }
    }

    /// Join everything, verify, commit the output, answer the sender.
    pub(super) fn finish<F>(
        mut self,
        main: &mut Conn,
        result: Result<Totals>,
        commit: F,
    ) -> Result<RecvOutcome>
    where
        F: FnOnce(&mut RecvOutcome) -> Result<()>,
    {
        let sent = match result {
            Ok(t) => t,
            Err(e) => return Err(self.fail(main, e)),
        };
        let mut digest = Digest::default();
        let mut panicked = false;
        // The page channels stay open until the verdict is out. After its
        // END packet the sender still ends each page channel's transport
        // (`bye`: websocket close frame, TLS close_notify) before it writes
        // the End record; a receiver that closed a channel as soon as it
        // read END could make the kernel answer those last bytes with a
        // reset, and the sender's `bye` fail with EPIPE on a transfer that
        // worked. Once the End record is here, every page channel's `bye`
        // is done.
        let mut ended = Vec::with_capacity(self.threads.len());
        for t in std::mem::take(&mut self.threads) {
            match t.join() {
                Ok((d, ch)) => {
                    digest.merge(d);
                    ended.push(ch);
                }
                Err(_) => panicked = true,
            }
        }
        let mut writer_out = None;
        if let Some(w) = self.writer.take() {
            match w.join() {
                Ok(out) => writer_out = Some(out),
                Err(_) => panicked = true,
            }
        }
        if panicked {
            let e = Error::Aborted("a receiver thread panicked".into());
            return Err(self.fail(main, e));
        }
        if self.failure.is_failed() {
            let e = self.failure.take_error();
            return Err(self.fail(main, e));
        }
        let mut stats = self.progress.snapshot();
        let got = Totals {
            pages: stats.pages,
            zero_pages: stats.zero_pages,
            bytes: stats.bytes,
            packets: stats.packets,
            stream_len: match self.session.layout {
                Layout::Image { size } => size,
                Layout::Stream => writer_out.as_ref().map_or(0, |w| w.len),
            },
            digest: if self.session.verify { digest.0 } else { 0 },
        };
        if got != sent {
            write_record(
                &mut main.ch,
                &Record::Verdict {
                    status: VerdictStatus::Mismatch,
                    totals: got,
                },
                &main.ctx,
                Stage::End,
            )?;
            return Err(Error::Mismatch {
                sender: sent,
                receiver: got,
            });
        }
        if let Some(img) = &self.image {
            // Matching totals say nothing of where the pages went: every
            // page must have been sent or declared zero at least once.
            img.close_epoch();
            let covered = img.covered_pages();
            if covered < img.pages {
                let e = main.ctx.proto(
                    Stage::End,
                    WireError::Incomplete {
                        covered,
                        pages: img.pages,
                    },
                );
                return Err(self.fail(main, e));
            }
        }
        // Verified: the stream's last 4 MiB, held back until now, go out
        // (a stream that fails verification ends short of them).
        if let Some(w) = writer_out.as_mut() {
            if let Err(e) = w.write_tail() {
                let e = Error::data("write the stream destination", e);
                return Err(self.fail(main, e));
            }
        }
        stats.digest = got.digest;
        stats.stream_len = got.stream_len;
        let image = match self.image.take() {
            Some(shared) => match Arc::try_unwrap(shared) {
                Ok(s) => Some(s.image),
                Err(_) => {
                    let e = Error::Aborted("destination image still shared".into());
                    return Err(self.fail(main, e));
                }
            },
            None => None,
        };
        let mut outcome = RecvOutcome {
            stats,
            session: self.session,
            image,
            writer: writer_out.map(|w| w.sink),
        };
        // The verdict means "in place": the caller's commit (flush, fsync,
        // rename, write out) runs first, and its failure is what the
        // sender hears.
        if let Err(e) = commit(&mut outcome) {
            return Err(self.fail(main, e));
        }
        write_record(
            &mut main.ch,
            &Record::Verdict {
                status: VerdictStatus::Ok,
                totals: got,
            },
            &main.ctx,
            Stage::End,
        )?;
        // Best effort: the sender may already have closed.
        let _ = main.ch.bye();
        drop(ended);
        Ok(outcome)
    }

    /// The failure path: record `e`, wake and join every thread, tell the
    /// sender why.
    fn fail(&mut self, main: &mut Conn, e: Error) -> Error {
        // This thread is the main channel's only reader, so nobody else
        // needs waking on it; shutting its read side now would throw away
        // the reason the sender may be writing right behind the end of
        // file a page channel showed (the delayed wake-up still bounds the
        // wait).
        self.failure.fail(e, false);
        // A channel that broke under us may be the sender giving up: its
        // reason may already sit on the main channel, or arrive within
        // REASON_WAIT.
        if self
            .failure
            .first_stage()
            .is_some_and(|(_, channel)| channel)
        {
            let wait = Some(session::REASON_WAIT);
            if let Ok(Some(Record::Error { code, message })) = read_record(
                &mut main.ch,
                session::deadline(wait),
                wait,
                &main.ctx,
                Stage::Sync,
            ) {
                self.failure
                    .fail(main.ctx.remote(Stage::Sync, code, message), true);
            }
        }
        session::send_error_record(&mut main.ch, &self.failure);
        self.failure.shutdown_main();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.failure.take_error()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.writer.is_some() {
            self.failure
                .fail(Error::Aborted("the receiver was dropped".into()), true);
            for t in std::mem::take(&mut self.threads) {
                let _ = t.join();
            }
            if let Some(w) = self.writer.take() {
                let _ = w.join();
            }
        }
    }
}

/// One page channel's thread.
struct Reader {
    id: usize,
    ch: Box<dyn Channel>,
    ctx: Ctx,
    session: SessionHeader,
    progress: Arc<Progress>,
    failure: Arc<Failure>,
    barrier: Arc<Barrier>,
    kind: Kind,
    epoch: u32,
    last_packet: Option<u64>,
    /// The last packet applied in full (what a rejoin resumes after).
    applied: Option<u64>,
    /// Where a replacement connection comes from, and how long to wait
    /// for one; `None`: a lost connection fails the session.
    rejoin: Option<(Arc<Rejoins>, std::time::Duration)>,
    /// The idle timeout's cuts (why this channel was cut, if it was).
    cuts: Arc<Cuts>,
    digest: Digest,
    entries: Vec<u8>,
    offsets: Vec<u64>,
    holes: Vec<(u64, u64)>,
    iov: Vec<IoSliceMut<'static>>,
    /// A file destination's payload buffer (pages go from here to the
    /// file with `pwrite`); empty for memory destinations.
    buf: Vec<u8>,
    /// This thread's CPU clock, started when it begins serving.
    cpu: ThreadCpu,
    /// Progress seen by the idle timeout's watchdog.
    activity: Arc<Activities>,
    /// A compressed packet's frame.
    zbuf: Vec<u8>,
    /// This channel's zstd context, made at the first compressed packet.
    unpack: Option<zstd::bulk::Decompressor<'static>>,
    /// Delta: the chunk size and hashes of the older copy this output
    /// started from (sent in the Have record).
    have: Option<Arc<(u32, Vec<u64>)>>,
    /// A page channel into a file: a second thread hashes and writes
    /// each packet while this one reads the next (see [`FileWriter`]).
    writer: Option<FileWriter>,
}

/// Work for a [`FileWriter`].
enum WriteJob {
    /// Hash and write the normal pages `offsets` whose bytes are `buf`.
    Pages { buf: Vec<u8>, offsets: Vec<u64> },
    /// Everything before was written: answer with the digest so far.
    Flush,
}

/// The second thread of a page channel writing into a file: the channel
/// thread reads a packet's payload into one of its buffers
/// ([`writer_buffers`]) and hands it over, and this thread hashes the
/// pages (while they are in cache) and `pwrite`s them, so reading from
/// the socket and writing the file overlap instead of taking turns. With
/// several page channels the writers take turns on the file (one
/// `pwrite` at a time: the file system serialises them anyway), and the
/// channel threads keep reading meanwhile.
struct FileWriter {
    jobs: std::sync::mpsc::SyncSender<WriteJob>,
    /// Buffers handed back, and at a flush the digest of what was written.
    back: std::sync::mpsc::Receiver<std::result::Result<Vec<u8>, Digest>>,
    thread: Option<std::thread::JoinHandle<()>>,
    spare: Vec<Vec<u8>>,
}

/// The buffers of one channel's [`FileWriter`]: up to 8 packets in
/// flight (a reader that may run ahead while the writer is off its core
/// keeps the sender going), all channels' together within
/// [`WRITER_BUDGET`] bytes, at least 2 (one read while one is written).
fn writer_buffers(channels: u32, packet: usize) -> usize {
    (WRITER_BUDGET / (channels.max(1) as usize * packet.max(1))).clamp(2, 8)
}

/// What the file writers of a session may hold in packet buffers.
const WRITER_BUDGET: usize = 16 << 20;

impl FileWriter {
    fn start(
        img: Arc<ImageShared>,
        session: SessionHeader,
        failure: Arc<Failure>,
        buf_len: usize,
    ) -> Option<FileWriter> {
        let fd = img.file?;
        let nbuf = writer_buffers(session.channels, buf_len);
        let (jobs, rx) = std::sync::mpsc::sync_channel::<WriteJob>(nbuf - 1);
        let (tx_back, back) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("multifd-recv-write".into())
            .spawn(move || {
                let mut digest = Digest::default();
                while let Ok(job) = rx.recv() {
                    match job {
                        WriteJob::Flush => {
                            let _ = tx_back.send(Err(std::mem::take(&mut digest)));
                        }
                        WriteJob::Pages { buf, offsets } => {
                            let d = session.verify.then_some(&mut digest);
                            let undo = img.undo.as_deref();
                            let one = (session.channels > 1).then_some(&img.writing);
                            if let Err(e) = write_pages(fd, &buf, &offsets, &session, d, one, undo)
                            {
                                failure.fail(e, true);
                                return;
                            }
                            let _ = tx_back.send(Ok(buf));
                        }
                    }
                }
            })
            .ok()?;
        Some(FileWriter {
            jobs,
            back,
            thread: Some(thread),
            spare: (0..nbuf).map(|_| vec![0u8; buf_len]).collect(),
        })
    }

    /// A free buffer (waiting for one the writer gives back).
    fn buffer(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.spare.pop() {
            return Some(b);
        }
        match self.back.recv() {
            Ok(Ok(b)) => Some(b),
            _ => None,
        }
    }

    /// Wait until everything handed over is written; the digest of it.
    fn flush(&mut self) -> Option<Digest> {
        self.jobs.send(WriteJob::Flush).ok()?;
        loop {
            match self.back.recv() {
                Ok(Ok(b)) => self.spare.push(b),
                Ok(Err(d)) => return Some(d),
                Err(_) => return None,
            }
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Closing the job queue ends the thread.
        let (dead, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.jobs, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Reader {
    fn run(mut self) -> (Digest, Box<dyn Channel>) {
        self.cpu = ThreadCpu::start();
        let r = loop {
            match self.serve() {
                Err(e) if self.can_rejoin(&e) => {
                    if let Err(e) = self.await_rejoin(e) {
                        break Err(e);
                    }
                }
                r => break r,
            }
        };
        self.watch(Wait::Off);
        if let Err(e) = r {
            // A channel that broke may be the peer giving up: let its
            // reason reach the main thread before waking it.
            let wake_main = !matches!(e, Error::Channel { .. });
            self.failure.fail(e, wake_main);
        }
        if let Kind::Stream(s) = &self.kind {
            s.finish_channel(self.id);
        }
        (self.digest, self.ch)
    }

    fn serve(&mut self) -> Result<()> {
        let mut hdr = [0u8; PACKET_HEADER_LEN];
        loop {
            // Between packets a channel may wait long (other channels
            // carry the pass); once a header has begun, it must go on.
            self.watch(Wait::Next(Stage::RecvHeader));
            let more = chio::read_all_eof(&mut self.ch, &mut hdr[..1])
                .map_err(|e| self.ctx.io(Stage::RecvHeader, e))?;
            if more {
                self.watch(Wait::Mid(Stage::RecvHeader));
                chio::read_all(&mut self.ch, &mut hdr[1..])
                    .map_err(|e| self.ctx.io(Stage::RecvHeader, e))?;
                self.watch(Wait::Mid(Stage::RecvHeader));
            }
            if !more {
                if self.failure.is_failed() {
                    return Ok(());
                }
                return Err(self.ctx.io(
                    Stage::RecvHeader,
                    transit_channel::Error::UnexpectedEof {
                        channel: self.ch.name().to_owned(),
                        op: "read a packet header (the sender closed before its END packet)",
                        expected: PACKET_HEADER_LEN,
                        missing: PACKET_HEADER_LEN,
                    },
                ));
            }
            let h = wire::decode_packet_header(&hdr, &self.session)
                .map_err(|e| self.ctx.proto(Stage::RecvHeader, e))?;
            if h.epoch != self.epoch {
                return Err(self.ctx.proto(
                    Stage::RecvHeader,
                    WireError::Epoch {
                        found: h.epoch,
                        expected: self.epoch,
                    },
                ));
            }
            if let Some(p) = self.last_packet.filter(|&p| h.packet_num <= p) {
                return Err(self.ctx.proto(
                    Stage::RecvHeader,
                    WireError::PacketOrder {
                        found: h.packet_num,
                        previous: p,
                    },
                ));
            }
            self.last_packet = Some(h.packet_num);
            let ack = h.flags.contains(PacketFlags::ACK);
            if h.flags.contains(PacketFlags::SYNC) {
                // Every page of the epoch is in the file before the barrier.
                self.flush_writer()?;
                self.counters_packet(0, 0, 0, PACKET_HEADER_LEN);
                // Applied once read (a rejoin does not get it again); its
                // acknowledgement, if asked, after the barrier, so a
                // failed write leaves this channel in the next epoch.
                self.applied = Some(h.packet_num);
                // Waiting for the other channels is not this one's idling.
                self.watch(Wait::Off);
                if let Kind::Stream(s) = &self.kind {
                    s.enter_barrier(self.id);
                }
                if !self.barrier.wait() {
                    return Ok(());
                }
                self.epoch += 1;
                self.applied(h.packet_num, ack)?;
                continue;
            }
            if h.flags.contains(PacketFlags::END) {
                self.flush_writer()?;
                self.applied = Some(h.packet_num);
                if let Some((r, _)) = &self.rejoin {
                    // A rejoin after this learns it from there.
                    r.ended(self.id, self.applied);
                }
                self.counters_packet(0, 0, 0, PACKET_HEADER_LEN);
                // If this acknowledgement is lost, the sender's rejoin
                // learns from the record above that END was applied.
                let _ = self.applied(h.packet_num, ack);
                // A failed departure failed the session with its reason.
                self.barrier.depart(&self.ctx, "END packet");
                return Ok(());
            }
            if h.flags.contains(PacketFlags::HOLES) || h.flags.contains(PacketFlags::KEEP) {
                let Kind::Image(img) = &self.kind else {
                    return Err(self.ctx.proto(Stage::RecvHeader, WireError::WrongLayout));
                };
                let img = img.clone();
                self.recv_holes(&h, &img)?;
                self.applied(h.packet_num, ack)?;
                continue;
            }
            match &self.kind {
                Kind::Image(img) => {
                    let img = img.clone();
                    self.recv_pages(&h, &img)?
                }
                Kind::Stream(s) => {
                    let s = s.clone();
                    if !self.recv_chunk(&h, &s)? {
                        return Ok(());
                    }
                }
            }
            self.applied(h.packet_num, ack)?;
        }
    }

    /// A failure this channel may survive: its connection failed (not the
    /// peer's protocol), the session runs, and rejoins are taken.
    fn can_rejoin(&self, e: &Error) -> bool {
        self.rejoin.is_some() && !self.failure.is_failed() && matches!(e, Error::Channel { .. })
    }

    /// The connection is lost: wait for the sender's new one, tell it the
    /// last packet applied, and go on there. The error is `lost` (or the
    /// idle timeout's, if it cut the connection) when none comes in time.
    fn await_rejoin(&mut self, lost: Error) -> Result<()> {
        let lost = self.cuts.take(self.id).unwrap_or(lost);
        let Some((rejoins, wait)) = self.rejoin.clone() else {
            return Err(lost);
        };
        self.watch(Wait::Off);
        let _ = self.ch.shutdown(transit_channel::Shutdown::Both);
        let deadline = std::time::Instant::now() + wait;
        loop {
            let Some(mut ch) = rejoins.wait_for(self.id, deadline, &self.failure) else {
                return Err(lost);
            };
            let reply = wire::PageReply::Resume(self.applied).encode();
            if chio::write_all(&mut ch, &reply).is_err() {
                // That one is gone too: wait for the next.
                continue;
            }
            // (`wait_for` made it the channel's current connection.)
            if let Ok(h) = ch.shutdown_handle() {
                self.failure.add_page_handle(h);
            }
            self.ch = ch;
            self.last_packet = self.applied;
            self.progress.reconnected();
            return Ok(());
        }
    }

    /// Packet `num` is applied in full: remember it, and acknowledge it if
    /// the sender asked.
    fn applied(&mut self, num: u64, ack: bool) -> Result<()> {
        self.applied = Some(num);
        if ack {
            chio::write_all(&mut self.ch, &wire::PageReply::Ack(num).encode())
                .map_err(|e| self.ctx.io(Stage::RecvHeader, e))?;
        }
        Ok(())
    }

    /// Progress, and what this channel waits for from now on.
    fn watch(&self, w: Wait) {
        let a = self.activity.page(self.id);
        a.tick();
        a.set(w);
    }

    fn counters_packet(&self, pages: u64, zero: u64, payload: u64, wire: usize) {
        self.progress
            .channel(self.id as u32)
            .packet(pages, zero, payload, wire as u64);
    }

    fn recv_pages(&mut self, h: &PacketHeader, img: &ImageShared) -> Result<()> {
        let started = std::time::Instant::now();
        let n = h.entries_len(&self.session);
        chio::read_all(&mut self.ch, &mut self.entries[..n])
            .map_err(|e| self.ctx.io(Stage::RecvHeader, e))?;
        wire::decode_page_offsets(&self.entries[..n], h, &self.session, &mut self.offsets)
            .map_err(|e| self.ctx.proto(Stage::RecvHeader, e))?;
        self.watch(Wait::Mid(Stage::RecvPages));
        let shift = self.session.page_size.trailing_zeros();
        for &off in &self.offsets {
            if !img.claim(off >> shift) {
                return Err(self.ctx.proto(
                    Stage::RecvHeader,
                    WireError::DuplicatePage {
                        offset: off,
                        epoch: self.epoch,
                    },
                ));
            }
        }
        let normal = h.normal as usize;
        let got = if h.flags.contains(PacketFlags::COMPRESSED) {
            self.recv_compressed_pages(h, img)
        } else if let Some(fd) = img.file {
            self.recv_pages_to_file(h, img, fd)
        } else {
            self.recv_pages_to_memory(img, normal)
        };
        if let Err(e) = got {
            // Cut short: the packet comes again whole if the channel
            // rejoins (pages already written get the same bytes again).
            if img.file.is_none() && !h.flags.contains(PacketFlags::COMPRESSED) {
                // Part of the payload went straight into the image: undo
                // it, or a page that is a zero entry when the packet comes
                // again (written bit clear) would keep those bytes.
                for (start, l) in session::runs(&self.offsets[..normal], &self.session) {
                    let _ = img.zero(start, l);
                }
            }
            for &off in &self.offsets {
                img.unclaim(off >> shift);
            }
            return Err(e);
        }
        if !img.set_written(self.offsets[..normal].iter().map(|&o| o >> shift)) {
            return Err(self.ctx.proto(
                Stage::RecvPages,
                WireError::DataOverAnnounced {
                    announced: self.session.data_bytes,
                },
            ));
        }
        let verify = self.session.verify;
        let mut zeroed: Vec<(u64, u64)> = Vec::new();
        for &o in &self.offsets[normal..] {
            let len = self.session.page_len(o);
            if img.take_written(o >> shift) {
                match zeroed.last_mut() {
                    Some((a, l)) if *a + *l == o => *l += len as u64,
                    _ => zeroed.push((o, len as u64)),
                }
            }
            if verify {
                self.digest.add(zero_hash(o, len as u32));
            }
        }
        img.zero_runs(&zeroed)?;
        // Data bytes are the pages' (a compressed packet carries fewer on
        // the wire; a raw one exactly its payload, checked when decoded).
        let data: u64 = if h.flags.contains(PacketFlags::COMPRESSED) {
            self.offsets[..normal]
                .iter()
                .map(|&o| self.session.page_len(o) as u64)
                .sum()
        } else {
            u64::from(h.payload_len)
        };
        self.counters_packet(
            normal as u64,
            u64::from(h.zero),
            data,
            PACKET_HEADER_LEN + n + h.payload_len as usize,
        );
        self.progress
            .channel(self.id as u32)
            .busy(started, self.cpu);
        Ok(())
    }

    /// Read a packet's pages straight into the destination memory (runs
    /// of contiguous pages as one iovec), hash them there.
    fn recv_pages_to_memory(&mut self, img: &ImageShared, normal: usize) -> Result<()> {
        if img.filler.is_some() {
            return self.recv_pages_to_fill(img, normal);
        }
        let mut iov = session::recycle(std::mem::take(&mut self.iov));
        for (start, l) in session::runs(&self.offsets[..normal], &self.session) {
            // SAFETY: decoded offsets are inside the image and every page
            // of the run was claimed by the caller.
            iov.push(IoSliceMut::new(unsafe { img.slice_mut(start, l) }));
        }
        let r = session::readv_all(&mut self.ch, &mut iov);
        self.iov = session::recycle(iov);
        r.map_err(|e| self.ctx.io(Stage::RecvPages, e))?;
        if self.session.verify {
            for &o in &self.offsets[..normal] {
                // SAFETY: claimed page inside the image, just received.
                let page = unsafe { img.slice_mut(o, self.session.page_len(o)) };
                self.digest.add(page_hash(o, page));
            }
        }
        Ok(())
    }

    /// Read a packet's payload into this channel's buffer, hash it there
    /// while it is in cache, and place each run of contiguous pages in
    /// fresh memory ([`Filler`]): no page is cleared first.
    fn recv_pages_to_fill(&mut self, img: &ImageShared, normal: usize) -> Result<()> {
        let payload: usize = self.offsets[..normal]
            .iter()
            .map(|&o| self.session.page_len(o))
            .sum();
        if self.buf.len() < payload {
            self.buf.resize(payload, 0);
        }
        chio::read_all(&mut self.ch, &mut self.buf[..payload])
            .map_err(|e| self.ctx.io(Stage::RecvPages, e))?;
        self.hash_buffered(normal);
        self.place_runs(img, normal)
    }

    /// Fold the hashes of the first `normal` pages, whose bytes are in
    /// this channel's buffer one after the other, into the digest.
    fn hash_buffered(&mut self, normal: usize) {
        if !self.session.verify {
            return;
        }
        let mut pos = 0usize;
        for &o in &self.offsets[..normal] {
            let l = self.session.page_len(o);
            self.digest.add(page_hash(o, &self.buf[pos..pos + l]));
            pos += l;
        }
    }

    /// Place the first `normal` pages' bytes, in this channel's buffer,
    /// at their offsets of a memory destination.
    fn place_runs(&self, img: &ImageShared, normal: usize) -> Result<()> {
        let mut at = 0usize;
        for (start, len) in session::runs(&self.offsets[..normal], &self.session) {
            // SAFETY: decoded offsets are inside the image and every page
            // of the run was claimed by the caller.
            unsafe { img.place(start, &self.buf[at..at + len]) }.map_err(|e| {
                Error::data(
                    format!("place pages in the destination at offset {start}"),
                    e,
                )
            })?;
            at += len;
        }
        Ok(())
    }

    /// Read a packet's payload into this channel's buffer, hash it there
    /// while it is in cache, and `pwrite` each run of contiguous pages to
    /// the file: no page of the file is zero-filled first or mapped.
    fn recv_pages_to_file(&mut self, h: &PacketHeader, img: &ImageShared, fd: RawFd) -> Result<()> {
        let payload = h.payload_len as usize;
        if let Some(w) = self.writer.as_mut() {
            let Some(mut buf) = w.buffer() else {
                return Err(self.writer_gone());
            };
            let r = chio::read_all(&mut self.ch, &mut buf[..payload]);
            if let Err(e) = r {
                if let Some(w) = self.writer.as_mut() {
                    w.spare.push(buf);
                }
                return Err(self.ctx.io(Stage::RecvPages, e));
            }
            let offsets = self.offsets[..h.normal as usize].to_vec();
            let job = WriteJob::Pages { buf, offsets };
            if self
                .writer
                .as_ref()
                .is_some_and(|w| w.jobs.send(job).is_err())
            {
                return Err(self.writer_gone());
            }
            return Ok(());
        }
        chio::read_all(&mut self.ch, &mut self.buf[..payload])
            .map_err(|e| self.ctx.io(Stage::RecvPages, e))?;
        self.buf_to_file(h.normal as usize, img, fd)
    }

    /// Wait for the file writer (if any) to write everything handed over,
    /// folding its digest into this channel's.
    fn flush_writer(&mut self) -> Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        match w.flush() {
            Some(d) => {
                self.digest.merge(d);
                Ok(())
            }
            None => Err(self.writer_gone()),
        }
    }

    /// The file writer stopped: it failed the session with its reason.
    fn writer_gone(&self) -> Error {
        if self.failure.is_failed() {
            Error::Config("the file writer stopped (see the session's error)".into())
        } else {
            Error::Config("the file writer thread ended".into())
        }
    }

    /// Read a compressed packet's frame and decompress it: straight into
    /// a memory destination when its pages are one run, else into this
    /// channel's buffer, from where the pages are hashed and written.
    fn recv_compressed_pages(&mut self, h: &PacketHeader, img: &ImageShared) -> Result<()> {
        let normal = h.normal as usize;
        let raw: usize = self.offsets[..normal]
            .iter()
            .map(|&o| self.session.page_len(o))
            .sum();
        self.read_frame(h.payload_len as usize)?;
        let mut runs = session::runs(&self.offsets[..normal], &self.session);
        let copy = img.file.is_none() && img.filler.is_none();
        if let (true, Some((start, len)), None) = (copy, runs.next(), runs.next()) {
            // SAFETY: decoded offsets are inside the image and every page
            // of the run was claimed by the caller.
            let dst = unsafe { img.slice_mut(start, len) };
            self.unpack_frame(dst)?;
            if self.session.verify {
                for &o in &self.offsets[..normal] {
                    let l = self.session.page_len(o);
                    let at = (o - start) as usize;
                    self.digest.add(page_hash(o, &dst[at..at + l]));
                }
            }
            return Ok(());
        }
        if self.buf.len() < raw {
            self.buf.resize(raw, 0);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.unpack_frame(&mut buf[..raw]);
        self.buf = buf;
        r?;
        match img.file {
            Some(fd) => self.buf_to_file(normal, img, fd),
            None => {
                self.place_runs(img, normal)?;
                self.hash_buffered(normal);
                Ok(())
            }
        }
    }

    /// Fold the `page_hash` of `count` kept pages from `first` on, read
    /// from the destination (the older copy it started from).
    fn hash_kept(&mut self, img: &ImageShared, first: u64, count: u64) -> Result<()> {
        let ps = u64::from(self.session.page_size);
        // One page per chunk: the page's hash is the chunk hash computed
        // while the older copy was copied into this output (no re-read).
        if let Some(h) = self
            .have
            .as_ref()
            .filter(|h| u64::from(h.0) == ps && (first + count) as usize <= h.1.len())
        {
            for idx in first..first + count {
                self.digest.add(h.1[idx as usize]);
            }
            return Ok(());
        }
        let Some(fd) = img.file else {
            let zeros = vec![0u8; ps as usize];
            for idx in first..first + count {
                let o = idx * ps;
                let len = self.session.page_len(o);
                // A filled page that never received data is not there to
                // read (and would raise SIGBUS): it is zero.
                let page = if img.filler.is_some() && !img.is_written(idx) {
                    &zeros[..len]
                } else {
                    // SAFETY: a claimed page inside the image, present.
                    unsafe { img.slice_mut(o, len) }
                };
                self.digest.add(page_hash(o, page));
            }
            return Ok(());
        };
        // Read the kept range from the file in pieces of up to 1 MiB.
        let per = (1u64 << 20).div_ceil(ps).max(1);
        let mut idx = first;
        while idx < first + count {
            let n = per.min(first + count - idx);
            let start = idx * ps;
            let end = (start + n * ps).min(self.session.image_size());
            let l = (end - start) as usize;
            if self.buf.len() < l {
                self.buf.resize(l, 0);
            }
            pread_exact(fd, &mut self.buf[..l], start)
                .map_err(|e| Error::data(format!("read the kept pages at offset {start}"), e))?;
            let mut at = 0usize;
            for i in idx..idx + n {
                let o = i * ps;
                let pl = self.session.page_len(o);
                self.digest.add(page_hash(o, &self.buf[at..at + pl]));
                at += pl;
            }
            idx += n;
        }
        Ok(())
    }

    /// Read a compressed payload of `n` bytes into `zbuf`.
    fn read_frame(&mut self, n: usize) -> Result<()> {
        if self.zbuf.len() < n {
            self.zbuf.resize(n, 0);
        }
        chio::read_all(&mut self.ch, &mut self.zbuf[..n])
            .map_err(|e| self.ctx.io(Stage::RecvPages, e))?;
        self.zbuf.truncate(n);
        Ok(())
    }

    /// Decompress `zbuf` into exactly `out`; anything else is the peer's
    /// protocol violation.
    fn unpack_frame(&mut self, out: &mut [u8]) -> Result<()> {
        let expected = out.len();
        let bad = |why: String| WireError::BadCompressedPayload { expected, why };
        if self.unpack.is_none() {
            self.unpack = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| Error::data("make a zstd decompression context", e))?,
            );
        }
        let d = self.unpack.as_mut().expect("made above");
        crate::compress::decompress_with(d, &self.zbuf, out)
            .map_err(|why| self.ctx.proto(Stage::RecvPages, bad(why)))
    }

    /// Hash the packet's pages in `buf` and `pwrite` them, run by run.
    fn buf_to_file(&mut self, normal: usize, img: &ImageShared, fd: RawFd) -> Result<()> {
        let digest = self.session.verify.then_some(&mut self.digest);
        write_pages(
            fd,
            &self.buf,
            &self.offsets[..normal],
            &self.session,
            digest,
            Some(&img.writing),
            img.undo.as_deref(),
        )
    }

    /// A HOLES packet: ranges of zero pages. Fresh destination pages are
    /// zero already; pages that received data before are zeroed.
    fn recv_holes(&mut self, h: &PacketHeader, img: &ImageShared) -> Result<()> {
        let keep = h.flags.contains(PacketFlags::KEEP);
        let started = std::time::Instant::now();
        let n = h.entries_len(&self.session);
        chio::read_all(&mut self.ch, &mut self.entries[..n])
            .map_err(|e| self.ctx.io(Stage::RecvHeader, e))?;
        let mut holes = std::mem::take(&mut self.holes);
        let r = wire::decode_hole_ranges(&self.entries[..n], h, &self.session, &mut holes);
        if let Err(e) = r {
            self.holes = holes;
            return Err(self.ctx.proto(Stage::RecvHeader, e));
        }
        let ps = u64::from(self.session.page_size);
        let mut pages = 0u64;
        let mut result = Ok(());
        // Pages that held data, to be zeroed a run at a time (one hole
        // punched per run, not per page) once the packet is decoded, after
        // one save of them all in an in-place update's journal.
        let mut zeroed: Vec<(u64, u64)> = Vec::new();
        let size = self.session.image_size();
        for &(off, len) in &holes {
            let (first, count) = (off / ps, len.div_ceil(ps));
            if !img.claim_range(first, count) {
                result = Err(self.ctx.proto(
                    Stage::RecvHeader,
                    WireError::DuplicatePage {
                        offset: off,
                        epoch: self.epoch,
                    },
                ));
                break;
            }
            if keep {
                // Kept pages come from the older copy (copied now into an
                // output that started empty; already there when resuming);
                // their hashes go into the digest, to be compared with the
                // sender's.
                let copied = {
                    let _one_at_a_time = lock(&img.writing);
                    img.image.copy_kept(off, len)
                };
                if let Err(e) = copied {
                    result = Err(Error::data(
                        format!("copy the kept pages at offset {off} from the older copy"),
                        e,
                    ));
                    break;
                }
                if self.session.verify {
                    if let Err(e) = self.hash_kept(img, first, count) {
                        result = Err(e);
                        break;
                    }
                }
                pages += count;
                continue;
            }
            img.take_written_range(first, count, |idx| {
                let (o, end) = (idx * ps, ((idx + 1) * ps).min(size));
                match zeroed.last_mut() {
                    Some((a, l)) if *a + *l == o => *l = end - *a,
                    _ => zeroed.push((o, end - o)),
                }
            });
            if self.session.verify {
                for idx in first..first + count {
                    let o = idx * ps;
                    self.digest
                        .add(zero_hash(o, self.session.page_len(o) as u32));
                }
            }
            pages += count;
        }
        self.holes = holes;
        result?;
        img.zero_runs(&zeroed)?;
        if keep {
            self.counters_packet(0, 0, 0, PACKET_HEADER_LEN + n);
            self.progress.kept(pages);
        } else {
            self.counters_packet(0, pages, 0, PACKET_HEADER_LEN + n);
        }
        self.progress
            .channel(self.id as u32)
            .busy(started, self.cpu);
        Ok(())
    }

    /// Receive one stream chunk; false when the session failed meanwhile.
    fn recv_chunk(&mut self, h: &PacketHeader, s: &StreamShared) -> Result<bool> {
        let mut e = [0u8; STREAM_ENTRY_LEN];
        chio::read_all(&mut self.ch, &mut e).map_err(|e| self.ctx.io(Stage::RecvHeader, e))?;
        let entry = wire::decode_stream_entry(&e, h, &self.session)
            .map_err(|e| self.ctx.proto(Stage::RecvHeader, e))?;
        // Waiting for room in the window waits on our sink, not the peer.
        self.watch(Wait::Off);
        let Some(buf) = s.reserve(self.id, !entry.zero, entry.offset) else {
            return Ok(false);
        };
        self.watch(Wait::Mid(Stage::RecvPages));
        let started = std::time::Instant::now();
        let data = match buf {
            Some(mut b) => {
                let out = &mut b[..entry.len as usize];
                let r = if h.flags.contains(PacketFlags::COMPRESSED) {
                    self.read_frame(h.payload_len as usize)
                        .and_then(|()| self.unpack_frame(out))
                } else {
                    chio::read_all(&mut self.ch, out).map_err(|e| self.ctx.io(Stage::RecvPages, e))
                };
                if let Err(err) = r {
                    // Give the buffer back so the pool stays whole.
                    s.release(b);
                    return Err(err);
                }
                if self.session.verify {
                    self.digest
                        .add(page_hash(entry.offset, &b[..entry.len as usize]));
                }
                Some(b)
            }
            None => {
                if self.session.verify {
                    self.digest.add(zero_hash(entry.offset, entry.len));
                }
                None
            }
        };
        s.push(
            self.id,
            Chunk {
                offset: entry.offset,
                len: entry.len,
                data,
            },
        );
        self.counters_packet(
            u64::from(!entry.zero),
            u64::from(entry.zero),
            if entry.zero { 0 } else { u64::from(entry.len) },
            PACKET_HEADER_LEN + STREAM_ENTRY_LEN + h.payload_len as usize,
        );
        self.progress
            .channel(self.id as u32)
            .busy(started, self.cpu);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_writers_hold_up_to_eight_packets_each_within_the_budget() {
        // One or four channels of 512 KiB packets: 8 each (16 MiB in all).
        assert_eq!(writer_buffers(1, 512 << 10), 8);
        assert_eq!(writer_buffers(4, 512 << 10), 8);
        // More channels or larger packets share the budget, never < 2.
        assert_eq!(writer_buffers(8, 512 << 10), 4);
        assert_eq!(writer_buffers(1, 4 << 20), 4);
        assert_eq!(writer_buffers(64, 16 << 20), 2);
        assert_eq!(writer_buffers(0, 0), 8);
    }
}

//! The sender's per-channel threads ([`Worker`]) and what they share with
//! the producer: the job slots ([`State`], [`Shared`]) and the image's raw
//! memory ([`RawImage`]).

use std::io::IoSlice;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use transit_channel::{io as chio, Channel, Condition, FlushOutcome, WriteFlags};

use crate::digest::{page_hash, zero_hash, Digest};
use crate::error::{Ctx, Error, Result, Stage};
use crate::progress::{ChannelCounters, Progress, ThreadCpu};
use crate::session::{self, lock, Failure, Wake, IOV_MAX};
use crate::watchdog::{Activities, Wait};
use crate::wire::{
    self, PacketFlags, PacketHeader, SessionHeader, StreamEntry, PACKET_HEADER_LEN,
    STREAM_ENTRY_LEN,
};
use crate::zero::is_zero;

/// The image's memory as the workers see it: a raw base pointer. Every
/// access (workers' shared reads, the owner's `image`/`image_mut`) derives
/// from this one pointer.
#[derive(Clone, Copy)]
pub(super) struct RawImage {
    pub(super) base: *mut u8,
    pub(super) len: usize,
}

// SAFETY: the pointer refers to memory owned by the Sender's SourceImage,
// which outlives every worker (Sender joins them before dropping it, and a
// leaked Sender leaks the image too). Workers only read it; the owner
// writes only through `image_mut`, which first waits until no worker holds
// a job (so no worker reads it concurrently).
unsafe impl Send for RawImage {}
// SAFETY: as above.
unsafe impl Sync for RawImage {}

impl RawImage {
    /// Drop this process's mapping of the pages of `start..end` (rounded
    /// out to whole memory pages) without touching the file: the next
    /// access maps them again from the page cache. For read-only file
    /// mappings only.
    pub(super) fn release(&self, start: u64, end: u64) {
        // SAFETY: sysconf reads a constant of the system.
        let os_page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as u64,
            _ => 4096,
        };
        let start = start / os_page * os_page;
        let end = end
            .div_ceil(os_page)
            .saturating_mul(os_page)
            .min(self.len as u64);
        if end <= start {
            return;
        }
        // SAFETY: the range lies inside the read-only shared file mapping
        // this value points to; MADV_DONTNEED there only drops page-table
        // entries (contents stay in the file and page cache), so any other
        // reader simply faults the pages in again.
        unsafe {
            libc::madvise(
                self.base.add(start as usize).cast(),
                (end - start) as usize,
                libc::MADV_DONTNEED,
            )
        };
    }

    /// # Safety
    /// `off + len <= self.len` and no one writes the range meanwhile.
    pub(super) unsafe fn slice<'a>(&self, off: u64, len: usize) -> &'a [u8] {
        // SAFETY: the caller guarantees bounds and no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.base.add(off as usize), len) }
    }
}

pub(super) enum Job {
    Pages(Vec<u64>),
    /// Ranges of zero pages, (offset, length) pairs flattened.
    Holes(Vec<u64>),
    /// Ranges of pages the receiver keeps (delta), pairs flattened.
    Keep(Vec<u64>),
    Chunk {
        buf: Vec<u8>,
        offset: u64,
        len: usize,
    },
    Sync,
    End,
    /// Wait until the channel's zero-copy writes completed (before the
    /// owner changes the image).
    Flush,
}

pub(super) struct State {
    pub(super) slots: Vec<Option<Job>>,
    pub(super) busy: Vec<bool>,
    pub(super) free_batches: Vec<Vec<u64>>,
    pub(super) free_chunks: Vec<Vec<u8>>,
    pub(super) chunk_pool: usize,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) work: Vec<Condvar>,
    pub(super) idle: Condvar,
    pub(super) failure: Arc<Failure>,
}

impl Wake for Shared {
    fn wake(&self) {
        let _g = lock(&self.state);
        for c in &self.work {
            c.notify_all();
        }
        self.idle.notify_all();
    }
}

/// One page channel's thread.
pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) ch: Box<dyn Channel>,
    pub(super) ctx: Ctx,
    pub(super) session: SessionHeader,
    pub(super) shared: Arc<Shared>,
    pub(super) progress: Arc<Progress>,
    pub(super) raw: Option<RawImage>,
    /// The image is a mapped file: release the pages of each packet once
    /// sent (`MADV_DONTNEED`; the page cache keeps them), so memory does
    /// not grow with the file.
    pub(super) release: bool,
    /// Pages go with [`WriteFlags::ZERO_COPY`]; flush before SYNC and END.
    pub(super) zero_copy: bool,
    pub(super) packet_num: Arc<std::sync::atomic::AtomicU64>,
    pub(super) epoch: u32,
    pub(super) digest: Digest,
    pub(super) hdr: Vec<u8>,
    pub(super) normal: Vec<u64>,
    pub(super) zero: Vec<u64>,
    pub(super) iov: Vec<IoSlice<'static>>,
    /// Progress seen by the idle timeout's watchdog.
    pub(super) activity: Arc<Activities>,
    /// The session's bandwidth cap, shared by every page channel.
    pub(super) limit: Option<Arc<crate::rate::RateLimit>>,
    /// This channel's compressor (`SendConfig::compress`).
    pub(super) packer: crate::compress::Packer,
    /// Delta: what the receiver has (kept pages' hashes come from here).
    pub(super) keep: Option<Arc<crate::delta::Keep>>,
    /// How to replace this channel's connection if it is lost; `None`:
    /// a lost connection fails the session (and nothing is held).
    pub(super) reconnect: Option<crate::rejoin::Reconnect>,
    /// Packets sent and not yet acknowledged, oldest first.
    pub(super) held: std::collections::VecDeque<Held>,
    /// The packet whose acknowledgement is awaited.
    pub(super) pending_ack: Option<u64>,
    /// Data bytes sent since the last acknowledgement request.
    pub(super) since_ack: u64,
    /// Request an acknowledgement every this many data bytes.
    pub(super) ack_bytes: u64,
    /// When the connection was lost, until the receiver acknowledged
    /// something on a new one.
    pub(super) lost_since: Option<Instant>,
    /// Connections replaced since the receiver last acknowledged a packet.
    pub(super) unacked_reconnects: u32,
    /// Buffers to give back to the producer's pools.
    pub(super) freed: Vec<Job>,
    /// Set by the idle timeout: this channel's connection was cut for
    /// stalling (the error to report if it cannot be replaced).
    pub(super) cuts: Arc<crate::rejoin::Cuts>,
}

/// How often an idle page channel looks at its connection (with
/// reconnection on).
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Connections a channel may replace in a row without the receiver
/// acknowledging anything in between before the window of the first loss
/// bounds them (a receiver too slow for the idle timeout would otherwise
/// be cut and rejoined forever).
const MAX_UNACKED_RECONNECTS: u32 = 4;

/// A packet kept until the receiver acknowledges it, with what sending
/// it counted (taken back if it goes again).
pub(super) struct Held {
    num: u64,
    epoch: u32,
    job: Job,
    counted: Option<Counted>,
}

/// What one packet added to the worker's digest and counters.
#[derive(Default, Clone, Copy)]
struct Counted {
    digest: Digest,
    pages: u64,
    zero: u64,
    payload: u64,
    kept: u64,
}

impl Worker {
    /// Wait until `bytes` fit the session's bandwidth cap (if any). Time
    /// spent here is the cap's, not the receiver's: not idle.
    fn pace(&self, bytes: usize) {
        if let Some(l) = &self.limit {
            let a = self.activity.page(self.id);
            a.set(Wait::Off);
            l.take(bytes as u64, || self.shared.failure.is_failed());
            a.tick();
            a.set(Wait::Mid(Stage::SendPages));
        }
    }

    pub(super) fn run(mut self) -> Digest {
        let cpu = ThreadCpu::start();
        let shared = self.shared.clone();
        loop {
            let job = {
                let mut st = lock(&shared.state);
                loop {
                    if shared.failure.is_failed() {
                        return self.digest;
                    }
                    if let Some(j) = st.slots[self.id].take() {
                        st.busy[self.id] = true;
                        break j;
                    }
                    if self.reconnect.is_none() {
                        st = shared.work[self.id]
                            .wait(st)
                            .unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    // With reconnection, an idle channel looks at its
                    // connection now and then: a pending acknowledgement
                    // is read, a broken connection replaced at once (the
                    // receiver waits for it only so long).
                    let (g, waited) = shared.work[self.id]
                        .wait_timeout(st, IDLE_CHECK)
                        .unwrap_or_else(|e| e.into_inner());
                    st = g;
                    if waited.timed_out() && st.slots[self.id].is_none() {
                        st.busy[self.id] = true;
                        drop(st);
                        let r = self.check_idle();
                        st = lock(&shared.state);
                        st.busy[self.id] = false;
                        self.give_back(&mut st);
                        shared.idle.notify_all();
                        if let Err(e) = r {
                            drop(st);
                            shared.failure.fail(e, false);
                            return self.digest;
                        }
                    }
                }
            };
            // The slot is free: the producer may queue the next job now.
            shared.idle.notify_all();
            let started = Instant::now();
            let end = matches!(job, Job::End);
            // Writing a packet waits on the receiver; waiting for the
            // next job (a slow producer or source) does not.
            let stage = match job {
                Job::Pages(_) | Job::Chunk { .. } => Stage::SendPages,
                Job::Holes(_) | Job::Keep(_) => Stage::SendHeader,
                Job::Sync | Job::Flush => Stage::Sync,
                Job::End => Stage::End,
            };
            let activity = self.activity.clone();
            let activity = activity.page(self.id);
            activity.set(Wait::Mid(stage));
            let result = self.process(job);
            activity.tick();
            activity.set(Wait::Off);
            self.counters().busy(started, cpu);
            {
                let mut st = lock(&shared.state);
                st.busy[self.id] = false;
                self.give_back(&mut st);
            }
            shared.idle.notify_all();
            if let Err(e) = result {
                shared.failure.fail(e, false);
                return self.digest;
            }
            if end {
                return self.digest;
            }
        }
    }

    /// Give the buffers of packets let go back to the producer's pools.
    fn give_back(&mut self, st: &mut State) {
        for j in self.freed.drain(..) {
            match j {
                Job::Pages(mut v) => {
                    v.clear();
                    st.free_batches.push(v);
                }
                Job::Chunk { buf, .. } => st.free_chunks.push(buf),
                _ => {}
            }
        }
    }

    /// An idle channel's look at its connection: anything to read is the
    /// awaited acknowledgement (read it), or the connection ending (end of
    /// file, a reset: replace it now, sending again what it held).
    fn check_idle(&mut self) -> Result<()> {
        let ready = chio::wait_blocking(
            &self.ch.watch_source(),
            Condition::IN,
            Some(std::time::Duration::ZERO),
        );
        if !matches!(&ready, Ok(c) if c.is_empty()) {
            let acts = self.activity.clone();
            let a = acts.page(self.id);
            a.set(Wait::Mid(Stage::Sync));
            let r = match self.pending_ack {
                Some(_) => self.read_acks(),
                // Nothing is due from the receiver: this can only be the
                // end of the connection (or a peer out of protocol).
                None => crate::rejoin::read_reply(&mut *self.ch, None, &self.ctx, Stage::Sync)
                    .and_then(|_| {
                        Err(self.ctx.proto(
                            Stage::Sync,
                            wire::WireError::Unexpected("a page reply nobody asked for"),
                        ))
                    }),
            };
            let r = self.recovering(r, |_| Ok(()));
            a.tick();
            a.set(Wait::Off);
            r?;
        }
        Ok(())
    }

    fn counters(&self) -> &ChannelCounters {
        self.progress.channel(self.id as u32)
    }

    fn next_packet_num(&self) -> u64 {
        self.packet_num
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn process(&mut self, job: Job) -> Result<()> {
        let (sync, end) = (matches!(job, Job::Sync), matches!(job, Job::End));
        match job {
            Job::Flush => return self.flush_or_recover(Stage::Sync),
            // The receiver may apply the pass and the owner may change the
            // image after the barrier: nothing may be in flight.
            Job::Sync => self.flush_or_recover(Stage::Sync)?,
            Job::End => self.flush_or_recover(Stage::End)?,
            _ => {}
        }
        let mut held = Held {
            num: self.next_packet_num(),
            epoch: self.epoch,
            job,
            counted: None,
        };
        let r = self.send_held(&mut held);
        if self.reconnect.is_some() {
            self.held.push_back(held);
        } else {
            self.freed.push(held.job);
        }
        // END: done once the receiver acknowledged everything.
        let after = |w: &mut Worker| if end { w.await_acks() } else { Ok(()) };
        let r = r.and_then(|()| after(self));
        self.recovering(r, after)?;
        if sync {
            self.epoch += 1;
        }
        if end {
            // A layered transport ends its stream cleanly (TLS
            // close_notify), so the peer can tell the end from a cut.
            let bye = self.ch.bye().map_err(|e| self.ctx.io(Stage::End, e));
            // With acknowledgements the receiver has confirmed the END
            // already: a connection lost now loses nothing.
            if self.reconnect.is_none() {
                bye?;
            }
        }
        Ok(())
    }

    /// Zero-copy mode: wait for the channel's zero-copy writes; a stalled
    /// or lost connection shows here too, and is replaced (what it held
    /// goes again on the new one, which is then flushed).
    fn flush_or_recover(&mut self, stage: Stage) -> Result<()> {
        let r = self.flush_zero_copy(stage);
        self.recovering(r, |w| w.flush_zero_copy(stage))
    }

    /// The one recovery loop: while `r` is a failure this worker may
    /// survive, replace the connection (sending again what it held), then
    /// run `then` on the new one. Final when no new connection comes.
    fn recovering(
        &mut self,
        mut r: Result<()>,
        mut then: impl FnMut(&mut Worker) -> Result<()>,
    ) -> Result<()> {
        while let Err(e) = r {
            if !self.can_recover(&e) {
                return Err(e);
            }
            r = self.recover(e)?.and_then(|()| then(self));
        }
        Ok(())
    }

    /// Send (or send again) one held packet with its number and epoch,
    /// asking for an acknowledgement when a window of data went since
    /// the last request (and always for END). What it counts is added to
    /// the worker's digest and counters, and remembered in `held`.
    fn send_held(&mut self, held: &mut Held) -> Result<()> {
        let (num, epoch) = (held.num, held.epoch);
        let ack = self.reconnect.is_some() && {
            let bytes = match &held.job {
                Job::Pages(v) => v.len() as u64 * u64::from(self.session.page_size),
                // A chunk holds a whole pool buffer, however short.
                Job::Chunk { len, .. } => (*len as u64).max(u64::from(self.session.packet_payload)),
                _ => 0,
            };
            self.since_ack += bytes;
            self.since_ack >= self.ack_bytes || matches!(held.job, Job::End)
        };
        if ack {
            // One request in flight: its answer first (so at most two
            // windows are held).
            self.read_acks()?;
            self.since_ack = 0;
        }
        let counted = match &held.job {
            Job::Pages(offsets) => self.send_pages(offsets, num, epoch, ack)?,
            Job::Holes(ranges) => self.send_ranges(ranges, PacketFlags::HOLES, num, epoch, ack)?,
            Job::Keep(ranges) => self.send_ranges(ranges, PacketFlags::KEEP, num, epoch, ack)?,
            Job::Chunk { buf, offset, len } => {
                self.send_chunk(&buf[..*len], *offset, num, epoch, ack)?
            }
            Job::Sync => self.send_control(PacketFlags::SYNC, Stage::Sync, num, epoch, ack)?,
            Job::End => self.send_control(PacketFlags::END, Stage::End, num, epoch, ack)?,
            Job::Flush => Counted::default(),
        };
        self.digest.merge(counted.digest);
        held.counted = Some(counted);
        if ack {
            self.pending_ack = Some(num);
        }
        Ok(())
    }

    /// Read the acknowledgement awaited (if any) and let go of every
    /// packet it covers.
    fn read_acks(&mut self) -> Result<()> {
        let Some(want) = self.pending_ack else {
            return Ok(());
        };
        match crate::rejoin::read_reply(&mut *self.ch, None, &self.ctx, Stage::Sync)? {
            wire::PageReply::Ack(n) if n == want => {}
            other => {
                return Err(self.ctx.proto(
                    Stage::Sync,
                    wire::WireError::Unexpected(if matches!(other, wire::PageReply::Ack(_)) {
                        "an acknowledgement of another packet"
                    } else {
                        "a page reply other than an acknowledgement"
                    }),
                ))
            }
        }
        self.pending_ack = None;
        self.lost_since = None;
        self.unacked_reconnects = 0;
        while self.held.front().is_some_and(|h| h.num <= want) {
            if let Some(h) = self.held.pop_front() {
                self.freed.push(h.job);
            }
        }
        Ok(())
    }

    /// END was sent: wait until the receiver acknowledged everything.
    fn await_acks(&mut self) -> Result<()> {
        self.read_acks()
    }

    /// A failure this worker may survive by reconnecting: the connection
    /// failed (not the peer's protocol), the session still runs, and a
    /// new connection is allowed.
    fn can_recover(&self, e: &Error) -> bool {
        self.reconnect.is_some()
            && !self.shared.failure.is_failed()
            && matches!(e, Error::Channel { .. })
    }

    /// Replace the lost connection and send again, in order, every held
    /// packet the receiver did not apply. The outer error is final (no new
    /// connection); the inner one is the new connection failing as well.
    fn recover(&mut self, lost: Error) -> Result<Result<()>> {
        let lost = self.cuts.take(self.id).unwrap_or(lost);
        let applied = self.reconnect_channel(lost)?;
        self.pending_ack = None;
        self.since_ack = 0;
        while self
            .held
            .front()
            .is_some_and(|h| applied.is_some_and(|a| h.num <= a))
        {
            if let Some(h) = self.held.pop_front() {
                self.freed.push(h.job);
            }
        }
        self.progress.reconnected();
        let mut again = std::mem::take(&mut self.held);
        let mut r = Ok(());
        for h in again.iter_mut() {
            if let Some(c) = h.counted.take() {
                self.uncount(c);
            }
            if r.is_ok() {
                r = self.send_held(h);
            }
        }
        self.held = again;
        self.unacked_reconnects += 1;
        if r.is_ok() && self.unacked_reconnects < MAX_UNACKED_RECONNECTS {
            // Back in business: a later loss gets a window of its own
            // (unless connections keep failing with no acknowledgement in
            // between: then the first loss's window bounds them all).
            self.lost_since = None;
        }
        Ok(r)
    }

    /// Take back what a packet counted when it was first sent.
    fn uncount(&mut self, c: Counted) {
        self.digest.unmerge(c.digest);
        self.counters().unpacket(c.pages, c.zero, c.payload);
        if c.kept > 0 {
            self.progress.unkept(c.kept);
        }
    }

    /// Open a new connection for this channel (until the window since the
    /// loss closes), say it rejoins, and learn the last packet the
    /// receiver applied. The error is `lost` when no new connection
    /// could be made, or the receiver refused it.
    fn reconnect_channel(&mut self, lost: Error) -> Result<Option<u64>> {
        let Some(rc) = self.reconnect.clone() else {
            return Err(lost);
        };
        let since = *self.lost_since.get_or_insert_with(Instant::now);
        let deadline = since + rc.window;
        let _ = self.ch.shutdown(transit_channel::Shutdown::Both);
        let acts = self.activity.clone();
        let a = acts.page(self.id);
        a.set(Wait::Off);
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            if self.shared.failure.is_failed() || Instant::now() >= deadline {
                return Err(lost);
            }
            match (rc.connect)(self.id as u32) {
                Ok(ch) => match self.rejoin_on(ch, deadline) {
                    Ok(Some(applied)) => {
                        // Sending again is watched as any packet is.
                        a.tick();
                        a.set(Wait::Mid(Stage::SendPages));
                        return Ok(applied);
                    }
                    // Refused: the session is over at the receiver.
                    Ok(None) => return Err(lost),
                    Err(_) => {}
                },
                Err(e) if e.is_nobody_listening() || e.is_peer_refusal() => return Err(lost),
                Err(_) => {}
            }
            // Back off (woken early if the session fails).
            let left = deadline.saturating_duration_since(Instant::now());
            let st = lock(&self.shared.state);
            if !self.shared.failure.is_failed() {
                let _ = self.shared.work[self.id].wait_timeout(st, backoff.min(left));
            }
            backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
        }
    }

    /// Send the rejoin init packet on `ch` and read the answer by
    /// `deadline`: `Some(applied)` (and `ch` becomes this worker's
    /// connection), `None` if refused.
    fn rejoin_on(
        &mut self,
        mut ch: Box<dyn Channel>,
        deadline: Instant,
    ) -> Result<Option<Option<u64>>> {
        ch.set_blocking(true)
            .map_err(|e| self.ctx.io(Stage::Handshake, e))?;
        let init = wire::InitPacket {
            version: wire::VERSION,
            uuid: self.session.uuid,
            channel_id: self.id as u32,
            rejoin: true,
        };
        chio::write_all(&mut ch, &init.encode()).map_err(|e| self.ctx.io(Stage::Handshake, e))?;
        let reply =
            crate::rejoin::read_reply(&mut *ch, Some(deadline), &self.ctx, Stage::Handshake)?;
        let applied = match reply {
            wire::PageReply::Resume(a) => a,
            wire::PageReply::Refused => return Ok(None),
            wire::PageReply::Ack(_) => {
                return Err(self.ctx.proto(
                    Stage::Handshake,
                    wire::WireError::Unexpected("an acknowledgement instead of a resume point"),
                ))
            }
        };
        let name = format!("multifd-send-{} {}", self.id, ch.name());
        ch.set_name(name);
        if let (true, Some(r)) = (self.zero_copy, self.raw) {
            // SAFETY: as for the first connection (see `Sender::new`): the
            // image outlives every worker's channel.
            let _ = unsafe { ch.register_region(r.slice(0, r.len)) };
        }
        if let Ok(h) = ch.shutdown_handle() {
            self.shared.failure.add_page_handle(h.clone());
            self.cuts.set(self.id, h);
        }
        self.ch = ch;
        Ok(Some(applied))
    }

    /// Zero-copy mode: wait for the channel's zero-copy writes and count
    /// the flush (and whether they fell back to copying).
    fn flush_zero_copy(&mut self, stage: Stage) -> Result<()> {
        if !self.zero_copy {
            return Ok(());
        }
        match self.ch.flush().map_err(|e| self.ctx.io(stage, e))? {
            FlushOutcome::Nothing => {}
            FlushOutcome::ZeroCopy => self.progress.zero_copy_flush(false),
            FlushOutcome::Copied => self.progress.zero_copy_flush(true),
        }
        Ok(())
    }

    fn send_control(
        &mut self,
        flags: PacketFlags,
        stage: Stage,
        num: u64,
        epoch: u32,
        ack: bool,
    ) -> Result<Counted> {
        let mut b = [0u8; PACKET_HEADER_LEN];
        PacketHeader {
            flags: flags.with_ack(ack),
            packet_num: num,
            normal: 0,
            zero: 0,
            payload_len: 0,
            epoch,
        }
        .encode_into(&mut b);
        chio::write_all(&mut self.ch, &b).map_err(|e| self.ctx.io(stage, e))?;
        self.counters().packet(0, 0, 0, PACKET_HEADER_LEN as u64);
        Ok(Counted::default())
    }

    fn send_pages(&mut self, offsets: &[u64], num: u64, epoch: u32, ack: bool) -> Result<Counted> {
        let mut d = Digest::default();
        let Some(raw) = self.raw else {
            return Err(Error::Config("pages in a stream session".into()));
        };
        let verify = self.session.verify;
        self.normal.clear();
        self.zero.clear();
        for &off in offsets {
            let len = self.session.page_len(off);
            // SAFETY: the producer only queues offsets of pages inside the
            // image; nobody writes the image while a job is queued.
            let page = unsafe { raw.slice(off, len) };
            if is_zero(page) {
                self.zero.push(off);
                if verify {
                    d.add(zero_hash(off, len as u32));
                }
            } else {
                self.normal.push(off);
            }
        }
        let payload: usize = self.normal.iter().map(|&o| self.session.page_len(o)).sum();
        // Compress the packet's pages into one frame (a single run is
        // read in place, several are gathered first); a frame that does
        // not shrink is dropped and the pages go raw.
        let mut frame_len = None;
        if payload > 0 && self.packer.want() {
            let mut stage = std::mem::take(&mut self.packer.stage);
            let mut runs = session::runs(&self.normal, &self.session);
            let src: &[u8] = match (runs.next(), runs.next()) {
                // SAFETY: a run of pages inside the image (see above).
                (Some((start, l)), None) => unsafe { raw.slice(start, l) },
                _ => {
                    stage.clear();
                    for (start, l) in session::runs(&self.normal, &self.session) {
                        // SAFETY: as above.
                        stage.extend_from_slice(unsafe { raw.slice(start, l) });
                    }
                    &stage
                }
            };
            frame_len = self.packer.compress(src).map(<[u8]>::len);
            self.packer.stage = stage;
        }
        let hdr = PacketHeader {
            flags: if frame_len.is_some() {
                PacketFlags::COMPRESSED
            } else {
                PacketFlags::DATA
            }
            .with_ack(ack),
            packet_num: num,
            normal: self.normal.len() as u32,
            zero: self.zero.len() as u32,
            payload_len: frame_len.unwrap_or(payload) as u32,
            epoch,
        };
        self.hdr.clear();
        self.hdr.resize(PACKET_HEADER_LEN, 0);
        hdr.encode_into(&mut self.hdr);
        for &o in self.normal.iter().chain(self.zero.iter()) {
            self.hdr.extend_from_slice(&o.to_be_bytes());
        }
        let mut iov = session::recycle(std::mem::take(&mut self.iov));
        iov.push(IoSlice::new(&self.hdr));
        if frame_len.is_some() {
            iov.push(IoSlice::new(self.packer.frame()));
        } else {
            // Contiguous normal pages travel as one iovec.
            for (start, l) in session::runs(&self.normal, &self.session) {
                // SAFETY: a run of pages inside the image (see above).
                iov.push(IoSlice::new(unsafe { raw.slice(start, l) }));
            }
        }
        let header_len = self.hdr.len();
        let wire_payload = frame_len.unwrap_or(payload);
        self.pace(header_len + wire_payload);
        let write_started = Instant::now();
        let r = if self.zero_copy {
            // The header buffer is reused for the next packet: it goes with
            // a normal copy, the pages (unchanged until the next flush)
            // without one.
            let (head, pages) = iov.split_at_mut(1);
            write_tracked(&mut *self.ch, head, WriteFlags::empty()).and_then(|()| {
                write_tracked(&mut *self.ch, pages, WriteFlags::ZERO_COPY)
                    .map_err(|(e, n)| (e, header_len + n))
            })
        } else {
            write_tracked(&mut *self.ch, &mut iov, WriteFlags::empty())
        };
        let write_took = write_started.elapsed();
        self.iov = session::recycle(iov);
        self.packer.sent(payload, write_took);
        if let Err((e, written)) = r {
            let stage = if written < header_len {
                Stage::SendHeader
            } else {
                Stage::SendPages
            };
            return Err(self.ctx.io(stage, e));
        }
        if verify {
            // Hashed after the write: the kernel's copy has just brought
            // the pages from memory into the cache, and the hash reads
            // them from there. On loopback TCP this order measured faster
            // than hashing while scanning (docs/benchmarks.md).
            for &o in &self.normal {
                // SAFETY: as above; the image is unchanged while the job
                // is held, zero copy or not.
                let page = unsafe { raw.slice(o, self.session.page_len(o)) };
                d.add(page_hash(o, page));
            }
        }
        if self.release {
            if let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) {
                let end = last + self.session.page_len(last) as u64;
                raw.release(first, end);
            }
        }
        self.counters().packet(
            self.normal.len() as u64,
            self.zero.len() as u64,
            payload as u64,
            (header_len + wire_payload) as u64,
        );
        Ok(Counted {
            digest: d,
            pages: self.normal.len() as u64,
            zero: self.zero.len() as u64,
            payload: payload as u64,
            kept: 0,
        })
    }

    /// One HOLES packet: ranges of zero pages, never read.
    /// One HOLES or KEEP packet: ranges of pages that carry no payload.
    /// Hole pages fold `zero_hash`, kept pages the `page_hash` of the
    /// image's page (the receiver folds its copy's: they must agree).
    fn send_ranges(
        &mut self,
        ranges: &[u64],
        flags: PacketFlags,
        num: u64,
        epoch: u32,
        ack: bool,
    ) -> Result<Counted> {
        let keep = flags == PacketFlags::KEEP;
        let mut d = Digest::default();
        let ps = u64::from(self.session.page_size);
        let mut pages = 0u64;
        self.hdr.clear();
        self.hdr.resize(PACKET_HEADER_LEN, 0);
        for r in ranges.chunks_exact(2) {
            let (off, len) = (r[0], r[1]);
            self.hdr.extend_from_slice(&off.to_be_bytes());
            self.hdr.extend_from_slice(&len.to_be_bytes());
            let count = len.div_ceil(ps);
            if self.session.verify {
                for idx in off / ps..off / ps + count {
                    let o = idx * ps;
                    let l = self.session.page_len(o);
                    let known = self
                        .keep
                        .as_ref()
                        .filter(|_| keep)
                        .and_then(|k| k.page_hash(o, self.session.page_size));
                    d.add(match (keep, known, self.raw) {
                        (true, Some(h), _) => h,
                        // SAFETY: kept ranges are pages inside the image.
                        (true, None, Some(raw)) => page_hash(o, unsafe { raw.slice(o, l) }),
                        _ => zero_hash(o, l as u32),
                    });
                }
            }
            pages += count;
        }
        PacketHeader {
            flags: flags.with_ack(ack),
            packet_num: num,
            normal: 0,
            zero: (ranges.len() / 2) as u32,
            payload_len: 0,
            epoch,
        }
        .encode_into(&mut self.hdr);
        self.pace(self.hdr.len());
        chio::write_all(&mut self.ch, &self.hdr).map_err(|e| self.ctx.io(Stage::SendHeader, e))?;
        if keep {
            self.counters().packet(0, 0, 0, self.hdr.len() as u64);
            self.progress.kept(pages);
        } else {
            self.counters().packet(0, pages, 0, self.hdr.len() as u64);
        }
        Ok(Counted {
            digest: d,
            zero: if keep { 0 } else { pages },
            kept: if keep { pages } else { 0 },
            ..Counted::default()
        })
    }

    fn send_chunk(
        &mut self,
        data: &[u8],
        offset: u64,
        num: u64,
        epoch: u32,
        ack: bool,
    ) -> Result<Counted> {
        let zero = is_zero(data);
        let mut d = Digest::default();
        if self.session.verify {
            d.add(if zero {
                zero_hash(offset, data.len() as u32)
            } else {
                page_hash(offset, data)
            });
        }
        let raw_len = if zero { 0 } else { data.len() };
        let frame_len = if raw_len > 0 && self.packer.want() {
            self.packer.compress(data).map(<[u8]>::len)
        } else {
            None
        };
        let payload = frame_len.unwrap_or(raw_len);
        let mut b = [0u8; PACKET_HEADER_LEN + STREAM_ENTRY_LEN];
        PacketHeader {
            flags: if frame_len.is_some() {
                PacketFlags::COMPRESSED
            } else {
                PacketFlags::DATA
            }
            .with_ack(ack),
            packet_num: num,
            normal: u32::from(!zero),
            zero: u32::from(zero),
            payload_len: payload as u32,
            epoch,
        }
        .encode_into(&mut b);
        StreamEntry {
            offset,
            len: data.len() as u32,
            zero,
        }
        .encode_into(&mut b[PACKET_HEADER_LEN..]);
        self.pace(b.len() + payload);
        let body = if frame_len.is_some() {
            self.packer.frame()
        } else {
            &data[..payload]
        };
        let mut iov = [IoSlice::new(&b), IoSlice::new(body)];
        let write_started = Instant::now();
        let r = write_tracked(&mut *self.ch, &mut iov, WriteFlags::empty());
        self.packer.sent(raw_len, write_started.elapsed());
        if let Err((e, written)) = r {
            let stage = if written < b.len() {
                Stage::SendHeader
            } else {
                Stage::SendPages
            };
            return Err(self.ctx.io(stage, e));
        }
        self.counters().packet(
            u64::from(!zero),
            u64::from(zero),
            raw_len as u64,
            (b.len() + payload) as u64,
        );
        Ok(Counted {
            digest: d,
            pages: u64::from(!zero),
            zero: u64::from(zero),
            payload: raw_len as u64,
            kept: 0,
        })
    }
}

/// Write every buffer (at most `IOV_MAX` per call); on error also say how
/// many bytes went out, so the caller can tell header from payload.
fn write_tracked(
    ch: &mut dyn Channel,
    mut bufs: &mut [IoSlice<'_>],
    flags: WriteFlags,
) -> std::result::Result<(), (transit_channel::Error, usize)> {
    let mut written = 0usize;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let take = bufs.len().min(IOV_MAX);
        match ch.writev(&bufs[..take], &[], flags) {
            Ok(0) => {
                return Err((
                    transit_channel::Error::os(
                        ch.name(),
                        "writev",
                        std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote 0 bytes"),
                    ),
                    written,
                ))
            }
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(transit_channel::Error::WouldBlock) => {
                if let Err(e) = chio::wait_blocking(&ch.watch_source(), Condition::OUT, None) {
                    return Err((e, written));
                }
            }
            Err(e) => return Err((e, written)),
        }
    }
    Ok(())
}

//! The protocol engine: credits, framing, chunking, ordering and teardown
//! over any [`Verbs`]. Never blocks; the channel layer waits.
//!
//! Memory: one page-aligned, registered arena holds `ring_depth +
//! CTRL_SLOTS` receive slots followed by `send_depth` send slots, each
//! `slot_size` bytes. A
//! receive slot is posted as a RECV whenever the engine does not hold data
//! in it; a send slot belongs to at most one outstanding SEND.

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::ptr::NonNull;

use super::verbs::{
    Completion, ConnParams, MemKey, PostError, Sge, Verbs, WcKind, WcStatus, SEND_BIT,
};
use super::wire::{Header, MsgType, CTRL_SLOTS, HEADER_LEN, VERSION};
use super::RdmaConfig;
use crate::error::{Error, Result};

/// Completions taken per `poll_cq` call.
const POLL_BATCH: usize = 32;

/// A page-aligned heap allocation shared with the NIC.
///
/// Only raw pointers are kept, and slices are made for one slot at a time,
/// for a slot no posted work request uses, so the NIC (or the model's wire
/// thread) writing other slots never aliases a Rust reference.
pub(crate) struct Arena {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the arena is plain memory owned by the engine; access is
// coordinated by the engine (one slot per owner) and the engine itself sits
// behind a mutex.
unsafe impl Send for Arena {}

impl Arena {
    fn new(len: usize) -> io::Result<Arena> {
        let layout = Layout::from_size_align(len.max(1), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate the RDMA buffers",
            )
        })?;
        Ok(Arena { ptr, layout })
    }

    fn addr(&self, off: usize) -> u64 {
        self.ptr.as_ptr() as u64 + off as u64
    }

    /// # Safety
    /// `off + len` is inside the arena and no posted work request uses the
    /// range.
    unsafe fn slice(&self, off: usize, len: usize) -> &[u8] {
        debug_assert!(off + len <= self.layout.size());
        // SAFETY: in bounds and not written concurrently (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    /// # Safety
    /// As [`Arena::slice`], and no other reference to the range exists.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + len <= self.layout.size());
        // SAFETY: in bounds and exclusively ours for now (caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Received data not yet read: bytes `start..end` of a receive slot.
#[derive(Debug, Clone, Copy)]
struct Pending {
    slot: u32,
    start: u32,
    end: u32,
}

/// A user memory registration (see `RegisteredRegion`).
#[derive(Debug)]
struct Region {
    id: u64,
    start: usize,
    end: usize,
    key: MemKey,
    /// Outstanding SENDs gathering from the region.
    inflight: u32,
}

/// Why the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Work requests were flushed before the peer sent CLOSE: it vanished.
    Vanished,
    /// The connection went down after the peer's CLOSE: writes fail, reads
    /// see EOF.
    ClosedByPeer,
    /// The transport reported an error.
    Transport(String),
    /// The peer broke the protocol.
    Protocol(String),
}

/// Counters for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// DATA messages sent.
    pub data_sent: u64,
    /// DATA messages whose payload went straight from registered user
    /// memory (no copy).
    pub zero_copy_sent: u64,
    /// Explicit CREDIT messages sent.
    pub credit_msgs_sent: u64,
    /// DATA messages received.
    pub data_received: u64,
    /// Highest number of SENDs outstanding at once.
    pub max_outstanding: u32,
    /// Times a write stopped early because no credit was left.
    pub credit_stalls: u64,
    /// Times a write stopped early because the send queue was full.
    pub queue_stalls: u64,
}

/// The protocol state of one connection.
pub(crate) struct Engine {
    name: String,
    // Declared before `arena`: dropped (queue pair destroyed) first.
    verbs: Box<dyn Verbs>,
    arena: Arena,
    key: MemKey,
    slot: usize,
    /// Data credits we grant (receive slots for DATA).
    ring: u32,
    /// Receive slots posted: `ring + CTRL_SLOTS`.
    rx_slots: u32,
    peer_ring: u32,
    /// Control-window messages sent, acknowledged by the peer, received.
    ctrl_sent: u16,
    peer_ctrl_acks: u16,
    ctrl_recv: u16,
    /// `ctrl_recv` as carried by our last message.
    acks_sent: u16,
    /// Largest message (header included) the peer accepts.
    msg_cap: usize,

    // Receive side.
    pending: VecDeque<Pending>,
    next_rx_seq: u32,
    /// Receive slots re-posted but not yet announced to the peer.
    owed: u32,
    /// Credits the peer holds on our ring, as far as we know.
    peer_credits: u32,
    peer_closed: bool,

    // Send side.
    credits: u32,
    free_slots: Vec<u32>,
    outstanding: u32,
    max_outstanding: u32,
    next_tx_seq: u32,
    close_sent: bool,
    /// Region id of the SEND using each send slot.
    slot_region: Vec<Option<u64>>,
    regions: Vec<Region>,
    next_region_id: u64,
    zc_since_flush: u64,
    copied_since_flush: u64,
    /// SENDs that completed with an error since the last flush.
    failed_sends: u64,

    armed: bool,
    disconnected: bool,
    failure: Option<Failure>,
    wcs: Vec<Option<Completion>>,
    stats: EngineStats,
}

impl Engine {
    /// Register the buffers, post the receive ring, then establish the
    /// connection (exchanging ring sizes with the peer).
    pub(crate) fn new(name: String, mut verbs: Box<dyn Verbs>, cfg: &RdmaConfig) -> Result<Engine> {
        cfg.validate(&name)?;
        let limits = verbs.limits();
        let rx_slots = cfg.ring_depth + CTRL_SLOTS;
        if rx_slots > limits.max_recv_wr {
            return Err(Error::protocol(
                &name,
                format!(
                    "receive ring of {rx_slots} buffers exceeds the device's receive queue of {}",
                    limits.max_recv_wr
                ),
            ));
        }
        let slot = cfg.slot_size as usize;
        let total = slot * (rx_slots as usize + cfg.send_depth as usize);
        let arena = Arena::new(total).map_err(|e| Error::os(&name, "allocate buffers", e))?;
        // SAFETY: the arena outlives the registration: it is a field of the
        // engine declared after `verbs`, and Engine::drop deregisters first.
        let key = unsafe { verbs.register(arena.ptr.as_ptr(), total) }
            .map_err(|e| Error::os(&name, "register buffers", e))?;
        let mut eng = Engine {
            name,
            verbs,
            arena,
            key,
            slot,
            ring: cfg.ring_depth,
            rx_slots,
            peer_ring: 0,
            ctrl_sent: 0,
            peer_ctrl_acks: 0,
            ctrl_recv: 0,
            acks_sent: 0,
            msg_cap: 0,
            pending: VecDeque::with_capacity(cfg.ring_depth as usize),
            next_rx_seq: 0,
            owed: 0,
            peer_credits: cfg.ring_depth,
            peer_closed: false,
            credits: 0,
            free_slots: (0..cfg.send_depth).rev().collect(),
            outstanding: 0,
            max_outstanding: cfg.send_depth.min(limits.max_send_wr).max(1),
            next_tx_seq: 0,
            close_sent: false,
            slot_region: vec![None; cfg.send_depth as usize],
            regions: Vec::new(),
            next_region_id: 1,
            zc_since_flush: 0,
            copied_since_flush: 0,
            failed_sends: 0,
            armed: false,
            disconnected: false,
            failure: None,
            wcs: vec![None; POLL_BATCH],
            stats: EngineStats::default(),
        };
        for s in 0..eng.rx_slots {
            eng.post_recv_slot(s, false)
                .map_err(|e| Error::os(&eng.name, "post the receive ring", e))?;
        }
        let local = ConnParams {
            version: VERSION,
            ring_depth: cfg.ring_depth,
            slot_size: cfg.slot_size,
        };
        let peer = eng
            .verbs
            .establish(local)
            .map_err(|e| Error::os(&eng.name, "establish the connection", e))?;
        if peer.version != VERSION {
            return Err(Error::protocol(
                &eng.name,
                format!(
                    "peer speaks RDMA protocol version {}, we speak {VERSION}",
                    peer.version
                ),
            ));
        }
        if peer.ring_depth < 1 || (peer.slot_size as usize) <= HEADER_LEN {
            return Err(Error::protocol(
                &eng.name,
                format!(
                    "peer announced an unusable receive ring ({} buffers of {} bytes)",
                    peer.ring_depth, peer.slot_size
                ),
            ));
        }
        eng.peer_ring = peer.ring_depth;
        eng.credits = peer.ring_depth;
        eng.msg_cap = eng.slot.min(peer.slot_size as usize);
        Ok(eng)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    pub(crate) fn completion_fd(&self) -> std::os::fd::RawFd {
        self.verbs.completion_fd()
    }

    pub(crate) fn stats(&self) -> EngineStats {
        self.stats
    }

    pub(crate) fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    fn send_slot_off(&self, slot: u32) -> usize {
        (self.rx_slots as usize + slot as usize) * self.slot
    }

    /// Post receive slot `slot` again; `owed`: it held a message that used
    /// a data credit, which now goes back to the peer.
    fn post_recv_slot(&mut self, slot: u32, owed: bool) -> io::Result<()> {
        let off = slot as usize * self.slot;
        let sge = Sge {
            addr: self.arena.addr(off),
            len: self.slot as u32,
            lkey: self.key.lkey,
        };
        match self.verbs.post_recv(u64::from(slot), sge) {
            Ok(()) => {
                if owed {
                    self.owed += 1;
                }
                Ok(())
            }
            Err(PostError::QueueFull) => Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "receive queue full",
            )),
            Err(PostError::Failed(e)) => Err(e),
        }
    }

    fn fail(&mut self, f: Failure) {
        if self.failure.is_none() {
            self.failure = Some(f);
        }
    }

    /// Consume notifications and every completion that is ready; send an
    /// explicit credit if the peer needs one. True if anything happened.
    pub(crate) fn service(&mut self) -> bool {
        if self.armed {
            self.armed = false;
            if let Err(e) = self.verbs.ack_events() {
                self.fail(Failure::Transport(format!("completion channel: {e}")));
            }
        }
        let mut any = false;
        loop {
            let mut wcs = std::mem::take(&mut self.wcs);
            let n = match self.verbs.poll_cq(&mut wcs) {
                Ok(n) => n,
                Err(e) => {
                    self.wcs = wcs;
                    self.fail(Failure::Transport(format!("poll completion queue: {e}")));
                    return true;
                }
            };
            for wc in wcs.iter_mut().take(n) {
                if let Some(wc) = wc.take() {
                    self.handle(wc);
                }
            }
            self.wcs = wcs;
            if n == 0 {
                break;
            }
            any = true;
        }
        self.maybe_grant();
        any
    }

    /// Arm the completion notification, then look again (closing the race
    /// with completions that arrived before arming). True if something
    /// happened, in which case the caller must not sleep.
    pub(crate) fn prepare_sleep(&mut self) -> bool {
        if let Err(e) = self.verbs.arm() {
            self.fail(Failure::Transport(format!(
                "arm completion notification: {e}"
            )));
            return true;
        }
        self.armed = true;
        self.service()
    }

    fn handle(&mut self, wc: Completion) {
        match wc.kind {
            WcKind::Send => self.on_send_done(wc),
            WcKind::Recv => self.on_recv(wc),
        }
    }

    fn on_flush(&mut self) {
        if self.disconnected {
            return;
        }
        if self.peer_closed {
            self.fail(Failure::ClosedByPeer);
        } else {
            self.fail(Failure::Vanished);
        }
    }

    fn on_send_done(&mut self, wc: Completion) {
        let slot = (wc.wr_id & !SEND_BIT) as u32;
        if (slot as usize) < self.slot_region.len() {
            if let Some(id) = self.slot_region[slot as usize].take() {
                if let Some(r) = self.regions.iter_mut().find(|r| r.id == id) {
                    r.inflight = r.inflight.saturating_sub(1);
                }
            }
            self.free_slots.push(slot);
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        if wc.status != WcStatus::Success && !self.disconnected {
            self.failed_sends += 1;
        }
        match wc.status {
            WcStatus::Success => {}
            WcStatus::Flushed => self.on_flush(),
            WcStatus::RnrRetryExceeded => self.fail(Failure::Transport(
                "SEND found no posted receive at the peer (receiver not ready, retries exhausted)"
                    .into(),
            )),
            WcStatus::RetryExceeded => self.fail(Failure::Transport(
                "the peer stopped answering (transport retries exhausted)".into(),
            )),
            WcStatus::Other(s) => self.fail(Failure::Transport(format!("SEND failed: {s}"))),
        }
    }

    fn on_recv(&mut self, wc: Completion) {
        let slot = wc.wr_id as u32;
        if slot >= self.rx_slots {
            self.fail(Failure::Transport(format!(
                "receive completion for unknown buffer {}",
                wc.wr_id
            )));
            return;
        }
        match wc.status {
            WcStatus::Success => {}
            WcStatus::Flushed => return self.on_flush(),
            other => {
                return self.fail(Failure::Transport(format!("RECV failed: {other:?}")));
            }
        }
        let len = (wc.byte_len as usize).min(self.slot);
        // SAFETY: the slot's receive just completed, so no work request
        // uses it until it is posted again.
        let bytes = unsafe {
            self.arena
                .slice(slot as usize * self.slot, HEADER_LEN.min(len))
        };
        let hdr = match Header::decode(bytes, wc.byte_len as usize) {
            Ok(h) => h,
            Err(e) => return self.fail(Failure::Protocol(format!("bad message: {e}"))),
        };
        if hdr.seq != self.next_rx_seq {
            return self.fail(Failure::Protocol(format!(
                "message {} arrived when {} was expected",
                hdr.seq, self.next_rx_seq
            )));
        }
        self.next_rx_seq = self.next_rx_seq.wrapping_add(1);
        if self.ctrl_sent.wrapping_sub(hdr.ctrl_acks) > CTRL_SLOTS as u16 {
            return self.fail(Failure::Protocol(format!(
                "peer acknowledged {} control messages, {} were sent",
                hdr.ctrl_acks, self.ctrl_sent
            )));
        }
        self.peer_ctrl_acks = hdr.ctrl_acks;
        if hdr.ctrl {
            if self.ctrl_recv.wrapping_sub(self.last_acks_sent()) >= CTRL_SLOTS as u16 {
                return self.fail(Failure::Protocol("peer overran the control window".into()));
            }
            self.ctrl_recv = self.ctrl_recv.wrapping_add(1);
        } else {
            if self.peer_credits == 0 {
                return self.fail(Failure::Protocol(
                    "peer sent a message without a credit".into(),
                ));
            }
            self.peer_credits -= 1;
        }
        match self.credits.checked_add(hdr.credits) {
            Some(c) if c <= self.peer_ring => self.credits = c,
            _ => {
                return self.fail(Failure::Protocol(format!(
                    "peer granted {} credits on top of {}, more than its ring of {}",
                    hdr.credits, self.credits, self.peer_ring
                )))
            }
        }
        match hdr.kind {
            MsgType::Data => {
                self.stats.data_received += 1;
                self.pending.push_back(Pending {
                    slot,
                    start: HEADER_LEN as u32,
                    end: (HEADER_LEN as u32) + hdr.length,
                });
            }
            MsgType::Credit | MsgType::Close => {
                if hdr.kind == MsgType::Close {
                    self.peer_closed = true;
                    // A flush seen first (completions out of order across
                    // queues) was the teardown after this CLOSE.
                    if self.failure == Some(Failure::Vanished) {
                        self.failure = Some(Failure::ClosedByPeer);
                    }
                }
                if let Err(e) = self.post_recv_slot(slot, !hdr.ctrl) {
                    if !self.disconnected {
                        self.fail(Failure::Transport(format!("re-post a receive: {e}")));
                    }
                }
            }
        }
    }

    /// Control acks as of our last message: every control message we had
    /// processed by then. The peer may have at most `CTRL_SLOTS` beyond it.
    fn last_acks_sent(&self) -> u16 {
        self.acks_sent
    }

    /// Control-window messages sent and not yet acknowledged.
    fn ctrl_inflight(&self) -> u16 {
        self.ctrl_sent.wrapping_sub(self.peer_ctrl_acks)
    }

    /// Where a CREDIT or CLOSE may go now: the control window (`Some(true)`)
    /// while fewer than `limit` control messages are unacknowledged, else a
    /// data credit (`Some(false)`), else nowhere.
    fn ctrl_route(&self, limit: u16) -> Option<bool> {
        if self.free_slots.is_empty() || self.outstanding >= self.max_outstanding {
            return None;
        }
        if self.ctrl_inflight() < limit {
            Some(true)
        } else if self.credits >= 1 {
            Some(false)
        } else {
            None
        }
    }

    /// Anything for a reader: data, EOF or an error.
    pub(crate) fn readable(&self) -> bool {
        !self.pending.is_empty() || self.peer_closed || self.failure.is_some()
    }

    fn can_post(&self, need_credits: u32) -> bool {
        self.credits >= need_credits
            && !self.free_slots.is_empty()
            && self.outstanding < self.max_outstanding
    }

    /// A write would make progress (or fail at once).
    pub(crate) fn writable(&self) -> bool {
        self.failure.is_some() || self.close_sent || self.can_post(1)
    }

    /// SENDs not completed yet.
    pub(crate) fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Send an explicit CREDIT when the peer is out of credits or half the
    /// ring is owed: on the control window if it has room, else on a data
    /// credit.
    fn maybe_grant(&mut self) {
        if self.owed == 0 || self.disconnected || self.failure.is_some() {
            return;
        }
        if self.owed < (self.ring / 2).max(1) && self.peer_credits > 0 {
            return;
        }
        let Some(ctrl) = self.ctrl_route(1) else {
            return;
        };
        if self.post_msg(MsgType::Credit, &[], None, ctrl).is_ok() {
            self.stats.credit_msgs_sent += 1;
        }
    }

    /// Post one message from a free send slot: header (with the owed
    /// credits), then either the payload already copied into the slot
    /// (`copied` bytes) or a gather from a registered region.
    fn post_msg(
        &mut self,
        kind: MsgType,
        extra: &[Sge],
        region: Option<u64>,
        ctrl: bool,
    ) -> std::result::Result<(), ()> {
        self.post_msg_len(kind, 0, extra, region, ctrl)
    }

    fn post_msg_len(
        &mut self,
        kind: MsgType,
        copied: usize,
        extra: &[Sge],
        region: Option<u64>,
        ctrl: bool,
    ) -> std::result::Result<(), ()> {
        let Some(slot) = self.free_slots.pop() else {
            return Err(());
        };
        let length = copied + extra.iter().map(|s| s.len as usize).sum::<usize>();
        let hdr = Header {
            kind,
            length: length as u32,
            credits: self.owed,
            seq: self.next_tx_seq,
            ctrl,
            ctrl_acks: self.ctrl_recv,
        };
        let off = self.send_slot_off(slot);
        // SAFETY: the slot came off the free list: no work request uses it.
        let head = unsafe { self.arena.slice_mut(off, HEADER_LEN) };
        let head: &mut [u8; HEADER_LEN] = head.try_into().map_err(|_| ())?;
        hdr.encode(head);
        let mut sges = [Sge {
            addr: self.arena.addr(off),
            len: (HEADER_LEN + copied) as u32,
            lkey: self.key.lkey,
        }; 2];
        let n = 1 + extra.len().min(1);
        if let Some(e) = extra.first() {
            sges[1] = *e;
        }
        match self.verbs.post_send(SEND_BIT | u64::from(slot), &sges[..n]) {
            Ok(()) => {
                self.next_tx_seq = self.next_tx_seq.wrapping_add(1);
                if ctrl {
                    self.ctrl_sent = self.ctrl_sent.wrapping_add(1);
                } else {
                    self.credits -= 1;
                }
                self.acks_sent = self.ctrl_recv;
                self.peer_credits += self.owed;
                self.owed = 0;
                self.outstanding += 1;
                self.stats.max_outstanding = self.stats.max_outstanding.max(self.outstanding);
                self.slot_region[slot as usize] = region;
                Ok(())
            }
            Err(PostError::QueueFull) => {
                self.free_slots.push(slot);
                self.max_outstanding = self.outstanding.max(1);
                Err(())
            }
            Err(PostError::Failed(e)) => {
                self.free_slots.push(slot);
                if !self.disconnected {
                    self.fail(Failure::Transport(format!("post SEND: {e}")));
                }
                Err(())
            }
        }
    }

    /// The error a caller sees for a failure during `op`.
    pub(crate) fn error(&self, op: &str) -> Error {
        let (kind, msg) = match &self.failure {
            Some(Failure::Vanished) => (
                io::ErrorKind::ConnectionReset,
                "the RDMA peer disconnected without closing the stream".to_owned(),
            ),
            Some(Failure::ClosedByPeer) => (
                io::ErrorKind::BrokenPipe,
                "the RDMA peer closed the connection".to_owned(),
            ),
            Some(Failure::Transport(m)) => (io::ErrorKind::Other, m.clone()),
            Some(Failure::Protocol(m)) => return Error::protocol(&self.name, m),
            None => return Error::closed(&self.name),
        };
        Error::os(&self.name, op, io::Error::new(kind, msg))
    }

    /// Read buffered data. `Ok(0)` is EOF (the peer's CLOSE, or `shut`).
    pub(crate) fn read(&mut self, bufs: &mut [IoSliceMut<'_>], shut: bool) -> Result<usize> {
        let mut n = 0;
        'bufs: for buf in bufs.iter_mut() {
            let mut at = 0;
            while at < buf.len() {
                let Some(p) = self.pending.front_mut() else {
                    break 'bufs;
                };
                let take = (p.end - p.start).min((buf.len() - at) as u32) as usize;
                let off = p.slot as usize * self.slot + p.start as usize;
                // SAFETY: the slot holds received data and is not posted.
                let src = unsafe { self.arena.slice(off, take) };
                buf[at..at + take].copy_from_slice(src);
                at += take;
                n += take;
                p.start += take as u32;
                if p.start == p.end {
                    let slot = p.slot;
                    self.pending.pop_front();
                    if let Err(e) = self.post_recv_slot(slot, true) {
                        if !self.disconnected {
                            self.fail(Failure::Transport(format!("re-post a receive: {e}")));
                        }
                    }
                }
            }
        }
        if n > 0 {
            self.maybe_grant();
            return Ok(n);
        }
        if self.peer_closed || shut {
            return Ok(0);
        }
        if self.failure.is_some() {
            return Err(self.error("read"));
        }
        Err(Error::WouldBlock)
    }

    fn write_gate(&self) -> Result<()> {
        if self.failure.is_some() {
            return Err(self.error("write"));
        }
        if self.close_sent {
            return Err(Error::os(
                &self.name,
                "write",
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the stream was already ended in this direction (bye/shutdown)",
                ),
            ));
        }
        Ok(())
    }

    fn data_room(&mut self) -> bool {
        if self.credits < 1 {
            self.stats.credit_stalls += 1;
            return false;
        }
        if self.free_slots.is_empty() || self.outstanding >= self.max_outstanding {
            self.stats.queue_stalls += 1;
            return false;
        }
        true
    }

    fn region_of(&self, s: &[u8]) -> Option<(u64, u32)> {
        let start = s.as_ptr() as usize;
        let end = start + s.len();
        self.regions
            .iter()
            .find(|r| r.start <= start && end <= r.end)
            .map(|r| (r.id, r.key.lkey))
    }

    /// Queue bytes as DATA messages while credits, send slots and work
    /// requests last. With `zero_copy`, slices inside a registered region
    /// are gathered from it without a copy.
    pub(crate) fn write(&mut self, bufs: &[IoSlice<'_>], zero_copy: bool) -> Result<usize> {
        self.write_gate()?;
        let payload_cap = self.msg_cap - HEADER_LEN;
        let mut total = 0usize;
        let (mut i, mut at) = (0usize, 0usize);
        loop {
            while i < bufs.len() && at == bufs[i].len() {
                i += 1;
                at = 0;
            }
            if i == bufs.len() || !self.data_room() {
                break;
            }
            if zero_copy {
                if let Some((id, lkey)) = self.region_of(&bufs[i][at..]) {
                    let take = (bufs[i].len() - at).min(payload_cap);
                    let sge = Sge {
                        addr: bufs[i][at..].as_ptr() as u64,
                        len: take as u32,
                        lkey,
                    };
                    if self
                        .post_msg(MsgType::Data, &[sge], Some(id), false)
                        .is_err()
                    {
                        break;
                    }
                    if let Some(r) = self.regions.iter_mut().find(|r| r.id == id) {
                        r.inflight += 1;
                    }
                    self.stats.data_sent += 1;
                    self.stats.zero_copy_sent += 1;
                    self.zc_since_flush += 1;
                    at += take;
                    total += take;
                    continue;
                }
            }
            // Copy: coalesce slices into one message (in zero-copy mode stop
            // before a slice that can go without a copy).
            let Some(&slot) = self.free_slots.last() else {
                break;
            };
            let off = self.send_slot_off(slot) + HEADER_LEN;
            // SAFETY: the slot is free: no work request uses it.
            let dst = unsafe { self.arena.slice_mut(off, payload_cap) };
            let mut filled = 0;
            let (mut ci, mut cat) = (i, at);
            while filled < payload_cap && ci < bufs.len() {
                if cat == bufs[ci].len() {
                    ci += 1;
                    cat = 0;
                    if zero_copy && ci < bufs.len() && self.region_of(&bufs[ci]).is_some() {
                        break;
                    }
                    continue;
                }
                let take = (bufs[ci].len() - cat).min(payload_cap - filled);
                dst[filled..filled + take].copy_from_slice(&bufs[ci][cat..cat + take]);
                filled += take;
                cat += take;
            }
            if self
                .post_msg_len(MsgType::Data, filled, &[], None, false)
                .is_err()
            {
                break;
            }
            self.stats.data_sent += 1;
            if zero_copy {
                self.copied_since_flush += 1;
            }
            (i, at) = (ci, cat);
            total += filled;
        }
        if total == 0 {
            self.write_gate()?;
            return Err(Error::WouldBlock);
        }
        Ok(total)
    }

    /// Post CLOSE if possible. `Ok(true)` once it is posted (or was).
    pub(crate) fn try_close(&mut self) -> Result<bool> {
        if self.close_sent {
            return Ok(true);
        }
        if self.failure.is_some() {
            return Err(self.error("end the stream"));
        }
        // CLOSE may take the last control slot (CREDIT leaves it free).
        let Some(ctrl) = self.ctrl_route(CTRL_SLOTS as u16) else {
            return Ok(false);
        };
        match self.post_msg(MsgType::Close, &[], None, ctrl) {
            Ok(()) => {
                self.close_sent = true;
                Ok(true)
            }
            Err(()) => match self.failure {
                Some(_) => Err(self.error("end the stream")),
                None => Ok(false),
            },
        }
    }

    pub(crate) fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// SENDs that failed since the last [`Engine::take_flush_outcome`].
    pub(crate) fn failed_sends(&self) -> u64 {
        self.failed_sends
    }

    /// What zero-copy writes did since the last call.
    pub(crate) fn take_flush_outcome(&mut self) -> crate::channel::FlushOutcome {
        use crate::channel::FlushOutcome;
        let out = match (self.zc_since_flush, self.copied_since_flush) {
            (0, 0) => FlushOutcome::Nothing,
            (0, _) => FlushOutcome::Copied,
            _ => FlushOutcome::ZeroCopy,
        };
        self.zc_since_flush = 0;
        self.copied_since_flush = 0;
        self.failed_sends = 0;
        out
    }

    /// Register user memory for zero-copy writes.
    ///
    /// # Safety
    /// The memory stays allocated and unwritten until [`Engine::unregister`]
    /// returned with the region idle.
    pub(crate) unsafe fn register(&mut self, mem: &[u8]) -> Result<u64> {
        // SAFETY: forwarded from the caller.
        let key = unsafe { self.verbs.register(mem.as_ptr(), mem.len()) }
            .map_err(|e| Error::os(&self.name, "register memory", e))?;
        let id = self.next_region_id;
        self.next_region_id += 1;
        let start = mem.as_ptr() as usize;
        self.regions.push(Region {
            id,
            start,
            end: start + mem.len(),
            key,
            inflight: 0,
        });
        Ok(id)
    }

    /// SENDs still gathering from region `id`.
    pub(crate) fn region_inflight(&self, id: u64) -> u32 {
        self.regions
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.inflight)
    }

    /// Drop region `id`. If SENDs still use it, the connection is torn down
    /// first so the NIC no longer reads the memory.
    pub(crate) fn unregister(&mut self, id: u64) {
        if self.region_inflight(id) > 0 {
            self.fail(Failure::Transport(
                "a registered region was released while SENDs still used it".into(),
            ));
            self.disconnect();
        }
        if let Some(pos) = self.regions.iter().position(|r| r.id == id) {
            let r = self.regions.swap_remove(pos);
            self.verbs.deregister(r.key);
        }
    }

    /// Tear the connection down (flushing everything) and reap the flushed
    /// completions so slots and regions are released.
    pub(crate) fn disconnect(&mut self) {
        if self.disconnected {
            return;
        }
        self.disconnected = true;
        self.verbs.disconnect();
        for _ in 0..64 {
            let n = self.verbs.poll_cq(&mut self.wcs).unwrap_or(0);
            if n == 0 {
                break;
            }
            for i in 0..n {
                if let Some(wc) = self.wcs[i].take() {
                    self.handle(wc);
                }
            }
        }
        // Whatever the NIC did not report is gone with the queue pair.
        for r in &mut self.regions {
            r.inflight = 0;
        }
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        self.disconnected
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.disconnect();
        for r in std::mem::take(&mut self.regions) {
            self.verbs.deregister(r.key);
        }
        self.verbs.deregister(self.key);
    }
}

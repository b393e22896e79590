//! An in-process model of two connected RDMA endpoints, always built, so
//! the protocol (credits, framing, chunking, ordering, teardown) is tested
//! without hardware.
//!
//! [`pair`] returns two connected [`RdmaChannel`]s and a [`ModelHandle`].
//! A "wire" thread plays the part of the two NICs: it takes posted SENDs
//! in order, gathers their bytes from the sender's registered memory and
//! scatters them into the oldest RECV the receiver posted, then queues a
//! completion on each side.
//!
//! What the model enforces, like a reliable-connected queue pair:
//!
//! * **Bounded work queues**: more than `max_send_wr` outstanding SENDs (or
//!   `max_recv_wr` posted RECVs) is refused with "queue full".
//! * **Pre-posted receives**: a SEND that finds no posted RECV is a
//!   receiver-not-ready error that breaks the connection (counted in
//!   [`ModelStats::rnr_errors`]); a message longer than the RECV buffer is
//!   a length error that breaks it too.
//! * **Registered memory**: every scatter/gather element must lie inside a
//!   registration of its side with the matching key, or the work request
//!   fails with a protection error.
//! * **Completion order**: in order within a queue; with
//!   [`ModelConfig::reorder_seed`], send completions are held back and the
//!   send and receive queues are drained in a random interleaving, so a
//!   peer's message can be seen before the completion of the SEND it
//!   answers ([`ModelStats::reordered`] counts such inversions).
//! * **Disconnects**: [`ModelHandle::kill`] (a peer that vanishes) and the
//!   teardown of either side flush every outstanding work request of both
//!   sides with an error status.
//! * **Completion fd**: an eventfd that becomes readable at the next
//!   completion after the CQ was armed (one-shot, like
//!   `ibv_req_notify_cq` + a completion channel).
//!
//! [`ModelHandle::pause`] stalls the wire (posted work stays outstanding),
//! which lets tests fill queues and exhaust credits deterministically.
//!
//! Not modelled: timing, retransmission, memory pinning limits, the
//! connection manager (the two sides exchange their parameters directly),
//! RDMA READ/WRITE (the protocol does not use them).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::engine::Engine;
use super::verbs::{
    Completion, ConnParams, Limits, MemKey, PostError, Sge, Verbs, WcKind, WcStatus,
};
use super::wire::VERSION;
use super::{RdmaChannel, RdmaConfig};
use crate::error::{Error, Result};

/// Queue sizes and behaviour of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// Largest number of outstanding SENDs per side (`max_send_wr`).
    pub max_send_wr: u32,
    /// Largest number of posted RECVs per side (`max_recv_wr`).
    pub max_recv_wr: u32,
    /// Deliver completions out of order across the send and receive
    /// queues, with this random seed.
    pub reorder_seed: Option<u64>,
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig {
            max_send_wr: 64,
            max_recv_wr: 1024,
            reorder_seed: None,
        }
    }
}

/// Which channel of a [`pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first channel returned by [`pair`].
    A,
    /// The second channel returned by [`pair`].
    B,
}

/// What the model saw on one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// SENDs this side posted.
    pub sends_posted: u64,
    /// Highest number of this side's SENDs outstanding at once.
    pub max_send_outstanding: u32,
    /// Highest number of RECVs this side had posted at once.
    pub max_recv_posted: u32,
    /// Posts refused because the queue was full.
    pub queue_full: u64,
    /// This side's SENDs that found no posted RECV at the peer.
    pub rnr_errors: u64,
    /// Scatter/gather elements outside this side's registered memory.
    pub protection_errors: u64,
    /// Payload bytes this side's SENDs gathered from registrations other
    /// than its first one (the channel's own buffers): zero-copy bytes.
    pub gathered_from_user_regions: u64,
    /// Completions this side polled before an older completion.
    pub reordered: u64,
    /// Work requests flushed with an error status on this side.
    pub flushed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Mr {
    start: u64,
    end: u64,
    lkey: u32,
}

#[derive(Debug)]
struct SendWr {
    wr_id: u64,
    sges: [Sge; 2],
    n: usize,
}

#[derive(Debug)]
struct Queued {
    wc: Completion,
    order: u64,
}

#[derive(Debug, Default)]
struct End {
    send_q: VecDeque<SendWr>,
    recv_q: VecDeque<(u64, Sge)>,
    /// Send completions not yet visible (reorder mode).
    held: VecDeque<Queued>,
    send_cq: VecDeque<Queued>,
    recv_cq: VecDeque<Queued>,
    outstanding_sends: u32,
    mrs: Vec<(u64, Mr)>,
    first_mr: Option<u64>,
    armed: bool,
    error: bool,
    alive: bool,
    params: Option<ConnParams>,
    last_polled: u64,
    stats: ModelStats,
}

struct State {
    ends: [End; 2],
    paused: bool,
    stop: bool,
    next_order: u64,
    next_key: u32,
    rng: u64,
    reorder: bool,
    turn: usize,
}

struct Fabric {
    state: Mutex<State>,
    cv: Condvar,
    notify: [OwnedFd; 2],
    cfg: ModelConfig,
    wire: Mutex<Option<JoinHandle<()>>>,
}

impl Fabric {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal(&self, side: usize) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to an eventfd we own. A
        // full counter (EAGAIN) still leaves the fd readable.
        unsafe {
            libc::write(
                self.notify[side].as_raw_fd(),
                (&one as *const u64).cast(),
                8,
            )
        };
    }
}

impl State {
    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Queue a completion on `side`; true if its fd must be signalled.
    fn complete(&mut self, side: usize, wc: Completion, hold: bool) -> bool {
        let order = self.next_order;
        self.next_order += 1;
        let end = &mut self.ends[side];
        if wc.status == WcStatus::Flushed {
            end.stats.flushed += 1;
        }
        let q = Queued { wc, order };
        match q.wc.kind {
            WcKind::Send if hold => end.held.push_back(q),
            WcKind::Send => end.send_cq.push_back(q),
            WcKind::Recv => end.recv_cq.push_back(q),
        }
        if end.armed && !hold {
            end.armed = false;
            return true;
        }
        false
    }

    fn release_held(&mut self, side: usize, all: bool) -> bool {
        let end = &mut self.ends[side];
        if end.held.is_empty() {
            return false;
        }
        let n = if all { end.held.len() } else { 1 };
        for _ in 0..n {
            if let Some(q) = end.held.pop_front() {
                end.send_cq.push_back(q);
            }
        }
        if end.armed {
            end.armed = false;
            return true;
        }
        false
    }

    /// Move `side`'s queue pair to the error state: flush all its work.
    fn flush(&mut self, side: usize) -> bool {
        let end = &mut self.ends[side];
        end.error = true;
        let sends: Vec<u64> = end.send_q.drain(..).map(|w| w.wr_id).collect();
        let recvs: Vec<u64> = end.recv_q.drain(..).map(|(id, _)| id).collect();
        let held: Vec<Queued> = end.held.drain(..).collect();
        end.send_cq.extend(held);
        let mut sig = false;
        for wr_id in sends {
            sig |= self.complete(side, flushed(wr_id, WcKind::Send), false);
        }
        for wr_id in recvs {
            sig |= self.complete(side, flushed(wr_id, WcKind::Recv), false);
        }
        let end = &mut self.ends[side];
        if end.armed {
            end.armed = false;
            sig = true;
        }
        sig
    }

    fn check_sge(&mut self, side: usize, sge: &Sge) -> bool {
        let end = &self.ends[side];
        let ok = end.mrs.iter().any(|(_, mr)| {
            mr.lkey == sge.lkey && mr.start <= sge.addr && sge.addr + u64::from(sge.len) <= mr.end
        });
        if !ok {
            self.ends[side].stats.protection_errors += 1;
        }
        ok
    }

    /// Execute the oldest SEND of `from`. Returns the sides to signal.
    fn execute(&mut self, from: usize) -> [bool; 2] {
        let to = 1 - from;
        let mut sig = [false; 2];
        let Some(wr) = self.ends[from].send_q.pop_front() else {
            return sig;
        };
        self.ends[from].outstanding_sends -= 1;
        let hold = self.reorder && self.rand().is_multiple_of(2);
        let sges = &wr.sges[..wr.n];
        if !sges.iter().all(|s| self.check_sge(from, s)) {
            sig[from] |= self.complete(
                from,
                status(wr.wr_id, WcKind::Send, "local protection error"),
                false,
            );
            sig[from] |= self.flush(from);
            sig[to] |= self.flush(to);
            return sig;
        }
        if self.ends[to].error || !self.ends[to].alive {
            sig[from] |= self.complete(
                from,
                Completion {
                    wr_id: wr.wr_id,
                    kind: WcKind::Send,
                    status: WcStatus::RetryExceeded,
                    byte_len: 0,
                },
                false,
            );
            sig[from] |= self.flush(from);
            return sig;
        }
        let Some((rid, rsge)) = self.ends[to].recv_q.pop_front() else {
            self.ends[from].stats.rnr_errors += 1;
            sig[from] |= self.complete(
                from,
                Completion {
                    wr_id: wr.wr_id,
                    kind: WcKind::Send,
                    status: WcStatus::RnrRetryExceeded,
                    byte_len: 0,
                },
                false,
            );
            sig[from] |= self.flush(from);
            sig[to] |= self.flush(to);
            return sig;
        };
        let total: u64 = sges.iter().map(|s| u64::from(s.len)).sum();
        if total > u64::from(rsge.len) || !self.check_sge(to, &rsge) {
            sig[to] |= self.complete(to, status(rid, WcKind::Recv, "local length error"), false);
            sig[from] |= self.complete(
                from,
                status(wr.wr_id, WcKind::Send, "remote invalid request"),
                false,
            );
            sig[from] |= self.flush(from);
            sig[to] |= self.flush(to);
            return sig;
        }
        let first = self.ends[from].first_mr;
        let mut at = 0u64;
        for s in sges {
            // SAFETY: both ranges lie inside memory registered by their
            // owners (checked above). The engine keeps registered memory
            // allocated until its queue pair is torn down, which flushes
            // this queue under the same lock we hold now, and it does not
            // touch a buffer while a work request on it is outstanding.
            // The two ranges belong to different work requests of
            // different sides, so they never overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    s.addr as *const u8,
                    (rsge.addr + at) as *mut u8,
                    s.len as usize,
                );
            }
            at += u64::from(s.len);
            let is_user = self.ends[from]
                .mrs
                .iter()
                .any(|(h, mr)| Some(*h) != first && mr.lkey == s.lkey);
            if is_user {
                self.ends[from].stats.gathered_from_user_regions += u64::from(s.len);
            }
        }
        sig[to] |= self.complete(
            to,
            Completion {
                wr_id: rid,
                kind: WcKind::Recv,
                status: WcStatus::Success,
                byte_len: total as u32,
            },
            false,
        );
        sig[from] |= self.complete(
            from,
            Completion {
                wr_id: wr.wr_id,
                kind: WcKind::Send,
                status: WcStatus::Success,
                byte_len: 0,
            },
            hold,
        );
        if self.reorder && self.rand().is_multiple_of(4) {
            sig[from] |= self.release_held(from, false);
        }
        sig
    }
}

fn flushed(wr_id: u64, kind: WcKind) -> Completion {
    Completion {
        wr_id,
        kind,
        status: WcStatus::Flushed,
        byte_len: 0,
    }
}

fn status(wr_id: u64, kind: WcKind, what: &str) -> Completion {
    Completion {
        wr_id,
        kind,
        status: WcStatus::Other(what.into()),
        byte_len: 0,
    }
}

fn wire_thread(fabric: Arc<Fabric>) {
    let mut st = fabric.lock();
    loop {
        if st.stop {
            return;
        }
        let busy = |st: &State, s: usize| !st.ends[s].send_q.is_empty();
        if st.paused || (!busy(&st, 0) && !busy(&st, 1)) {
            // Idle: nothing is in flight, so held completions surface.
            let mut sig = [false; 2];
            if !st.paused {
                for (s, flag) in sig.iter_mut().enumerate() {
                    *flag = st.release_held(s, true);
                }
            }
            for (s, flag) in sig.iter().enumerate() {
                if *flag {
                    fabric.signal(s);
                }
            }
            st = fabric.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let mut side = st.turn;
        if !busy(&st, side) {
            side = 1 - side;
        }
        st.turn = 1 - side;
        let sig = st.execute(side);
        for (s, flag) in sig.iter().enumerate() {
            if *flag {
                fabric.signal(s);
            }
        }
    }
}

/// Controls the wire of a model [`pair`].
#[derive(Clone)]
pub struct ModelHandle {
    fabric: Arc<Fabric>,
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHandle")
            .field("cfg", &self.fabric.cfg)
            .finish()
    }
}

impl ModelHandle {
    /// Stall the wire: posted SENDs stay outstanding until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.fabric.lock().paused = true;
    }

    /// Let the wire run again.
    pub fn resume(&self) {
        self.fabric.lock().paused = false;
        self.fabric.cv.notify_all();
    }

    /// The connection dies without either side closing (a peer that
    /// vanished, a cable pulled): every outstanding work request of both
    /// sides is flushed with an error status.
    pub fn kill(&self) {
        let mut st = self.fabric.lock();
        let sig = [st.flush(0), st.flush(1)];
        drop(st);
        for (s, flag) in sig.iter().enumerate() {
            if *flag {
                self.fabric.signal(s);
            }
        }
        self.fabric.cv.notify_all();
    }

    /// What the model saw on `side`.
    pub fn stats(&self, side: Side) -> ModelStats {
        self.fabric.lock().ends[side as usize].stats
    }
}

/// One side's verbs on the model.
struct ModelVerbs {
    fabric: Arc<Fabric>,
    side: usize,
}

impl ModelVerbs {
    fn signal_if(&self, sig: bool) {
        if sig {
            self.fabric.signal(self.side);
        }
    }
}

impl Verbs for ModelVerbs {
    fn limits(&self) -> Limits {
        Limits {
            max_send_wr: self.fabric.cfg.max_send_wr,
            max_recv_wr: self.fabric.cfg.max_recv_wr,
        }
    }

    unsafe fn register(&mut self, addr: *const u8, len: usize) -> io::Result<MemKey> {
        let mut st = self.fabric.lock();
        st.next_key += 1;
        let key = st.next_key;
        let end = &mut st.ends[self.side];
        let handle = u64::from(key);
        end.mrs.push((
            handle,
            Mr {
                start: addr as u64,
                end: addr as u64 + len as u64,
                lkey: key,
            },
        ));
        end.first_mr.get_or_insert(handle);
        Ok(MemKey {
            lkey: key,
            rkey: key,
            handle,
        })
    }

    fn deregister(&mut self, key: MemKey) {
        let mut st = self.fabric.lock();
        st.ends[self.side].mrs.retain(|(h, _)| *h != key.handle);
    }

    fn post_recv(&mut self, wr_id: u64, sge: Sge) -> std::result::Result<(), PostError> {
        let mut st = self.fabric.lock();
        let max = self.fabric.cfg.max_recv_wr;
        if st.ends[self.side].error {
            let sig = st.complete(self.side, flushed(wr_id, WcKind::Recv), false);
            drop(st);
            self.signal_if(sig);
            return Ok(());
        }
        let end = &mut st.ends[self.side];
        if end.recv_q.len() as u32 >= max {
            end.stats.queue_full += 1;
            return Err(PostError::QueueFull);
        }
        end.recv_q.push_back((wr_id, sge));
        end.stats.max_recv_posted = end.stats.max_recv_posted.max(end.recv_q.len() as u32);
        Ok(())
    }

    fn post_send(&mut self, wr_id: u64, sges: &[Sge]) -> std::result::Result<(), PostError> {
        if sges.is_empty() || sges.len() > 2 {
            return Err(PostError::Failed(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the model takes 1 or 2 scatter/gather elements",
            )));
        }
        let mut st = self.fabric.lock();
        let max = self.fabric.cfg.max_send_wr;
        if st.ends[self.side].error {
            let sig = st.complete(self.side, flushed(wr_id, WcKind::Send), false);
            drop(st);
            self.signal_if(sig);
            return Ok(());
        }
        let end = &mut st.ends[self.side];
        if end.outstanding_sends >= max {
            end.stats.queue_full += 1;
            return Err(PostError::QueueFull);
        }
        let mut wr = SendWr {
            wr_id,
            sges: [sges[0]; 2],
            n: sges.len(),
        };
        if sges.len() == 2 {
            wr.sges[1] = sges[1];
        }
        end.send_q.push_back(wr);
        end.outstanding_sends += 1;
        end.stats.sends_posted += 1;
        end.stats.max_send_outstanding = end.stats.max_send_outstanding.max(end.outstanding_sends);
        drop(st);
        self.fabric.cv.notify_all();
        Ok(())
    }

    fn poll_cq(&mut self, out: &mut [Option<Completion>]) -> io::Result<usize> {
        let mut st = self.fabric.lock();
        let mut n = 0;
        while n < out.len() {
            let pick_send = {
                let end = &st.ends[self.side];
                match (end.send_cq.is_empty(), end.recv_cq.is_empty()) {
                    (true, true) => break,
                    (false, true) => true,
                    (true, false) => false,
                    (false, false) if st.reorder => st.rng.is_multiple_of(2),
                    (false, false) => end.send_cq[0].order < end.recv_cq[0].order,
                }
            };
            if st.reorder {
                st.rand();
            }
            let end = &mut st.ends[self.side];
            let q = if pick_send {
                end.send_cq.pop_front()
            } else {
                end.recv_cq.pop_front()
            };
            let Some(q) = q else { break };
            if q.order < end.last_polled {
                end.stats.reordered += 1;
            }
            end.last_polled = end.last_polled.max(q.order);
            out[n] = Some(q.wc);
            n += 1;
        }
        Ok(n)
    }

    fn arm(&mut self) -> io::Result<()> {
        let mut st = self.fabric.lock();
        let end = &mut st.ends[self.side];
        end.armed = true;
        Ok(())
    }

    fn ack_events(&mut self) -> io::Result<()> {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a live u64 from our eventfd
        // (non-blocking: EAGAIN when nothing is pending).
        unsafe {
            libc::read(
                self.fabric.notify[self.side].as_raw_fd(),
                (&mut v as *mut u64).cast(),
                8,
            )
        };
        Ok(())
    }

    fn completion_fd(&self) -> RawFd {
        self.fabric.notify[self.side].as_raw_fd()
    }

    fn establish(&mut self, local: ConnParams) -> io::Result<ConnParams> {
        let mut st = self.fabric.lock();
        st.ends[self.side].params = Some(local);
        st.ends[1 - self.side].params.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the model peer is not set up yet",
            )
        })
    }

    fn disconnect(&mut self) {
        let mut st = self.fabric.lock();
        st.ends[self.side].alive = false;
        let sig = [st.flush(0), st.flush(1)];
        drop(st);
        for (s, flag) in sig.iter().enumerate() {
            if *flag {
                self.fabric.signal(s);
            }
        }
        self.fabric.cv.notify_all();
    }
}

impl Drop for ModelVerbs {
    fn drop(&mut self) {
        self.disconnect();
        let mut st = self.fabric.lock();
        st.ends[self.side].mrs.clear();
        let last = !st.ends[1 - self.side].alive;
        if last {
            st.stop = true;
        }
        drop(st);
        self.fabric.cv.notify_all();
        if last {
            let wire = self
                .fabric
                .wire
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(t) = wire {
                let _ = t.join();
            }
        }
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Two connected channels over the model, named `NAME-a` and `NAME-b`,
/// both in blocking mode, and the handle that controls their wire.
///
/// # Example
///
/// ```
/// use transit_channel::rdma::model::{pair, ModelConfig};
/// use transit_channel::rdma::RdmaConfig;
/// use transit_channel::{io, Channel};
///
/// let (mut a, mut b, _wire) = pair("demo", &ModelConfig::default(), &RdmaConfig::default())?;
/// io::write_all(&mut a, b"over the model")?;
/// let mut buf = [0u8; 14];
/// io::read_all(&mut b, &mut buf)?;
/// assert_eq!(&buf, b"over the model");
/// a.close()?;
/// assert!(!io::read_all_eof(&mut b, &mut [0u8; 1])?); // CLOSE is EOF
/// # Ok::<(), transit_channel::Error>(())
/// ```
pub fn pair(
    name: &str,
    model: &ModelConfig,
    cfg: &RdmaConfig,
) -> Result<(RdmaChannel, RdmaChannel, ModelHandle)> {
    let mk = || eventfd().map_err(|e| Error::os(name, "create the model completion fd", e));
    let notify = [mk()?, mk()?];
    let mut state = State {
        ends: [End::default(), End::default()],
        paused: false,
        stop: false,
        next_order: 0,
        next_key: 0,
        rng: model.reorder_seed.unwrap_or(1) | 1,
        reorder: model.reorder_seed.is_some(),
        turn: 0,
    };
    // Each side learns the other's parameters at establish time; the
    // model knows both configurations up front.
    for end in &mut state.ends {
        end.alive = true;
    }
    let fabric = Arc::new(Fabric {
        state: Mutex::new(state),
        cv: Condvar::new(),
        notify,
        cfg: *model,
        wire: Mutex::new(None),
    });
    {
        let mut st = fabric.lock();
        st.ends[1].params = Some(ConnParams {
            version: VERSION,
            ring_depth: cfg.ring_depth,
            slot_size: cfg.slot_size,
        });
    }
    let f2 = Arc::clone(&fabric);
    let wire = std::thread::Builder::new()
        .name(format!("{name}-wire"))
        .spawn(move || wire_thread(f2))
        .map_err(|e| Error::os(name, "spawn the model wire thread", e))?;
    *fabric.wire.lock().unwrap_or_else(|e| e.into_inner()) = Some(wire);

    let va = Box::new(ModelVerbs {
        fabric: Arc::clone(&fabric),
        side: 0,
    });
    let vb = Box::new(ModelVerbs {
        fabric: Arc::clone(&fabric),
        side: 1,
    });
    let ea = Engine::new(format!("{name}-a"), va, cfg)?;
    let eb = Engine::new(format!("{name}-b"), vb, cfg)?;
    let a = RdmaChannel::from_engine(ea, cfg, None, None)?;
    let b = RdmaChannel::from_engine(eb, cfg, None, None)?;
    Ok((a, b, ModelHandle { fabric }))
}

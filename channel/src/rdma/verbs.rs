//! The small verbs interface the protocol engine is written against.
//!
//! Two implementations exist: the in-process model ([`super::model`],
//! always built) and rdma-core through `rdma-sys` (`hw`, feature `rdma`).
//! The engine never calls verbs directly, so everything above this trait
//! (credits, framing, chunking, ordering, teardown) is exercised by the
//! model in the default build.

use std::io;
use std::os::fd::RawFd;

/// Bit 63 of a work request id marks a SEND; receives use ids without it.
/// Implementations use it to tell the queues apart in error completions,
/// whose opcode is undefined.
pub(crate) const SEND_BIT: u64 = 1 << 63;

/// One scatter/gather element: `len` bytes at `addr`, inside memory
/// registered with the key `lkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

/// A memory registration: the keys the NIC knows the memory by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemKey {
    pub lkey: u32,
    /// Kept for completeness of the model of a registration; the protocol
    /// never hands it to the peer (no remote access is granted).
    #[allow(dead_code)]
    pub rkey: u32,
    /// Implementation handle used to deregister.
    pub handle: u64,
}

/// Which queue a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WcKind {
    Send,
    Recv,
}

/// Completion status, reduced to what the protocol tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WcStatus {
    Success,
    /// The work request was flushed because the queue pair went to the
    /// error state (disconnect, or an earlier error).
    Flushed,
    /// A SEND found no posted receive at the peer (receiver not ready) and
    /// the retries ran out.
    RnrRetryExceeded,
    /// The transport gave up retrying (peer unreachable).
    RetryExceeded,
    /// Anything else: the implementation's name for it.
    Other(String),
}

/// One work completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub wr_id: u64,
    pub kind: WcKind,
    pub status: WcStatus,
    /// Bytes received (receive completions).
    pub byte_len: u32,
}

/// Why a post failed.
#[derive(Debug)]
pub(crate) enum PostError {
    /// The work queue is full (`ENOMEM` from `ibv_post_send`).
    QueueFull,
    /// The queue pair is in the error state or gone.
    Failed(io::Error),
}

/// Connection parameters exchanged at connect time (CM private data on
/// hardware, a direct hand-over in the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnParams {
    /// Protocol version, [`super::wire::VERSION`].
    pub version: u32,
    /// Receive buffers the side has pre-posted: the peer's initial credits.
    pub ring_depth: u32,
    /// Size of each receive buffer, header included: the largest message
    /// the peer may send.
    pub slot_size: u32,
}

/// Queue sizes the implementation grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
}

/// The verbs the engine needs. All calls are non-blocking except
/// [`Verbs::establish`].
pub(crate) trait Verbs: Send {
    /// What the engine may post at most.
    fn limits(&self) -> Limits;

    /// Register `len` bytes at `addr` for local access (SEND gathers from
    /// it, RECV scatters into it).
    ///
    /// # Safety
    ///
    /// The memory must stay allocated until [`Verbs::deregister`] or the
    /// drop of the implementation, whichever comes first.
    unsafe fn register(&mut self, addr: *const u8, len: usize) -> io::Result<MemKey>;

    /// Drop a registration. No posted work request may still use it.
    fn deregister(&mut self, key: MemKey);

    /// Post one receive into `sge`.
    fn post_recv(&mut self, wr_id: u64, sge: Sge) -> Result<(), PostError>;

    /// Post one signalled SEND gathering `sges` in order.
    fn post_send(&mut self, wr_id: u64, sges: &[Sge]) -> Result<(), PostError>;

    /// Move up to `out.len()` completions (send and receive queues, in
    /// whatever order the implementation delivers them) into `out`.
    fn poll_cq(&mut self, out: &mut [Option<Completion>]) -> io::Result<usize>;

    /// Ask for an event on [`Verbs::completion_fd`] at the next completion
    /// (one-shot, like `ibv_req_notify_cq`). Poll again after arming.
    fn arm(&mut self) -> io::Result<()>;

    /// Consume the events pending on the completion fd (non-blocking) and
    /// handle connection-manager events (a disconnect moves the queue pair
    /// to the error state, which flushes its work requests).
    fn ack_events(&mut self) -> io::Result<()>;

    /// Readable when an armed completion (or a connection event) arrived.
    fn completion_fd(&self) -> RawFd;

    /// Exchange connection parameters with the peer and make the queue
    /// pair ready to send. Receives must be posted before this is called.
    fn establish(&mut self, local: ConnParams) -> io::Result<ConnParams>;

    /// Tear the connection down: the peer sees a disconnect and every
    /// outstanding work request on both sides completes as flushed. After
    /// this returns the implementation touches no registered memory.
    fn disconnect(&mut self);
}

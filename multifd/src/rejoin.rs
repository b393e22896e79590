//! Surviving a lost page channel: the sender opens a new connection for
//! the channel, the receiver says which packet it applied last, and the
//! sender sends the rest again.
//!
//! # How it works (wire version 5)
//!
//! - With [`SendConfig::reconnect`](crate::SendConfig::reconnect) set, each
//!   sender worker keeps the packets it sent until the receiver
//!   acknowledges them: every [`ack_bytes`] of data one packet carries
//!   [`PacketFlags::ACK`](crate::wire::PacketFlags::ACK), and the receiver
//!   writes a [`PageReply::Ack`] back on the same channel once it has
//!   applied it. The worker reads that answer when it sends the next such
//!   packet, so at most two windows of packets are held per channel. An
//!   image's packets are held as page lists (the pages are read again from
//!   the image); a stream's chunks are held as their buffers (the pool
//!   grows by the window, see [`stream_held`]).
//! - When a page channel's connection fails (reset, broken pipe, end of
//!   file mid-session, or the idle timeout finding it stalled mid-packet;
//!   a worker with nothing to send looks at its connection every second),
//!   the worker calls the [`Reconnect`] function for that channel id (again
//!   and again, backing off, for at most [`Reconnect::window`]), sends an
//!   [`InitPacket`](crate::wire::InitPacket) with `rejoin` set, and reads a [`PageReply::Resume`]
//!   naming the last packet the receiver applied on that channel. It then
//!   sends every held packet after it again, in order, with the same
//!   packet number and epoch, and goes on. What the first sending counted
//!   (digest, pages, bytes) is taken back, so totals and digest count each
//!   packet once.
//! - The receiver's channel thread, on such a failure, rolls back the
//!   packet it was in the middle of (its page claims), and waits for the
//!   replacement for at most [`RecvConfig::reconnect_wait`](crate::RecvConfig::reconnect_wait).
//!   Replacements reach it through a [`Rejoin`] handle: whoever accepts
//!   connections while the session runs offers them there.
//!
//! # Limits
//!
//! - Only page channels rejoin. The main channel's loss ends the session
//!   (both sides fail, naming it).
//! - The transport must be able to connect again: TCP, UNIX, vsock, TLS,
//!   websocket. `exec:`, `fd:` and `stdio:` channels cannot, so the
//!   binary sets no [`Reconnect`] for them (and none for RDMA yet).
//! - A receiver that takes no rejoins (no [`Rejoin`] offers, or
//!   `reconnect_wait` unset) fails as before.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use transit_multifd::{Reconnect, SendConfig};
//!
//! let mut config = SendConfig::default();
//! config.reconnect = Some(Reconnect::new(Duration::from_secs(30), Arc::new(|id: u32| {
//!     // Open channel `id` again: connect, then any TLS or websocket layer.
//!     let _ = id;
//!     Err(transit_channel::Error::Unsupported { channel: "example".into(), feature: "reconnect" })
//! })));
//! assert!(config.reconnect.is_some());
//! ```

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use transit_channel::{io as chio, Channel, Shutdown, ShutdownHandle};

use crate::error::{ChannelId, Ctx, Error, Result, Stage};
use crate::session::{self, lock, Failure, Wake};
use crate::wire::{self, PageReply, SessionHeader, INIT_PACKET_LEN};

/// Opens channel `id` of the session again (connect, then the TLS or
/// websocket layers, under the caller's deadline).
pub type Connect =
    dyn Fn(u32) -> std::result::Result<Box<dyn Channel>, transit_channel::Error> + Send + Sync;

/// How a sender replaces a lost page channel's connection
/// ([`SendConfig::reconnect`](crate::SendConfig::reconnect)).
#[derive(Clone)]
pub struct Reconnect {
    /// Opens a new connection for a channel id.
    pub connect: Arc<Connect>,
    /// How long a channel may stay lost: attempts go on, backing off from
    /// 50 ms to 1 s, until the receiver answered on a new connection or
    /// this much time passed since the loss. A refused connection (nobody
    /// listens any more) or a refused rejoin ends the attempts at once.
    pub window: Duration,
}

impl Reconnect {
    /// A reconnect setting.
    pub fn new(window: Duration, connect: Arc<Connect>) -> Reconnect {
        Reconnect { connect, window }
    }
}

impl std::fmt::Debug for Reconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnect")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// Data a sender worker sends between two acknowledgement requests: 32 MiB
/// for images (the held packets are page lists, cheap to keep); for
/// streams (the held packets are chunk buffers) 16 MiB shared by the
/// channels, at most 4 MiB and at least one chunk each. Over one channel,
/// at most two of these are in flight unacknowledged.
pub fn ack_bytes(session: &SessionHeader) -> u64 {
    match session.layout {
        wire::Layout::Image { .. } => 32 << 20,
        wire::Layout::Stream => ((16u64 << 20) / u64::from(session.channels.max(1)))
            .min(4 << 20)
            .max(u64::from(session.packet_payload)),
    }
}

/// Stream mode: chunk buffers one worker may hold at most, waiting for an
/// acknowledgement (the sender's pool grows by this per channel, so the
/// producer never waits on buffers a worker holds).
pub fn stream_held(session: &SessionHeader) -> usize {
    let per = ack_bytes(session).div_ceil(u64::from(session.packet_payload.max(1)));
    2 * per as usize + 2
}

/// Read one [`PageReply`] from a page channel, by `deadline` if given.
pub(crate) fn read_reply(
    ch: &mut dyn Channel,
    deadline: Option<Instant>,
    ctx: &Ctx,
    stage: Stage,
) -> Result<PageReply> {
    let mut b = [0u8; wire::PAGE_REPLY_LEN];
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if !session::read_exact_deadline(ch, &mut b, deadline, timeout, ctx, stage)? {
        return Err(ctx.io(
            stage,
            transit_channel::Error::UnexpectedEof {
                channel: ch.name().to_owned(),
                op: "read the receiver's reply",
                expected: wire::PAGE_REPLY_LEN,
                missing: wire::PAGE_REPLY_LEN,
            },
        ));
    }
    wire::decode_page_reply(&b).map_err(|e| ctx.proto(stage, e))
}

/// What the receiver's channel threads and the [`Rejoin`] handles share.
pub(crate) struct Rejoins {
    st: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// The running session (`None` before it starts and after it ended).
    session: Option<SessionHeader>,
    /// A new connection per channel, waiting for its thread.
    waiting: Vec<Option<Box<dyn Channel>>>,
    /// Each channel's current connection (shared with the idle timeout),
    /// to wake a thread blocked on one that a replacement supersedes.
    current: Option<Arc<Cuts>>,
    /// Channels whose thread ended after the END packet: the last packet
    /// applied (a rejoin after it gets its answer from here).
    ended: Vec<Option<Option<u64>>>,
}

impl Rejoins {
    pub(crate) fn new() -> Arc<Rejoins> {
        Arc::new(Rejoins {
            st: Mutex::new(State::default()),
            cv: Condvar::new(),
        })
    }

    /// The session starts: rejoins for its channels are taken from now.
    pub(crate) fn open(&self, session: SessionHeader, current: Arc<Cuts>) {
        let mut st = lock(&self.st);
        let n = session.channels as usize;
        st.session = Some(session);
        st.waiting = (0..n).map(|_| None).collect();
        st.current = Some(current);
        st.ended = vec![None; n];
    }

    /// The session is over: later rejoins are refused, waiting ones
    /// dropped.
    pub(crate) fn close(&self) {
        let mut st = lock(&self.st);
        st.session = None;
        st.waiting.clear();
        st.current = None;
        self.cv.notify_all();
    }

    /// Channel `id`'s thread ended after applying packet `applied`.
    pub(crate) fn ended(&self, id: usize, applied: Option<u64>) {
        let mut st = lock(&self.st);
        if let Some(e) = st.ended.get_mut(id) {
            *e = Some(applied);
        }
        // A rejoin queued before the END was read (from what the old
        // connection had buffered) is answered here: its thread is gone.
        if let Some(mut ch) = st.waiting.get_mut(id).and_then(Option::take) {
            drop(st);
            let _ = chio::write_all(&mut ch, &PageReply::Resume(applied).encode());
            let _ = ch.bye();
        }
    }

    /// Wait until a new connection for channel `id` arrives (it becomes
    /// the channel's current one), the session fails, or `deadline`.
    pub(crate) fn wait_for(
        &self,
        id: usize,
        deadline: Instant,
        failure: &Failure,
    ) -> Option<Box<dyn Channel>> {
        let mut st = lock(&self.st);
        loop {
            if failure.is_failed() || st.session.is_none() {
                return None;
            }
            if let Some(ch) = st.waiting.get_mut(id).and_then(Option::take) {
                if let (Some(c), Ok(h)) = (&st.current, ch.shutdown_handle()) {
                    c.set(id, h);
                }
                return Some(ch);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Wake for Rejoins {
    fn wake(&self) {
        let _g = lock(&self.st);
        self.cv.notify_all();
    }
}

/// Takes the connections of lost page channels coming back while a
/// session runs ([`Receiver::rejoin_handle`](crate::Receiver::rejoin_handle)).
/// Clone it into whatever accepts connections; a connection that is not a
/// rejoin of this session is refused with a reason the peer can read.
#[derive(Clone)]
pub struct Rejoin {
    pub(crate) inner: Arc<Rejoins>,
    pub(crate) timeout: Option<Duration>,
}

impl std::fmt::Debug for Rejoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejoin")
            .field("running", &lock(&self.inner.st).session.is_some())
            .finish()
    }
}

impl Rejoin {
    /// Take `ch` as the new connection of a lost page channel: read its
    /// init packet (within the receiver's handshake timeout), check it
    /// belongs to the running session and asks to rejoin, and hand it to
    /// the channel's thread (waking the thread if it still waits on the
    /// old connection). Returns the channel id. On `Err` the connection
    /// was answered (a [`PageReply::Refused`], or an error record for a
    /// connection that is no rejoin) and closed.
    pub fn offer(&self, mut ch: Box<dyn Channel>) -> Result<u32> {
        let ctx = Ctx::new(ChannelId::Unclassified, session::peer_of(&*ch));
        ch.set_blocking(true)
            .map_err(|e| ctx.io(Stage::Handshake, e))?;
        let mut b = [0u8; INIT_PACKET_LEN];
        let deadline = session::deadline(self.timeout);
        let refuse = |ch: &mut Box<dyn Channel>, e: wire::WireError| {
            let _ = chio::write_all(ch, &PageReply::Refused.encode());
            let _ = ch.bye();
            Err(ctx.proto(Stage::Handshake, e))
        };
        if !session::read_exact_deadline(
            &mut *ch,
            &mut b,
            deadline,
            self.timeout,
            &ctx,
            Stage::Handshake,
        )? {
            return Err(ctx.io(
                Stage::Handshake,
                transit_channel::Error::UnexpectedEof {
                    channel: ch.name().to_owned(),
                    op: "read a rejoining channel's init packet",
                    expected: INIT_PACKET_LEN,
                    missing: INIT_PACKET_LEN,
                },
            ));
        }
        let init = match wire::decode_init_packet(&b) {
            Ok(i) => i,
            Err(e) => {
                let rec = wire::Record::Error {
                    code: wire::ErrorCode::Refused,
                    message: format!("this receiver is busy with another session: {e}"),
                };
                let _ = chio::write_all(&mut ch, &rec.to_bytes());
                return Err(ctx.proto(Stage::Handshake, e));
            }
        };
        let mut st = lock(&self.inner.st);
        let Some(session) = st.session else {
            drop(st);
            return refuse(
                &mut ch,
                wire::WireError::Unexpected("a rejoin after the session"),
            );
        };
        if !init.rejoin {
            drop(st);
            return refuse(
                &mut ch,
                wire::WireError::ExtraConnection {
                    channels: session.channels,
                },
            );
        }
        if let Err(e) = init.check(&session) {
            drop(st);
            return refuse(&mut ch, e);
        }
        let id = init.channel_id as usize;
        if let Some(applied) = st.ended[id] {
            // Its END was applied: nothing more to send.
            drop(st);
            let _ = chio::write_all(&mut ch, &PageReply::Resume(applied).encode());
            let _ = ch.bye();
            return Ok(init.channel_id);
        }
        ch.set_name(format!("multifd-recv-{id} {}", ch.name()));
        st.waiting[id] = Some(ch);
        if let Some(c) = &st.current {
            c.shut(id);
        }
        self.inner.cv.notify_all();
        Ok(init.channel_id)
    }
}

/// The sender's side of the idle timeout with reconnection: each page
/// channel's current connection, so a stalled one can be cut (its worker
/// then replaces it), and the timeout error to report if that fails.
#[derive(Default)]
pub(crate) struct Cuts {
    slots: Vec<Mutex<(Option<ShutdownHandle>, Option<Error>)>>,
}

impl Cuts {
    pub(crate) fn new(handles: Vec<Option<ShutdownHandle>>) -> Arc<Cuts> {
        Arc::new(Cuts {
            slots: handles.into_iter().map(|h| Mutex::new((h, None))).collect(),
        })
    }

    /// Channel `id` has a new connection.
    pub(crate) fn set(&self, id: usize, h: ShutdownHandle) {
        if let Some(s) = self.slots.get(id) {
            *lock(s) = (Some(h), None);
        }
    }

    /// Cut channel `id`'s connection, remembering why; false if it has
    /// none.
    pub(crate) fn cut(&self, id: usize, why: Error) -> bool {
        let Some(s) = self.slots.get(id) else {
            return false;
        };
        let mut g = lock(s);
        match &g.0 {
            Some(h) if h.shutdown(Shutdown::Both).is_ok() => {
                g.1 = Some(why);
                true
            }
            _ => false,
        }
    }

    /// Shut channel `id`'s connection down (a new one supersedes it).
    pub(crate) fn shut(&self, id: usize) {
        if let Some(Some(h)) = self.slots.get(id).map(|s| lock(s).0.clone()) {
            let _ = h.shutdown(Shutdown::Both);
        }
    }

    /// Why channel `id` was cut, if it was.
    pub(crate) fn take(&self, id: usize) -> Option<Error> {
        self.slots.get(id).and_then(|s| lock(s).1.take())
    }
}

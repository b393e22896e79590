//! A receiver that listens: the connections that arrive, in any order and
//! from anyone, fed to a [`Receiver`] until its session is complete, and
//! what arrives while the session runs.
//!
//! The caller takes connections (a listener, an acceptor that runs their
//! TLS and websocket layers, the joined runs of an `exec:` command),
//! classifies their first bytes ([`crate::incoming::head`]) and sends each
//! as an [`Event`] on a channel. [`assemble`] then applies the policy a
//! person expects of a receiver:
//!
//! - a connection that is not a transit sender is told why
//!   ([`Policy::not_framed`], see [`crate::incoming::turn_away`]) and the
//!   receiver goes on waiting;
//! - the session's connections are offered to the [`Receiver`]; a
//!   rejection is logged, one that ends the session
//!   ([`Error::ends_session`]) ends it;
//! - the main channel must come within [`Policy::wait_limit`], the page
//!   channels within [`Policy::handshake`] of it;
//! - an [`Event::Fatal`] (one of the session's own channels failed its
//!   layers) ends the wait: every connection taken is closed gracefully,
//!   in parallel, once the connections still in their layers are through.
//!
//! While the session runs, [`serve_busy`] hands page connections to the
//! session's [`Rejoin`] (a lost page channel coming back) and tells anyone
//! else the receiver is busy ([`Policy::busy`]).

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use transit_channel::{io as chio, Channel, ReadFlags};

use crate::incoming::{turn_away, Peeked};
use crate::{Error, Receiver, Rejoin};

/// A connection that arrived, its first bytes read (and put back).
pub struct Arrival {
    /// The connection, layered.
    pub ch: Box<dyn Channel>,
    /// Who it is.
    pub peer: String,
    /// What its first bytes are.
    pub kind: Peeked,
}

/// What the caller sends [`assemble`] and [`serve_busy`].
pub enum Event {
    /// A connection.
    Arrival(Arrival),
    /// One of the session's own channels failed its layers (the reason,
    /// naming the peer): the session cannot go on.
    Fatal(String),
    /// The run was cancelled.
    Cancelled,
}

/// How a listening receiver treats what arrives.
#[derive(Clone)]
pub struct Policy {
    /// How long to wait for the main channel (`None`: for ever).
    pub wait_limit: Option<Duration>,
    /// How long the page channels may take after the main one.
    pub handshake: Duration,
    /// How long a refused connection is drained before it is closed.
    pub linger: Duration,
    /// What a connection that is not a transit sender is told.
    pub not_framed: &'static str,
    /// What a connection that arrives while a session runs is told.
    pub busy: &'static str,
    /// Where one-line reports of rejected connections go.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Why [`assemble`] ended without a complete session.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// One of the session's own channels failed (its reason).
    #[error("{0}")]
    Fatal(String),
    /// [`Event::Cancelled`].
    #[error("cancelled")]
    Cancelled,
    /// No main channel within [`Policy::wait_limit`].
    #[error("no sender arrived within {waited:.1} s")]
    NoSender {
        /// Seconds waited.
        waited: f64,
    },
    /// The page channels did not all come within [`Policy::handshake`].
    #[error("the sender's channels did not all arrive within {seconds:.1} s of its main channel (expected {channels} page channels)")]
    Incomplete {
        /// [`Policy::handshake`], in seconds.
        seconds: f64,
        /// The page channels the session header announced.
        channels: u32,
    },
    /// A connection's rejection ended the session.
    #[error(transparent)]
    Session(#[from] Error),
}

/// Feed `rx` the connections of `events` until its session is complete
/// (see the [module documentation](self)). `on_session` runs once, when
/// the main channel's session header is in (to show progress); `in_flight`
/// says how many connections are still in their layers (a fatal end waits
/// for them, within [`Policy::linger`]). Returns the main channel's peer.
pub fn assemble(
    rx: &mut Receiver,
    events: &mpsc::Receiver<Event>,
    policy: &Policy,
    in_flight: &dyn Fn() -> u64,
    mut on_session: impl FnMut(&Receiver),
) -> Result<Option<String>, AssembleError> {
    let start = Instant::now();
    let mut peer = None;
    let mut deadline = policy.wait_limit.map(|t| start + t);
    while !rx.is_ready() {
        let event = match deadline {
            None => events.recv().ok(),
            Some(d) => events
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .ok(),
        };
        let a = match event {
            Some(Event::Arrival(a)) => a,
            Some(Event::Fatal(why)) => {
                wind_down(rx.take_channels(), events, policy, in_flight);
                return Err(AssembleError::Fatal(why));
            }
            Some(Event::Cancelled) => return Err(AssembleError::Cancelled),
            None => {
                return Err(match rx.session() {
                    None => AssembleError::NoSender {
                        waited: start.elapsed().as_secs_f64(),
                    },
                    Some(h) => AssembleError::Incomplete {
                        seconds: policy.handshake.as_secs_f64(),
                        channels: h.channels,
                    },
                })
            }
        };
        if let Peeked::Other(why) = &a.kind {
            (policy.log)(&format!(
                "rejected a connection from {}: not a transit sender: {why}",
                a.peer
            ));
            turn_away(a.ch, policy.not_framed, policy.linger);
            continue;
        }
        let started = rx.session().is_some();
        match rx.accept_channel(a.ch) {
            Ok(crate::Accepted::Main) => peer = Some(a.peer),
            Ok(crate::Accepted::Page(_)) => {}
            Err(e) if e.ends_session() => return Err(e.into()),
            Err(e) => (policy.log)(&format!("rejected a connection from {}: {e}", a.peer)),
        }
        if !started && rx.session().is_some() {
            on_session(rx);
            deadline = Some(Instant::now() + policy.handshake);
        }
    }
    Ok(peer)
}

/// A fatal end: let the connections still in their layers come through,
/// and close every one gracefully (in parallel, within the linger time)
/// so each peer reads why rather than a reset.
fn wind_down(
    held: Vec<Box<dyn Channel>>,
    events: &mpsc::Receiver<Event>,
    policy: &Policy,
    in_flight: &dyn Fn() -> u64,
) {
    let deadline = Instant::now() + policy.linger;
    let mut drains = Vec::new();
    let mut drain = |mut ch: Box<dyn Channel>| {
        if let Ok(t) = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                let _ = chio::close_gracefully(ch.as_mut(), deadline, 0, ReadFlags::empty());
            })
        {
            drains.push(t);
        }
    };
    for ch in held {
        drain(ch);
    }
    loop {
        match events.recv_timeout(Duration::from_millis(20)) {
            Ok(Event::Arrival(a)) => drain(a.ch),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if in_flight() == 0 || Instant::now() >= deadline {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for t in drains {
        let _ = t.join();
    }
}

/// While a session runs: page connections go to `rejoin` (a lost page
/// channel coming back), anyone else is told the receiver is busy. Ends
/// when the events' senders are gone.
pub fn serve_busy(
    rejoin: Rejoin,
    events: mpsc::Receiver<Event>,
    policy: Policy,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("receiver-busy".into())
        .spawn(move || {
            while let Ok(event) = events.recv() {
                let Event::Arrival(a) = event else { continue };
                if matches!(a.kind, Peeked::Page) {
                    if let Err(e) = rejoin.offer(a.ch) {
                        (policy.log)(&format!("rejected a connection from {}: {e}", a.peer));
                    }
                    continue;
                }
                (policy.log)(&format!(
                    "rejected a connection from {}: a session is running",
                    a.peer
                ));
                turn_away(a.ch, policy.busy, policy.linger);
            }
        })
}

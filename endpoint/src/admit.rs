//! Admission of a receiver's connections, on the main loop and without a
//! thread per connection.
//!
//! Every connection a listener accepts is taken from "accepted" to
//! "classified" here: the TLS server handshake (rustls driven by one-shot
//! watches, [`TlsChannel::handshake_task`]), the websocket upgrade
//! ([`WebSocketHandshake::handshake_task`](transit_channel::websocket::WebSocketHandshake::handshake_task)), then its first bytes, as
//! many as the caller's decider asks for (for a multifd receiver,
//! `transit_multifd::incoming::head`: a main channel's whole session
//! header, a page channel's whole init packet), read without blocking as
//! they come. Only then does the caller see the connection, with those bytes put back in front
//! ([`Prefixed`]), so the worker never waits on a peer. Every connection
//! proceeds on its own under its own deadline: a stranger that sends one
//! byte a minute, or nothing, delays no one.
//!
//! Limits:
//!
//! - At most [`MAX_PENDING`] connections are in admission at once. A new
//!   one beyond that pushes out the oldest (with a log line): a flood of
//!   idle connections costs a bounded number of fds and bounded memory
//!   (each pending connection holds one TLS or websocket state and a
//!   64-byte head buffer), and the newest connections, among them a real
//!   sender's, still get their chance.
//! - A connection whose handshake fails is logged (one line: peer and
//!   reason) and dropped; the receiver keeps waiting for its sender. Its
//!   socket is closed gently (end of file, then drained for at most the
//!   linger time, on the loop) so the peer reads our TLS alert or HTTP
//!   refusal rather than a reset. At most [`MAX_LINGER`] linger at once;
//!   beyond that they are closed at once.
//!
//! The cost of this choice: TLS handshake crypto runs on the main loop's
//! thread, one handshake step at a time (a few hundred microseconds each),
//! which only delays progress reports.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

pub use transit_channel::prefixed::Head;
use transit_channel::tls::{TlsChannel, TlsHandshake};
use transit_channel::websocket::HandshakeTask;
use transit_channel::Prefixed;
use transit_channel::{
    Channel, Condition, ControlFlow, MainContext, ReadFlags, Shutdown, SocketChannel, SourceId,
    WebSocketChannel, WebSocketConfig,
};

use crate::TlsOpts;

/// Connections in admission at once, at most.
pub const MAX_PENDING: usize = 64;

/// Refused connections being closed gently at once, at most.
pub const MAX_LINGER: usize = 64;

/// The most first bytes a decider may ask for.
pub const MAX_HEAD: usize = 4096;

/// A connection through admission: layers done, first bytes read (and
/// put back in front), and what the decider made of them.
pub struct Admitted<K> {
    /// The layered channel, its first bytes put back.
    pub ch: Box<dyn Channel>,
    /// Who it is (the peer's address).
    pub peer: String,
    /// What its first bytes are.
    pub kind: K,
    /// One of the caller's own channels ([`crate::accept::Source::Channels`]:
    /// the joined runs of `exec:`), not a stranger's: if it is not what the
    /// caller expects, the session cannot go on.
    pub own: bool,
}

/// How connections are admitted.
#[derive(Clone)]
pub struct AdmitConfig {
    /// The TLS server layer.
    pub tls: Option<TlsOpts>,
    /// The websocket upgrade: the path served and the settings.
    pub ws: Option<(String, WebSocketConfig)>,
    /// Bound of one connection's whole admission.
    pub timeout: Duration,
    /// How long a refused connection is drained before it is closed.
    pub linger: Duration,
    /// Where the one-line reports of dropped and refused connections go
    /// (the peer and why).
    pub log: Rc<dyn Fn(&str)>,
}

/// Admits connections on a main context; see the [module
/// documentation](self). Dropping the last clone does not stop pending
/// admissions: call [`close`](Self::close).
pub struct Admission<K: 'static>(Rc<RefCell<State<K>>>);

impl<K> Clone for Admission<K> {
    fn clone(&self) -> Self {
        Admission(self.0.clone())
    }
}

/// Says what a connection's first bytes are (see [`Head`]).
pub type Decide<K> = Rc<dyn Fn(&[u8]) -> Head<K>>;

struct State<K: 'static> {
    me: Weak<RefCell<State<K>>>,
    ctx: MainContext,
    cfg: AdmitConfig,
    decide: Decide<K>,
    next: u64,
    pending: BTreeMap<u64, Pending>,
    lingering: Rc<Cell<usize>>,
    deliver: Box<dyn FnMut(Admitted<K>)>,
    closed: bool,
}

struct Pending {
    peer: String,
    timer: Option<SourceId>,
    step: Step,
    /// A duplicate of the socket: keeps it open after a failed handshake
    /// closed the channel, for the gentle close.
    dup: Option<OwnedFd>,
}

enum Step {
    Starting,
    Tls(TlsHandshake),
    Ws(HandshakeTask),
    /// Reading the first bytes: the watch owns the channel.
    Head(SourceId),
}

impl Step {
    fn what(&self) -> &'static str {
        match self {
            Step::Starting | Step::Tls(_) => "its TLS handshake was not complete",
            Step::Ws(_) => "its websocket upgrade was not complete",
            Step::Head(_) => "it sent no complete header",
        }
    }
}

impl<K: 'static> Admission<K> {
    /// Admit on `ctx`; `decide` says what a connection's first bytes are
    /// (asking for more as needed, at most [`MAX_HEAD`]); `deliver` gets
    /// every connection that passes.
    pub fn new(
        ctx: &MainContext,
        cfg: AdmitConfig,
        decide: impl Fn(&[u8]) -> Head<K> + 'static,
        deliver: impl FnMut(Admitted<K>) + 'static,
    ) -> Admission<K> {
        Admission(Rc::new_cyclic(|me| {
            RefCell::new(State {
                me: me.clone(),
                ctx: ctx.clone(),
                cfg,
                decide: Rc::new(decide),
                next: 0,
                pending: BTreeMap::new(),
                lingering: Rc::new(Cell::new(0)),
                deliver: Box::new(deliver),
                closed: false,
            })
        }))
    }

    /// Take one accepted connection.
    pub fn admit(&self, client: SocketChannel) {
        let mut st = self.0.borrow_mut();
        if st.closed {
            return;
        }
        let peer = client.peer_name();
        while st.pending.len() >= MAX_PENDING {
            let Some((_, old)) = st.pending.pop_first() else {
                break;
            };
            (st.cfg.log)(&format!(
                "dropped a connection from {}: {MAX_PENDING} connections are in their handshake, the oldest goes",
                old.peer
            ));
            st.cancel(old);
        }
        let layered = st.cfg.tls.is_some() || st.cfg.ws.is_some();
        let dup = if layered {
            client.as_fd().try_clone_to_owned().ok()
        } else {
            None
        };
        st.next += 1;
        let id = st.next;
        let weak = st.me.clone();
        let timer = st.ctx.timeout_add(st.cfg.timeout, move || {
            if let Some(s) = weak.upgrade() {
                s.borrow_mut().expire(id);
            }
            ControlFlow::Remove
        });
        st.pending.insert(
            id,
            Pending {
                peer,
                timer: Some(timer),
                step: Step::Starting,
                dup,
            },
        );
        st.start_tls(id, Box::new(client));
    }

    /// Stop every admission in progress (their connections are closed)
    /// and take no more.
    pub fn close(&self) {
        let mut st = self.0.borrow_mut();
        st.closed = true;
        while let Some((_, p)) = st.pending.pop_first() {
            st.cancel(p);
        }
    }
}

impl<K: 'static> State<K> {
    fn start_tls(&mut self, id: u64, ch: Box<dyn Channel>) {
        let Some(tls) = self.cfg.tls.clone() else {
            return self.start_ws(id, ch);
        };
        let mut t = match TlsChannel::server(ch, tls.creds.clone(), tls.authz.as_ref()) {
            Ok(t) => t,
            Err(e) => return self.refuse(id, e.to_string()),
        };
        t.set_relaxed_eof(tls.relaxed_eof);
        let weak = self.me.clone();
        let hs = t.handshake_task(&self.ctx, move |r| {
            let Some(s) = weak.upgrade() else { return };
            let mut st = s.borrow_mut();
            match r {
                Ok(t) => st.start_ws(id, Box::new(t)),
                Err(e) => st.refuse(id, e.to_string()),
            }
        });
        self.set_step(id, Step::Tls(hs));
    }

    fn start_ws(&mut self, id: u64, ch: Box<dyn Channel>) {
        let Some((path, cfg)) = self.cfg.ws.clone() else {
            return self.start_head(id, ch);
        };
        let weak = self.me.clone();
        let task = WebSocketChannel::server(ch, &path, cfg).handshake_task(&self.ctx, move |r| {
            let Some(s) = weak.upgrade() else { return };
            let mut st = s.borrow_mut();
            match r {
                Ok(ws) => st.start_head(id, Box::new(ws)),
                Err(e) => st.refuse(id, e.to_string()),
            }
        });
        self.set_step(id, Step::Ws(task));
    }

    fn start_head(&mut self, id: u64, mut ch: Box<dyn Channel>) {
        if let Err(e) = ch.set_blocking(false) {
            return self.refuse(id, e.to_string());
        }
        let ws = ch.watch_source();
        let weak = self.me.clone();
        let mut ch = Some(ch);
        let decide = self.decide.clone();
        let mut buf = Vec::new();
        let watch = self.ctx.add_watch(&ws, Condition::IN, move |_| {
            let Some(c) = ch.as_mut() else {
                return ControlFlow::Remove;
            };
            let outcome = loop {
                let got = buf.len();
                let want = match decide(&buf) {
                    Head::More(n) if n.max(got + 1) > MAX_HEAD => {
                        break Some(Err(format!(
                            "its header would be longer than {MAX_HEAD} bytes"
                        )))
                    }
                    Head::More(n) => n.max(got + 1),
                    Head::Done(kind) => break Some(Ok(kind)),
                };
                buf.resize(want, 0);
                let r = c.readv(
                    &mut [IoSliceMut::new(&mut buf[got..])],
                    None,
                    ReadFlags::empty(),
                );
                buf.truncate(got + *r.as_ref().unwrap_or(&0));
                match r {
                    Ok(0) => {
                        break Some(Err(
                            "closed the connection before sending a header".to_owned()
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if e.is_would_block() => break None,
                    Err(e) => break Some(Err(e.to_string())),
                }
            };
            let Some(outcome) = outcome else {
                return ControlFlow::Continue;
            };
            let Some(s) = weak.upgrade() else {
                return ControlFlow::Remove;
            };
            let Some(mut c) = ch.take() else {
                return ControlFlow::Remove;
            };
            let mut st = s.borrow_mut();
            match outcome.and_then(|kind| {
                c.set_blocking(true).map_err(|e| e.to_string())?;
                Ok(kind)
            }) {
                Ok(kind) => {
                    let ch: Box<dyn Channel> = Box::new(Prefixed::new(std::mem::take(&mut buf), c));
                    st.admitted(id, ch, kind);
                }
                Err(why) => {
                    // A plain close here is no refusal to deliver.
                    if let Some(p) = st.pending.get_mut(&id) {
                        p.dup = None;
                    }
                    drop(c);
                    st.refuse(id, why);
                }
            }
            ControlFlow::Remove
        });
        self.set_step(id, Step::Head(watch));
    }

    fn set_step(&mut self, id: u64, step: Step) {
        match self.pending.get_mut(&id) {
            Some(p) => p.step = step,
            // Cancelled meanwhile: stop the step just started.
            None => self.stop(step),
        }
    }

    fn admitted(&mut self, id: u64, ch: Box<dyn Channel>, kind: K) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(t) = p.timer {
            self.ctx.remove(t);
        }
        let peer = p.peer;
        (self.deliver)(Admitted {
            ch,
            peer,
            kind,
            own: false,
        });
    }

    /// The handshake failed: log, drop, close gently.
    fn refuse(&mut self, id: u64, why: String) {
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        (self.cfg.log)(&format!("rejected a connection from {}: {why}", p.peer));
        let dup = p.dup.take();
        self.cancel(p);
        if let Some(fd) = dup {
            self.linger(fd);
        }
    }

    fn expire(&mut self, id: u64) {
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        p.timer = None;
        (self.cfg.log)(&format!(
            "closed a connection from {}: {} within {:.1} s",
            p.peer,
            p.step.what(),
            self.cfg.timeout.as_secs_f64()
        ));
        self.cancel(p);
    }

    fn cancel(&mut self, p: Pending) {
        if let Some(t) = p.timer {
            self.ctx.remove(t);
        }
        self.stop(p.step);
    }

    fn stop(&self, step: Step) {
        match step {
            Step::Starting => {}
            Step::Tls(hs) => hs.cancel(),
            Step::Ws(task) => task.cancel(),
            Step::Head(watch) => {
                self.ctx.remove(watch);
            }
        }
    }

    /// Close a refused connection gently: its channel is gone (the alert
    /// or refusal written); `fd` still holds the socket. Send end of file,
    /// then read and discard until the peer closes too, for at most the
    /// linger time.
    fn linger(&mut self, fd: OwnedFd) {
        let count = self.lingering.clone();
        if count.get() >= MAX_LINGER {
            return;
        }
        let Ok(mut sock) = SocketChannel::from_fd(fd) else {
            return;
        };
        let _ = sock.shutdown(Shutdown::Write);
        if sock.set_blocking(false).is_err() {
            return;
        }
        count.set(count.get() + 1);
        let ws = sock.watch_source();
        let timer: Rc<Cell<Option<SourceId>>> = Rc::new(Cell::new(None));
        let (t1, c1, ctx1) = (timer.clone(), count.clone(), self.ctx.clone());
        let mut sock = Some(sock);
        let watch = self.ctx.add_watch(&ws, Condition::IN, move |_| {
            let Some(s) = sock.as_mut() else {
                return ControlFlow::Remove;
            };
            let mut buf = [0u8; 4096];
            match s.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()) {
                Ok(n) if n > 0 => return ControlFlow::Continue,
                Err(e) if e.is_would_block() => return ControlFlow::Continue,
                _ => {}
            }
            sock = None;
            c1.set(c1.get() - 1);
            if let Some(t) = t1.take() {
                ctx1.remove(t);
            }
            ControlFlow::Remove
        });
        let ctx2 = self.ctx.clone();
        timer.set(Some(self.ctx.timeout_add(self.cfg.linger, move || {
            // Removing the watch drops the socket.
            if ctx2.remove(watch) {
                count.set(count.get() - 1);
            }
            ControlFlow::Remove
        })));
    }
}

//! Admission of a receiver's connections, on the main loop and without a
//! thread per connection.
//!
//! Every connection a listener accepts is taken from "accepted" to
//! "classified" here: the TLS server handshake (rustls driven by one-shot
//! watches, [`TlsChannel::handshake_task`]), the websocket upgrade
//! ([`WebSocketHandshake::handshake_task`]), then its first bytes (a main
//! channel's whole session header, a page channel's whole init packet),
//! read without blocking as they come. Only then does the session worker
//! see the connection, with those bytes put back in front
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

use transit_channel::tls::{TlsChannel, TlsHandshake};
use transit_channel::websocket::HandshakeTask;
use transit_channel::{
    Channel, Condition, ControlFlow, MainContext, ReadFlags, Shutdown, SocketChannel, SourceId,
    WebSocketChannel, WebSocketConfig,
};
use transit_multifd::wire::{self, ConnectionKind, SessionHeader, WireError};

use crate::transport::{Prefixed, TlsOpts};

/// Connections in admission at once, at most.
pub(crate) const MAX_PENDING: usize = 64;

/// Refused connections being closed gently at once, at most.
pub(crate) const MAX_LINGER: usize = 64;

/// What the first bytes of a connection say.
#[derive(Debug)]
pub(crate) enum Peeked {
    /// A main channel (its session header, if it decodes).
    Main(Option<SessionHeader>),
    /// A page channel (its whole init packet is there).
    Page,
    /// Not a transit sender.
    Other(WireError),
}

/// Where reading a connection's first bytes stands.
#[derive(Debug)]
pub(crate) enum Head {
    /// The first this many bytes are needed to decide.
    More(usize),
    /// Decided.
    Done(Peeked),
}

/// Classify the first bytes received so far: a main channel needs its
/// whole session header, a page channel its whole init packet, anything
/// else is told apart by its first four bytes.
pub(crate) fn head(buf: &[u8]) -> Head {
    if buf.len() < 4 {
        return Head::More(4);
    }
    match wire::classify(&buf[..4]) {
        Ok(ConnectionKind::Page) if buf.len() >= wire::INIT_PACKET_LEN => Head::Done(Peeked::Page),
        Ok(ConnectionKind::Page) => Head::More(wire::INIT_PACKET_LEN),
        Ok(ConnectionKind::Main) if buf.len() >= wire::SESSION_HEADER_LEN => Head::Done(
            Peeked::Main(wire::decode_session_header(&buf[..wire::SESSION_HEADER_LEN]).ok()),
        ),
        Ok(ConnectionKind::Main) => Head::More(wire::SESSION_HEADER_LEN),
        Err(e) => Head::Done(Peeked::Other(e)),
    }
}

/// A connection through admission: layers done, first bytes read (and
/// put back in front).
pub(crate) struct Admitted {
    pub ch: Box<dyn Channel>,
    pub peer: String,
    pub kind: Peeked,
}

/// How connections are admitted.
#[derive(Clone)]
pub(crate) struct AdmitConfig {
    /// The TLS server layer.
    pub tls: Option<TlsOpts>,
    /// The websocket upgrade: the path served and the settings.
    pub ws: Option<(String, WebSocketConfig)>,
    /// Bound of one connection's whole admission.
    pub timeout: Duration,
    /// How long a refused connection is drained before it is closed.
    pub linger: Duration,
}

/// Admits connections on a main context; see the [module
/// documentation](self). Dropping the last clone does not stop pending
/// admissions: call [`close`](Self::close).
#[derive(Clone)]
pub(crate) struct Admission(Rc<RefCell<State>>);

struct State {
    me: Weak<RefCell<State>>,
    ctx: MainContext,
    cfg: AdmitConfig,
    next: u64,
    pending: BTreeMap<u64, Pending>,
    lingering: Rc<Cell<usize>>,
    deliver: Box<dyn FnMut(Admitted)>,
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

impl Admission {
    /// Admit on `ctx`; `deliver` gets every connection that passes.
    pub(crate) fn new(
        ctx: &MainContext,
        cfg: AdmitConfig,
        deliver: impl FnMut(Admitted) + 'static,
    ) -> Admission {
        Admission(Rc::new_cyclic(|me| {
            RefCell::new(State {
                me: me.clone(),
                ctx: ctx.clone(),
                cfg,
                next: 0,
                pending: BTreeMap::new(),
                lingering: Rc::new(Cell::new(0)),
                deliver: Box::new(deliver),
                closed: false,
            })
        }))
    }

    /// Take one accepted connection.
    pub(crate) fn admit(&self, client: SocketChannel) {
        let mut st = self.0.borrow_mut();
        if st.closed {
            return;
        }
        let peer = client
            .peer_address()
            .map(|a| a.to_string())
            .unwrap_or_else(|| client.name().to_owned());
        while st.pending.len() >= MAX_PENDING {
            let Some((_, old)) = st.pending.pop_first() else {
                break;
            };
            crate::recv::warn(&format!(
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
    pub(crate) fn close(&self) {
        let mut st = self.0.borrow_mut();
        st.closed = true;
        while let Some((_, p)) = st.pending.pop_first() {
            st.cancel(p);
        }
    }
}

impl State {
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
        let mut buf = [0u8; wire::SESSION_HEADER_LEN];
        let mut got = 0;
        let watch = self.ctx.add_watch(&ws, Condition::IN, move |_| {
            let Some(c) = ch.as_mut() else {
                return ControlFlow::Remove;
            };
            let outcome = loop {
                let want = match head(&buf[..got]) {
                    Head::More(n) => n,
                    Head::Done(kind) => break Some(Ok(kind)),
                };
                match c.readv(
                    &mut [IoSliceMut::new(&mut buf[got..want])],
                    None,
                    ReadFlags::empty(),
                ) {
                    Ok(0) => {
                        break Some(Err(
                            "closed the connection before sending a header".to_owned()
                        ))
                    }
                    Ok(n) => got += n,
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
                    let ch: Box<dyn Channel> = Box::new(Prefixed::new(buf[..got].to_vec(), c));
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

    fn admitted(&mut self, id: u64, ch: Box<dyn Channel>, kind: Peeked) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(t) = p.timer {
            self.ctx.remove(t);
        }
        let peer = p.peer;
        (self.deliver)(Admitted { ch, peer, kind });
    }

    /// The handshake failed: log, drop, close gently.
    fn refuse(&mut self, id: u64, why: String) {
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        crate::recv::warn(&format!("rejected a connection from {}: {why}", p.peer));
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
        crate::recv::warn(&format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn main_header() -> Vec<u8> {
        let mut b = vec![0u8; wire::SESSION_HEADER_LEN];
        b[..4].copy_from_slice(&wire::MAIN_MAGIC.to_be_bytes());
        b
    }

    #[test]
    fn head_asks_for_whole_structures() {
        assert!(matches!(head(b""), Head::More(4)));
        assert!(matches!(head(b"TR"), Head::More(4)));
        let m = main_header();
        assert!(matches!(
            head(&m[..4]),
            Head::More(wire::SESSION_HEADER_LEN)
        ));
        assert!(matches!(
            head(&m[..63]),
            Head::More(wire::SESSION_HEADER_LEN)
        ));
        assert!(matches!(head(&m), Head::Done(Peeked::Main(_))));
        let p = wire::PAGE_MAGIC.to_be_bytes();
        assert!(matches!(head(&p), Head::More(wire::INIT_PACKET_LEN)));
        let mut p = vec![0u8; wire::INIT_PACKET_LEN];
        p[..4].copy_from_slice(&wire::PAGE_MAGIC.to_be_bytes());
        assert!(matches!(head(&p), Head::Done(Peeked::Page)));
        assert!(matches!(
            head(b"GET / HTTP/1.1"),
            Head::Done(Peeked::Other(_))
        ));
    }
}

//! Where a receiver's connections come from, one abstraction for every
//! kind of source: a listener's sockets, an RDMA listener, and channels
//! that are already there (the joined runs of an `exec:` command, see
//! [`crate::join`]).
//!
//! [`listen`] opens what an [`Endpoint`] names for receiving;
//! [`Acceptor::start`] then takes every connection through its server
//! layers (TLS, the websocket upgrade) and its first bytes (as many as the
//! caller's decider asks for; the bytes are put back in front) and hands
//! it over as an [`Admitted`], with what the decider made of it:
//!
//! - a listener's connections go through [`crate::admit`] on the main
//!   loop, without a thread each;
//! - other connections get a short-lived thread each (their layers and
//!   first-byte read block), the RDMA listener one accepting thread.
//!
//! Every connection has its own deadline ([`AcceptConfig::timeout`]); a
//! stranger that sends nothing delays no one. A connection whose layers
//! fail is logged and dropped (closed gracefully, so the peer reads the
//! TLS alert or HTTP refusal), except for channels given by the caller:
//! those are the session's own, their failure (layers, or no first bytes
//! in time) is [`Incoming::Fatal`], and they arrive marked
//! [`Admitted::own`].
//!
//! ```no_run
//! use std::time::Duration;
//! use transit_channel::MainContext;
//! use transit_endpoint::accept::{self, AcceptConfig, Acceptor, Incoming};
//! use transit_endpoint::admit::Head;
//! use transit_endpoint::{Endpoint, TransportOpts};
//!
//! let ep = Endpoint::parse("tcp:127.0.0.1:0")?;
//! let ctx = MainContext::new()?;
//! let source = accept::listen(&ep)?;
//! for uri in source.local_uris(&ep) {
//!     eprintln!("listening on {uri}");
//! }
//! let cfg = AcceptConfig::new(ep, TransportOpts::new(Duration::from_secs(10)));
//! // The decider: here, the first 4 bytes, whatever they are.
//! let decide = |b: &[u8]| if b.len() < 4 { Head::More(4) } else { Head::Done(b[..4].to_vec()) };
//! let acceptor = Acceptor::start(&ctx, source, cfg, decide, |inc: Incoming<Vec<u8>>| {
//!     if let Incoming::Conn(a) = inc {
//!         eprintln!("{} starts with {:?}", a.peer, a.kind);
//!     }
//! })?;
//! // ... run the main loop; then:
//! acceptor.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use transit_channel::prefixed::{self, Head};
use transit_channel::{Channel, MainContext, SocketAddress, SocketChannel};
use transit_net_listener::NetListener;

use crate::admit::{Admission, AdmitConfig, Admitted};
use crate::connect::{wrap_accepted, OpenError, OpenFailure, TransportOpts};
use crate::uri::Endpoint;

/// What a receiver takes connections from.
pub enum Source {
    /// A listener's sockets (`tcp:`, `unix:`, `vsock:`, a listening `fd:`,
    /// `ws://`, `wss://`).
    Listener(NetListener),
    /// A connected socket (`fd:N` of a connection): one raw stream.
    Connected(SocketChannel),
    /// An RDMA listener (`rdma:`).
    Rdma(transit_channel::rdma::RdmaListener),
    /// Channels already there (the joined runs of an `exec:` command).
    Channels(Vec<Box<dyn Channel>>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Listener(_) => "Source::Listener",
            Source::Connected(_) => "Source::Connected",
            Source::Rdma(_) => "Source::Rdma",
            Source::Channels(_) => "Source::Channels",
        })
    }
}

/// Open what `ep` names for receiving: listen on a socket address or a
/// websocket's `HOST:PORT`, take over an inherited `fd:N` (listening or
/// connected), listen with rdma_cm. `exec:`, `stdio:` and `file:` are not
/// listened on (their caller has the channel already).
pub fn listen(ep: &Endpoint) -> Result<Source, OpenError> {
    let addr = match ep {
        Endpoint::Socket(a) => a.clone(),
        Endpoint::WebSocket(u) => SocketAddress::inet(u.host.clone(), u.port),
        Endpoint::Rdma(a) => {
            let shown = transit_channel::rdma::format_address(a);
            return transit_channel::rdma::RdmaListener::listen(a)
                .map(Source::Rdma)
                .map_err(|e| {
                    OpenError::new(format!("listen on {shown}: {e}"), OpenFailure::Other)
                });
        }
        other => {
            return Err(OpenError::new(
                format!("{other} is not an address to listen on"),
                OpenFailure::Other,
            ))
        }
    };
    let failed = |e: transit_channel::Error| {
        OpenError::new(format!("listen on {addr}: {e}"), OpenFailure::Other)
    };
    let mut listener = NetListener::with_name("transit");
    if let SocketAddress::Fd(_) = addr {
        let sock = SocketChannel::from_address(&addr)
            .map_err(|e| OpenError::new(format!("{addr}: {e}"), OpenFailure::Other))?;
        if !sock.is_listener() {
            return Ok(Source::Connected(sock));
        }
        listener.add(sock).map_err(failed)?;
    } else {
        listener.open_sync(&addr, 64).map_err(failed)?;
    }
    Ok(Source::Listener(listener))
}

impl Source {
    /// The addresses it listens on, as people write them for `ep`
    /// (`ws://[::1]:8080/path` for a websocket, the kernel's port for
    /// port 0).
    pub fn local_uris(&self, ep: &Endpoint) -> Vec<String> {
        match self {
            Source::Listener(l) => l
                .local_addresses()
                .into_iter()
                .map(|a| match (ep, &a) {
                    (Endpoint::WebSocket(u), SocketAddress::Inet { host, port }) => {
                        let scheme = if u.secure { "wss" } else { "ws" };
                        let host = if host.contains(':') {
                            format!("[{host}]")
                        } else {
                            host.clone()
                        };
                        format!("{scheme}://{host}:{port}{}", u.path)
                    }
                    _ => a.to_string(),
                })
                .collect(),
            Source::Rdma(l) => l
                .local_address()
                .map(|a| transit_channel::rdma::format_address(&a))
                .into_iter()
                .collect(),
            Source::Connected(_) | Source::Channels(_) => Vec::new(),
        }
    }
}

/// How an [`Acceptor`] takes connections.
#[derive(Clone)]
pub struct AcceptConfig {
    /// The endpoint (a websocket's path is served).
    pub endpoint: Endpoint,
    /// The server layers (TLS) and the cancel switch.
    pub transport: TransportOpts,
    /// Bound of one connection's layers and first bytes.
    pub timeout: Duration,
    /// How long a refused connection is drained before it is closed.
    pub linger: Duration,
    /// Where one-line reports of refused and dropped connections go.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

impl AcceptConfig {
    /// Connections of `endpoint` with `transport`'s layers, each bounded
    /// by its timeout; reports go to stderr.
    pub fn new(endpoint: Endpoint, transport: TransportOpts) -> AcceptConfig {
        AcceptConfig {
            timeout: transport.timeout,
            endpoint,
            transport,
            linger: Duration::from_secs(5),
            log: Arc::new(|m: &str| eprintln!("{m}")),
        }
    }
}

/// What an [`Acceptor`] hands over.
pub enum Incoming<K> {
    /// A connection, layered, its first bytes read and put back.
    Conn(Admitted<K>),
    /// One of the caller's own channels failed its layers: the session
    /// cannot go on (the reason, naming the peer).
    Fatal(String),
}

/// Takes a [`Source`]'s connections; see the [module documentation](self).
pub struct Acceptor<K: 'static> {
    listener: Option<(NetListener, Admission<K>)>,
    threads: Arc<AtomicU64>,
}

impl<K: Send + 'static> Acceptor<K> {
    /// Start taking `source`'s connections: `decide` says what their first
    /// bytes are, `deliver` gets each one (on the main loop's thread for a
    /// listener's, on a connection's own thread for the others).
    /// [`Source::Connected`] is a raw stream, not taken here (an error).
    pub fn start(
        ctx: &MainContext,
        source: Source,
        cfg: AcceptConfig,
        decide: fn(&[u8]) -> Head<K>,
        deliver: impl Fn(Incoming<K>) + Send + Sync + 'static,
    ) -> Result<Acceptor<K>, OpenError> {
        let deliver = Arc::new(deliver);
        let threads = Arc::new(AtomicU64::new(0));
        let mut listener = None;
        match source {
            Source::Listener(mut l) => {
                let log = cfg.log.clone();
                let admit = AdmitConfig {
                    tls: cfg.transport.tls.clone(),
                    ws: match &cfg.endpoint {
                        Endpoint::WebSocket(u) => {
                            Some((u.path.clone(), cfg.transport.ws_config.clone()))
                        }
                        _ => None,
                    },
                    timeout: cfg.timeout,
                    linger: cfg.linger,
                    log: Rc::new(move |m: &str| log(m)),
                };
                let d = deliver.clone();
                let adm = Admission::new(ctx, admit, decide, move |a| d(Incoming::Conn(a)));
                let a2 = adm.clone();
                l.set_client_func(ctx, move |client| a2.admit(client));
                listener = Some((l, adm));
            }
            Source::Channels(chans) => {
                for ch in chans {
                    layer_on_thread(ch, &cfg, decide, deliver.clone(), &threads, true);
                }
            }
            Source::Rdma(mut l) => {
                let (cfg, threads) = (cfg.clone(), threads.clone());
                std::thread::Builder::new()
                    .name("rdma-accept".into())
                    .spawn(move || loop {
                        match l.accept() {
                            Ok(ch) => layer_on_thread(
                                Box::new(ch),
                                &cfg,
                                decide,
                                deliver.clone(),
                                &threads,
                                false,
                            ),
                            Err(e) => return (cfg.log)(&format!("accept on {}: {e}", l.name())),
                        }
                    })
                    .map_err(|e| {
                        OpenError::new(
                            format!("start the RDMA accept thread: {e}"),
                            OpenFailure::Other,
                        )
                    })?;
            }
            Source::Connected(s) => {
                return Err(OpenError::new(
                    format!(
                        "{} is a connected socket: one raw stream, not connections to accept",
                        s.name()
                    ),
                    OpenFailure::Other,
                ))
            }
        }
        Ok(Acceptor { listener, threads })
    }

    /// Connections still in their layers on threads of their own, as a
    /// view any thread can read.
    pub fn in_flight(&self) -> InFlight {
        InFlight(self.threads.clone())
    }

    /// Stop listening and stop every admission in progress (the RDMA
    /// accept thread ends with the process).
    pub fn close(mut self) {
        if let Some((mut l, adm)) = self.listener.take() {
            l.disconnect();
            adm.close();
        }
    }
}

/// How many of an [`Acceptor`]'s connections are in their layers on
/// threads of their own (see [`Acceptor::in_flight`]).
#[derive(Debug, Clone)]
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    /// The count now.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Counts a connection's thread out when it ends.
struct Counted(Arc<AtomicU64>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Run one connection's server layers and its first-byte read on a
/// thread of its own, then deliver it. With `fatal`, a failed layer ends
/// the session (the caller's own channels); else it is logged.
fn layer_on_thread<K: Send + 'static>(
    ch: Box<dyn Channel>,
    cfg: &AcceptConfig,
    decide: fn(&[u8]) -> Head<K>,
    deliver: Arc<impl Fn(Incoming<K>) + Send + Sync + 'static>,
    threads: &Arc<AtomicU64>,
    fatal: bool,
) {
    let peer = ch.peer_name();
    let cfg = cfg.clone();
    let log = cfg.log.clone();
    threads.fetch_add(1, Ordering::AcqRel);
    let count = Counted(threads.clone());
    let spawned = std::thread::Builder::new()
        .name("accept-layers".into())
        .spawn(move || {
            let deadline = Instant::now() + cfg.timeout;
            let outcome = (|| {
                let ch = if cfg.transport.has_layers(&cfg.endpoint) {
                    wrap_accepted(ch, &cfg.endpoint, &cfg.transport)
                        .map_err(|e| format!("connection from {peer}: {e}"))?
                } else {
                    ch
                };
                match prefixed::sniff(ch, decide, deadline) {
                    Ok((ch, kind)) => Ok((ch, kind)),
                    Err((_, e)) if e.is_timed_out() => Err(format!(
                        "connection from {peer}: it sent no complete header within {:.1} s",
                        cfg.timeout.as_secs_f64()
                    )),
                    Err((_, e)) => Err(format!("connection from {peer}: {e}")),
                }
            })();
            // Counted out before the caller hears of it: whoever waits for
            // the connections in flight sees this one delivered.
            drop(count);
            match outcome {
                Ok((ch, kind)) => deliver(Incoming::Conn(Admitted {
                    ch,
                    peer,
                    kind,
                    own: fatal,
                })),
                // The session's own channel: it cannot go on without it.
                Err(why) if fatal => deliver(Incoming::Fatal(why)),
                Err(why) => (cfg.log)(&format!("rejected a {why}")),
            }
        });
    if let Err(e) = spawned {
        log(&format!("cannot start a handshake thread: {e}"));
    }
}

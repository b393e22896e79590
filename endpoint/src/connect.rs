//! The transport stack: one mechanism that turns an [`Endpoint`] plus
//! [`TransportOpts`] into a ready `Box<dyn Channel>`, whatever the layers.
//!
//! Connect side ([`open`]): the base channel (a socket connect, or a
//! spawned `exec:` command, see [`crate::exec`]) → TLS client handshake
//! (with credentials, or `wss://`) → websocket client handshake (`ws://`,
//! `wss://`). Accept side ([`wrap_accepted`]): TLS server handshake →
//! websocket server handshake over an accepted connection (or `stdio:`).
//! A listener's connections are better taken on a main loop, without a
//! thread each: see [`crate::admit`].
//!
//! Both are blocking calls meant for worker threads: a sender runs one
//! connect task per channel, so the N+1 handshakes (and their crypto) run
//! in parallel. Every handshake has a deadline, [`TransportOpts::timeout`]
//! from its start, and bounds its own waits by it (the channel is
//! non-blocking during the handshake; no thread watches it); [`Cancel`]
//! shuts every channel in a handshake down from a signal handler's thread.
//!
//! `exec:` in a multifd session runs the command once per channel (N+1
//! times). Each run first receives a plaintext join preamble (see
//! [`crate::join`]) so the `transit recv stdio:` processes at the far end
//! can hand their pipes to the one that got the main channel.
//!
//! ```no_run
//! use std::time::Duration;
//! use transit_endpoint::{connect, Endpoint, TransportOpts};
//!
//! let ep = Endpoint::parse("ws://127.0.0.1:8080/migrate")?;
//! let opts = TransportOpts::new(Duration::from_secs(10));
//! // Channel 1 of 5 (a session's first page channel), connected and upgraded.
//! let ch = connect::open(&ep, &opts, 1, 5, "page channel 0")?;
//! # drop(ch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transit_channel::tls::{Authz, TlsChannel, TlsCreds};
use transit_channel::websocket::WebSocketConfig;
use transit_channel::{
    io as chio, Channel, Shutdown, ShutdownHandle, SocketAddress, SocketChannel, WebSocketChannel,
};

use crate::exec::ExecChannel;
use crate::join::{self, JoinTag};
use crate::uri::Endpoint;

/// Why a channel could not be opened or layered: the message for people
/// (it names the channel, the address and the step) and the kind of
/// failure, decided from the typed channel error, for choosing which of
/// several failures to report.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenError {
    /// One line for people.
    pub message: String,
    /// What kind of failure it was.
    pub kind: OpenFailure,
    /// Nobody listens at the address, or the peer's TLS refused us: trying
    /// again will not help.
    pub refused: bool,
}

/// The kinds of [`OpenError`], from the most telling to the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpenFailure {
    /// A TLS or websocket layer failed, or its handshake timed out: it
    /// says why (a certificate, a path, a status).
    Layer,
    /// Anything else (an address, an OS error, a command's exit).
    Other,
    /// A symptom: the peer reset, refused or closed the connection (often
    /// because another channel's handshake failed first).
    PeerGone,
    /// A signal cancelled it.
    Cancelled,
}

impl OpenError {
    /// `{which}: {e}`, its kind read from the channel error's type.
    pub fn channel(which: &str, e: &transit_channel::Error) -> OpenError {
        let mut err = OpenError::from_channel(e);
        err.message = format!("{which}: {}", err.message);
        err
    }

    /// The channel error's own message, its kind read from its type.
    pub fn from_channel(e: &transit_channel::Error) -> OpenError {
        let kind = if e.is_peer_gone() {
            OpenFailure::PeerGone
        } else if e.is_tls_or_websocket() {
            OpenFailure::Layer
        } else {
            OpenFailure::Other
        };
        OpenError {
            message: e.to_string(),
            kind,
            refused: e.is_nobody_listening() || e.is_peer_refusal(),
        }
    }

    /// An error of `kind` saying `message`.
    pub fn new(message: impl Into<String>, kind: OpenFailure) -> OpenError {
        OpenError {
            message: message.into(),
            kind,
            refused: false,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OpenError {}

impl From<OpenError> for String {
    fn from(e: OpenError) -> String {
        e.message
    }
}

/// TLS settings of one side.
#[derive(Clone)]
pub struct TlsOpts {
    /// Credentials (client endpoint on send, server on recv).
    pub creds: Arc<TlsCreds>,
    /// Client: the name the server's certificate must carry.
    pub hostname: Option<String>,
    /// Server: the peer identities let in (none: any certificate the CA
    /// signed).
    pub authz: Option<Authz>,
    /// Accept a peer that ends without close_notify.
    pub relaxed_eof: bool,
}

impl std::fmt::Debug for TlsOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOpts")
            .field("creds", &self.creds.origin())
            .field("hostname", &self.hostname)
            .field("authz", &self.authz)
            .field("relaxed_eof", &self.relaxed_eof)
            .finish()
    }
}

/// How to build the layers above the base channel.
#[derive(Debug, Clone)]
pub struct TransportOpts {
    /// TLS (below the websocket, if both).
    pub tls: Option<TlsOpts>,
    /// Bound of each channel's connect and handshakes.
    pub timeout: Duration,
    /// Websocket settings (`ws://`, `wss://`).
    pub ws_config: WebSocketConfig,
    /// `exec:` in a multifd session: the tag each command run receives.
    pub join: Option<JoinTag>,
    /// `send --retry`: how long a connect keeps trying while nothing
    /// listens at the address yet (zero: fail at once).
    pub retry: Duration,
    /// Shuts every handshake in progress down on a signal.
    pub cancel: Cancel,
}

impl TransportOpts {
    /// Options with no TLS, bounded by `timeout`.
    pub fn new(timeout: Duration) -> TransportOpts {
        TransportOpts {
            tls: None,
            timeout,
            ws_config: WebSocketConfig {
                handshake_timeout: Some(timeout),
                ..WebSocketConfig::default()
            },
            join: None,
            retry: Duration::ZERO,
            cancel: Cancel::default(),
        }
    }

    /// True if accepted connections need a handshake before use.
    pub fn has_layers(&self, ep: &Endpoint) -> bool {
        self.tls.is_some() || matches!(ep, Endpoint::WebSocket(_))
    }
}

/// Shuts down every channel whose handshake is in progress (from the
/// signal handler's cancel action); later handshakes fail at once.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Mutex<CancelState>>);

#[derive(Default)]
struct CancelState {
    cancelled: bool,
    next: u64,
    handles: Vec<(u64, ShutdownHandle)>,
}

impl std::fmt::Debug for CancelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelState")
            .field("cancelled", &self.cancelled)
            .field("pending", &self.handles.len())
            .finish()
    }
}

impl Cancel {
    fn lock(&self) -> std::sync::MutexGuard<'_, CancelState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shut every registered channel down; refuse new registrations.
    pub fn cancel(&self) {
        let mut st = self.lock();
        st.cancelled = true;
        for (_, h) in st.handles.drain(..) {
            let _ = h.shutdown(Shutdown::Both);
        }
    }

    /// True once [`cancel`](Self::cancel) ran.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    fn register(&self, h: ShutdownHandle) -> Option<u64> {
        let mut st = self.lock();
        if st.cancelled {
            let _ = h.shutdown(Shutdown::Both);
            return None;
        }
        st.next += 1;
        let id = st.next;
        st.handles.push((id, h));
        Some(id)
    }

    fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.lock().handles.retain(|(i, _)| *i != id);
        }
    }
}

/// Run `step` on `ch` with a deadline `opts.timeout` from now (the step
/// bounds its own waits by it: no thread watches), the channel registered
/// with `opts.cancel` meanwhile; a timeout or a cancel replaces the step's
/// error with one that says so.
fn guarded<T>(
    ch: Box<dyn Channel>,
    opts: &TransportOpts,
    what: &str,
    step: impl FnOnce(Box<dyn Channel>, Instant) -> Result<T, (OpenError, bool)>,
) -> Result<T, OpenError> {
    let deadline = Instant::now() + opts.timeout;
    let id = ch
        .shutdown_handle()
        .ok()
        .and_then(|h| opts.cancel.register(h));
    let r = step(ch, deadline);
    opts.cancel.unregister(id);
    match r {
        Ok(t) => Ok(t),
        Err(_) if opts.cancel.is_cancelled() => Err(OpenError::new(
            format!("{what}: cancelled"),
            OpenFailure::Cancelled,
        )),
        // The layer's handshake took too long: that is the layer's story.
        Err((e, true)) => Err(OpenError::new(
            format!(
                "{what}: timed out after {:.1} s ({e})",
                opts.timeout.as_secs_f64()
            ),
            OpenFailure::Layer,
        )),
        Err((e, false)) => Err(e),
    }
}

/// An open step's error, and whether it was its deadline running out.
fn step_error(e: transit_channel::Error, which: Option<&str>) -> (OpenError, bool) {
    let timed_out = e.is_timed_out();
    let err = match which {
        Some(w) => OpenError::channel(w, &e),
        None => OpenError::from_channel(&e),
    };
    (err, timed_out)
}

/// Connect a socket (TCP without Nagle: small records must not wait).
/// While nothing listens at the address (connection refused, no socket
/// file), try again every 100 ms for up to `opts.retry`.
pub fn connect_socket(
    addr: &SocketAddress,
    opts: &TransportOpts,
    which: &str,
) -> Result<Box<dyn Channel>, OpenError> {
    let start = std::time::Instant::now();
    let mut ch = loop {
        let e = match SocketChannel::connect_sync(addr) {
            Ok(ch) => break ch,
            Err(e) => e,
        };
        let errno = e.raw_os_error();
        let nobody = matches!(errno, Some(libc::ECONNREFUSED) | Some(libc::ENOENT));
        let left = opts.retry.saturating_sub(start.elapsed());
        if nobody && !left.is_zero() && !opts.cancel.is_cancelled() {
            std::thread::sleep(left.min(Duration::from_millis(100)));
            continue;
        }
        // The channel error names the address and the operation once.
        let mut err = OpenError::channel(which, &e);
        if errno == Some(libc::ECONNREFUSED) {
            err.message
                .push_str(" (is `transit recv` listening there?)");
        }
        if nobody && !opts.retry.is_zero() {
            err.message.push_str(&format!(
                "; tried for {:.1} s (--retry)",
                start.elapsed().as_secs_f64()
            ));
        }
        return Err(err);
    };
    let _ = ch.set_delay(false);
    Ok(Box::new(ch))
}

/// Open channel `index` of `count` to `ep`: the base channel, then the
/// client layers. `which` names the channel in errors ("main channel",
/// "page channel 2", "raw channel").
pub fn open(
    ep: &Endpoint,
    opts: &TransportOpts,
    index: u32,
    count: u32,
    which: &str,
) -> Result<Box<dyn Channel>, OpenError> {
    if opts.cancel.is_cancelled() {
        return Err(OpenError::new(
            format!("{which}: cancelled"),
            OpenFailure::Cancelled,
        ));
    }
    let base: Box<dyn Channel> = match ep {
        Endpoint::Socket(addr @ SocketAddress::Fd(_)) => {
            Box::new(SocketChannel::from_address(addr).map_err(|e| OpenError::channel(which, &e))?)
        }
        Endpoint::Socket(addr) => connect_socket(addr, opts, which)?,
        Endpoint::WebSocket(u) => {
            connect_socket(&SocketAddress::inet(u.host.clone(), u.port), opts, which)?
        }
        Endpoint::Exec(cmd) => {
            let mut ch = ExecChannel::spawn(cmd).map_err(|e| OpenError::channel(which, &e))?;
            if let Some(tag) = &opts.join {
                join::write_preamble(&mut ch, tag, index, count)
                    .map_err(|e| OpenError::channel(which, &e))?;
            }
            Box::new(ch)
        }
        Endpoint::Stdio => Box::new(
            transit_channel::PipeChannel::stdio().map_err(|e| OpenError::channel(which, &e))?,
        ),
        Endpoint::Rdma(addr) => Box::new(
            transit_channel::rdma::RdmaChannel::connect(addr)
                .map_err(|e| OpenError::channel(which, &e))?,
        ),
        Endpoint::File(_) => {
            return Err(OpenError::new(
                format!("{which}: a file is not a connection"),
                OpenFailure::Other,
            ))
        }
    };
    layer_client(base, ep, opts, which)
}

/// The name of channel `i` of a session in reports: `main channel` (0)
/// or `page channel N` (`i - 1`).
pub fn channel_name(i: u32) -> String {
    match i {
        0 => "main channel".to_owned(),
        i => format!("page channel {}", i - 1),
    }
}

/// [`open_session`] failed: the most telling error, and the channels that
/// did open (the caller may tell their peer why it gives up before it
/// drops them).
pub struct SessionOpenError {
    /// The most telling failure.
    pub error: OpenError,
    /// The channels that opened, in order.
    pub opened: Vec<Box<dyn Channel>>,
}

impl std::fmt::Debug for SessionOpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOpenError")
            .field("error", &self.error)
            .field("opened", &self.opened.len())
            .finish()
    }
}

/// Open the main channel and `pages` page channels of a session to `ep`,
/// in parallel (a thread each: their connects and handshakes overlap), the
/// main channel first in the result. Every open finishes, so the error is
/// the most telling of all: a layer that says why (a TLS refusal, a
/// websocket status) before other failures, before symptoms (a reset, a
/// refused connection: often another channel's handshake failing first),
/// before a cancel. With TLS 1.3 a client learns that the server refused
/// its certificate only when it reads: a handshake that "succeeded" is
/// read for half a second for that refusal when another failed.
pub fn open_session(
    ep: &Endpoint,
    opts: &TransportOpts,
    pages: u32,
) -> Result<Vec<Box<dyn Channel>>, SessionOpenError> {
    let count = pages + 1;
    let results: Vec<Result<Box<dyn Channel>, OpenError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("connect-{i}"))
                    .spawn_scoped(s, move || open(ep, opts, i, count, &channel_name(i)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    Err(OpenError::new(
                        "a connect thread panicked",
                        OpenFailure::Other,
                    ))
                }),
                Err(e) => Err(OpenError::new(
                    format!("start a connect thread: {e}"),
                    OpenFailure::Other,
                )),
            })
            .collect()
    });
    let mut errors = Vec::new();
    let mut opened = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(c) => opened.push(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        return Ok(opened);
    }
    // Only TLS refuses after a handshake that looked fine; one deadline
    // for all the channels that opened.
    if opts.tls.is_some() && !opts.cancel.is_cancelled() {
        let deadline = Instant::now() + Duration::from_millis(500);
        for (i, c) in opened.iter_mut().enumerate() {
            if let Err(e) = chio::read_all_until(c.as_mut(), &mut [0u8; 1], deadline) {
                if e.is_peer_refusal() {
                    return Err(SessionOpenError {
                        error: OpenError::channel(&channel_name(i as u32), &e),
                        opened,
                    });
                }
            }
        }
    }
    let best = errors
        .iter()
        .enumerate()
        .min_by_key(|(i, e)| (e.kind, *i))
        .map_or(0, |(i, _)| i);
    Err(SessionOpenError {
        error: errors.swap_remove(best),
        opened,
    })
}

/// A function that opens page channel `id` (0-based) of a session of
/// `count` channels to `ep` again, as at the start (connect, TLS,
/// websocket; no retry while nobody listens), for a session that
/// survives lost channels; `None` for endpoints that cannot connect
/// again (`exec:`, `fd:`, `stdio:`, `file:`, and `rdma:` for now). Its
/// error says, as an OS error `ECONNREFUSED`, when trying again will not
/// help (nobody listens, the peer's TLS refused us).
#[allow(clippy::type_complexity)]
pub fn reopener(
    ep: &Endpoint,
    opts: &TransportOpts,
    count: u32,
) -> Option<Box<dyn Fn(u32) -> transit_channel::Result<Box<dyn Channel>> + Send + Sync>> {
    match ep {
        Endpoint::Socket(SocketAddress::Fd(_)) => return None,
        Endpoint::Socket(_) | Endpoint::WebSocket(_) => {}
        _ => return None,
    }
    let (ep, mut opts) = (ep.clone(), opts.clone());
    opts.retry = Duration::ZERO;
    Some(Box::new(move |id: u32| {
        let which = channel_name(id + 1);
        open(&ep, &opts, id + 1, count, &which).map_err(|e| {
            let source = if e.refused {
                std::io::Error::from_raw_os_error(libc::ECONNREFUSED)
            } else {
                std::io::Error::other(e.message.clone())
            };
            transit_channel::Error::os(&which, format!("reconnect ({})", e.message), source)
        })
    }))
}

/// The client layers over a connected base channel.
pub fn layer_client(
    base: Box<dyn Channel>,
    ep: &Endpoint,
    opts: &TransportOpts,
    which: &str,
) -> Result<Box<dyn Channel>, OpenError> {
    let mut ch = base;
    if let Some(tls) = &opts.tls {
        let host = tls
            .hostname
            .clone()
            .or_else(|| ep.tls_host())
            .ok_or_else(|| {
                OpenError::new(
                    format!("{which}: TLS needs --tls-hostname for {ep}"),
                    OpenFailure::Other,
                )
            })?;
        ch = guarded(
            ch,
            opts,
            &format!("{which}: TLS handshake"),
            |ch, deadline| {
                let mut t = TlsChannel::client(ch, tls.creds.clone(), &host)
                    .map_err(|e| step_error(e, Some(which)))?;
                t.set_relaxed_eof(tls.relaxed_eof);
                t.handshake_until(deadline)
                    .map_err(|e| step_error(e, Some(which)))?;
                Ok(Box::new(t) as Box<dyn Channel>)
            },
        )?;
    }
    if let Endpoint::WebSocket(u) = ep {
        let host = u.host_header();
        ch = guarded(
            ch,
            opts,
            &format!("{which}: websocket handshake"),
            |ch, deadline| {
                let cfg = ws_config_until(&opts.ws_config, deadline);
                let hs = WebSocketChannel::client(ch, &host, &u.path, cfg)
                    .map_err(|e| step_error(e, Some(which)))?;
                let ws = hs
                    .handshake_blocking()
                    .map_err(|e| step_error(e, Some(which)))?;
                Ok(Box::new(ws) as Box<dyn Channel>)
            },
        )?;
    }
    Ok(ch)
}

/// The server layers over an accepted connection (or `stdio:`): TLS, then
/// the websocket upgrade (checking the URI's path).
pub fn wrap_accepted(
    base: Box<dyn Channel>,
    ep: &Endpoint,
    opts: &TransportOpts,
) -> Result<Box<dyn Channel>, OpenError> {
    let mut ch = base;
    if let Some(tls) = &opts.tls {
        ch = guarded(ch, opts, "TLS handshake", |ch, deadline| {
            let mut t = TlsChannel::server(ch, tls.creds.clone(), tls.authz.as_ref())
                .map_err(|e| step_error(e, None))?;
            t.set_relaxed_eof(tls.relaxed_eof);
            t.handshake_until(deadline)
                .map_err(|e| step_error(e, None))?;
            Ok(Box::new(t) as Box<dyn Channel>)
        })?;
    }
    if let Endpoint::WebSocket(u) = ep {
        ch = guarded(ch, opts, "websocket handshake", |ch, deadline| {
            let cfg = ws_config_until(&opts.ws_config, deadline);
            let hs = WebSocketChannel::server(ch, &u.path, cfg);
            let ws = hs.handshake_blocking().map_err(|e| step_error(e, None))?;
            Ok(Box::new(ws) as Box<dyn Channel>)
        })?;
    }
    Ok(ch)
}
/// The websocket settings with a handshake that ends by `deadline` (the
/// websocket handshake bounds its own waits; its error says it timed out).
fn ws_config_until(cfg: &WebSocketConfig, deadline: Instant) -> WebSocketConfig {
    let left = deadline.saturating_duration_since(Instant::now());
    WebSocketConfig {
        handshake_timeout: Some(cfg.handshake_timeout.map_or(left, |t| t.min(left))),
        ..cfg.clone()
    }
}

/// TLS settings from the command line: `--tls-creds DIR` loaded for
/// `endpoint` (client on send, server on recv), `--tls-authz` entries
/// (server), `--tls-hostname` (client).
pub fn tls_from_args(
    dir: Option<&std::path::Path>,
    endpoint: transit_channel::tls::Endpoint,
    hostname: Option<String>,
    authz: &[String],
    relaxed_eof: bool,
) -> Result<Option<TlsOpts>, String> {
    let Some(dir) = dir else { return Ok(None) };
    let creds = TlsCreds::from_dir(dir, endpoint).map_err(|e| format!("--tls-creds: {e}"))?;
    let authz = if authz.is_empty() {
        None
    } else {
        Some(Authz::new(authz).map_err(|e| format!("--tls-authz: {e}"))?)
    };
    Ok(Some(TlsOpts {
        creds,
        hostname,
        authz,
        relaxed_eof,
    }))
}

/// Close a refused connection gently: after the channel that used it
/// was dropped (its TLS alert already written), `fd` (a duplicate) still
/// holds the socket open. A graceful close ([`chio::close_gracefully`],
/// at most `within`) lets the peer read the alert before end of file,
/// rather than a reset that would destroy it.
pub fn linger_close(fd: OwnedFd, within: Duration) {
    if let Ok(mut sock) = SocketChannel::from_fd(fd) {
        let _ = chio::close_gracefully(
            &mut sock,
            std::time::Instant::now() + within,
            0,
            transit_channel::ReadFlags::empty(),
        );
    }
}

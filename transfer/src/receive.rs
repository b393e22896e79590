//! Receive from an endpoint into an output: [`receive`].
//!
//! A listening endpoint (`tcp:`, `unix:`, `vsock:`, a listening `fd:N`,
//! `ws://`, `wss://`, `rdma:`) is opened with [`accept::listen`]; its
//! connections come through an [`Acceptor`] on the [`Runtime`]'s loop
//! (TLS, the websocket upgrade and the first bytes of each, concurrently
//! and under a deadline each) and go, classified, to the session worker,
//! which applies [`transit_multifd::serve`]'s policy: the session header
//! chooses the destination (memory, a file renamed into place on success,
//! stdout, a device, or nothing), page channels may come first, strangers
//! are told why ([`NOT_FRAMED`]) and the receiver keeps waiting for its
//! sender. Once every channel is present the session runs on multifd's
//! threads; meanwhile a lost page channel may rejoin and a second sender
//! is told it is busy ([`BUSY`]). The output is committed before the
//! sender hears the verdict.
//!
//! `stdio:` is one of the runs of a sender's framed `exec:` command: the
//! run with the main channel gathers the others' and receives, the others
//! hand theirs over and wait for the outcome. A plain copy
//! ([`ReceiveOptions::raw`], and always for `file:` and `exec:`) takes one
//! stream: the first client whose layers succeed, a connected `fd:N`,
//! stdin, a command's stdout or a file; a framed sender is refused and
//! told so.
//!
//! Phases run on the caller's [`Runtime`]; a signal aborts the session
//! (the sender is told) and nothing is left behind (no partial output
//! unless [`ReceiveOptions::resume`] keeps one): [`Error::Cancelled`].
//! Argument checks (`delta` needs a file output...) are the caller's: see
//! the `transit` binary's `recv`; an interrupted in-place update of the
//! output is rolled back with
//! [`roll_back_interrupted`](crate::send::roll_back_interrupted) first.
//!
//! ```no_run
//! use transit_channel::main_loop::runtime::Runtime;
//! use transit_endpoint::Endpoint;
//! use transit_multifd::output::Output;
//! use transit_transfer::{receive, ReceiveOptions};
//!
//! let uri = "tcp:127.0.0.1:4444";
//! let mut opts = ReceiveOptions::new(uri, Endpoint::parse(uri)?);
//! opts.output = Output::File("copy.img".into());
//! let rt = Runtime::new()?;
//! let done = receive::receive(&rt, &opts, &mut ())?.expect("not a run of exec:");
//! println!("{} bytes from {:?}, verified: {}", done.image_bytes, done.peer, done.verified);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transit_channel::main_loop::runtime::Runtime;
use transit_channel::{Channel, ControlFlow, Shutdown, SocketChannel};
use transit_endpoint::accept::{self, AcceptConfig, Acceptor, InFlight, Incoming, Source};
use transit_endpoint::connect;
use transit_endpoint::join::Role;
use transit_endpoint::{Endpoint, TransportOpts};
use transit_multifd::checksum;
use transit_multifd::copy::{copy_from_channel, FileSink, IdleWatch, Sink, WriteSink};
use transit_multifd::incoming::{self, Peeked};
use transit_multifd::output::{Output, TempOutput};
use transit_multifd::progress::ThreadCpu;
use transit_multifd::raw::RawError;
use transit_multifd::serve::{self, Arrival, Event};
use transit_multifd::wire::{Compression, Layout, SessionHeader, SizeLimit};
use transit_multifd::{AbortHandle, Destination, Receiver, RecvConfig};
use transit_net_listener::NetListener;

use crate::observe::{Observer, ProgressSlot, Watch};
use crate::send::raw_stats;
use crate::{Error, Mode, Outcome};

/// How long a refused connection is held open (until the peer closes) so
/// the peer reads our TLS alert rather than a reset.
const LINGER: Duration = Duration::from_secs(5);

/// What a connection that is not framed transit is told.
pub const NOT_FRAMED: &str = "this transit receiver speaks its framed protocol, not plain bytes: \
                              drop --raw on the sender, or run the receiver with --raw";

/// What a connection that comes while a session runs is told.
pub const BUSY: &str = "this receiver is busy with another session; try again when it is done";

/// Where one-line warnings go (a rejected connection, a stranger).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// How [`receive`] receives.
#[derive(Clone)]
pub struct ReceiveOptions {
    /// The endpoint as the caller wrote it (messages name it so).
    pub uri: String,
    /// Where from.
    pub endpoint: Endpoint,
    /// The server layers (TLS), the cancel switch, and in its timeout the
    /// handshake and assembly limit.
    pub transport: TransportOpts,
    /// Where the data goes.
    pub output: Output,
    /// Permissions of a new output file (`None`: an existing file's are
    /// kept, a new one is 600).
    pub mode: Option<u32>,
    /// Take one plain stream instead of a session (`file:` and `exec:`
    /// always are one).
    pub raw: bool,
    /// Require this many page channels (`None`: what the sender says).
    pub channels: Option<u32>,
    /// How long to wait for the first connection (`None`: for ever).
    pub wait_limit: Option<Duration>,
    /// Fail a transfer whose peer makes no progress for this long
    /// (`None`: never).
    pub idle: Option<Duration>,
    /// Refuse a larger image (`None`: one that cannot fit in memory or on
    /// the output's file system).
    pub max_size: Option<u64>,
    /// Compute the payload's SHA-256 ([`Outcome::sha256`]).
    pub checksum: bool,
    /// Start from the output file and receive only what differs.
    pub delta: bool,
    /// With `delta`: update the output file where it lies (journaled).
    pub inplace: bool,
    /// Keep a partial file when the transfer fails, and continue one.
    pub resume: bool,
    /// How long a lost page channel may stay lost (`None`: its loss fails
    /// the session).
    pub reconnect: Option<Duration>,
    /// Where one-line warnings go.
    pub log: Log,
}

impl ReceiveOptions {
    /// Receive from `endpoint` (written `uri`) with the `transit recv`
    /// defaults: verify and discard, wait for ever for the sender and
    /// 30 s for its channels, no reconnects, warnings on stderr.
    pub fn new(uri: impl Into<String>, endpoint: Endpoint) -> ReceiveOptions {
        ReceiveOptions {
            uri: uri.into(),
            endpoint,
            transport: TransportOpts::new(Duration::from_secs(30)),
            output: Output::Discard,
            mode: None,
            raw: false,
            channels: None,
            wait_limit: None,
            idle: None,
            max_size: None,
            checksum: false,
            delta: false,
            inplace: false,
            resume: false,
            reconnect: None,
            log: Arc::new(|m: &str| eprintln!("{m}")),
        }
    }

    /// The handshake and assembly limit.
    fn handshake(&self) -> Duration {
        self.transport.timeout
    }
}

/// Receive as `opts` say (see the [module documentation](self)), telling
/// `observer` where it listens and when the data moves. `None`: this run
/// of a sender's `exec:` command (`stdio:`) handed its channel to the run
/// with the main channel, which received (and reports) the session.
pub fn receive(
    rt: &Runtime,
    opts: &ReceiveOptions,
    observer: &mut dyn Observer,
) -> Result<Option<Outcome>, Error> {
    let ch: Box<dyn Channel> = match &opts.endpoint {
        Endpoint::File(path) => return recv_from_file(rt, opts, path, observer).map(Some),
        Endpoint::Stdio if !opts.raw => return recv_stdio(rt, opts, observer),
        // The command's stdout supplies the bytes.
        Endpoint::Exec(cmd) => {
            Box::new(transit_endpoint::exec::ExecChannel::spawn(cmd).map_err(Error::RawChannel)?)
        }
        Endpoint::Stdio => {
            Box::new(transit_channel::PipeChannel::stdio().map_err(Error::RawChannel)?)
        }
        _ => match accept::listen(&opts.endpoint)? {
            Source::Connected(_) if !opts.raw => {
                return Err(Error::ConnectedSocket {
                    uri: opts.uri.clone(),
                })
            }
            Source::Connected(sock) => {
                let dup = sock.as_fd().try_clone_to_owned().ok();
                let ch = accept_layers(rt, opts, Box::new(sock), dup)?;
                return recv_raw(rt, opts, ch, observer).map(Some);
            }
            source => {
                observer.listening(&source.local_uris(&opts.endpoint));
                if !opts.raw {
                    return recv_multifd(rt, opts, source, observer).map(Some);
                }
                let ch = first_raw(rt, opts, source)?;
                return recv_raw(rt, opts, ch, observer).map(Some);
            }
        },
    };
    let ch = accept_layers(rt, opts, ch, None)?;
    recv_raw(rt, opts, ch, observer).map(Some)
}

/// Raw mode: the first client whose layers (TLS, websocket) succeed is the
/// stream (as `nc -l`); one whose handshake fails (a port scan, a health
/// check, a client without a certificate) is logged and the receiver keeps
/// waiting, as a framed receiver does.
fn first_raw(
    rt: &Runtime,
    opts: &ReceiveOptions,
    source: Source,
) -> Result<Box<dyn Channel>, Error> {
    let mut listener = match source {
        Source::Listener(l) => l,
        Source::Rdma(mut l) => {
            let ch = rt.run_task(
                "accept",
                || {},
                move || {
                    l.accept().map_err(|source| Error::Accept {
                        listener: l.name().to_owned(),
                        source,
                    })
                },
            )?;
            return accept_layers(rt, opts, Box::new(ch), None);
        }
        other => return Err(Error::NoRawStream(format!("{other:?}"))),
    };
    let layers = opts.transport.has_layers(&opts.endpoint);
    let ch = loop {
        let ch = wait_first_client(rt, &mut listener, opts)?;
        if !layers {
            break Box::new(ch) as Box<dyn Channel>;
        }
        let dup = ch.as_fd().try_clone_to_owned().ok();
        match accept_layers(rt, opts, Box::new(ch), dup) {
            Ok(ch) => break ch,
            Err(e @ Error::Layers { .. }) => (opts.log)(&format!("rejected a {e}")),
            Err(e) => return Err(e),
        }
    };
    listener.disconnect();
    Ok(ch)
}

/// Run the server layers (TLS, websocket) of one connection on a worker.
fn accept_layers(
    rt: &Runtime,
    opts: &ReceiveOptions,
    ch: Box<dyn Channel>,
    linger: Option<OwnedFd>,
) -> Result<Box<dyn Channel>, Error> {
    if !opts.transport.has_layers(&opts.endpoint) {
        return Ok(ch);
    }
    let (ep, t) = (opts.endpoint.clone(), opts.transport.clone());
    let cancel = opts.transport.cancel.clone();
    let peer = ch.peer_name();
    rt.run_task(
        "handshake",
        move || cancel.cancel(),
        move || {
            connect::wrap_accepted(ch, &ep, &t).map_err(|source| {
                if let Some(fd) = linger {
                    connect::linger_close(fd, LINGER);
                }
                Error::Layers { peer, source }
            })
        },
    )
}

/// `stdio:` in a multifd session: one of the N+1 runs of the sender's
/// `exec:` command (see `transit_endpoint::join`). The run that carries
/// the main channel gathers the others' pipes and receives; the others
/// hand theirs over and wait for the outcome.
fn recv_stdio(
    rt: &Runtime,
    opts: &ReceiveOptions,
    observer: &mut dyn Observer,
) -> Result<Option<Outcome>, Error> {
    let ch: Box<dyn Channel> =
        Box::new(transit_channel::PipeChannel::stdio().map_err(Error::Stdio)?);
    let timeout = opts.handshake();
    let role = rt.run_task(
        "join",
        || {},
        move || transit_endpoint::join::join(ch, timeout).map_err(Error::Join),
    )?;
    match role {
        Role::Follower { ok: true, .. } => Ok(None),
        Role::Follower { index, ok: false } => Err(Error::RunFailed { index }),
        Role::Leader(mut leader, chans) => {
            let r = recv_multifd(rt, opts, Source::Channels(chans), observer);
            leader.finish(r.is_ok());
            r.map(Some)
        }
    }
}

/// Raw mode: the first client is the stream (as `nc -l`).
fn wait_first_client(
    rt: &Runtime,
    listener: &mut NetListener,
    opts: &ReceiveOptions,
) -> Result<SocketChannel, Error> {
    let got: Rc<RefCell<Option<SocketChannel>>> = Rc::new(RefCell::new(None));
    let slot = got.clone();
    let ml = rt.main_loop().clone();
    listener.set_client_func(rt.ctx(), move |client| {
        let mut s = slot.borrow_mut();
        if s.is_none() {
            *s = Some(client);
            ml.quit();
        }
    });
    let timer = opts.wait_limit.map(|t| {
        let ml = rt.main_loop().clone();
        rt.ctx().timeout_add(t, move || {
            ml.quit();
            ControlFlow::Remove
        })
    });
    let r = rt.run_loop(|| {});
    if let Some(id) = timer {
        rt.ctx().remove(id);
    }
    listener.clear_client_func();
    r?;
    let client = got.borrow_mut().take();
    client.ok_or_else(|| Error::NoSender {
        uri: opts.uri.clone(),
        seconds: opts.wait_limit.unwrap_or_default().as_secs_f64(),
    })
}

/// A plain copy's sink: a file leaves holes for zero runs (written
/// through a temporary file put in place at the end), anything else is
/// written in order.
fn output_sink(
    output: &Output,
    mode: Option<u32>,
) -> Result<(Box<dyn Sink + Send>, Option<TempOutput>), Error> {
    if let Output::File(p) = output {
        let (file, t) = transit_multifd::output::temp_writer(p, mode).map_err(Error::Output)?;
        let name = p.display().to_string();
        return Ok((Box::new(FileSink { file, len: 0, name }), Some(t)));
    }
    let (w, _) = output.stream_writer(mode).map_err(Error::Output)?;
    Ok((Box::new(WriteSink(w)), None))
}

fn recv_raw(
    rt: &Runtime,
    opts: &ReceiveOptions,
    ch: Box<dyn Channel>,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    let peer = Some(ch.peer_name());
    run_copy(rt, opts, ch, peer, true, observer)
}

fn recv_from_file(
    rt: &Runtime,
    opts: &ReceiveOptions,
    path: &Path,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    let ch = transit_channel::FileChannel::open(path, std::fs::OpenOptions::new().read(true))
        .map_err(|source| Error::OpenFile {
            path: path.to_path_buf(),
            source,
        })?;
    let peer = Some(format!("file:{}", path.display()));
    run_copy(rt, opts, Box::new(ch), peer, false, observer)
}

/// Copy a channel to the output; shared by raw connections and `file:`.
fn run_copy(
    rt: &Runtime,
    opts: &ReceiveOptions,
    mut ch: Box<dyn Channel>,
    peer: Option<String>,
    refuse_framed_peers: bool,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    let watch = Watch::copy(0);
    let count = watch.copied();
    let cancelled = Arc::new(AtomicBool::new(false));
    let handle = ch.shutdown_handle().ok();
    let flag = cancelled.clone();
    let output = opts.output.clone();
    let mode = opts.mode;
    // A peer (not a file) that stops sending fails the copy after the
    // idle timeout.
    let idle_limit = if refuse_framed_peers { opts.idle } else { None };
    let mut sha = opts.checksum.then(checksum::Sha256::new);
    observer.started(rt.ctx(), &watch);
    let copied = rt.run_task(
        "raw-recv",
        move || {
            flag.store(true, Ordering::Relaxed);
            if let Some(h) = &handle {
                let _ = h.shutdown(Shutdown::Both);
            }
        },
        move || {
            let _ = ch.set_blocking(true);
            let name = ch.name().to_owned();
            let idle = IdleWatch::start(idle_limit, count.clone(), ch.shutdown_handle().ok());
            let stalled = |idle: &IdleWatch, e: Error| match idle_limit {
                Some(l) if idle.fired() => Error::RecvIdle {
                    channel: name.clone(),
                    seconds: l.as_secs_f64(),
                },
                _ => e,
            };
            if refuse_framed_peers {
                idle.waiting(true);
                let r = refuse_framed(ch);
                idle.waiting(false);
                ch = r.map_err(|e| stalled(&idle, e))?;
            }
            let (mut sink, temp) = output_sink(&output, mode)?;
            let t = Instant::now();
            let cpu = ThreadCpu::start();
            let copied = checksum::through(sink.as_mut(), sha.as_mut(), |sink| {
                copy_from_channel(ch.as_mut(), sink, &count, &idle)
            });
            let raw_copy = |source| Error::RawCopy {
                channel: name.clone(),
                source,
            };
            let n = copied.map_err(|e| stalled(&idle, raw_copy(e)))?;
            // The watch's shutdown reads as end of file: not the peer's end.
            if let (Some(l), true) = (idle_limit, idle.fired()) {
                return Err(Error::RecvIdle {
                    channel: name,
                    seconds: l.as_secs_f64(),
                });
            }
            let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu.seconds());
            if cancelled.load(Ordering::Relaxed) {
                // The runtime reports the signal; nothing is put in place.
                return Err(Error::Cancelled(0));
            }
            sink.done().map_err(raw_copy)?;
            drop(sink);
            if let Some(mut t) = temp {
                t.persist().map_err(Error::PutInPlace)?;
            }
            Ok((n, secs, cpu, sha.map(checksum::Sha256::finish)))
        },
    );
    observer.stopped(rt.ctx());
    let (bytes, secs, cpu, sha) = copied?;
    Ok(Outcome::copy(raw_stats(bytes, secs, cpu), peer, sha))
}

/// A `--raw` receiver's first look at its connection: a framed transit
/// sender is refused, and told so, instead of being taken for data (both
/// ends fail, each naming the mismatch).
fn refuse_framed(ch: Box<dyn Channel>) -> Result<Box<dyn Channel>, Error> {
    transit_multifd::raw::expect_plain(ch, LINGER).map_err(|e| match e {
        RawError::Framed { said } => Error::SenderFramed { said },
        RawError::Channel(e) => Error::RawReceive(e),
    })
}

fn recv_multifd(
    rt: &Runtime,
    opts: &ReceiveOptions,
    source: Source,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    let (tx, queue) = mpsc::channel::<Event>();
    let q = Mutex::new(tx.clone());
    let cfg = AcceptConfig {
        timeout: opts.handshake(),
        linger: LINGER,
        log: opts.log.clone(),
        ..AcceptConfig::new(opts.endpoint.clone(), opts.transport.clone())
    };
    let acceptor = Acceptor::start(rt.ctx(), source, cfg, incoming::head, move |inc| {
        let event = match inc {
            // The session's own channel (a joined run of `exec:`) that does
            // not speak transit: nothing else will come instead.
            Incoming::Conn(a) if a.own => match a.kind {
                Peeked::Other(why) => Event::Fatal(format!(
                    "connection from {}: not a transit sender: {why}",
                    a.peer
                )),
                kind => Event::Arrival(Arrival {
                    ch: a.ch,
                    peer: a.peer,
                    kind,
                }),
            },
            Incoming::Conn(a) => Event::Arrival(Arrival {
                ch: a.ch,
                peer: a.peer,
                kind: a.kind,
            }),
            Incoming::Fatal(why) => Event::Fatal(why),
        };
        let _ = q.lock().unwrap_or_else(|e| e.into_inner()).send(event);
    })?;
    let inflight = acceptor.in_flight();

    let (slot, unit, total) = (ProgressSlot::default(), Arc::default(), Arc::default());
    let watch = Watch::Session {
        progress: slot.clone(),
        unit: Arc::clone(&unit),
        total: Arc::clone(&total),
    };
    let abort: Arc<Mutex<Option<AbortHandle>>> = Arc::default();
    let cancel_abort = abort.clone();
    let cancel_tx = tx.clone();
    let cancel_layers = opts.transport.cancel.clone();
    let on_cancel = move || {
        cancel_layers.cancel();
        let _ = cancel_tx.send(Event::Cancelled);
        if let Some(a) = cancel_abort
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            a.abort("cancelled by a signal on the receiver");
        }
    };
    let worker = SessionWorker {
        queue,
        opts: opts.clone(),
        slot,
        unit,
        total,
        abort,
        inflight,
        sha: opts.checksum.then(checksum::Shared::new),
    };
    observer.started(rt.ctx(), &watch);
    let done = rt.run_task("session", on_cancel, move || worker.run());
    observer.stopped(rt.ctx());
    acceptor.close();
    drop(tx);
    done
}

struct SessionWorker {
    queue: mpsc::Receiver<Event>,
    opts: ReceiveOptions,
    slot: ProgressSlot,
    unit: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    abort: Arc<Mutex<Option<AbortHandle>>>,
    /// Handshake threads still running.
    inflight: InFlight,
    /// The stream's digest as it is written (images are hashed once
    /// verified).
    sha: Option<checksum::Shared>,
}

impl SessionWorker {
    fn run(self) -> Result<Outcome, Error> {
        // A stream into a file goes through a temporary file the decider
        // creates and the commit step puts in place.
        let temp: Arc<Mutex<Option<TempOutput>>> = Arc::default();
        let mut rx = Receiver::new(self.config(), self.destination(temp.clone()));
        *self.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx.abort_handle());
        let policy = self.policy();
        let inflight = self.inflight.clone();
        let peer = serve::assemble(&mut rx, &self.queue, &policy, &|| inflight.count(), |rx| {
            let Some(h) = rx.session() else { return };
            let (unit, total) = match h.layout {
                Layout::Image { size } => (u64::from(h.page_size), size),
                Layout::Stream => (u64::from(h.packet_payload), 0),
            };
            self.unit.store(unit, Ordering::Relaxed);
            self.total.store(total, Ordering::Relaxed);
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = rx.progress();
        })?;
        let output = self.opts.output.clone();
        // While the session runs, a lost page channel's new connection
        // rejoins it, and whoever else connects is told why it is refused
        // (a second sender would otherwise wait for an accept record until
        // its timeout).
        let _ = serve::serve_busy(rx.rejoin_handle(), self.queue, policy);
        let image_sha: Arc<Mutex<Option<String>>> = Arc::default();
        let hashed = image_sha.clone();
        let want_sha = self.sha.is_some();
        let in_place = Arc::new(AtomicBool::new(false));
        let was_in_place = in_place.clone();
        let outcome = rx.run_with(move |out| {
            if out.image.as_ref().is_some_and(|i| i.is_in_place()) {
                was_in_place.store(true, Ordering::Relaxed);
            }
            // A memory image is hashed once verified, before it is written
            // out or freed; a file once it is in place.
            if let (true, Some(img)) = (want_sha, out.image.as_ref()) {
                if !img.is_file() {
                    *hashed.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(checksum::of_bytes(img.as_slice()));
                }
            }
            let temp = temp.lock().unwrap_or_else(|e| e.into_inner()).take();
            output.commit(temp, out)
        })?;
        let session: SessionHeader = outcome.session;
        let mut sha256 = image_sha.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (true, None, Output::File(p)) = (want_sha, &sha256, &self.opts.output) {
            if matches!(session.layout, Layout::Image { .. }) {
                sha256 = Some(checksum::of_file(p).map_err(|source| Error::ChecksumRead {
                    path: p.clone(),
                    source,
                })?);
            }
        }
        if let (Some(s), Layout::Stream) = (&self.sha, session.layout) {
            sha256 = s.finish();
        }
        let stats = outcome.stats;
        let image = match session.layout {
            Layout::Image { size } => Some(size),
            Layout::Stream => None,
        };
        Ok(Outcome {
            peer,
            mode: if image.is_some() {
                Mode::Image
            } else {
                Mode::Stream
            },
            passes: if image.is_some() {
                stats.syncs.max(1) as u32
            } else {
                1
            },
            page_size: if image.is_some() {
                session.page_size
            } else {
                0
            },
            image_bytes: image.unwrap_or(stats.stream_len),
            verified: session.verify,
            sha256,
            in_place: in_place.load(Ordering::Relaxed),
            compressed: session.compression == Compression::Zstd,
            stats,
        })
    }

    fn policy(&self) -> serve::Policy {
        serve::Policy {
            wait_limit: self.opts.wait_limit,
            handshake: self.opts.handshake(),
            linger: LINGER,
            not_framed: NOT_FRAMED,
            busy: BUSY,
            log: self.opts.log.clone(),
        }
    }

    fn config(&self) -> RecvConfig {
        let o = &self.opts;
        // What an image may need, whichever comes (a stream has no size).
        let max_image_size = match o.max_size {
            Some(n) => Some(SizeLimit::Configured(n)),
            None => o.output.max_image_size(),
        };
        RecvConfig {
            expected_channels: o.channels,
            expected_uuid: None,
            handshake_timeout: Some(o.handshake()),
            max_image_size,
            idle_timeout: o.idle,
            delta: o.delta,
            inplace: o.inplace,
            resume: o.resume,
            reconnect_wait: o.reconnect,
        }
    }

    /// Where the session goes, decided from its header: an image into
    /// memory or the output file, a stream into the output (through
    /// `temp` for a file).
    fn destination(&self, temp: Arc<Mutex<Option<TempOutput>>>) -> Destination {
        let (output, mode, sha) = (self.opts.output.clone(), self.opts.mode, self.sha.clone());
        Destination::Decide(Box::new(move |h: &SessionHeader| {
            if h.layout != Layout::Stream {
                return Ok(output.image_destination(mode));
            }
            let (w, t) = output
                .stream_writer(mode)
                .map_err(|e| transit_multifd::Error::data("open the output", e))?;
            *temp.lock().unwrap_or_else(|e| e.into_inner()) = t;
            // Standard output stays unbuffered: a reader there (QEMU's
            // incoming migration) sees each chunk as it is written.
            let w: Box<dyn Write + Send> = match output {
                Output::File(_) | Output::Device(_) => {
                    Box::new(std::io::BufWriter::with_capacity(1 << 20, w))
                }
                Output::Discard | Output::Stdout => w,
            };
            // A stream arrives in order: hashed as it is written.
            Ok(Destination::Writer(match sha {
                Some(sha) => Box::new(checksum::Writing::new(w, sha)),
                None => w,
            }))
        }))
    }
}

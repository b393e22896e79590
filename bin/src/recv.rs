//! `transit recv`: listen, assemble a multifd session (or take one raw
//! connection), receive, verify, put the output in place, report.
//!
//! The endpoint is opened with `transit_endpoint::accept::listen`; its
//! connections come through an `Acceptor` on the [`Runtime`]'s loop (TLS,
//! the websocket upgrade and the first bytes of each, concurrently and
//! under a deadline each) and go, classified, to the session worker, which
//! applies `transit_multifd::serve`'s policy: the session header chooses
//! the destination (memory, a file renamed into place on success, stdout,
//! a device, or nothing), page channels may come first, strangers are
//! told why and the receiver keeps waiting for its sender. Once every
//! channel is present the session runs on multifd's threads; meanwhile a
//! lost page channel may rejoin and a second sender is told it is busy.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transit_channel::{Channel, ControlFlow, Shutdown, SocketChannel};
use transit_multifd::progress::ThreadCpu;
use transit_multifd::wire::{self, Layout, SessionHeader, SizeLimit};
use transit_multifd::{AbortHandle, Destination, Receiver, RecvConfig, Stats};
use transit_net_listener::NetListener;

use crate::cli::RecvArgs;
use crate::error::{one_line, AppError};
use crate::report::{
    CpuClock, Live, LiveOptions, Probe, ProgressSlot, RunInfo, Summary, Verbosity,
};
use crate::send::{check_interval, check_timeout, check_tls_uri, DEFAULT_TIMEOUT};
use crate::show::{finish_report, progress, verbosity};
use transit_channel::main_loop::runtime::Runtime;
use transit_endpoint::accept::{self, AcceptConfig, Acceptor, InFlight, Incoming, Source};
use transit_endpoint::connect as transport;
use transit_endpoint::join::Role;
use transit_endpoint::Endpoint;
use transit_endpoint::TransportOpts;
use transit_multifd::checksum;
use transit_multifd::copy::{copy_from_channel, FileSink, IdleWatch, Sink, WriteSink};
use transit_multifd::incoming::{self, Peeked};
use transit_multifd::output::{Output, TempOutput};
use transit_multifd::raw::RawError;
use transit_multifd::serve::{self, Arrival, Event};
use transit_transfer::send::raw_stats;

/// How long a refused connection is held open (until the peer closes) so
/// the peer reads our TLS alert rather than a reset.
const LINGER: Duration = Duration::from_secs(5);

fn usage(m: impl Into<String>) -> AppError {
    AppError::Usage(m.into())
}

pub(crate) fn warn(msg: &str) {
    if crate::report::is_quiet() {
        return;
    }
    eprintln!("transit: warning: {}", one_line(msg));
}

struct Opts {
    uri: String,
    output: Output,
    channels: Option<u32>,
    /// Explicit --timeout: also bounds the wait for the first connection.
    wait_limit: Option<Duration>,
    /// Handshake and assembly limit.
    handshake: Duration,
    /// `--idle-timeout` (`None`: off).
    idle: Option<Duration>,
    json: bool,
    json_interval: Option<f64>,
    /// `-q`, `-v`.
    verbosity: Verbosity,
    /// Draw the progress bar (no `-q`, no `--no-progress`).
    progress: bool,
    endpoint: Endpoint,
    transport: TransportOpts,
    /// Summaries go to stderr (the data or the channel is on stdout).
    json_to_stderr: bool,
    /// Mode of a new output file (--mode).
    mode: Option<u32>,
    /// --max-size.
    max_size: Option<u64>,
    /// `--checksum sha256`.
    checksum: bool,
    /// `--delta`.
    delta: bool,
    /// `--inplace`.
    inplace: bool,
    /// `--resume`.
    resume: bool,
    /// `--reconnect` (`None`: off).
    reconnect: Option<Duration>,
}

/// Run `transit recv`.
pub fn run(args: RecvArgs) -> Result<(), AppError> {
    let clock = CpuClock::start();
    crate::report::set_quiet(args.common.quiet);
    let c = &args.common;
    let endpoint = Endpoint::parse(&args.uri).map_err(AppError::Usage)?;
    match c.channels {
        Some(n) if n == 0 || n > wire::MAX_CHANNELS => {
            return Err(usage(format!(
                "--channels {n}: expected 1 to {}",
                wire::MAX_CHANNELS
            )))
        }
        Some(n) if c.raw && n != 1 => {
            return Err(usage(
                "--raw receives on exactly one channel; drop --channels",
            ))
        }
        _ => {}
    }
    check_interval(c.json_interval)?;
    let wait_limit = c.timeout.map(check_timeout).transpose()?;
    let output = Output::from_arg(args.output.as_deref())
        .map_err(|e| AppError::Usage(format!("output {e}")))?;
    check_tls_uri(&endpoint, c.tls_creds.is_some())?;
    check_inplace(&args, &output)?;
    if args.delta && (c.raw || !matches!(output, Output::File(_))) {
        return Err(usage(
            "--delta starts from the file at --output FILE: it needs a regular output file and transit's framing (not --raw)",
        ));
    }
    if args.resume && (c.raw || !matches!(output, Output::File(_))) {
        return Err(usage(
            "--resume keeps a partial file next to --output FILE: it needs a regular output file and transit's framing (not --raw)",
        ));
    }
    let stdio = matches!(endpoint, Endpoint::Stdio);
    if stdio && matches!(output, Output::Stdout) {
        return Err(usage(
            "stdio: reads the stream from stdin and answers on stdout, so --output - is not possible; give a file",
        ));
    }
    if matches!(endpoint, Endpoint::Exec(_)) && !c.raw {
        return Err(usage(
            "recv exec: runs one command, but a multifd session needs one connection per channel plus one, opened by the sender; use --raw, or start the session from the sender: transit send 'exec:... transit recv stdio:'",
        ));
    }
    if let Output::File(p) = &output {
        // Before anything else: a FILE left mixed by a killed in-place
        // update is put back as it was (or the run stops here).
        crate::send::roll_back_interrupted(p, "received")?;
    }
    let handshake = wait_limit.unwrap_or(Duration::from_secs_f64(DEFAULT_TIMEOUT));
    let mut transport = TransportOpts::new(handshake);
    transport.tls = transport::tls_from_args(
        c.tls_creds.as_deref(),
        transit_channel::tls::Endpoint::Server,
        None,
        &args.tls_authz,
        c.tls_relaxed_eof,
    )
    .map_err(AppError::Failed)?;
    let opts = Opts {
        uri: args.uri.clone(),
        output: output.clone(),
        channels: c.channels,
        wait_limit,
        handshake,
        json: c.json,
        json_interval: c.json_interval,
        idle: c.idle_timeout(),
        verbosity: verbosity(c),
        progress: progress(c),
        endpoint: endpoint.clone(),
        transport,
        json_to_stderr: matches!(output, Output::Stdout) || stdio,
        mode: c.mode,
        max_size: args.max_size,
        checksum: args.common.checksum.is_some(),
        delta: args.delta,
        inplace: args.inplace,
        resume: args.resume,
        reconnect: args.common.reconnect_window(),
    };
    let rt = Runtime::new().map_err(|e| AppError::context(format!("main loop: {e}"), e))?;
    match endpoint {
        Endpoint::File(path) => return recv_from_file(&rt, &opts, path, clock),
        Endpoint::Exec(cmd) => return recv_exec(&rt, &opts, &cmd, clock),
        Endpoint::Stdio if c.raw => return recv_stdio_raw(&rt, &opts, clock),
        Endpoint::Stdio => return recv_stdio(&rt, &opts, clock),
        _ => {}
    }
    let source = accept::listen(&endpoint).map_err(|e| AppError::context(e.message.clone(), e))?;
    if let Source::Connected(sock) = source {
        if !c.raw {
            return Err(usage(format!(
                "{} is a connected socket, but a multifd session needs a listening one; use --raw",
                opts.uri
            )));
        }
        let dup = sock.as_fd().try_clone_to_owned().ok();
        let ch = accept_layers(&rt, &opts, Box::new(sock), dup)?;
        return recv_raw(&rt, &opts, ch, clock);
    }
    for uri in source.local_uris(&endpoint) {
        eprintln!("transit: listening on {uri}");
    }
    if c.raw {
        let ch = first_raw(&rt, &opts, source)?;
        return recv_raw(&rt, &opts, ch, clock);
    }
    recv_multifd(&rt, &opts, source, clock)
}

/// Raw mode: the first client whose layers (TLS, websocket) succeed is the
/// stream (as `nc -l`); one whose handshake fails (a port scan, a health
/// check, a client without a certificate) is logged and the receiver keeps
/// waiting, as a framed receiver does.
fn first_raw(rt: &Runtime, opts: &Opts, source: Source) -> Result<Box<dyn Channel>, AppError> {
    let mut listener = match source {
        Source::Listener(l) => l,
        Source::Rdma(mut l) => {
            let ch = rt.run_task(
                "accept",
                || {},
                move || {
                    l.accept()
                        .map_err(|e| AppError::context(format!("accept on {}: {e}", l.name()), e))
                },
            )?;
            return accept_layers(rt, opts, Box::new(ch), None);
        }
        other => return Err(AppError::Failed(format!("no raw stream from {other:?}"))),
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
            Err(AppError::Failed(why)) => warn(&format!("rejected a {why}")),
            Err(e) => return Err(e),
        }
    };
    listener.disconnect();
    Ok(ch)
}

/// `--inplace` updates a regular `--output FILE` as a delta, under
/// transit's framing, and is rolled back rather than resumed.
fn check_inplace(args: &RecvArgs, output: &Output) -> Result<(), AppError> {
    if !args.inplace {
        return Ok(());
    }
    if !matches!(output, Output::File(_)) {
        return Err(usage(
            "--inplace updates --output FILE where it lies: it needs a regular output file (not -, a device, a FIFO or no --output)",
        ));
    }
    if !args.delta {
        return Err(usage(
            "--inplace is a way to apply a delta to FILE: add --delta",
        ));
    }
    if args.common.raw {
        return Err(usage(
            "--inplace needs transit's framing to know what to keep (not --raw)",
        ));
    }
    if args.resume {
        return Err(usage(
            "--inplace and --resume exclude each other: a failed in-place update is rolled back, so there is nothing to resume; run --delta --inplace again (only the differing chunks cross again)",
        ));
    }
    Ok(())
}

/// Run the server layers (TLS, websocket) of one connection on a worker.
fn accept_layers(
    rt: &Runtime,
    opts: &Opts,
    ch: Box<dyn Channel>,
    linger: Option<std::os::fd::OwnedFd>,
) -> Result<Box<dyn Channel>, AppError> {
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
            transport::wrap_accepted(ch, &ep, &t).map_err(|e| {
                if let Some(fd) = linger {
                    transport::linger_close(fd, LINGER);
                }
                AppError::Failed(format!("connection from {peer}: {e}"))
            })
        },
    )
}

/// `recv exec:COMMAND --raw`: the command's stdout supplies the bytes.
fn recv_exec(rt: &Runtime, opts: &Opts, cmd: &str, clock: CpuClock) -> Result<(), AppError> {
    let ch = transit_endpoint::exec::ExecChannel::spawn(cmd)
        .map_err(|e| AppError::context(format!("raw channel: {e}"), e))?;
    let ch = accept_layers(rt, opts, Box::new(ch), None)?;
    recv_raw(rt, opts, ch, clock)
}

/// `recv stdio: --raw`: stdin supplies the bytes.
fn recv_stdio_raw(rt: &Runtime, opts: &Opts, clock: CpuClock) -> Result<(), AppError> {
    let ch = transit_channel::PipeChannel::stdio()
        .map_err(|e| AppError::context(format!("raw channel: {e}"), e))?;
    let ch = accept_layers(rt, opts, Box::new(ch), None)?;
    recv_raw(rt, opts, ch, clock)
}

/// `recv stdio:` in a multifd session: one of the N+1 runs of the
/// sender's `exec:` command (see `transit_endpoint::join`). The run that carries
/// the main channel gathers the others' pipes and receives; the others
/// hand theirs over and wait for the outcome.
fn recv_stdio(rt: &Runtime, opts: &Opts, clock: CpuClock) -> Result<(), AppError> {
    let ch: Box<dyn Channel> = Box::new(
        transit_channel::PipeChannel::stdio()
            .map_err(|e| AppError::context(format!("stdio: {e}"), e))?,
    );
    let timeout = opts.handshake;
    let role = rt.run_task(
        "join",
        || {},
        move || transit_endpoint::join::join(ch, timeout).map_err(AppError::Failed),
    )?;
    match role {
        Role::Follower { ok: true, .. } => Ok(()),
        Role::Follower { index, ok: false } => Err(AppError::Failed(format!(
            "exec: run {index}: the session failed (the run with the main channel says why)"
        ))),
        Role::Leader(mut leader, chans) => {
            let r = recv_multifd(rt, opts, Source::Channels(chans), clock);
            leader.finish(r.is_ok());
            r
        }
    }
}

/// Raw mode: the first client is the stream (as `nc -l`).
fn wait_first_client(
    rt: &Runtime,
    listener: &mut NetListener,
    opts: &Opts,
) -> Result<SocketChannel, AppError> {
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
    client.ok_or_else(|| {
        AppError::Failed(format!(
            "no sender connected to {} within {:.1} s",
            opts.uri,
            opts.wait_limit.unwrap_or_default().as_secs_f64()
        ))
    })
}

/// A plain copy's sink: a file leaves holes for zero runs (written
/// through a temporary file put in place at the end), anything else is
/// written in order.
fn output_sink(
    output: &Output,
    mode: Option<u32>,
) -> Result<(Box<dyn Sink + Send>, Option<TempOutput>), AppError> {
    let failed = |e: std::io::Error| AppError::Failed(e.to_string());
    if let Output::File(p) = output {
        let (file, t) = transit_multifd::output::temp_writer(p, mode)
            .map_err(|e| AppError::context(e.to_string(), e))?;
        let name = p.display().to_string();
        return Ok((Box::new(FileSink { file, len: 0, name }), Some(t)));
    }
    let (w, _) = output.stream_writer(mode).map_err(failed)?;
    Ok((Box::new(WriteSink(w)), None))
}

/// Copy a reader to the output; shared by raw connections and `file:`.
fn run_copy(
    rt: &Runtime,
    opts: &Opts,
    mut ch: Box<dyn Channel>,
    peer: Option<String>,
    refuse_framed_peers: bool,
    clock: CpuClock,
) -> Result<(), AppError> {
    let count = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicBool::new(false));
    let handle = ch.shutdown_handle().ok();
    let _live = Live::install(
        rt.ctx(),
        Probe::Raw(count.clone()),
        LiveOptions {
            role: "recv",
            total: Arc::new(AtomicU64::new(0)),
            progress: opts.progress,
            verbose: opts.verbosity == Verbosity::Verbose,
            json_interval: opts.json_interval,
            json_to_stderr: opts.json_to_stderr,
            cap: None,
        },
    );
    let flag = cancelled.clone();
    let output = opts.output.clone();
    let mode = opts.mode;
    let c2 = count.clone();
    // A peer (not a file) that stops sending fails the copy after
    // --idle-timeout.
    let idle_limit = if refuse_framed_peers { opts.idle } else { None };
    let mut sha = opts.checksum.then(checksum::Sha256::new);
    let (bytes, secs, cpu, sha) = rt.run_task(
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
            let idle = IdleWatch::start(idle_limit, c2.clone(), ch.shutdown_handle().ok());
            let stalled = |idle: &IdleWatch, e: AppError| match idle_limit {
                Some(l) if idle.fired() => AppError::Failed(format!(
                    "raw channel ({name}): the peer sent nothing for {:.1} s (--idle-timeout)",
                    l.as_secs_f64()
                )),
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
                copy_from_channel(ch.as_mut(), sink, &c2, &idle)
            });
            let n = copied.map_err(|e| {
                stalled(
                    &idle,
                    AppError::Failed(format!("raw channel ({name}): {e}")),
                )
            })?;
            // The watch's shutdown reads as end of file: not the peer's end.
            if idle.fired() {
                return Err(stalled(&idle, AppError::Failed(String::new())));
            }
            let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu.seconds());
            if cancelled.load(Ordering::Relaxed) {
                return Err(AppError::Failed("cancelled".into()));
            }
            sink.done()
                .map_err(|e| AppError::context(format!("raw channel ({name}): {e}"), e))?;
            drop(sink);
            if let Some(mut t) = temp {
                t.persist()
                    .map_err(|e| AppError::context(format!("put the output in place: {e}"), e))?;
            }
            Ok((n, secs, cpu, sha.map(checksum::Sha256::finish)))
        },
    )?;
    drop(_live);
    let mut summary = Summary::new(
        RunInfo {
            role: "recv",
            uri: opts.uri.clone(),
            peer,
            mode: "raw",
            passes: 1,
            page_size: 0,
            image_bytes: bytes,
            verified: false,
            file: opts.output.describe(),
        },
        &raw_stats(bytes, secs, cpu),
        &clock,
    );
    summary.sha256 = sha;
    finish_report(&summary, opts.json, opts.json_to_stderr, opts.verbosity);
    Ok(())
}

/// A `--raw` receiver's first look at its connection: a framed transit
/// sender is refused, and told so, instead of being taken for data (both
/// ends fail, each naming the mismatch).
fn refuse_framed(ch: Box<dyn Channel>) -> Result<Box<dyn Channel>, AppError> {
    transit_multifd::raw::expect_plain(ch, LINGER).map_err(|e| match e {
        RawError::Framed { said } => {
            let mut msg =
                "the sender speaks transit's framed protocol: drop --raw, or use it on both ends"
                    .to_owned();
            if let Some(r) = said {
                msg.push_str(&format!(" (the sender gave up: {})", one_line(&r)));
            }
            AppError::Failed(msg)
        }
        RawError::Channel(e) => AppError::Failed(format!("raw channel: receive: {e}")),
    })
}

fn recv_raw(
    rt: &Runtime,
    opts: &Opts,
    ch: Box<dyn Channel>,
    clock: CpuClock,
) -> Result<(), AppError> {
    let peer = Some(ch.peer_name());
    run_copy(rt, opts, ch, peer, true, clock)
}

fn recv_from_file(
    rt: &Runtime,
    opts: &Opts,
    path: PathBuf,
    clock: CpuClock,
) -> Result<(), AppError> {
    let ch = transit_channel::FileChannel::open(&path, std::fs::OpenOptions::new().read(true))
        .map_err(|e| AppError::context(format!("open {}: {e}", path.display()), e))?;
    run_copy(
        rt,
        opts,
        Box::new(ch),
        Some(format!("file:{}", path.display())),
        false,
        clock,
    )
}

struct Done {
    stats: Stats,
    session: SessionHeader,
    peer: Option<String>,
    /// `--checksum sha256` of what was received.
    sha256: Option<String>,
    /// The output file was updated in place (`--inplace`).
    in_place: bool,
}

/// What a connection that is not framed transit is told.
const NOT_FRAMED: &str = "this transit receiver speaks its framed protocol, not plain bytes: \
                          drop --raw on the sender, or run the receiver with --raw";

/// What a connection that comes while a session runs is told.
const BUSY: &str = "this receiver is busy with another session; try again when it is done";

fn recv_multifd(
    rt: &Runtime,
    opts: &Opts,
    source: Source,
    clock: CpuClock,
) -> Result<(), AppError> {
    let (tx, queue) = mpsc::channel::<Event>();
    let q = Mutex::new(tx.clone());
    let cfg = AcceptConfig {
        timeout: opts.handshake,
        linger: LINGER,
        log: Arc::new(warn),
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
    })
    .map_err(|e| AppError::context(e.message.clone(), e))?;
    let inflight = acceptor.in_flight();

    let slot: ProgressSlot = Arc::new(Mutex::new(None));
    let unit = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let abort: Arc<Mutex<Option<AbortHandle>>> = Arc::new(Mutex::new(None));
    let to_stderr = opts.json_to_stderr;
    let live = Live::install(
        rt.ctx(),
        Probe::Session {
            slot: slot.clone(),
            unit: unit.clone(),
        },
        LiveOptions {
            role: "recv",
            total: total.clone(),
            progress: opts.progress,
            verbose: opts.verbosity == Verbosity::Verbose,
            json_interval: opts.json_interval,
            json_to_stderr: to_stderr,
            cap: None,
        },
    );
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
        output: opts.output.clone(),
        mode: opts.mode,
        channels: opts.channels,
        wait_limit: opts.wait_limit,
        handshake: opts.handshake,
        idle: opts.idle,
        slot,
        unit,
        total,
        abort,
        inflight,
        max_size: opts.max_size,
        delta: opts.delta,
        inplace: opts.inplace,
        resume: opts.resume,
        reconnect: opts.reconnect,
        sha: opts.checksum.then(checksum::Shared::new),
    };
    let done = rt.run_task("session", on_cancel, move || worker.run());
    drop(live);
    acceptor.close();
    drop(tx);
    let done = done?;
    let image = match done.session.layout {
        Layout::Image { size } => Some(size),
        Layout::Stream => None,
    };
    let mut summary = Summary::new(
        RunInfo {
            role: "recv",
            uri: opts.uri.clone(),
            peer: done.peer,
            mode: if image.is_some() { "image" } else { "stream" },
            passes: if image.is_some() {
                done.stats.syncs.max(1) as u32
            } else {
                1
            },
            page_size: if image.is_some() {
                done.session.page_size
            } else {
                0
            },
            image_bytes: image.unwrap_or(done.stats.stream_len),
            verified: done.session.verify,
            file: opts.output.describe(),
        },
        &done.stats,
        &clock,
    );
    summary.sha256 = done.sha256;
    summary.in_place = done.in_place;
    if done.session.compression == transit_multifd::wire::Compression::Zstd {
        summary.compress = Some("zstd".into());
    }
    finish_report(&summary, opts.json, to_stderr, opts.verbosity);
    Ok(())
}

struct SessionWorker {
    queue: mpsc::Receiver<Event>,
    output: Output,
    mode: Option<u32>,
    channels: Option<u32>,
    wait_limit: Option<Duration>,
    handshake: Duration,
    idle: Option<Duration>,
    slot: ProgressSlot,
    unit: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    abort: Arc<Mutex<Option<AbortHandle>>>,
    /// Handshake threads still running.
    inflight: InFlight,
    /// --max-size.
    max_size: Option<u64>,
    /// `--delta`.
    delta: bool,
    /// `--inplace`.
    inplace: bool,
    /// `--resume`.
    resume: bool,
    /// `--reconnect`: how long a lost page channel may stay lost.
    reconnect: Option<Duration>,
    /// `--checksum sha256`: the stream's digest as it is written (images
    /// are hashed once verified).
    sha: Option<checksum::Shared>,
}

impl SessionWorker {
    fn run(self) -> Result<Done, AppError> {
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
        })
        .map_err(|e| match e {
            serve::AssembleError::Session(e) => AppError::from(e),
            e => AppError::Failed(e.to_string()),
        })?;
        let output = self.output.clone();
        // While the session runs, a lost page channel's new connection
        // rejoins it (`--reconnect`), and whoever else connects is told
        // why it is refused (a second sender would otherwise wait for an
        // accept record until its timeout).
        let _ = serve::serve_busy(rx.rejoin_handle(), self.queue, policy);
        let image_sha: Arc<Mutex<Option<String>>> = Arc::default();
        let hashed = image_sha.clone();
        let want_sha = self.sha.is_some();
        let target = self.output.clone();
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
        let mut sha256 = image_sha.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (true, None, Output::File(p)) = (want_sha, &sha256, &target) {
            if matches!(outcome.session.layout, Layout::Image { .. }) {
                sha256 = Some(checksum::of_file(p).map_err(|e| {
                    AppError::Failed(format!("--checksum: read {}: {e}", p.display()))
                })?);
            }
        }
        if let (Some(s), Layout::Stream) = (&self.sha, outcome.session.layout) {
            sha256 = s.finish();
        }
        Ok(Done {
            stats: outcome.stats,
            session: outcome.session,
            peer,
            sha256,
            in_place: in_place.load(Ordering::Relaxed),
        })
    }

    fn policy(&self) -> serve::Policy {
        serve::Policy {
            wait_limit: self.wait_limit,
            handshake: self.handshake,
            linger: LINGER,
            not_framed: NOT_FRAMED,
            busy: BUSY,
            log: Arc::new(warn),
        }
    }

    fn config(&self) -> RecvConfig {
        // What an image may need, whichever comes (a stream has no size).
        let max_image_size = match self.max_size {
            Some(n) => Some(SizeLimit::Configured(n)),
            None => self.output.max_image_size(),
        };
        RecvConfig {
            expected_channels: self.channels,
            expected_uuid: None,
            handshake_timeout: Some(self.handshake),
            max_image_size,
            idle_timeout: self.idle,
            delta: self.delta,
            inplace: self.inplace,
            resume: self.resume,
            reconnect_wait: self.reconnect,
        }
    }

    /// Where the session goes, decided from its header: an image into
    /// memory or the output file, a stream into the output (through
    /// `temp` for a file).
    fn destination(&self, temp: Arc<Mutex<Option<TempOutput>>>) -> Destination {
        let (output, mode, sha) = (self.output.clone(), self.mode, self.sha.clone());
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

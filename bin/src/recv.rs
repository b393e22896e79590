//! `transit recv`: listen, assemble a multifd session (or take one raw
//! connection), receive, verify, put the output in place, report.
//!
//! The listener runs on the [`Runtime`]'s loop. Each accepted connection
//! goes through [`admit`] on the loop, concurrently with every other and
//! without a thread of its own: TLS, the websocket upgrade, then its
//! first bytes (a silent or slow connection blocks no one; it is closed
//! after the handshake timeout, and a failed handshake is logged and
//! dropped). Then it is handed to the session worker: the main channel's
//! session header says whether an image or a stream comes, which chooses
//! the destination (memory, a file renamed into place on success, stdout,
//! or nothing); page channels that arrive before the main channel wait
//! for it; anything else is rejected with a warning and the receiver
//! keeps waiting for a real sender. Once every channel is present the
//! session runs on multifd's threads.

use std::cell::RefCell;
use std::io::{IoSliceMut, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transit_channel::{
    io as chio, Channel, Condition, ControlFlow, ReadFlags, Shutdown, SocketAddress, SocketChannel,
};
use transit_multifd::progress::ThreadCpu;
use transit_multifd::wire::{
    self, ErrorCode, FramedStart, Layout, Record, SessionHeader, SizeLimit, WireError,
};
use transit_multifd::{
    AbortHandle, Accepted, Destination, Receiver, RecvConfig, RecvOutcome, Stats,
};
use transit_net_listener::NetListener;

use crate::admit::{self, Admission, AdmitConfig, Admitted, Head, Peeked};
use crate::checksum;
use crate::cli::RecvArgs;
use crate::endpoint::Endpoint;
use crate::error::{one_line, AppError};
use crate::idle::IdleWatch;
use crate::output::{check_target, open_stream, OutputTarget, TempOutput};
use crate::payload::{copy_from_channel, FileSink, Sink, WriteSink};
use crate::report::{
    CpuClock, Live, LiveOptions, Probe, ProgressSlot, RunInfo, Summary, Verbosity,
};
use crate::room;
use crate::runtime::Runtime;
use crate::send::{
    check_interval, check_timeout, check_tls_uri, finish_report, progress, raw_stats, verbosity,
    DEFAULT_TIMEOUT,
};
use crate::transport::{self, Prefixed, TransportOpts};

/// Where received data goes.
#[derive(Debug, Clone)]
enum Output {
    /// Verified and discarded.
    Discard,
    /// Standard output.
    Stdout,
    /// A regular file (or nothing yet), renamed into place on success.
    File(PathBuf),
    /// An existing device, FIFO or socket: opened as it is and written in
    /// order, never replaced.
    Device(PathBuf),
}

impl Output {
    fn describe(&self) -> Option<String> {
        match self {
            Output::Discard => None,
            Output::Stdout => Some("-".into()),
            Output::File(p) | Output::Device(p) => Some(p.display().to_string()),
        }
    }
}

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
    let output = match &args.output {
        None => Output::Discard,
        Some(p) if p.as_os_str() == "-" => Output::Stdout,
        Some(p) => match check_target(p).map_err(AppError::Usage)? {
            OutputTarget::File(t) => Output::File(t),
            OutputTarget::Stream(t) => Output::Device(t),
        },
    };
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
        roll_back_interrupted(p)?;
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
    let rt = Runtime::new()?;
    let addr = match endpoint {
        Endpoint::File(path) => return recv_from_file(&rt, &opts, path, clock),
        Endpoint::Socket(a) => a,
        Endpoint::WebSocket(u) => SocketAddress::inet(u.host.clone(), u.port),
        Endpoint::Exec(cmd) => return recv_exec(&rt, &opts, &cmd, clock),
        Endpoint::Stdio if c.raw => return recv_stdio_raw(&rt, &opts, clock),
        Endpoint::Stdio => return recv_stdio(&rt, &opts, clock),
        Endpoint::Rdma(a) => return recv_rdma(&rt, &opts, &a, c.raw, clock),
    };
    let mut listener = NetListener::with_name("transit");
    if let SocketAddress::Fd(_) = addr {
        let sock = SocketChannel::from_address(&addr)
            .map_err(|e| AppError::Failed(format!("{addr}: {e}")))?;
        if !sock.is_listener() {
            if !c.raw {
                return Err(usage(format!(
                    "{addr} is a connected socket, but a multifd session needs a listening one; use --raw"
                )));
            }
            let dup = sock.as_fd().try_clone_to_owned().ok();
            let ch = accept_layers(&rt, &opts, Box::new(sock), dup)?;
            return recv_raw(&rt, &opts, ch, clock);
        }
        listener
            .add(sock)
            .map_err(|e| AppError::Failed(format!("listen on {addr}: {e}")))?;
    } else {
        listener
            .open_sync(&addr, 64)
            .map_err(|e| AppError::Failed(format!("listen on {addr}: {e}")))?;
    }
    for a in listener.local_addresses() {
        match &opts.endpoint {
            Endpoint::WebSocket(u) => {
                let hp = match &a {
                    SocketAddress::Inet { host, port } if host.contains(':') => {
                        format!("[{host}]:{port}")
                    }
                    SocketAddress::Inet { host, port } => format!("{host}:{port}"),
                    other => other.to_string(),
                };
                let scheme = if u.secure { "wss" } else { "ws" };
                eprintln!("transit: listening on {scheme}://{hp}{}", u.path);
            }
            _ => eprintln!("transit: listening on {a}"),
        }
    }
    if c.raw {
        // The first client whose layers (TLS, websocket) succeed is the
        // stream; one whose handshake fails (a port scan, a health check,
        // a client without a certificate) is logged and the receiver keeps
        // waiting, as a framed receiver does.
        let layers = opts.transport.has_layers(&opts.endpoint);
        let ch = loop {
            let ch = wait_first_client(&rt, &mut listener, &opts)?;
            if !layers {
                break Box::new(ch) as Box<dyn Channel>;
            }
            let dup = ch.as_fd().try_clone_to_owned().ok();
            match accept_layers(&rt, &opts, Box::new(ch), dup) {
                Ok(ch) => break ch,
                Err(AppError::Failed(why)) => warn(&format!("rejected a {why}")),
                Err(e) => return Err(e),
            }
        };
        listener.disconnect();
        return recv_raw(&rt, &opts, ch, clock);
    }
    recv_multifd(&rt, &opts, Feed::Listener(listener), clock)
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

/// Roll back an in-place update of `path` that a killed receiver left
/// (its undo journal), saying so on stderr (even with `-q`); refuse to
/// go on when that cannot be done.
fn roll_back_interrupted(path: &std::path::Path) -> Result<(), AppError> {
    match transit_multifd::undo::recover(path) {
        Ok(None) => Ok(()),
        Ok(Some(r)) => {
            eprintln!(
                "transit: {}: rolled back an interrupted in-place update ({} range(s), {} restored from {}{})",
                path.display(),
                r.ranges,
                crate::units::size(r.bytes),
                r.journal.display(),
                if r.torn {
                    "; its torn last record, whose write never happened, was ignored"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(e) => Err(AppError::Failed(format!(
            "{}: an interrupted in-place update cannot be rolled back, so nothing was received: {e}",
            path.display()
        ))),
    }
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
    let peer = describe_peer(&*ch);
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

/// `recv rdma:HOST:PORT`: listen with rdma_cm (fails at once without an
/// RDMA device), then take the raw stream or the session's connections.
fn recv_rdma(
    rt: &Runtime,
    opts: &Opts,
    addr: &SocketAddress,
    raw: bool,
    clock: CpuClock,
) -> Result<(), AppError> {
    let shown = transit_channel::rdma::format_address(addr);
    let mut listener = transit_channel::rdma::RdmaListener::listen(addr)
        .map_err(|e| AppError::Failed(format!("listen on {shown}: {e}")))?;
    let local = listener
        .local_address()
        .map_or(shown.clone(), |a| transit_channel::rdma::format_address(&a));
    eprintln!("transit: listening on {local}");
    if raw {
        let ch = rt.run_task(
            "accept",
            || {},
            move || {
                listener
                    .accept()
                    .map_err(|e| AppError::Failed(format!("accept on {shown}: {e}")))
            },
        )?;
        let ch = accept_layers(rt, opts, Box::new(ch), None)?;
        return recv_raw(rt, opts, ch, clock);
    }
    recv_multifd(rt, opts, Feed::Rdma(listener), clock)
}

/// `recv exec:COMMAND --raw`: the command's stdout supplies the bytes.
fn recv_exec(rt: &Runtime, opts: &Opts, cmd: &str, clock: CpuClock) -> Result<(), AppError> {
    let ch = transport::ExecChannel::spawn(cmd)
        .map_err(|e| AppError::Failed(format!("raw channel: {e}")))?;
    let ch = accept_layers(rt, opts, Box::new(ch), None)?;
    recv_raw(rt, opts, ch, clock)
}

/// `recv stdio: --raw`: stdin supplies the bytes.
fn recv_stdio_raw(rt: &Runtime, opts: &Opts, clock: CpuClock) -> Result<(), AppError> {
    let ch = transit_channel::PipeChannel::stdio()
        .map_err(|e| AppError::Failed(format!("raw channel: {e}")))?;
    let ch = accept_layers(rt, opts, Box::new(ch), None)?;
    recv_raw(rt, opts, ch, clock)
}

/// `recv stdio:` in a multifd session: one of the N+1 runs of the
/// sender's `exec:` command (see [`crate::join`]). The run that carries
/// the main channel gathers the others' pipes and receives; the others
/// hand theirs over and wait for the outcome.
fn recv_stdio(rt: &Runtime, opts: &Opts, clock: CpuClock) -> Result<(), AppError> {
    let mut ch: Box<dyn Channel> = Box::new(
        transit_channel::PipeChannel::stdio()
            .map_err(|e| AppError::Failed(format!("stdio: {e}")))?,
    );
    let timeout = opts.handshake;
    let (ch, pre) = rt.run_task(
        "join",
        || {},
        move || {
            let pre = crate::join::read_preamble(&mut *ch, timeout).map_err(AppError::Failed)?;
            Ok((ch, pre))
        },
    )?;
    if pre.index != 0 {
        drop(ch);
        let ok = rt.run_task(
            "join",
            || {},
            move || crate::join::follow(&pre.tag, pre.index, timeout).map_err(AppError::Failed),
        )?;
        return if ok {
            Ok(())
        } else {
            Err(AppError::Failed(format!(
                "exec: run {}: the session failed (the run with the main channel says why)",
                pre.index
            )))
        };
    }
    let (mut leader, others) = rt.run_task(
        "join",
        || {},
        move || crate::join::lead(&pre.tag, pre.count, timeout).map_err(AppError::Failed),
    )?;
    let mut chans = vec![ch];
    chans.extend(others.into_iter().map(|(_, c)| c));
    let r = recv_multifd(rt, opts, Feed::Channels(chans), clock);
    leader.finish(r.is_ok());
    r
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

fn output_sink(
    output: &Output,
    mode: Option<u32>,
) -> Result<(Box<dyn Sink + Send>, Option<TempOutput>), AppError> {
    Ok(match output {
        Output::Discard => (Box::new(WriteSink(std::io::sink())), None),
        Output::Stdout => (Box::new(WriteSink(stdout_file()?)), None),
        Output::Device(p) => (Box::new(WriteSink(device_file(p)?)), None),
        Output::File(p) => {
            let t = create_temp(p, mode)?;
            let file = t
                .writer()
                .map_err(|e| AppError::Failed(format!("open {}: {e}", t.temp_path().display())))?;
            let sink = FileSink {
                file,
                len: 0,
                name: p.display().to_string(),
            };
            (Box::new(sink), Some(t))
        }
    })
}

fn create_temp(p: &std::path::Path, mode: Option<u32>) -> Result<TempOutput, AppError> {
    TempOutput::create(p, mode)
        .map_err(|e| AppError::Failed(format!("create output next to {}: {e}", p.display())))
}

fn device_file(p: &std::path::Path) -> Result<crate::output::StreamTarget, AppError> {
    open_stream(p).map_err(|e| AppError::Failed(format!("open {} for writing: {e}", p.display())))
}

fn stdout_file() -> Result<std::fs::File, AppError> {
    std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(|e| AppError::Failed(format!("stdout: {e}")))
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
                .map_err(|e| AppError::Failed(format!("raw channel ({name}): {e}")))?;
            drop(sink);
            if let Some(mut t) = temp {
                t.persist()
                    .map_err(|e| AppError::Failed(format!("put the output in place: {e}")))?;
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
/// ends fail, each naming the mismatch). Plain bytes read to decide are
/// put back in front.
fn refuse_framed(mut ch: Box<dyn Channel>) -> Result<Box<dyn Channel>, AppError> {
    let mut head = Vec::new();
    loop {
        match wire::framed_start(&head) {
            FramedStart::Raw => break,
            FramedStart::NeedMore(n) => {
                let at = head.len();
                head.resize(n, 0);
                match ch.readv(
                    &mut [IoSliceMut::new(&mut head[at..])],
                    None,
                    ReadFlags::empty(),
                ) {
                    Ok(0) => {
                        head.truncate(at);
                        break;
                    }
                    Ok(k) => head.truncate(at + k),
                    Err(e) => return Err(AppError::Failed(format!("raw channel: receive: {e}"))),
                }
            }
            FramedStart::Framed { reason } => {
                let tell = Record::Error {
                    code: ErrorCode::Refused,
                    message: "the receiver runs with --raw and takes plain bytes on one \
                              connection: drop --raw there, or use it on both ends"
                        .into(),
                };
                let _ = chio::write_all(&mut *ch, &tell.to_bytes());
                drain_close(ch, Instant::now() + LINGER);
                let mut msg = "the sender speaks transit's framed protocol: drop --raw, or use it on both ends"
                    .to_owned();
                if let Some(r) = reason {
                    msg.push_str(&format!(" (the sender gave up: {})", one_line(&r)));
                }
                return Err(AppError::Failed(msg));
            }
        }
    }
    Ok(if head.is_empty() {
        ch
    } else {
        Box::new(Prefixed::new(head, ch))
    })
}

fn recv_raw(
    rt: &Runtime,
    opts: &Opts,
    ch: Box<dyn Channel>,
    clock: CpuClock,
) -> Result<(), AppError> {
    let peer = ch
        .peer_address()
        .map(|a| a.to_string())
        .or_else(|| Some(ch.name().to_owned()));
    run_copy(rt, opts, ch, peer, true, clock)
}

fn recv_from_file(
    rt: &Runtime,
    opts: &Opts,
    path: PathBuf,
    clock: CpuClock,
) -> Result<(), AppError> {
    let ch = transit_channel::FileChannel::open(&path, std::fs::OpenOptions::new().read(true))
        .map_err(|e| AppError::Failed(format!("open {}: {e}", path.display())))?;
    run_copy(
        rt,
        opts,
        Box::new(ch),
        Some(format!("file:{}", path.display())),
        false,
        clock,
    )
}

enum Msg {
    /// A connection (layers done) and its peer, first bytes not read yet.
    Conn(Box<dyn Channel>, String),
    /// A listener's connection through [`admit`].
    Admitted(Admitted),
    /// A connection's handshake failed: the session cannot go on.
    Fatal(String),
    Cancel,
}

struct Done {
    stats: Stats,
    session: SessionHeader,
    peer: Option<String>,
    /// `--checksum sha256` of what was received.
    sha256: Option<String>,
}

/// Where the connections of a multifd session come from.
enum Feed {
    /// Accepted by a listener.
    Listener(NetListener),
    /// Already there (the joined runs of an `exec:` command).
    Channels(Vec<Box<dyn Channel>>),
    /// Accepted one by one from an RDMA listener on a thread of its own
    /// (rdma_cm's accept blocks; the thread ends with the process).
    Rdma(transit_channel::rdma::RdmaListener),
}

fn describe_peer(ch: &dyn Channel) -> String {
    ch.peer_address()
        .map(|a| a.to_string())
        .unwrap_or_else(|| ch.name().to_owned())
}

/// Run the server layers of one connection on its own thread, then hand
/// it to the session once its first bytes arrive. For connections that
/// are not a listener's ([`Feed::Channels`], [`Feed::Rdma`]); a listener's
/// go through [`admit`]. With `fatal`, a failed handshake (TLS refusal,
/// bad websocket upgrade) ends the session (the runs of an `exec:`
/// command are our sender's and nobody else's); else it is logged and
/// the connection dropped.
#[allow(clippy::too_many_arguments)]
fn spawn_layers(
    ch: Box<dyn Channel>,
    ep: Endpoint,
    t: TransportOpts,
    q: mpsc::Sender<Msg>,
    hs: Duration,
    linger: Option<std::os::fd::OwnedFd>,
    inflight: Arc<AtomicU64>,
    fatal: bool,
) {
    let peer = describe_peer(&*ch);
    inflight.fetch_add(1, Ordering::AcqRel);
    let busy = inflight.clone();
    let spawned = std::thread::Builder::new()
        .name("recv-handshake".into())
        .spawn(move || {
            let _done = Decrement(busy);
            let start = Instant::now();
            match transport::wrap_accepted(ch, &ep, &t) {
                Ok(ch) => {
                    let left = hs.saturating_sub(start.elapsed());
                    match chio::wait_blocking(&ch.watch_source(), Condition::IN, Some(left)) {
                        Ok(c) if !c.is_empty() => {
                            let _ = q.send(Msg::Conn(ch, peer));
                        }
                        _ => warn(&format!(
                            "closed a connection from {peer}: it sent nothing within {:.1} s",
                            hs.as_secs_f64()
                        )),
                    }
                }
                Err(e) => {
                    if let Some(fd) = linger {
                        transport::linger_close(fd, LINGER);
                    }
                    if fatal {
                        let _ = q.send(Msg::Fatal(format!("connection from {peer}: {e}")));
                    } else {
                        warn(&format!("rejected a connection from {peer}: {e}"));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        inflight.fetch_sub(1, Ordering::AcqRel);
        warn(&format!("cannot start a handshake thread: {e}"));
    }
}

/// Counts a handshake thread out when it ends.
struct Decrement(Arc<AtomicU64>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection that is not framed transit is told.
const NOT_FRAMED: &str = "this transit receiver speaks its framed protocol, not plain bytes: \
                          drop --raw on the sender, or run the receiver with --raw";

/// What a connection that comes while a session runs is told.
const BUSY: &str = "this receiver is busy with another session; try again when it is done";

/// Rejected connections being told why at once, at most.
const TURN_AWAY_MAX: usize = 16;
static TURNING_AWAY: AtomicU64 = AtomicU64::new(0);

/// Tell a connection that does not speak the framed protocol why it is
/// refused (a `transit send --raw` reads this and fails, naming the
/// mismatch), then drain and close it on a thread of its own, so the
/// refusal is not destroyed by a reset. Beyond [`TURN_AWAY_MAX`] at once,
/// connections are closed without a word.
fn turn_away(mut ch: Box<dyn Channel>, why: &'static str) {
    if TURNING_AWAY.fetch_add(1, Ordering::AcqRel) >= TURN_AWAY_MAX as u64 {
        TURNING_AWAY.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("recv-turn-away".into())
        .spawn(move || {
            let tell = Record::Error {
                code: ErrorCode::Refused,
                message: why.into(),
            };
            let _ = ch.set_blocking(false);
            let _ = chio::write_all(&mut *ch, &tell.to_bytes());
            drain_close(ch, Instant::now() + LINGER);
            TURNING_AWAY.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        TURNING_AWAY.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Close a connection of a failed session gently: end of file to the
/// peer, then read and discard until it closes too (bounded), so it gets
/// FIN rather than a reset that destroys what we last sent it (a TLS
/// alert naming the reason).
fn drain_close(mut ch: Box<dyn Channel>, deadline: Instant) {
    let _ = ch.shutdown(Shutdown::Write);
    chio::drain_until(ch.as_mut(), deadline, 0, ReadFlags::empty());
    let _ = ch.close();
}

fn recv_multifd(rt: &Runtime, opts: &Opts, feed: Feed, clock: CpuClock) -> Result<(), AppError> {
    let (tx, queue) = mpsc::channel::<Msg>();
    let hs = opts.handshake;
    let layers = opts.transport.has_layers(&opts.endpoint);
    let inflight = Arc::new(AtomicU64::new(0));
    let mut listener = None;
    match feed {
        Feed::Channels(chans) => {
            for ch in chans {
                if layers || opts.transport.tls.is_some() {
                    spawn_layers(
                        ch,
                        opts.endpoint.clone(),
                        opts.transport.clone(),
                        tx.clone(),
                        hs,
                        None,
                        inflight.clone(),
                        true,
                    );
                } else {
                    let peer = describe_peer(&*ch);
                    let _ = tx.send(Msg::Conn(ch, peer));
                }
            }
        }
        Feed::Rdma(mut l) => {
            let (ep, t, q, busy) = (
                opts.endpoint.clone(),
                opts.transport.clone(),
                tx.clone(),
                inflight.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("rdma-accept".into())
                .spawn(move || loop {
                    let ch: Box<dyn Channel> = match l.accept() {
                        Ok(ch) => Box::new(ch),
                        Err(e) => {
                            warn(&format!("accept on {}: {e}", l.name()));
                            return;
                        }
                    };
                    if layers {
                        spawn_layers(
                            ch,
                            ep.clone(),
                            t.clone(),
                            q.clone(),
                            hs,
                            None,
                            busy.clone(),
                            false,
                        );
                    } else {
                        let peer = describe_peer(&*ch);
                        if q.send(Msg::Conn(ch, peer)).is_err() {
                            return;
                        }
                    }
                });
            spawned.map_err(|e| AppError::Failed(format!("start the RDMA accept thread: {e}")))?;
        }
        Feed::Listener(mut l) => {
            let q = tx.clone();
            let cfg = AdmitConfig {
                tls: opts.transport.tls.clone(),
                ws: match &opts.endpoint {
                    Endpoint::WebSocket(u) => {
                        Some((u.path.clone(), opts.transport.ws_config.clone()))
                    }
                    _ => None,
                },
                timeout: hs,
                linger: LINGER,
            };
            let adm = Admission::new(rt.ctx(), cfg, move |a| {
                let _ = q.send(Msg::Admitted(a));
            });
            let a2 = adm.clone();
            l.set_client_func(rt.ctx(), move |client| a2.admit(client));
            listener = Some((l, adm));
        }
    }

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
        let _ = cancel_tx.send(Msg::Cancel);
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
    if let Some((mut l, adm)) = listener {
        l.disconnect();
        adm.close();
    }
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
    if done.session.compression == transit_multifd::wire::Compression::Zstd {
        summary.compress = Some("zstd".into());
    }
    finish_report(&summary, opts.json, to_stderr, opts.verbosity);
    Ok(())
}

/// Learn what a connection is from its first bytes, blocking for at most
/// `timeout`: they are read and put back in front ([`Prefixed`]). For
/// connections that are not a listener's (the runs of an `exec:` command,
/// RDMA), which [`crate::admit`] does not see.
fn sniff(
    mut ch: Box<dyn Channel>,
    timeout: Duration,
) -> (Box<dyn Channel>, Result<Peeked, String>) {
    let was_blocking = ch.is_blocking();
    if let Err(e) = ch.set_blocking(false) {
        return (ch, Err(e.to_string()));
    }
    let mut buf = [0u8; wire::SESSION_HEADER_LEN];
    let r = read_head(&mut *ch, &mut buf, timeout);
    let _ = ch.set_blocking(was_blocking);
    match r {
        Ok((n, p)) => (Box::new(Prefixed::new(buf[..n].to_vec(), ch)), Ok(p)),
        Err(e) => (ch, Err(e)),
    }
}

/// Read the first bytes until [`admit::head`] decides.
fn read_head(
    ch: &mut dyn Channel,
    buf: &mut [u8; wire::SESSION_HEADER_LEN],
    timeout: Duration,
) -> Result<(usize, Peeked), String> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    loop {
        let want = match admit::head(&buf[..got]) {
            Head::More(n) => n,
            Head::Done(p) => return Ok((got, p)),
        };
        match chio::read_all_until(ch, &mut buf[got..want], deadline) {
            Ok(()) => got = want,
            Err(e) if e.is_timed_out() => {
                return Err(format!(
                    "sent no complete header within {:.1} s",
                    timeout.as_secs_f64()
                ))
            }
            Err(transit_channel::Error::UnexpectedEof { .. }) => {
                return Err("closed the connection before sending a header".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Errors after which the session cannot go on.
fn is_fatal(e: &transit_multifd::Error) -> bool {
    matches!(
        e,
        transit_multifd::Error::Protocol {
            source: WireError::ChannelCountMismatch { .. }
                | WireError::ImageTooLarge { .. }
                | WireError::DuplicateChannel { .. }
                | WireError::ChannelIdOutOfRange { .. },
            ..
        }
    )
}

struct SessionWorker {
    queue: mpsc::Receiver<Msg>,
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
    inflight: Arc<AtomicU64>,
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

struct Session {
    rx: Receiver,
    /// A stream's temporary output file.
    temp: Option<TempOutput>,
    peer: Option<String>,
}

impl SessionWorker {
    fn run(self) -> Result<Done, AppError> {
        let start = Instant::now();
        let mut held: Vec<(Box<dyn Channel>, String)> = Vec::new();
        let mut session: Option<Session> = None;
        let mut assembly_deadline: Option<Instant> = self.wait_limit.map(|t| start + t);
        loop {
            if let Some(s) = &session {
                if s.rx.is_ready() {
                    break;
                }
            }
            let msg = match assembly_deadline {
                None => self.queue.recv().map_err(|_| ()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    self.queue.recv_timeout(left).map_err(|_| ())
                }
            };
            let (ch, peer, peeked) = match msg {
                Ok(Msg::Admitted(a)) => (a.ch, a.peer, Ok(a.kind)),
                Ok(Msg::Conn(ch, peer)) => match session.as_mut() {
                    Some(s) => {
                        offer(s, ch, &peer)?;
                        continue;
                    }
                    None => {
                        let (ch, peeked) = sniff(ch, self.handshake);
                        (ch, peer, peeked)
                    }
                },
                Ok(Msg::Fatal(why)) => {
                    self.wind_down(held);
                    return Err(AppError::Failed(why));
                }
                Ok(Msg::Cancel) => return Err(AppError::Failed("cancelled".into())),
                Err(()) => return Err(self.assembly_timeout(&session, start)),
            };
            if let Some(s) = session.as_mut() {
                // The receiver classifies it again (from the bytes put
                // back in front, without waiting once admitted).
                offer(s, ch, &peer)?;
                continue;
            }
            match peeked {
                Ok(Peeked::Page) => {
                    if held.len() >= wire::MAX_CHANNELS as usize {
                        warn(&format!("rejected a connection from {peer}: too many page channels before the main channel"));
                    } else {
                        held.push((ch, peer));
                    }
                }
                Ok(Peeked::Main(hdr)) => {
                    let mut s = self.start_session(hdr)?;
                    offer(&mut s, ch, &peer)?;
                    if s.rx.session().is_some() {
                        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = s.rx.progress();
                        for (c, p) in held.drain(..) {
                            offer(&mut s, c, &p)?;
                        }
                        assembly_deadline = Some(Instant::now() + self.handshake);
                        session = Some(s);
                    }
                }
                Ok(Peeked::Other(why)) => {
                    warn(&format!(
                        "rejected a connection from {peer}: not a transit sender: {why}"
                    ));
                    turn_away(ch, NOT_FRAMED);
                }
                Err(why) => warn(&format!("rejected a connection from {peer}: {why}")),
            }
        }
        let Some(s) = session else {
            return Err(AppError::Failed("no session".into()));
        };
        let Session { rx, temp, peer } = s;
        let output = self.output.clone();
        // While the session runs, a lost page channel's new connection
        // rejoins it (`--reconnect`), and whoever else connects is told
        // why it is refused (a second sender would otherwise wait for an
        // accept record until its timeout).
        let queue = self.queue;
        let rejoin = rx.rejoin_handle();
        let _ = std::thread::Builder::new()
            .name("recv-busy".into())
            .spawn(move || {
                while let Ok(msg) = queue.recv() {
                    let (ch, peer) = match msg {
                        Msg::Conn(ch, peer) => (ch, peer),
                        Msg::Admitted(a) if matches!(a.kind, Peeked::Page) => {
                            if let Err(e) = rejoin.offer(a.ch) {
                                warn(&format!("rejected a connection from {}: {e}", a.peer));
                            }
                            continue;
                        }
                        Msg::Admitted(a) => (a.ch, a.peer),
                        _ => continue,
                    };
                    warn(&format!(
                        "rejected a connection from {peer}: a session is running"
                    ));
                    turn_away(ch, BUSY);
                }
            });
        let image_sha: Arc<Mutex<Option<String>>> = Arc::default();
        let hashed = image_sha.clone();
        let want_sha = self.sha.is_some();
        let target = self.output.clone();
        let outcome = rx.run_with(move |out| {
            // A memory image is hashed once verified, before it is written
            // out or freed; a file once it is in place.
            if let (true, Some(img)) = (want_sha, out.image.as_ref()) {
                if !img.is_file() {
                    *hashed.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(checksum::of_bytes(img.as_slice()));
                }
            }
            commit(&output, temp, out)
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
        })
    }

    /// A handshake failed: let the handshakes still running end, and close
    /// every connection gently (in parallel, within [`LINGER`]) so each
    /// peer reads why rather than a reset.
    fn wind_down(&self, held: Vec<(Box<dyn Channel>, String)>) {
        let deadline = Instant::now() + LINGER;
        let mut drains = Vec::new();
        let mut drain = |ch: Box<dyn Channel>| {
            if let Ok(t) = std::thread::Builder::new()
                .name("recv-drain".into())
                .spawn(move || drain_close(ch, deadline))
            {
                drains.push(t);
            }
        };
        for (ch, _) in held {
            drain(ch);
        }
        loop {
            match self.queue.recv_timeout(Duration::from_millis(20)) {
                Ok(Msg::Conn(ch, _)) => drain(ch),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.inflight.load(Ordering::Acquire) == 0 || Instant::now() >= deadline {
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

    fn assembly_timeout(&self, session: &Option<Session>, start: Instant) -> AppError {
        let waited = start.elapsed().as_secs_f64();
        match session.as_ref().and_then(|s| s.rx.session().copied()) {
            None => AppError::Failed(format!("no sender arrived within {waited:.1} s")),
            Some(h) => AppError::Failed(format!(
                "the sender's channels did not all arrive within {:.1} s of its main channel (expected {} page channels)",
                self.handshake.as_secs_f64(),
                h.channels
            )),
        }
    }

    /// A receiver whose destination fits the session header.
    fn start_session(&self, hdr: Option<SessionHeader>) -> Result<Session, AppError> {
        let stream = matches!(hdr, Some(h) if h.layout == Layout::Stream);
        let mut temp = None;
        let dest = if stream {
            match &self.output {
                Output::Discard => Destination::Writer(Box::new(std::io::sink())),
                Output::Stdout => Destination::Writer(Box::new(stdout_file()?)),
                Output::File(p) => {
                    let t = create_temp(p, self.mode)?;
                    let w = t.writer().map_err(|e| {
                        AppError::Failed(format!("open {}: {e}", t.temp_path().display()))
                    })?;
                    temp = Some(t);
                    Destination::Writer(Box::new(std::io::BufWriter::with_capacity(1 << 20, w)))
                }
                Output::Device(p) => Destination::Writer(Box::new(
                    std::io::BufWriter::with_capacity(1 << 20, device_file(p)?),
                )),
            }
        } else {
            match &self.output {
                // Pages are faulted in as they arrive, overlapped with the
                // transfer; zero pages of fresh memory are never touched.
                Output::Discard | Output::Stdout | Output::Device(_) => {
                    Destination::Memory { prefault: false }
                }
                Output::File(p) => Destination::File {
                    path: p.clone(),
                    mode: self.mode,
                },
            }
        };
        let dest = match (dest, &self.sha) {
            // A stream arrives in order: hashed as it is written.
            (Destination::Writer(w), Some(sha)) => {
                Destination::Writer(Box::new(checksum::Writing::new(w, sha.clone())))
            }
            (d, _) => d,
        };
        if let Some(h) = hdr {
            let (unit, total) = match h.layout {
                Layout::Image { size } => (u64::from(h.page_size), size),
                Layout::Stream => (u64::from(h.packet_payload), 0),
            };
            self.unit.store(unit, Ordering::Relaxed);
            self.total.store(total, Ordering::Relaxed);
        }
        let max_image_size = match (self.max_size, hdr.map(|h| h.layout)) {
            (Some(n), _) => Some(SizeLimit::Configured(n)),
            (None, Some(Layout::Image { .. })) => match &self.output {
                Output::File(p) => room::free_space(p),
                Output::Discard | Output::Stdout | Output::Device(_) => room::memory_available(),
            },
            (None, _) => None,
        };
        let config = RecvConfig {
            expected_channels: self.channels,
            expected_uuid: None,
            handshake_timeout: Some(self.handshake),
            max_image_size,
            idle_timeout: self.idle,
            delta: self.delta,
            inplace: self.inplace,
            resume: self.resume,
            reconnect_wait: self.reconnect,
        };
        let rx = Receiver::new(config, dest);
        *self.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx.abort_handle());
        Ok(Session {
            rx,
            temp,
            peer: None,
        })
    }
}

/// Put a verified session's output where it belongs: flush the stream,
/// move the file into place, or write the image out. The receiver runs
/// this before it answers the sender, so the sender's success means the
/// output is in place, and this step's failure is what the sender hears.
fn commit(
    output: &Output,
    temp: Option<TempOutput>,
    out: &mut RecvOutcome,
) -> transit_multifd::Result<()> {
    use transit_multifd::Error;
    let in_place = |e: std::io::Error, p: &std::path::Path| {
        Error::data(format!("put the output in place at {}", p.display()), e)
    };
    if let Some(w) = out.writer.as_mut() {
        w.flush().map_err(|e| Error::data("write the output", e))?;
    }
    if let Some(mut t) = temp {
        t.persist().map_err(|e| in_place(e, t.target()))?;
    }
    let Some(img) = out.image.as_mut() else {
        return Ok(());
    };
    match output {
        // Discarded once verified, before the sender is told: freeing a
        // large image is part of what the user waits for.
        Output::Discard => {
            out.image = None;
            Ok(())
        }
        Output::File(p) => img.persist_in_place().map_err(|e| in_place(e, p)),
        Output::Stdout => std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|mut f| f.write_all(img.as_slice()))
            .map_err(|e| Error::data("write the image to stdout", e)),
        Output::Device(p) => open_stream(p)
            .and_then(|mut f| {
                f.write_all(img.as_slice())?;
                f.flush()
            })
            .map_err(|e| Error::data(format!("write the image to {}", p.display()), e)),
    }
}

/// Hand a connection to the receiver; rejected ones are warned about,
/// fatal ones end the session.
fn offer(s: &mut Session, ch: Box<dyn Channel>, peer: &str) -> Result<(), AppError> {
    match s.rx.accept_channel(ch) {
        Ok(Accepted::Main) => {
            s.peer = Some(peer.to_owned());
            Ok(())
        }
        Ok(Accepted::Page(_)) => Ok(()),
        Err(e) if is_fatal(&e) => Err(e.into()),
        Err(e) => {
            warn(&format!("rejected a connection from {peer}: {e}"));
            Ok(())
        }
    }
}

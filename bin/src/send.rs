//! `transit send`: connect, run a multifd session (or a raw copy), report.
//!
//! Phases on the [`Runtime`]: prepare the payload (generate or map the
//! image, open the stream) on a worker; connect the main channel and every
//! page channel in parallel (`transit_endpoint::connect::open_session`,
//! the most telling error if one fails); run the session on a
//! worker (multifd's own threads below it) while timers drive the progress
//! bar and the JSON intervals; print the summary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use transit_channel::{Channel, Shutdown, ShutdownHandle, SocketAddress};
use transit_multifd::compress::Compress;
use transit_multifd::progress::ThreadCpu;
use transit_multifd::{
    wire, AbortHandle, ChannelStats, Payload, Reconnect, SendConfig, Sender, Stats,
};

use crate::cli::{CommonArgs, SendArgs};
use crate::error::{one_line, AppError};
use crate::report::{
    emit_json, CpuClock, Live, LiveOptions, Probe, ProgressSlot, RunInfo, Summary, Verbosity,
};
use transit_channel::main_loop::runtime::Runtime;
use transit_endpoint::connect as transport;
use transit_endpoint::Endpoint;
use transit_endpoint::TransportOpts;
use transit_multifd::checksum;
use transit_multifd::copy::{ChannelSink, FileSink, IdleWatch, Sink, WriteSink};
use transit_multifd::dirty::dirty_image;
use transit_multifd::output::{open_stream, resolve, OutputTarget};
use transit_multifd::raw::RawError;
use transit_transfer::payload::{self, copy_input, Input};

/// Default connect and handshake timeout of `send`.
pub const DEFAULT_TIMEOUT: f64 = 30.0;

/// Checked options of a send.
struct Plan {
    uri: String,
    endpoint: Endpoint,
    channels: u32,
    raw: bool,
    passes: u32,
    config: SendConfig,
    transport: TransportOpts,
}

fn usage(m: impl Into<String>) -> AppError {
    AppError::Usage(m.into())
}

fn plan(args: &SendArgs) -> Result<Plan, AppError> {
    let c = &args.common;
    let endpoint = Endpoint::parse(&args.uri).map_err(AppError::Usage)?;
    if args.ram.is_none() && args.input.is_none() {
        return Err(usage(
            "nothing to send: give --ram SIZE (a generated image) or --input FILE|- (a file or stdin)",
        ));
    }
    let file_ep = matches!(endpoint, Endpoint::File(_));
    let raw = c.raw || file_ep;
    if c.raw && c.channels.is_some_and(|n| n != 1) {
        return Err(usage("--raw sends on exactly one channel; drop --channels"));
    }
    if c.raw && args.compress.is_on() {
        return Err(usage(
            "--compress needs transit's framing (a transit receiver decompresses): drop --raw",
        ));
    }
    let channels = if raw { 1 } else { c.channels.unwrap_or(4) };
    if channels == 0 || channels > wire::MAX_CHANNELS {
        return Err(usage(format!(
            "--channels {channels}: expected 1 to {}",
            wire::MAX_CHANNELS
        )));
    }
    if args.passes == 0 {
        return Err(usage("--passes must be at least 1"));
    }
    if args.passes > 1 && args.ram.is_none() {
        return Err(usage(
            "--passes needs --ram: only a generated image can be re-dirtied between passes",
        ));
    }
    if args.passes > 1 && raw {
        return Err(usage(
            "--passes needs a multifd session (not --raw or file:)",
        ));
    }
    if matches!(endpoint, Endpoint::Socket(SocketAddress::Fd(_))) && !raw {
        return Err(usage(
            "fd:N is a single connection but a multifd session needs one per channel plus one; use --raw",
        ));
    }
    if let Endpoint::File(p) = &endpoint {
        resolve(p).map_err(|e| AppError::Usage(format!("output {e}")))?;
        if args.max_bandwidth.is_some() {
            return Err(usage(
                "--max-bandwidth caps a transfer to a receiver; file: writes locally",
            ));
        }
        if args.compress.is_on() {
            return Err(usage("--compress applies to a transfer to a receiver; file: writes the bytes as they are"));
        }
    }
    if matches!(endpoint, Endpoint::Stdio) && !raw {
        return Err(usage(
            "stdio: carries one stream, but a multifd session needs one connection per channel plus one; use --raw (or run the receiver with `transit send exec:'... transit recv stdio:'`)",
        ));
    }
    if matches!(endpoint, Endpoint::Stdio) && args.input.as_deref() == Some("-".as_ref()) {
        // Allowed: stdin is the input, stdout the channel.
    }
    check_tls_uri(&endpoint, c.tls_creds.is_some())?;
    let page_size = {
        let p = args.page_size;
        let ok = p.is_power_of_two()
            && (u64::from(wire::MIN_PAGE_SIZE)..=u64::from(wire::MAX_PAGE_SIZE)).contains(&p);
        if !ok {
            return Err(usage(format!(
                "--page-size {p}: expected a power of two from {} to {}",
                wire::MIN_PAGE_SIZE,
                wire::MAX_PAGE_SIZE
            )));
        }
        p as u32
    };
    let packet_payload = {
        let p = args.packet_size;
        let ok = (u64::from(wire::MIN_PACKET_PAYLOAD)..=u64::from(wire::MAX_PACKET_PAYLOAD))
            .contains(&p);
        if !ok {
            return Err(usage(format!(
                "--packet-size {p}: expected {} to {} bytes",
                wire::MIN_PACKET_PAYLOAD,
                wire::MAX_PACKET_PAYLOAD
            )));
        }
        p as u32
    };
    // Images need whole pages per packet.
    let packet_payload = if args.ram.is_some() || args.input.as_deref() != Some("-".as_ref()) {
        (packet_payload / page_size).max(1) * page_size
    } else {
        packet_payload
    };
    check_interval(c.json_interval)?;
    let timeout = check_timeout(c.timeout.unwrap_or(DEFAULT_TIMEOUT))?;
    let mut transport = TransportOpts::new(timeout);
    transport.retry = Duration::from_secs_f64(args.retry);
    transport.tls = transport::tls_from_args(
        c.tls_creds.as_deref(),
        transit_channel::tls::Endpoint::Client,
        args.tls_hostname.clone(),
        &[],
        c.tls_relaxed_eof,
    )
    .map_err(AppError::Failed)?;
    if transport.tls.is_some() && args.tls_hostname.is_none() && endpoint.tls_host().is_none() {
        return Err(usage(format!(
            "--tls-creds over {} needs --tls-hostname NAME: the name the server's certificate must carry (the URI has no host)",
            scheme(&endpoint)
        )));
    }
    if matches!(endpoint, Endpoint::Exec(_)) && !raw {
        transport.join = Some(
            transit_endpoint::join::JoinTag::new()
                .map_err(|e| AppError::context(format!("a join token: {e}"), e))?,
        );
    }
    Ok(Plan {
        uri: args.uri.clone(),
        endpoint,
        channels,
        raw,
        passes: args.passes,
        config: SendConfig {
            uuid: None,
            page_size,
            packet_payload,
            verify: !args.no_verify,
            compression: wire::Compression::None,
            handshake_timeout: Some(timeout),
            zero_copy: false,
            idle_timeout: args.common.idle_timeout(),
            max_bandwidth: args.max_bandwidth,
            compress: args.compress,
            // Set once the endpoint is known to connect again (see
            // `reconnect`).
            reconnect: None,
        },
        transport,
    })
}

/// How long a framed `exec:` handshake may stay silent before the sender
/// says what it waits for.
const EXEC_NOTE_AFTER: Duration = Duration::from_secs(3);

/// What a framed `exec:` command must be.
const EXEC_EXPECTS: &str = "a framed exec: runs COMMAND once per channel and speaks transit's protocol over its stdin and stdout, so COMMAND must end in `transit recv stdio:` (e.g. exec:'ssh HOST transit recv stdio: --output FILE'); to pipe plain bytes into a command, use --raw";

/// A failure before a framed `exec:` session got going: add what the
/// command is expected to be (the usual cause is a command that is not a
/// transit receiver).
fn with_exec_hint(e: AppError, exec: bool) -> AppError {
    if exec {
        e.with_note(EXEC_EXPECTS)
    } else {
        e
    }
}

/// The scheme of an endpoint, for messages.
pub fn scheme(ep: &Endpoint) -> String {
    let s = ep.to_string();
    match s.find(':') {
        Some(i) => s[..=i].to_owned(),
        None => s,
    }
}

/// `wss://` needs `--tls-creds`; `ws://` and `file:` take none.
pub fn check_tls_uri(ep: &Endpoint, tls: bool) -> Result<(), AppError> {
    match ep {
        Endpoint::WebSocket(u) if u.secure && !tls => Err(usage(
            "wss:// needs --tls-creds DIR (the CA and this side's certificate)",
        )),
        Endpoint::WebSocket(u) if !u.secure && tls => Err(usage(
            "--tls-creds with ws:// : use wss:// for a websocket over TLS",
        )),
        Endpoint::File(_) if tls => Err(usage("--tls-creds does not apply to file:")),
        _ => Ok(()),
    }
}

/// Validate `--json-interval`.
pub fn check_interval(v: Option<f64>) -> Result<(), AppError> {
    match v {
        Some(s) if !(MIN_JSON_INTERVAL..=MAX_JSON_INTERVAL).contains(&s) => Err(usage(format!(
            "--json-interval {s}: expected a number of seconds from {MIN_JSON_INTERVAL} to {MAX_JSON_INTERVAL:e}"
        ))),
        _ => Ok(()),
    }
}

/// The shortest `--json-interval`: a hundred lines a second is plenty
/// (1e-300 printed 557k lines in 0.13 s).
pub const MIN_JSON_INTERVAL: f64 = 0.01;

/// The longest `--json-interval` (and `--timeout`): far beyond any
/// session, and within what a `Duration` holds.
pub const MAX_JSON_INTERVAL: f64 = 1e9;

/// Validate `--timeout`.
pub fn check_timeout(s: f64) -> Result<Duration, AppError> {
    if !(s.is_finite() && s > 0.0 && s < 1e9) {
        return Err(usage(format!(
            "--timeout {s}: expected a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Roll back an in-place update of `path` that a killed receiver left
/// (its undo journal), saying so on stderr (even with `-q`); refuse to
/// go on when that cannot be done.
pub(crate) fn roll_back_interrupted(path: &std::path::Path, done: &str) -> Result<(), AppError> {
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
        Err(e @ transit_multifd::undo::UndoError::Busy { .. }) => Err(AppError::context(
            format!("{}: nothing was {done}: {e}", path.display()),
            e,
        )),
        Err(e) => Err(AppError::context(
            format!(
                "{}: an interrupted in-place update cannot be rolled back, so nothing was {done}: {e}",
                path.display()
            ),
            e,
        )),
    }
}

/// Run `transit send`.
pub fn run(args: SendArgs) -> Result<(), AppError> {
    let clock = CpuClock::start();
    crate::report::set_quiet(args.common.quiet);
    let plan = plan(&args)?;
    let rt = Runtime::new().map_err(|e| AppError::context(format!("main loop: {e}"), e))?;

    // Phase 1: the payload (generation is not part of the transfer time).
    let ps = plan.config.page_size;
    let (ram, input_path, zr, seed, comp) = (
        args.ram,
        args.input.clone(),
        args.zero_ratio,
        args.seed,
        args.compressible,
    );
    // A file a killed in-place receiver left mixed is rolled back before
    // it is read: never send what is neither the old nor the new file.
    if let Some(p) = args.input.as_deref().filter(|p| p.as_os_str() != "-") {
        roll_back_interrupted(p, "sent")?;
    }
    let map = !plan.raw;
    let input = rt.run_task(
        "prepare",
        || {},
        move || {
            // `plan` made sure there is one of --ram and --input.
            match ram {
                Some(size) => payload::generate(size, ps, zr, seed, comp),
                None => payload::open(&input_path.unwrap_or_default(), map),
            }
            .map_err(AppError::from)
        },
    )?;
    let input_file = input.file();

    match plan.endpoint.clone() {
        Endpoint::File(path) => send_to_file(&rt, &plan, &args, input, path, clock),
        ep if plan.raw => send_raw(&rt, &plan, &args, input, ep, clock),
        ep => send_multifd(&rt, &plan, &args, input, ep, input_file, clock),
    }
}

/// How a lost page channel connects again (`--reconnect`): the same
/// endpoint and layers (TLS, websocket) as at the start, without
/// `--retry`'s waiting (the library backs off itself). `None` for
/// transports that cannot connect again (`exec:`, `fd:`, `stdio:`,
/// `rdma:`) or with `--reconnect 0`.
fn send_multifd(
    rt: &Runtime,
    plan: &Plan,
    args: &SendArgs,
    input: Input,
    ep: Endpoint,
    input_file: Option<PathBuf>,
    clock: CpuClock,
) -> Result<(), AppError> {
    // Phase 2: main channel + N page channels, connected (and their
    // handshakes run) in parallel.
    let n = plan.channels;
    let cancel = plan.transport.cancel.clone();
    let (e2, opts) = (ep.clone(), plan.transport.clone());
    let opened = rt.run_task(
        "connect",
        move || cancel.cancel(),
        move || Ok::<_, AppError>(transport::open_session(&e2, &opts, n)),
    )?;
    let exec = matches!(plan.endpoint, Endpoint::Exec(_));
    let mut chans = opened.map_err(|mut e| {
        // Say so on the connections that did open: a receiver that took
        // one of them for plain bytes (`recv --raw`) then fails too,
        // naming the mismatch, instead of writing an empty file.
        transit_multifd::give_up(&mut e.opened, &e.error.message);
        with_exec_hint(AppError::context(e.error.message.clone(), e.error), exec)
    })?;
    let main = chans.remove(0);
    let peer = main.peer_address().map(|a| a.to_string());

    // Phase 3: the session.
    let handles: Vec<ShutdownHandle> = std::iter::once(&main)
        .chain(chans.iter())
        .filter_map(|c| c.shutdown_handle().ok())
        .collect();
    let slot: ProgressSlot = Arc::new(Mutex::new(None));
    let abort: Arc<Mutex<Option<AbortHandle>>> = Arc::new(Mutex::new(None));
    let (mode, image_bytes, payload) = match &input {
        Input::Image { image, .. } => ("image", image.len() as u64, true),
        Input::Stream { .. } => ("stream", 0, false),
    };
    let unit = if payload {
        plan.config.page_size
    } else {
        plan.config.packet_payload
    };
    let total = if payload {
        let extra = (plan.passes - 1) as f64 * args.dirty_ratio;
        Some((image_bytes as f64 * (1.0 + extra)) as u64)
    } else {
        None
    };
    let _live = Live::install(
        rt.ctx(),
        Probe::Session {
            slot: slot.clone(),
            unit: Arc::new(AtomicU64::new(u64::from(unit))),
        },
        LiveOptions {
            role: "send",
            total: Arc::new(AtomicU64::new(total.unwrap_or(0))),
            progress: progress(&args.common),
            verbose: args.common.verbose > 0,
            json_interval: args.common.json_interval,
            json_to_stderr: false,
            cap: args.max_bandwidth,
        },
    );
    let cancel_abort = abort.clone();
    let on_cancel = move || {
        let guard = cancel_abort.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(a) => a.abort("cancelled by a signal on the sender"),
            None => {
                for h in &handles {
                    let _ = h.shutdown(Shutdown::Both);
                }
            }
        }
    };
    let mut config = plan.config.clone();
    config.reconnect = args.common.reconnect_window().and_then(|window| {
        let f = transport::reopener(&ep, &plan.transport, n + 1)?;
        Some(Reconnect::new(window, Arc::from(f)))
    });
    let (passes, ratio, seed) = (plan.passes, args.dirty_ratio, args.seed);
    let work_slot = slot.clone();
    let work_abort = abort.clone();
    // A framed `exec:` command that is not a transit receiver may take the
    // handshake in silence (`cat > FILE`): say what is awaited long before
    // the handshake timeout ends it (a note, not an error: not with -q).
    let note = (exec && !args.common.quiet).then(|| {
        let answered = slot.clone();
        let cmd = plan.uri.clone();
        rt.ctx().timeout_add(EXEC_NOTE_AFTER, move || {
            if answered.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                eprintln!(
                    "transit: no handshake answer yet from {cmd} after {} s: {EXEC_EXPECTS}",
                    EXEC_NOTE_AFTER.as_secs()
                );
            }
            transit_channel::ControlFlow::Remove
        })
    });
    let want_sha = args.common.checksum.is_some();
    let stats = rt.run_task("session", on_cancel, move || -> Result<_, AppError> {
        let stream_sha = checksum::Shared::new();
        let mut extents = None;
        let (src_payload, mut reader) = match input {
            Input::Image { image, .. } => {
                extents = image.data_extents().map(<[_]>::to_vec);
                (Payload::Image(image), None)
            }
            Input::Stream { reader, .. } if want_sha => (
                Payload::Stream,
                Some(Box::new(checksum::Reading::new(reader, stream_sha.clone()))
                    as Box<dyn std::io::Read + Send>),
            ),
            Input::Stream { reader, .. } => (Payload::Stream, Some(reader)),
        };
        let mut tx = Sender::new(config, src_payload, main, chans).map_err(|e| {
            let handshake = e.stage() == Some(transit_multifd::Stage::Handshake);
            with_exec_hint(AppError::from(e), exec && handshake)
        })?;
        *work_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.progress());
        *work_abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.abort_handle());
        match reader.as_mut() {
            None => {
                tx.send_all()?;
                let ps = tx.session().page_size as usize;
                for p in 2..=passes {
                    let img = tx.image_mut()?;
                    let list = dirty_image(img, ps, ratio, seed, p);
                    tx.send_pass(list)?;
                }
            }
            Some(r) => {
                tx.send_stream(r.as_mut())?;
            }
        }
        // Pages went out of order: the image is hashed in order now, after
        // its last pass (the receiver is finishing meanwhile).
        let sha = match (want_sha, reader.is_some()) {
            (false, _) => None,
            (true, true) => stream_sha.finish(),
            (true, false) => Some(checksum::of_image(
                tx.image().unwrap_or_default(),
                extents.as_deref(),
            )),
        };
        Ok((tx.finish()?, sha))
    });
    drop(_live);
    if let Some(id) = note {
        rt.ctx().remove(id);
    }
    if matches!(plan.endpoint, Endpoint::Exec(_)) && stats.is_err() {
        // The session failed: nothing the commands do now can change
        // that, so they end at once rather than after the close timeout.
        transit_endpoint::exec::abort_commands();
    } else if matches!(plan.endpoint, Endpoint::Exec(_)) {
        // Every run of the command must end well: the far end puts its
        // output in place after the verdict.
        let waited = rt.run_task(
            "wait-commands",
            || {},
            || {
                transit_endpoint::exec::wait_commands()
                    .map_err(|e| AppError::Failed(format!("after the session: {e}")))
            },
        );
        if stats.is_ok() {
            waited?;
        }
    }
    let (stats, sha) = stats?;
    let stream_len = stats.stream_len;
    let mut summary = Summary::new(
        RunInfo {
            role: "send",
            uri: plan.uri.clone(),
            peer,
            mode,
            passes: if payload { plan.passes } else { 1 },
            page_size: if payload { plan.config.page_size } else { 0 },
            image_bytes: if payload { image_bytes } else { stream_len },
            verified: plan.config.verify,
            file: input_file.map(|p| p.display().to_string()),
        },
        &stats,
        &clock,
    );
    summary.sha256 = sha;
    summary.max_bandwidth_bytes_per_second = args.max_bandwidth;
    summary.compress = match args.compress {
        Compress::Off => None,
        Compress::Zstd { level } => Some(format!("zstd:{level}")),
        Compress::Auto { level } => Some(format!("auto:{level}")),
    };
    finish_report(&summary, args.common.json, false, verbosity(&args.common));
    Ok(())
}

/// Print the summary: JSON on stdout (or stderr), else a human line on
/// stderr (and one per channel with `-v`; nothing with `-q`).
pub fn finish_report(summary: &Summary, json: bool, json_to_stderr: bool, v: Verbosity) {
    if json {
        emit_json(summary, json_to_stderr);
    } else if v != Verbosity::Quiet {
        eprintln!("{}", summary.human(v == Verbosity::Verbose));
    }
}

/// `-q` and `-v` of a command line.
pub fn verbosity(c: &CommonArgs) -> Verbosity {
    Verbosity::from_flags(c.quiet, c.verbose)
}

/// Whether a command line wants the progress bar (`-q` and
/// `--no-progress` turn it off).
pub fn progress(c: &CommonArgs) -> bool {
    !c.quiet && !c.no_progress
}

/// Statistics of a plain copy (one channel, no pages).
/// `cpu_seconds`: CPU time of the thread that copied.
pub fn raw_stats(bytes: u64, seconds: f64, cpu_seconds: f64) -> Stats {
    Stats {
        bytes,
        wire_bytes: bytes,
        pages: 0,
        zero_pages: 0,
        packets: 0,
        syncs: 0,
        seconds,
        digest: 0,
        stream_len: bytes,
        peak_buffers: 0,
        zero_copy_flushes: 0,
        zero_copy_copied: 0,
        kept_pages: 0,
        reconnects: 0,
        channels: vec![ChannelStats {
            id: 0,
            bytes,
            wire_bytes: bytes,
            pages: 0,
            zero_pages: 0,
            packets: 0,
            busy_seconds: seconds,
            cpu_seconds,
        }],
    }
}

fn send_raw(
    rt: &Runtime,
    plan: &Plan,
    args: &SendArgs,
    input: Input,
    ep: Endpoint,
    clock: CpuClock,
) -> Result<(), AppError> {
    let opts = plan.transport.clone();
    let cancel = plan.transport.cancel.clone();
    let ch = rt.run_task(
        "connect",
        move || cancel.cancel(),
        move || {
            transport::open(&ep, &opts, 0, 1, "raw channel")
                .map_err(|e| AppError::context(e.message.clone(), e))
        },
    )?;
    let peer = Some(ch.peer_name());
    let count = Arc::new(AtomicU64::new(0));
    let handle = ch.shutdown_handle().ok();
    let _live = Live::install(
        rt.ctx(),
        Probe::Raw(count.clone()),
        LiveOptions {
            role: "send",
            total: Arc::new(AtomicU64::new(match &input {
                Input::Image { image, .. } => image.len() as u64,
                Input::Stream { .. } => 0,
            })),
            progress: progress(&args.common),
            verbose: args.common.verbose > 0,
            json_interval: args.common.json_interval,
            json_to_stderr: false,
            cap: args.max_bandwidth,
        },
    );
    let c2 = count.clone();
    let idle_limit = args.common.idle_timeout();
    let mut sha = args.common.checksum.map(|_| checksum::Sha256::new());
    let max_bandwidth = args.max_bandwidth;
    let (bytes, secs, cpu, sha) = rt.run_task(
        "raw-send",
        move || {
            if let Some(h) = &handle {
                let _ = h.shutdown(Shutdown::Both);
            }
        },
        move || {
            let mut ch = ch;
            let _ = ch.set_blocking(true);
            let t = std::time::Instant::now();
            let cpu = ThreadCpu::start();
            let idle = IdleWatch::start(idle_limit, c2.clone(), ch.shutdown_handle().ok());
            let mut sink = ChannelSink::new(ch.as_mut(), &idle).with_limit(max_bandwidth);
            let copied = checksum::through(&mut sink, sha.as_mut(), |sink| {
                copy_input(input, sink, &c2)
            });
            // A command that died said why (its exit status) in the error.
            let told = sink.exited().is_some();
            let n = match copied {
                Ok(n) => n,
                Err(e) => {
                    if let (Some(l), true) = (idle_limit, idle.fired()) {
                        return Err(AppError::Failed(format!(
                            "raw channel ({}): the receiver took nothing for {:.1} s (--idle-timeout)",
                            ch.name(),
                            l.as_secs_f64()
                        )));
                    }
                    if let Some(refused) =
                        transit_multifd::raw::refusal(ch.as_mut(), Duration::from_millis(500))
                    {
                        return Err(raw_failed(refused));
                    }
                    let name = ch.name().to_owned();
                    return Err(match ch.close() {
                        Err(st) if !told => AppError::Failed(format!("raw channel: {st} ({e})")),
                        _ => AppError::Failed(format!("raw channel ({name}): {e}")),
                    });
                }
            };
            let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu.seconds());
            end_raw(ch.as_mut())?;
            Ok((n, secs, cpu, sha.map(checksum::Sha256::finish)))
        },
    )?;
    drop(_live);
    let mut summary = Summary::new(
        RunInfo {
            role: "send",
            uri: plan.uri.clone(),
            peer,
            mode: "raw",
            passes: 1,
            page_size: 0,
            image_bytes: bytes,
            verified: false,
            file: args.input.as_ref().map(|p| p.display().to_string()),
        },
        &raw_stats(bytes, secs, cpu),
        &clock,
    );
    summary.sha256 = sha;
    summary.max_bandwidth_bytes_per_second = args.max_bandwidth;
    finish_report(&summary, args.common.json, false, verbosity(&args.common));
    Ok(())
}

fn send_to_file(
    rt: &Runtime,
    plan: &Plan,
    args: &SendArgs,
    input: Input,
    path: PathBuf,
    clock: CpuClock,
) -> Result<(), AppError> {
    let count = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c2 = count.clone();
    let flag = cancelled.clone();
    let target = resolve(&path).map_err(|e| AppError::Usage(format!("output {e}")))?;
    let mode = args.common.mode;
    let mut sha = args.common.checksum.map(|_| checksum::Sha256::new());
    let _live = Live::install(
        rt.ctx(),
        Probe::Raw(count.clone()),
        LiveOptions {
            role: "send",
            total: Arc::new(AtomicU64::new(0)),
            progress: progress(&args.common),
            verbose: false,
            json_interval: args.common.json_interval,
            json_to_stderr: false,
            cap: None,
        },
    );
    let (bytes, secs, cpu, sha) = rt.run_task(
        "file-send",
        move || flag.store(true, Ordering::Relaxed),
        move || {
            let t = std::time::Instant::now();
            let cpu = ThreadCpu::start();
            let target = match target {
                OutputTarget::File(p) => p,
                OutputTarget::Stream(p) => {
                    // A device or FIFO: written in order, never replaced.
                    let file = open_stream(&p).map_err(|e| {
                        AppError::Failed(format!("open {} for writing: {e}", p.display()))
                    })?;
                    let mut sink = WriteSink(file);
                    let n =
                        checksum::through(&mut sink, sha.as_mut(), |s| copy_input(input, s, &c2))?;
                    sink.done()?;
                    if cancelled.load(Ordering::Relaxed) {
                        return Err(AppError::Failed("cancelled".into()));
                    }
                    let sha = sha.map(checksum::Sha256::finish);
                    return Ok((n, t.elapsed().as_secs_f64(), cpu.seconds(), sha));
                }
            };
            let (file, mut out) = transit_multifd::output::temp_writer(&target, mode)
                .map_err(|e| AppError::context(e.to_string(), e))?;
            let mut sink = FileSink {
                file,
                len: 0,
                name: target.display().to_string(),
            };
            let n = checksum::through(&mut sink, sha.as_mut(), |s| copy_input(input, s, &c2))?;
            sink.finish()?;
            if cancelled.load(Ordering::Relaxed) {
                return Err(AppError::Failed("cancelled".into()));
            }
            out.persist().map_err(|e| {
                AppError::context(format!("rename into {}: {e}", target.display()), e)
            })?;
            let sha = sha.map(checksum::Sha256::finish);
            Ok((n, t.elapsed().as_secs_f64(), cpu.seconds(), sha))
        },
    )?;
    drop(_live);
    let mut summary = Summary::new(
        RunInfo {
            role: "send",
            uri: plan.uri.clone(),
            peer: None,
            mode: "raw",
            passes: 1,
            page_size: 0,
            image_bytes: bytes,
            verified: false,
            file: Some(path.display().to_string()),
        },
        &raw_stats(bytes, secs, cpu),
        &clock,
    );
    summary.sha256 = sha;
    finish_report(&summary, args.common.json, false, verbosity(&args.common));
    Ok(())
}

/// End a raw send cleanly ([`transit_multifd::raw::end`]): a framed
/// receiver's refusal, read before closing, fails the send.
fn end_raw(ch: &mut dyn Channel) -> Result<(), AppError> {
    transit_multifd::raw::end(ch, Duration::from_secs(5)).map_err(raw_failed)
}

/// The error of a raw send that failed, or that a framed receiver refused.
fn raw_failed(e: RawError) -> AppError {
    match e {
        RawError::Framed { said } => AppError::Failed(format!(
            "the receiver speaks transit's framed protocol: drop --raw, or use it on both ends (it said: {})",
            one_line(said.as_deref().unwrap_or("nothing"))
        )),
        RawError::Channel(e) => AppError::Failed(format!("raw channel: {e}")),
    }
}

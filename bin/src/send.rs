//! `transit send`: connect, run a multifd session (or a raw copy), report.
//!
//! Phases on the [`Runtime`]: prepare the payload (generate or map the
//! image, open the stream) on a worker; connect the main channel and every
//! page channel in parallel, one connect task each; run the session on a
//! worker (multifd's own threads below it) while timers drive the progress
//! bar and the JSON intervals; print the summary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use transit_channel::{Channel, Shutdown, ShutdownHandle, SocketAddress, SocketChannel};
use transit_multifd::{wire, AbortHandle, ChannelStats, Payload, SendConfig, Sender, Stats};

use crate::cli::SendArgs;
use crate::dirty::dirty_image;
use crate::endpoint::Endpoint;
use crate::error::AppError;
use crate::output::{check_target, TempOutput};
use crate::payload::{self, copy_input, ChannelSink, FileSink, Input};
use crate::report::{
    emit_json, CpuClock, Live, LiveOptions, Probe, ProgressSlot, RunInfo, Summary,
};
use crate::runtime::{Runtime, Work};

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
        check_target(p).map_err(AppError::Usage)?;
    }
    let page_size = match args.page_size {
        None => wire::DEFAULT_PAGE_SIZE,
        Some(p) => {
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
        }
    };
    let packet_payload = match args.packet_size {
        None => crate::DEFAULT_PACKET_PAYLOAD,
        Some(p) => {
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
        }
    };
    // Images need whole pages per packet.
    let packet_payload = if args.ram.is_some() || args.input.as_deref() != Some("-".as_ref()) {
        (packet_payload / page_size).max(1) * page_size
    } else {
        packet_payload
    };
    check_interval(c.json_interval)?;
    let timeout = check_timeout(c.timeout.unwrap_or(DEFAULT_TIMEOUT))?;
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
        },
    })
}

/// Validate `--json-interval`.
pub fn check_interval(v: Option<f64>) -> Result<(), AppError> {
    match v {
        Some(s) if !(s.is_finite() && s > 0.0) => Err(usage(format!(
            "--json-interval {s}: expected a positive number of seconds"
        ))),
        _ => Ok(()),
    }
}

/// Validate `--timeout`.
pub fn check_timeout(s: f64) -> Result<Duration, AppError> {
    if !(s.is_finite() && s > 0.0 && s < 1e9) {
        return Err(usage(format!(
            "--timeout {s}: expected a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Run `transit send`.
pub fn run(args: SendArgs) -> Result<(), AppError> {
    let clock = CpuClock::start();
    let plan = plan(&args)?;
    let rt = Runtime::new()?;

    // Phase 1: the payload (generation is not part of the transfer time).
    let ps = plan.config.page_size;
    let (ram, input_path, zr, seed, comp) = (
        args.ram,
        args.input.clone(),
        args.zero_ratio,
        args.seed,
        args.compressible,
    );
    let map = !plan.raw;
    let input = rt.run_task(
        "prepare",
        || {},
        move || {
            match (ram, input_path) {
                (Some(size), _) => payload::generate(size, ps, zr, seed, comp),
                (None, Some(p)) => payload::open(&p, map),
                (None, None) => Err("nothing to send".into()),
            }
            .map_err(AppError::Failed)
        },
    )?;
    let input_file = match &input {
        Input::Image { file, .. } => file.clone(),
        Input::Stream { name, .. } if name != "stdin" => Some(PathBuf::from(name)),
        Input::Stream { .. } => None,
    };

    match plan.endpoint.clone() {
        Endpoint::File(path) => send_to_file(&rt, &plan, &args, input, path, clock),
        Endpoint::Socket(addr) if plan.raw => send_raw(&rt, &plan, &args, input, addr, clock),
        Endpoint::Socket(addr) => send_multifd(&rt, &plan, &args, input, addr, input_file, clock),
    }
}

fn connect(addr: &SocketAddress, which: &str) -> Result<Box<dyn Channel>, AppError> {
    let mut ch = SocketChannel::connect_sync(addr)
        .map_err(|e| AppError::Failed(format!("{which}: connect to {addr}: {e}")))?;
    // Small records (sync, end, verdict) must not wait for Nagle.
    let _ = ch.set_delay(false);
    Ok(Box::new(ch))
}

fn send_multifd(
    rt: &Runtime,
    plan: &Plan,
    args: &SendArgs,
    input: Input,
    addr: SocketAddress,
    input_file: Option<PathBuf>,
    clock: CpuClock,
) -> Result<(), AppError> {
    // Phase 2: main channel + N page channels, connected in parallel.
    let n = plan.channels;
    let works: Vec<(String, Work<Box<dyn Channel>>)> = (0..=n)
        .map(|i| {
            let addr = addr.clone();
            let which = if i == 0 {
                "main channel".to_owned()
            } else {
                format!("page channel {}", i - 1)
            };
            let name = if i == 0 {
                "connect-main".to_owned()
            } else {
                format!("connect-{}", i - 1)
            };
            let work: Work<Box<dyn Channel>> = Box::new(move || connect(&addr, &which));
            (name, work)
        })
        .collect();
    let mut chans = rt.run_tasks(works, || {})?;
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
            verbose: args.common.verbose > 0,
            json_interval: args.common.json_interval,
            json_to_stderr: false,
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
    let config = plan.config.clone();
    let (passes, ratio, seed) = (plan.passes, args.dirty_ratio, args.seed);
    let work_slot = slot.clone();
    let work_abort = abort.clone();
    let stats = rt.run_task("session", on_cancel, move || {
        let (src_payload, mut reader) = match input {
            Input::Image { image, .. } => (Payload::Image(image), None),
            Input::Stream { reader, .. } => (Payload::Stream, Some(reader)),
        };
        let mut tx = Sender::new(config, src_payload, main, chans)?;
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
        Ok(tx.finish()?)
    })?;
    drop(_live);
    let stream_len = stats.stream_len;
    let summary = Summary::new(
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
    finish_report(&summary, args.common.json, false);
    Ok(())
}

/// Print the summary: JSON on stdout (or stderr), else a human line on
/// stderr.
pub fn finish_report(summary: &Summary, json: bool, json_to_stderr: bool) {
    if json {
        emit_json(summary, json_to_stderr);
    } else {
        eprintln!("{}", summary.human());
    }
}

/// Statistics of a plain copy (one channel, no pages).
pub fn raw_stats(bytes: u64, seconds: f64) -> Stats {
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
        channels: vec![ChannelStats {
            id: 0,
            bytes,
            wire_bytes: bytes,
            pages: 0,
            zero_pages: 0,
            packets: 0,
            busy_seconds: seconds,
        }],
    }
}

fn send_raw(
    rt: &Runtime,
    plan: &Plan,
    args: &SendArgs,
    input: Input,
    addr: SocketAddress,
    clock: CpuClock,
) -> Result<(), AppError> {
    let a = addr.clone();
    let ch = rt.run_task(
        "connect",
        || {},
        move || {
            if let SocketAddress::Fd(_) = a {
                let ch = SocketChannel::from_address(&a)
                    .map_err(|e| AppError::Failed(format!("raw channel: {e}")))?;
                return Ok(Box::new(ch) as Box<dyn Channel>);
            }
            connect(&a, "raw channel")
        },
    )?;
    let peer = ch.peer_address().map(|a| a.to_string());
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
            verbose: args.common.verbose > 0,
            json_interval: args.common.json_interval,
            json_to_stderr: false,
        },
    );
    let c2 = count.clone();
    let (bytes, secs) = rt.run_task(
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
            let n = copy_input(input, &mut ChannelSink(ch.as_mut()), &c2)
                .map_err(|e| AppError::Failed(format!("raw channel ({}): {e}", ch.name())))?;
            let _ = ch.shutdown(Shutdown::Write);
            let _ = ch.close();
            Ok((n, t.elapsed().as_secs_f64()))
        },
    )?;
    drop(_live);
    let summary = Summary::new(
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
        &raw_stats(bytes, secs),
        &clock,
    );
    finish_report(&summary, args.common.json, false);
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
    let target = path.clone();
    let _live = Live::install(
        rt.ctx(),
        Probe::Raw(count.clone()),
        LiveOptions {
            role: "send",
            total: Arc::new(AtomicU64::new(0)),
            verbose: false,
            json_interval: args.common.json_interval,
            json_to_stderr: false,
        },
    );
    let (bytes, secs) = rt.run_task(
        "file-send",
        move || flag.store(true, Ordering::Relaxed),
        move || {
            let t = std::time::Instant::now();
            let out = TempOutput::create(&target)
                .map_err(|e| AppError::Failed(format!("create {}: {e}", target.display())))?;
            let file = out.writer().map_err(|e| {
                AppError::Failed(format!("open {}: {e}", out.temp_path().display()))
            })?;
            let mut sink = FileSink {
                file,
                len: 0,
                name: target.display().to_string(),
            };
            let n = copy_input(input, &mut sink, &c2).map_err(AppError::Failed)?;
            sink.finish().map_err(AppError::Failed)?;
            if cancelled.load(Ordering::Relaxed) {
                return Err(AppError::Failed("cancelled".into()));
            }
            out.persist()
                .map_err(|e| AppError::Failed(format!("rename into {}: {e}", target.display())))?;
            Ok((n, t.elapsed().as_secs_f64()))
        },
    )?;
    drop(_live);
    let summary = Summary::new(
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
        &raw_stats(bytes, secs),
        &clock,
    );
    finish_report(&summary, args.common.json, false);
    Ok(())
}

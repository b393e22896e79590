//! `transit send`: check the command line, choose the payload, run
//! [`transit_transfer::send`], report.
//!
//! Phases on the [`Runtime`]: prepare the payload (generate or map the
//! image, open the stream) on a worker; then the library connects and
//! runs the session (or the plain copy) while [`Show`]'s timers drive the
//! progress bar and the JSON intervals; print the summary.

use std::path::Path;
use std::time::Duration;

use transit_channel::main_loop::runtime::Runtime;
use transit_channel::SocketAddress;
use transit_endpoint::connect as transport;
use transit_endpoint::{Endpoint, TransportOpts};
use transit_multifd::compress::Compress;
use transit_multifd::output::resolve;
use transit_multifd::{wire, SendConfig};
use transit_transfer::{payload, SendOptions};

use crate::cli::SendArgs;
use crate::error::AppError;
use crate::report::LiveOptions;
use crate::show::{finish_report, progress, summary, verbosity, Show};
use transit_transfer::report::CpuClock;

/// Default connect and handshake timeout of `send`.
pub const DEFAULT_TIMEOUT: f64 = 30.0;

fn usage(m: impl Into<String>) -> AppError {
    AppError::Usage(m.into())
}

/// The checked options of a send.
fn plan(args: &SendArgs) -> Result<SendOptions, AppError> {
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
    Ok(SendOptions {
        endpoint,
        transport,
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
            // The library sets it from `reconnect`.
            reconnect: None,
        },
        channels,
        raw,
        passes: args.passes,
        dirty_ratio: args.dirty_ratio,
        seed: args.seed,
        checksum: c.checksum.is_some(),
        reconnect: c.reconnect_window(),
        mode: c.mode,
    })
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
/// go on when that cannot be done (nothing was `done`).
pub(crate) fn roll_back_interrupted(path: &Path, done: &'static str) -> Result<(), AppError> {
    if let Some(r) = transit_transfer::send::roll_back_interrupted(path, done)? {
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
    }
    Ok(())
}

/// Run `transit send`.
pub fn run(args: SendArgs) -> Result<(), AppError> {
    let clock = CpuClock::start();
    crate::report::set_quiet(args.common.quiet);
    let opts = plan(&args)?;
    let rt = Runtime::new().map_err(|e| AppError::context(format!("main loop: {e}"), e))?;

    // Phase 1: the payload (generation is not part of the transfer time).
    // A file a killed in-place receiver left mixed is rolled back before
    // it is read: never send what is neither the old nor the new file.
    if let Some(p) = args.input.as_deref().filter(|p| p.as_os_str() != "-") {
        roll_back_interrupted(p, "sent")?;
    }
    let (ps, map) = (opts.config.page_size, !opts.raw);
    let (ram, path, zr, seed, comp) = (
        args.ram,
        args.input.clone().unwrap_or_default(),
        args.zero_ratio,
        args.seed,
        args.compressible,
    );
    // `plan` made sure there is one of --ram and --input.
    let input = rt.run_task(
        "prepare",
        || {},
        move || match ram {
            Some(size) => payload::generate(size, ps, zr, seed, comp),
            None => payload::open(&path, map),
        },
    )?;
    let file = match &opts.endpoint {
        Endpoint::File(p) => Some(p.clone()),
        _ if opts.raw => args.input.clone(),
        _ => input.file(),
    };

    // Phase 2: the transfer.
    let c = &args.common;
    let mut show = Show::new(LiveOptions {
        role: "send",
        total: Default::default(),
        progress: progress(c),
        verbose: c.verbose > 0 && !matches!(opts.endpoint, Endpoint::File(_)),
        json_interval: c.json_interval,
        json_to_stderr: false,
        cap: args.max_bandwidth,
    });
    let exec = matches!(opts.endpoint, Endpoint::Exec(_)) && !opts.raw;
    show.exec_note = (exec && !c.quiet).then(|| args.uri.clone());
    let out = transit_transfer::send::send(&rt, &opts, input, &mut show)?;
    let file = file.map(|p| p.display().to_string());
    let mut summary = summary("send", &args.uri, &out, file, &clock);
    summary.max_bandwidth_bytes_per_second = args.max_bandwidth;
    summary.compress = match args.compress {
        Compress::Off => None,
        Compress::Zstd { level } => Some(format!("zstd:{level}")),
        Compress::Auto { level } => Some(format!("auto:{level}")),
    };
    finish_report(&summary, c.json, false, verbosity(c));
    Ok(())
}

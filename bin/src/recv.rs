//! `transit recv`: check the command line, run
//! [`transit_transfer::receive`], report.
//!
//! The library listens (or takes the one stream of `--raw`, `file:`,
//! `exec:`, `stdio:`), assembles the session, refuses strangers (warnings
//! on stderr, see [`warn`]) and puts the output in place, while [`Show`]'s
//! timers drive the progress bar and the JSON intervals; then the summary.

use std::sync::Arc;
use std::time::Duration;

use transit_channel::main_loop::runtime::Runtime;
use transit_endpoint::connect as transport;
use transit_endpoint::{Endpoint, TransportOpts};
use transit_multifd::output::Output;
use transit_multifd::wire;
use transit_transfer::ReceiveOptions;

use crate::cli::RecvArgs;
use crate::error::{one_line, AppError};
use crate::report::{LiveOptions, Verbosity};
use crate::send::{check_interval, check_timeout, check_tls_uri, DEFAULT_TIMEOUT};
use crate::show::{finish_report, progress, summary, verbosity, Show};
use transit_transfer::report::CpuClock;

fn usage(m: impl Into<String>) -> AppError {
    AppError::Usage(m.into())
}

/// A warning on stderr (not with `-q`): a rejected connection, a stranger.
pub(crate) fn warn(msg: &str) {
    if crate::report::is_quiet() {
        return;
    }
    eprintln!("transit: warning: {}", one_line(msg));
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
    // Summaries go to stderr when the data or the channel is on stdout.
    let to_stderr = matches!(output, Output::Stdout) || stdio;
    let opts = ReceiveOptions {
        uri: args.uri.clone(),
        endpoint,
        transport,
        output,
        mode: c.mode,
        raw: c.raw,
        channels: c.channels,
        wait_limit,
        idle: c.idle_timeout(),
        max_size: args.max_size,
        checksum: c.checksum.is_some(),
        delta: args.delta,
        inplace: args.inplace,
        resume: args.resume,
        reconnect: c.reconnect_window(),
        log: Arc::new(warn),
    };
    let rt = Runtime::new().map_err(|e| AppError::context(format!("main loop: {e}"), e))?;
    let mut show = Show::new(LiveOptions {
        role: "recv",
        total: Default::default(),
        progress: progress(c),
        verbose: verbosity(c) == Verbosity::Verbose,
        json_interval: c.json_interval,
        json_to_stderr: to_stderr,
        cap: None,
    });
    // A run of a sender's `exec:` that handed its channel over reports
    // nothing (the run with the main channel does).
    let Some(out) = transit_transfer::receive::receive(&rt, &opts, &mut show)? else {
        return Ok(());
    };
    let mut summary = summary("recv", &args.uri, &out, opts.output.describe(), &clock);
    summary.in_place = out.in_place;
    if out.compressed {
        summary.compress = Some("zstd".into());
    }
    finish_report(&summary, c.json, to_stderr, verbosity(c));
    Ok(())
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

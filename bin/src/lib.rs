//! The `transit` command line as a library: `transit send`, `transit recv`
//! and `transit bench` (the binary in `main.rs` only calls [`main_entry`]).
//!
//! Every command runs on a transit main loop (see the private `runtime`
//! module): blocking work (payload preparation, connects, the multifd
//! session) runs on worker threads as Tasks whose completion comes back to
//! the loop, where timers drive the progress display and signals cancel.
//! The user guide is `docs/cli.md`.
//!
//! Public modules are the pieces tests and tools reuse: [`cli`] (argument
//! definitions and parsers), [`endpoint`] (URI parsing), [`dirty`] (the
//! dirty-page pattern of `--passes`), [`pipe`] (the in-process pipe of the
//! `buffer` bench transport), [`transport`] (the layer stack: socket or
//! command, TLS, websocket), [`join`] (how the N+1 runs of an `exec:`
//! command find each other) and [`error`] (exit codes).

mod admit;
pub mod bench;
pub mod cli;
pub mod dirty;
pub mod endpoint;
pub mod error;
mod idle;
pub mod join;
mod manual;
mod output;
mod payload;
pub mod pipe;
mod recv;
mod report;
mod room;
mod runtime;
mod send;
pub mod transport;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::error::{AppError, EXIT_OK};

/// Payload bytes per page packet unless `--packet-size` says otherwise
/// (chosen by measurement on loopback; see docs/benchmarks.md).
pub const DEFAULT_PACKET_PAYLOAD: u32 = transit_multifd::wire::DEFAULT_PACKET_PAYLOAD;

/// Parse the command line, run the command, print the error if any, and
/// return the exit status (0, 1 failure, 2 usage, 130 cancelled).
pub fn main_entry() -> i32 {
    report::mark_process_start();
    tune_malloc();
    let mut cmd = command();
    let cli = match cmd
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            // Help and version print to stdout and exit 0; errors exit 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    // With --json a failure is a JSON object too, where the summary would
    // have gone (stderr when the data goes to stdout).
    let json = match &cli.command {
        Command::Send(a) => a
            .common
            .json
            .then_some(("send", a.uri.starts_with("stdio:"))),
        Command::Recv(a) => a.common.json.then_some((
            "recv",
            a.uri.starts_with("stdio:") || a.output.as_deref() == Some("-".as_ref()),
        )),
        Command::Bench(a) => a.json.then_some(("bench", false)),
        Command::Completions(_) | Command::Man => None,
    };
    let result = match cli.command {
        Command::Send(a) => send::run(a),
        Command::Recv(a) => recv::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Completions(a) => manual::completions(a.shell, command(), &mut std::io::stdout()),
        Command::Man => manual::man(command(), &mut std::io::stdout()),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            report_error(&e, json);
            e.exit_code()
        }
    }
}

/// The command line: the clap definitions of [`cli`] with the version line
/// of this build ([`version`]).
pub fn command() -> clap::Command {
    // clap keeps a `&'static str`; this runs once per process.
    let version: &'static str = Box::leak(version().into_boxed_str());
    Cli::command().version(version)
}

/// What `transit --version` says after the name: the version and, as
/// `socat -V` does, what this build has: the transports that are always
/// in (`+tls +ws`), then each optional cargo feature with `+` (built in)
/// or `-` (not): `0.1.0 (features: +tls +ws -rdma -tokio)`.
pub fn version() -> String {
    let mut v = format!("{} (features: +tls +ws", env!("CARGO_PKG_VERSION"));
    for (name, on) in transit_channel::OPTIONAL_FEATURES {
        v.push_str(if on { " +" } else { " -" });
        v.push_str(name);
    }
    v.push(')');
    v
}

/// The `--json` form of a failure (`"type": "error"`).
#[derive(serde::Serialize)]
struct ErrorReport {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    role: &'static str,
    /// `usage`, `failure` or `cancelled`.
    error: &'static str,
    message: String,
    exit_code: i32,
}

fn report_error(e: &AppError, json: Option<(&'static str, bool)>) {
    eprintln!("transit: error: {e}");
    if let Some((role, to_stderr)) = json {
        let report = ErrorReport {
            kind: "error",
            version: env!("CARGO_PKG_VERSION"),
            role,
            error: match e {
                AppError::Usage(_) => "usage",
                AppError::Failed(_) => "failure",
                AppError::Cancelled(_) => "cancelled",
            },
            message: e.to_string(),
            exit_code: e.exit_code(),
        };
        report::emit_json(&report, to_stderr);
    }
}

/// Keep freed memory in the process instead of handing it back to the
/// kernel at every free: TLS and websocket layers allocate and free
/// record-sized buffers at a high rate, and glibc's default (trim the heap
/// top above 128 KiB, mmap big blocks) turned each cycle into fresh page
/// faults: up to half of a TLS channel's throughput on this machine
/// (docs/benchmarks.md). The cost is at most the trim threshold of
/// resident memory kept per arena.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

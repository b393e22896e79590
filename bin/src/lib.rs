//! The `transit` command line as a library: `transit send`, `transit recv`
//! and `transit bench` (the binary in `main.rs` only calls [`main_entry`]).
//!
//! Every command runs on a transit main loop
//! (`transit_channel::main_loop::runtime::Runtime`): blocking work
//! (payload preparation, connects, the multifd session) runs on worker
//! threads as Tasks whose completion comes back to the loop, where timers
//! drive the progress display and signals cancel.
//! The user guide is `docs/cli.md`.
//!
//! Public modules are the pieces tests and tools reuse: [`cli`] (argument
//! definitions and parsers) and [`error`] (exit codes). Endpoints (URI
//! parsing) and the connection stacks (socket or command, TLS, websocket;
//! admission of a listener's connections; the joined runs of `exec:`) are
//! the library `transit-endpoint`; the sessions, the dirty-page pattern of
//! `--passes` and the default size bounds of a receiver are
//! `transit-multifd`; whole runs (the payload, connecting or listening, the
//! session or plain copy, the output put in place), a run's summary as
//! data, human units and the bench core are `transit-transfer`: `send` and
//! `recv` check their arguments, call it and report.

pub mod bench;
pub mod cli;
pub mod error;
mod manual;
mod recv;
mod report;
mod send;
mod show;
// How sizes, rates and seconds read (`crate::units` to the modules).
use transit_transfer::units;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::error::{AppError, EXIT_OK};

/// Payload bytes per page packet unless `--packet-size` says otherwise
/// (chosen by measurement on loopback; see docs/benchmarks.md).
pub const DEFAULT_PACKET_PAYLOAD: u32 = transit_multifd::wire::DEFAULT_PACKET_PAYLOAD;

/// Parse the command line, run the command, print the error if any, and
/// return the exit status (0, 1 failure, 2 usage, 130 cancelled).
pub fn main_entry() -> i32 {
    transit_transfer::report::mark_process_start();
    tune_malloc();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = command();
    let cli = match cmd
        .try_get_matches_from_mut(&args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => return report_clap_error(&e, &args),
    };
    // With --json a failure is a JSON object too, where the summary would
    // have gone (stderr when the data goes to stdout).
    let sub = match &cli.command {
        Command::Send(_) => "send",
        Command::Recv(_) => "recv",
        Command::Bench(_) => "bench",
        Command::Completions(_) => "completions",
        Command::Man => "man",
    };
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
            report_error(&e, Some(sub), json);
            e.exit_code()
        }
    }
}

/// A command line clap refused, in transit's style: `transit: error: ...`
/// on one line, a hint line naming the subcommand's help, and with
/// `--json` the error object; exit 2. Help and version (also help shown
/// for a missing subcommand) print as clap prints them.
fn report_clap_error(e: &clap::Error, args: &[std::ffi::OsString]) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return e.exit_code();
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let sub = args.get(1).filter(|a| {
        command()
            .get_subcommands()
            .any(|s| s.get_name() == a.as_str() && a.as_str() != "help")
    });
    let err = AppError::Usage(clap_message(&e.render().to_string()));
    report_error(
        &err,
        sub.map(String::as_str),
        json_of_args(sub.map(String::as_str), &args),
    );
    err.exit_code()
}

/// clap's rendered error as one line: the message without `error: `, its
/// notes and tips; not the usage and "For more information" lines (the
/// hint line says where help is). A list under a line ending in `:` is
/// joined with commas.
fn clap_message(rendered: &str) -> String {
    let mut out = String::new();
    let mut in_list = false;
    for line in rendered.lines() {
        let t = line.trim();
        if t.starts_with("Usage:") || t.starts_with("For more information") {
            break;
        }
        if t.is_empty() {
            in_list = false;
            continue;
        }
        let t = t.strip_prefix("error: ").unwrap_or(t);
        let t = t
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(t);
        if out.is_empty() {
        } else if out.ends_with(':') {
            out.push(' ');
            in_list = true;
        } else if in_list {
            out.push_str(", ");
        } else {
            out.push_str("; ");
        }
        out.push_str(t);
    }
    out
}

/// `--json` on a command line clap refused: the role and whether the
/// object goes to stderr (the data would have gone to stdout), read from
/// the words themselves.
fn json_of_args(sub: Option<&str>, args: &[String]) -> Option<(&'static str, bool)> {
    let role = ["send", "recv", "bench"]
        .into_iter()
        .find(|r| sub == Some(*r))?;
    let words: Vec<&str> = args[2..]
        .iter()
        .map(String::as_str)
        .take_while(|a| *a != "--")
        .collect();
    if !words.contains(&"--json") {
        return None;
    }
    let stdio = words.iter().any(|w| w.starts_with("stdio:"));
    let output_stdout = role == "recv"
        && (words
            .windows(2)
            .any(|w| matches!(w[0], "-o" | "--output") && w[1] == "-")
            || words.iter().any(|w| matches!(*w, "--output=-" | "-o-")));
    Some((role, stdio || output_stdout))
}

/// The command line: the clap definitions of [`cli`] with the version line
/// of this build ([`version`]).
pub fn command() -> clap::Command {
    // clap keeps a `&'static str`; this runs at most a few times per process.
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

/// Print a failure: `transit: error: MESSAGE` on stderr; for a usage
/// error a hint line, `transit: try 'transit SUBCOMMAND --help'`; with
/// `--json` (role, object to stderr) the error object.
fn report_error(e: &AppError, sub: Option<&str>, json: Option<(&'static str, bool)>) {
    eprintln!("transit: error: {e}");
    if let AppError::Usage(_) = e {
        match sub {
            Some(s) => eprintln!("transit: try 'transit {s} --help'"),
            None => eprintln!("transit: try 'transit --help'"),
        }
    }
    if let Some((role, to_stderr)) = json {
        let report = ErrorReport {
            kind: "error",
            version: env!("CARGO_PKG_VERSION"),
            role,
            error: match e {
                AppError::Usage(_) => "usage",
                AppError::Failed(_) | AppError::Error { .. } => "failure",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: unexpected argument '--x' found\n\n  tip: use '-- --x'\n\n\
                        Usage: transit send [OPTIONS] <URI>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_message(rendered),
            "unexpected argument '--x' found; tip: use '-- --x'"
        );
        let rendered = "error: the following required arguments were not provided:\n  <URI>\n  \
                        --tls-creds <DIR>\n\nUsage: transit recv <URI>\n";
        assert_eq!(
            clap_message(rendered),
            "the following required arguments were not provided: <URI>, --tls-creds <DIR>"
        );
    }

    #[test]
    fn json_errors_go_where_the_summary_would_have() {
        let args = |s: &str| -> Vec<String> { s.split(' ').map(str::to_owned).collect() };
        assert_eq!(
            json_of_args(Some("send"), &args("transit send x --json --bogus")),
            Some(("send", false))
        );
        assert_eq!(
            json_of_args(Some("recv"), &args("transit recv x -o - --json")),
            Some(("recv", true))
        );
        assert_eq!(
            json_of_args(Some("recv"), &args("transit recv stdio: --json")),
            Some(("recv", true))
        );
        assert_eq!(
            json_of_args(Some("send"), &args("transit send x --bogus")),
            None
        );
        assert_eq!(
            json_of_args(Some("send"), &args("transit send x -- --json")),
            None
        );
        assert_eq!(json_of_args(Some("man"), &args("transit man --json")), None);
    }
}

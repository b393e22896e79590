//! What `send` and `recv` show of a `transit_transfer` run: the live
//! display while the data moves ([`Show`], the library's `Observer`: the
//! progress bar and JSON intervals of [`crate::report::Live`], the
//! listening line, the note of a silent framed `exec:` command) and the
//! summary after it ([`summary`], [`finish_report`]).

use std::time::Duration;

use transit_channel::{ControlFlow, MainContext, SourceId};
use transit_transfer::send::EXEC_EXPECTS;
use transit_transfer::{Observer, Outcome, Watch};

use crate::cli::CommonArgs;
use crate::report::{emit_json, Live, LiveOptions, Probe, Verbosity};
use transit_transfer::report::{CpuClock, RunInfo, Summary};

/// How long a framed `exec:` handshake may stay silent before the sender
/// says what it waits for.
const EXEC_NOTE_AFTER: Duration = Duration::from_secs(3);

/// The live display of a run.
pub struct Show {
    /// How it looks (the bar's length is the watch's total).
    live: LiveOptions,
    /// A framed `exec:` send's URI (not with `-q`): a command that is
    /// not a transit receiver may take the handshake in silence (`cat >
    /// FILE`), so say what is awaited long before the handshake timeout
    /// ends it (a note, not an error).
    pub exec_note: Option<String>,
    shown: Option<Live>,
    note: Option<SourceId>,
}

impl Show {
    /// A display as `live` says.
    pub fn new(live: LiveOptions) -> Show {
        Show {
            live,
            exec_note: None,
            shown: None,
            note: None,
        }
    }
}

impl Observer for Show {
    fn listening(&mut self, uris: &[String]) {
        for uri in uris {
            eprintln!("transit: listening on {uri}");
        }
    }

    fn started(&mut self, ctx: &MainContext, watch: &Watch) {
        let (probe, total) = match watch {
            Watch::Session {
                progress,
                unit,
                total,
            } => (
                Probe::Session {
                    slot: progress.clone(),
                    unit: unit.clone(),
                },
                total.clone(),
            ),
            Watch::Copy { copied, total } => (Probe::Raw(copied.clone()), total.clone()),
        };
        let opts = LiveOptions {
            total,
            ..self.live.clone()
        };
        self.shown = Some(Live::install(ctx, probe, opts));
        if let Some(cmd) = self.exec_note.clone() {
            let answered = watch.clone();
            self.note = Some(ctx.timeout_add(EXEC_NOTE_AFTER, move || {
                if !answered.started() {
                    eprintln!(
                        "transit: no handshake answer yet from {cmd} after {} s: {EXEC_EXPECTS}",
                        EXEC_NOTE_AFTER.as_secs()
                    );
                }
                ControlFlow::Remove
            }));
        }
    }

    fn stopped(&mut self, ctx: &MainContext) {
        self.shown = None;
        if let Some(id) = self.note.take() {
            ctx.remove(id);
        }
    }
}

/// The summary of a run of `role` on `uri` that did `out`; `file` is the
/// input or output file it names.
pub fn summary(
    role: &'static str,
    uri: &str,
    out: &Outcome,
    file: Option<String>,
    clock: &CpuClock,
) -> Summary {
    let info = RunInfo {
        role,
        uri: uri.to_owned(),
        peer: out.peer.clone(),
        mode: out.mode.as_str(),
        passes: out.passes,
        page_size: out.page_size,
        image_bytes: out.image_bytes,
        verified: out.verified,
        file,
    };
    let mut summary = Summary::new(info, &out.stats, clock);
    summary.sha256 = out.sha256.clone();
    summary
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

//! What a run tells its user: the live progress bar (stderr, only on a
//! terminal), JSON interval objects, and the final summary (one JSON object
//! with `--json`, else one human line on stderr, and with `-v` a line per
//! channel). The objects and the human line are
//! [`transit_transfer::report`]'s (its JSON schema is docs/cli.md's); this
//! module decides when and where they are written.
//!
//! People read binary units with three significant digits (see
//! [`transit_transfer::units`]).
//!
//! The sender's bar counts what it handed to its channels (the kernel's
//! socket buffers, a TLS or websocket layer): the protocol has no
//! acknowledgement before the verdict, so through a slow relay the sender
//! runs ahead of the receiver by what the buffers on the way hold. It says
//! `sent`, the receiver's `received`.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use transit_channel::{ControlFlow, MainContext, SourceId};
use transit_multifd::Progress;
use transit_transfer::report::{Interval, Snapshot};

/// Where live counters come from: a multifd session's [`Progress`] once
/// the session exists, or the byte counter of a raw transfer.
#[derive(Clone)]
pub enum Probe {
    /// A multifd session; `unit` is the page size (image) or chunk size
    /// (stream) that a zero page or chunk stands for.
    Session {
        /// Filled in by the worker once the session runs.
        slot: ProgressSlot,
        /// Bytes per zero page or zero chunk (0 until known).
        unit: Arc<AtomicU64>,
    },
    /// A raw transfer.
    Raw(Arc<AtomicU64>),
}

/// The progress of a session that may not exist yet.
pub type ProgressSlot = Arc<Mutex<Option<Arc<Progress>>>>;

impl Probe {
    /// Counters now (`None` before the session started).
    pub fn read(&self) -> Option<Snapshot> {
        match self {
            Probe::Session { slot, unit } => {
                let p = slot.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
                let s = p.snapshot();
                Some(Snapshot {
                    covered: s.bytes + (s.zero_pages + s.kept_pages) * unit.load(Ordering::Relaxed),
                    bytes: s.bytes,
                    zero_pages: s.zero_pages,
                    channels: s.channels.iter().map(|c| c.bytes).collect(),
                })
            }
            Probe::Raw(n) => {
                let b = n.load(Ordering::Relaxed);
                Some(Snapshot {
                    covered: b,
                    bytes: b,
                    zero_pages: 0,
                    channels: vec![b],
                })
            }
        }
    }
}

/// How a command wants its live output.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// `send` or `recv`.
    pub role: &'static str,
    /// Expected covered bytes (the bar's length; 0 while unknown, which
    /// draws a spinner). Read when the bar first appears.
    pub total: Arc<AtomicU64>,
    /// Draw the progress bar (on a terminal): off with `-q` and
    /// `--no-progress`.
    pub progress: bool,
    /// Per-channel rates in the bar.
    pub verbose: bool,
    /// Seconds between JSON interval objects.
    pub json_interval: Option<f64>,
    /// JSON goes to stderr (the data goes to stdout).
    pub json_to_stderr: bool,
    /// `send --max-bandwidth`, shown next to the rate.
    pub cap: Option<u64>,
}

/// Live output sources on a context; removed (and the bar cleared) on drop.
pub struct Live {
    ctx: MainContext,
    sources: Vec<SourceId>,
    bar: Rc<RefCell<Option<ProgressBar>>>,
}

/// The bar's text is written here (see [`Meter`]); indicatif draws the
/// bar or spinner and the prefix.
fn new_bar(role: &'static str, total: u64) -> ProgressBar {
    let (len, template) = if total > 0 {
        (Some(total), "{prefix} [{bar:30}] {msg}")
    } else {
        (None, "{prefix} {spinner} {msg}")
    };
    // Hidden until its first text is in (see `Live::install`).
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    // The sender counts what it handed to its channels, not what arrived:
    // nothing acknowledges data before the verdict (see the module doc).
    bar.set_prefix(if role == "send" { "sent" } else { "received" });
    bar
}

/// How long a window the bar's rates are measured over.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// The bar's figures: rates over the last [`RATE_WINDOW`] of samples.
#[derive(Debug, Default)]
struct Meter {
    /// (when, covered bytes, payload bytes per channel), oldest first.
    samples: std::collections::VecDeque<(Instant, u64, Vec<u64>)>,
    /// When the bar started.
    start: Option<Instant>,
    /// The bandwidth cap, shown after the rate.
    cap: Option<u64>,
}

impl Meter {
    /// Take a sample and write the bar's text: `12.0 MiB of 1.00 GiB,
    /// 440 MiB/s, ETA 2s` (`total` known) or `12.0 MiB, 440 MiB/s, 3s`
    /// (spinner). There is no rate, and the ETA is `--`, until two samples
    /// are in; an ETA also needs a rate above zero.
    fn text(&mut self, now: Instant, s: &Snapshot, total: u64, verbose: bool) -> String {
        let start = *self.start.get_or_insert(now);
        while self.samples.len() > 1 && now.duration_since(self.samples[0].0) > RATE_WINDOW {
            self.samples.pop_front();
        }
        let window = self.samples.front().map(|(t, c, ch)| {
            let dt = now.duration_since(*t).as_secs_f64().max(1e-9);
            (dt, *c, ch.clone())
        });
        self.samples.push_back((now, s.covered, s.channels.clone()));
        let rate = window
            .as_ref()
            .map(|(dt, c, _)| s.covered.saturating_sub(*c) as f64 / dt);
        let mut msg = transit_transfer::units::size(s.covered);
        if total > 0 {
            msg.push_str(" of ");
            msg.push_str(&transit_transfer::units::size(total));
        }
        if let Some(r) = rate {
            msg.push_str(", ");
            msg.push_str(&transit_transfer::units::rate(r));
        }
        if let Some(c) = self.cap {
            msg.push_str(&format!(
                " (cap {})",
                transit_transfer::units::rate(c as f64)
            ));
        }
        if total > 0 {
            let left = total.saturating_sub(s.covered) as f64;
            let eta = rate.filter(|r| *r > 0.0).map(|r| left / r);
            msg.push_str(", ETA ");
            msg.push_str(&transit_transfer::units::eta(eta));
        } else {
            let secs = now.duration_since(start).as_secs();
            msg.push_str(&format!(", {secs}s"));
        }
        if s.zero_pages > 0 {
            msg.push_str(&format!(", {} zero pages", s.zero_pages));
        }
        if let (true, Some((dt, _, prev))) = (verbose, &window) {
            for (i, (b, p)) in s.channels.iter().zip(prev).enumerate() {
                let r = b.saturating_sub(*p) as f64 / dt;
                msg.push_str(&format!(" | ch{i} {}", transit_transfer::units::rate(r)));
            }
        }
        msg
    }
}

impl Live {
    /// Install the progress bar timer (200 ms, only if stderr is a
    /// terminal and `opts.progress`) and the JSON interval timer.
    pub fn install(ctx: &MainContext, probe: Probe, opts: LiveOptions) -> Live {
        let mut sources = Vec::new();
        let bar: Rc<RefCell<Option<ProgressBar>>> = Rc::new(RefCell::new(None));
        if opts.progress && std::io::stderr().is_terminal() {
            let probe = probe.clone();
            let verbose = opts.verbose;
            let role = opts.role;
            let total = opts.total.clone();
            let slot = bar.clone();
            let mut meter = Meter {
                cap: opts.cap,
                ..Meter::default()
            };
            sources.push(ctx.timeout_add(Duration::from_millis(200), move || {
                let Some(s) = probe.read() else {
                    return ControlFlow::Continue;
                };
                let mut cell = slot.borrow_mut();
                let first = cell.is_none();
                let bar = cell.get_or_insert_with(|| new_bar(role, total.load(Ordering::Relaxed)));
                let len = bar.length().unwrap_or(0);
                bar.set_message(meter.text(Instant::now(), &s, len, verbose));
                bar.set_position(s.covered);
                if first {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.tick();
                }
                ControlFlow::Continue
            }));
        }
        if let Some(secs) = opts.json_interval.filter(|s| *s > 0.0) {
            let start = Instant::now();
            let mut prev_t = start;
            let mut prev = Snapshot::default();
            let role = opts.role;
            let to_stderr = opts.json_to_stderr;
            sources.push(ctx.timeout_add(Duration::from_secs_f64(secs), move || {
                let now = Instant::now();
                let s = probe.read().unwrap_or_default();
                let obj = Interval::between(
                    role,
                    now.duration_since(start).as_secs_f64(),
                    now.duration_since(prev_t).as_secs_f64(),
                    &prev,
                    &s,
                );
                emit_json(&obj, to_stderr);
                prev_t = now;
                prev = s;
                ControlFlow::Continue
            }));
        }
        Live {
            ctx: ctx.clone(),
            sources,
            bar,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for id in self.sources.drain(..) {
            self.ctx.remove(id);
        }
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

/// Print one JSON object on its own line (stdout, or stderr when the data
/// goes to stdout).
pub fn emit_json(value: &impl Serialize, to_stderr: bool) {
    let Ok(line) = serde_json::to_string(value) else {
        return;
    };
    if to_stderr {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{line}");
    } else {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    }
}

/// How much a command says on stderr besides errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// `-q`: errors only (and recv's listening line): no progress, no
    /// warnings, no human summary. JSON output is not affected.
    Quiet,
    /// The default: progress on a terminal, warnings, a summary line.
    Normal,
    /// `-v`: per-channel rates in the bar, per-channel lines in the summary.
    Verbose,
}

impl Verbosity {
    /// From `-q` and the count of `-v`.
    pub fn from_flags(quiet: bool, verbose: u8) -> Verbosity {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, _) => Verbosity::Verbose,
        }
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: silence warnings for the rest of the process (they come from deep
/// in the receiver's admission, where no options travel).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// True after [`set_quiet`]`(true)`.
pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_has_no_rate_and_no_eta_before_two_samples() {
        let mut m = Meter::default();
        let t = Instant::now();
        let snap = |covered: u64| Snapshot {
            covered,
            bytes: covered,
            zero_pages: 0,
            channels: vec![covered],
        };
        let first = m.text(t, &snap(0), 1 << 30, true);
        assert_eq!(first, "0 B of 1.00 GiB, ETA --");
        // Nothing moved: a rate of zero, still no ETA.
        let idle = m.text(t + Duration::from_millis(200), &snap(0), 1 << 30, false);
        assert_eq!(idle, "0 B of 1.00 GiB, 0 B/s, ETA --");
        let moving = m.text(
            t + Duration::from_millis(1200),
            &snap(512 << 20),
            1 << 30,
            true,
        );
        assert_eq!(
            moving,
            "512 MiB of 1.00 GiB, 427 MiB/s, ETA 2s | ch0 427 MiB/s"
        );
    }
}

//! What a run tells its user: the live progress bar (stderr, only on a
//! terminal), JSON interval objects, and the final summary (one JSON object
//! with `--json`, else one human line on stderr, and with `-v` a line per
//! channel).
//!
//! People read binary units with three significant digits (see
//! [`crate::units`]); JSON carries plain bytes per second in fields named
//! `*_bytes_per_second`. The *covered rate* counts every byte of the image
//! or stream the transfer covered (zero pages too), the *data rate* only the
//! payload bytes that crossed the channels.
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
use transit_multifd::{Progress, Stats};

/// Counters a monitor can read at any time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bytes of the image or stream covered so far (zero pages included).
    pub covered: u64,
    /// Payload bytes moved so far.
    pub bytes: u64,
    /// Zero pages (stream: zero chunks) so far.
    pub zero_pages: u64,
    /// Payload bytes per channel.
    pub channels: Vec<u64>,
}

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
        let mut msg = crate::units::size(s.covered);
        if total > 0 {
            msg.push_str(" of ");
            msg.push_str(&crate::units::size(total));
        }
        if let Some(r) = rate {
            msg.push_str(", ");
            msg.push_str(&crate::units::rate(r));
        }
        if let Some(c) = self.cap {
            msg.push_str(&format!(" (cap {})", crate::units::rate(c as f64)));
        }
        if total > 0 {
            let left = total.saturating_sub(s.covered) as f64;
            let eta = rate.filter(|r| *r > 0.0).map(|r| left / r);
            msg.push_str(", ETA ");
            msg.push_str(&crate::units::eta(eta));
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
                msg.push_str(&format!(" | ch{i} {}", crate::units::rate(r)));
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
                let dt = now.duration_since(prev_t).as_secs_f64().max(1e-9);
                let obj = Interval {
                    kind: "interval",
                    role,
                    t_seconds: now.duration_since(start).as_secs_f64(),
                    interval_seconds: dt,
                    covered_bytes: s.covered,
                    bytes: s.bytes,
                    zero_pages: s.zero_pages,
                    covered_bytes_per_second: s.covered.saturating_sub(prev.covered) as f64 / dt,
                    data_bytes_per_second: s.bytes.saturating_sub(prev.bytes) as f64 / dt,
                    per_channel: s
                        .channels
                        .iter()
                        .enumerate()
                        .map(|(i, b)| ChannelRate {
                            id: i as u32,
                            bytes: *b,
                            data_bytes_per_second: b
                                .saturating_sub(prev.channels.get(i).copied().unwrap_or(0))
                                as f64
                                / dt,
                        })
                        .collect(),
                };
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

#[derive(Serialize)]
struct ChannelRate {
    id: u32,
    bytes: u64,
    data_bytes_per_second: f64,
}

#[derive(Serialize)]
struct Interval {
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    t_seconds: f64,
    interval_seconds: f64,
    covered_bytes: u64,
    bytes: u64,
    zero_pages: u64,
    covered_bytes_per_second: f64,
    data_bytes_per_second: f64,
    per_channel: Vec<ChannelRate>,
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

/// CPU time of this process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cpu {
    /// User seconds.
    pub user_seconds: f64,
    /// System seconds.
    pub system_seconds: f64,
    /// (user + system) / wall time x 100; 200 = both cores of a 2-core machine.
    pub percent: f64,
}

/// `getrusage(RUSAGE_SELF)`: user seconds, system seconds, peak RSS bytes.
pub fn rusage() -> (f64, f64, u64) {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0, 0);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // getrusage's maxrss survives exec: a child of a large parent reports
    // the parent's size. The high-water mark of this process's own memory
    // (VmHWM) does not; it is the fallback only where /proc is missing.
    let peak = peak_rss().unwrap_or(ru.ru_maxrss.max(0) as u64 * 1024);
    (tv(ru.ru_utime), tv(ru.ru_stime), peak)
}

/// Peak resident set of this process since it started (`VmHWM`), bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU use between two points of a run.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    wall: Instant,
    user: f64,
    system: f64,
}

impl CpuClock {
    /// Start measuring now.
    pub fn start() -> CpuClock {
        let (user, system, _) = rusage();
        CpuClock {
            wall: Instant::now(),
            user,
            system,
        }
    }

    /// CPU used since `start`, and the wall seconds.
    pub fn stop(&self) -> (Cpu, f64) {
        let (u, s, _) = rusage();
        let wall = self.wall.elapsed().as_secs_f64();
        let user = (u - self.user).max(0.0);
        let system = (s - self.system).max(0.0);
        let percent = if wall > 0.0 {
            (user + system) / wall * 100.0
        } else {
            0.0
        };
        (
            Cpu {
                user_seconds: user,
                system_seconds: system,
                percent,
            },
            wall,
        )
    }
}

/// Figures of one page channel in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelFigures {
    /// Channel id.
    pub id: u32,
    /// Payload bytes.
    pub bytes: u64,
    /// Bytes on the wire.
    pub wire_bytes: u64,
    /// Normal pages (stream: chunks).
    pub pages: u64,
    /// Zero pages (stream: zero chunks).
    pub zero_pages: u64,
    /// Packets.
    pub packets: u64,
    /// Seconds the channel's thread was busy.
    pub busy_seconds: f64,
    /// CPU seconds (user + system) of the channel's thread.
    pub cpu_seconds: f64,
    /// Payload bytes per second over the data phase (`bytes / seconds` of
    /// the summary).
    pub data_bytes_per_second: f64,
}

/// The final summary of a run (iperf3-like).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Always `summary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// transit version.
    pub version: &'static str,
    /// `send` or `recv`.
    pub role: &'static str,
    /// The URI given on the command line.
    pub uri: String,
    /// The peer's address, when known.
    pub peer: Option<String>,
    /// `image`, `stream` or `raw`.
    pub mode: &'static str,
    /// Seconds of the whole command, from its start to the verdict and the
    /// output in place: what the user waited for.
    pub total_seconds: f64,
    /// `covered_bytes / total_seconds`, in bytes per second.
    pub total_bytes_per_second: f64,
    /// Page channels (1 for raw).
    pub channels: u32,
    /// Passes (image mode).
    pub passes: u32,
    /// Page size (image mode), 0 otherwise.
    pub page_size: u32,
    /// Payload bytes that crossed the channels (data moved).
    pub bytes: u64,
    /// Bytes on the page channels' wire (headers included).
    pub wire_bytes: u64,
    /// Image size, or the stream's length.
    pub image_bytes: u64,
    /// Bytes of image or stream covered (zero pages included; more than
    /// `image_bytes` with several passes).
    pub covered_bytes: u64,
    /// Normal pages (stream: data chunks).
    pub pages: u64,
    /// Zero pages (stream: zero chunks).
    pub zero_pages: u64,
    /// Packets.
    pub packets: u64,
    /// Sync barriers.
    pub syncs: u64,
    /// Seconds of the data phase (a component figure: set-up, handshake
    /// and putting the output in place are left out).
    pub seconds: f64,
    /// Seconds since the command's arguments were checked (connect,
    /// handshake, output included; `total_seconds` also counts start-up).
    pub wall_seconds: f64,
    /// `covered_bytes / seconds`, bytes per second (was `image_rate_gbps`).
    pub covered_bytes_per_second: f64,
    /// `bytes / seconds`, bytes per second (was `data_rate_gbps`).
    pub data_bytes_per_second: f64,
    /// Session digest, hex (`null` without verification or in raw mode).
    pub digest: Option<String>,
    /// True when the receiver's totals and digest matched the sender's.
    pub verified: bool,
    /// Per page channel.
    pub per_channel: Vec<ChannelFigures>,
    /// CPU time of this process.
    pub cpu: Cpu,
    /// Peak resident set size of this process.
    pub max_rss_bytes: u64,
    /// Where the data went (recv) or came from (send), if a file.
    pub file: Option<String>,
    /// SHA-256 of the payload, hex, with `--checksum sha256` (absent
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `send --max-bandwidth`, bytes per second (absent without a cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth_bytes_per_second: Option<u64>,
    /// Compression: send `zstd:LEVEL` or `auto:LEVEL`, recv `zstd` when the
    /// session allowed compressed packets (absent otherwise);
    /// `wire_bytes` against `bytes` says how much it saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<String>,
    /// Delta transfer (`recv --delta`): pages not sent because the
    /// receiver's older copy had them (absent when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub kept_pages: u64,
    /// Page channel connections lost and replaced (`--reconnect`); what
    /// they had not delivered went again (absent when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub reconnects: u64,
    /// `recv --delta --inplace`: the output file was updated where it lay,
    /// under an undo journal (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The parts of a summary that do not come from [`Stats`].
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// `send` or `recv`.
    pub role: &'static str,
    /// URI as given.
    pub uri: String,
    /// Peer address.
    pub peer: Option<String>,
    /// `image`, `stream` or `raw`.
    pub mode: &'static str,
    /// Passes.
    pub passes: u32,
    /// Page size (0 for streams).
    pub page_size: u32,
    /// Image size or stream length.
    pub image_bytes: u64,
    /// Verification on and passed.
    pub verified: bool,
    /// Input or output file.
    pub file: Option<String>,
}

static PROCESS_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Mark the start of the command (the first thing `main` does): the origin
/// of `total_seconds`.
pub fn mark_process_start() {
    PROCESS_START.get_or_init(Instant::now);
}

/// Seconds since [`mark_process_start`] (0 if it was never called).
pub fn since_process_start() -> f64 {
    PROCESS_START
        .get()
        .map_or(0.0, |t| t.elapsed().as_secs_f64())
}

impl Summary {
    /// Build the summary from a session's statistics.
    pub fn new(info: RunInfo, stats: &Stats, clock: &CpuClock) -> Summary {
        let (cpu, wall) = clock.stop();
        let (_, _, rss) = rusage();
        let seconds = stats.seconds.max(1e-9);
        let covered = if info.mode == "image" {
            let ps = u64::from(info.page_size);
            // The last page may be partial: cap one pass's worth at the size.
            // Kept pages (delta) are covered too: they are in place.
            ((stats.pages + stats.zero_pages + stats.kept_pages) * ps)
                .min(info.image_bytes * u64::from(info.passes.max(1)))
        } else {
            info.image_bytes
        };
        let total = since_process_start().max(wall).max(1e-9);
        Summary {
            kind: "summary",
            version: env!("CARGO_PKG_VERSION"),
            role: info.role,
            uri: info.uri,
            peer: info.peer,
            mode: info.mode,
            total_seconds: total,
            total_bytes_per_second: covered as f64 / total,
            channels: stats.channels.len().max(1) as u32,
            passes: info.passes,
            page_size: info.page_size,
            bytes: stats.bytes,
            wire_bytes: stats.wire_bytes,
            image_bytes: info.image_bytes,
            covered_bytes: covered,
            pages: stats.pages,
            zero_pages: stats.zero_pages,
            packets: stats.packets,
            syncs: stats.syncs,
            seconds: stats.seconds,
            wall_seconds: wall,
            covered_bytes_per_second: covered as f64 / seconds,
            data_bytes_per_second: stats.bytes as f64 / seconds,
            digest: (info.mode != "raw" && stats.digest != 0)
                .then(|| format!("{:016x}", stats.digest)),
            verified: info.verified,
            per_channel: stats
                .channels
                .iter()
                .map(|c| ChannelFigures {
                    id: c.id,
                    bytes: c.bytes,
                    wire_bytes: c.wire_bytes,
                    pages: c.pages,
                    zero_pages: c.zero_pages,
                    packets: c.packets,
                    busy_seconds: c.busy_seconds,
                    cpu_seconds: c.cpu_seconds,
                    data_bytes_per_second: c.bytes as f64 / seconds,
                })
                .collect(),
            cpu,
            max_rss_bytes: rss,
            file: info.file,
            sha256: None,
            max_bandwidth_bytes_per_second: None,
            compress: None,
            kept_pages: stats.kept_pages,
            reconnects: stats.reconnects,
            in_place: false,
        }
    }

    /// The human summary for stderr: one line, and with `verbose` one more
    /// per page channel. Streams are called streams (`stream 1.91 MiB/s`),
    /// images images; sizes, rates and seconds as [`crate::units`] writes
    /// them.
    pub fn human(&self, verbose: bool) -> String {
        use crate::units::{rate, seconds, size};
        let what = if self.role == "send" {
            "sent"
        } else {
            "received"
        };
        let mut s = format!(
            "transit: {what} {} {} in {}, {}, over {} channel{}; data phase {}: ",
            self.mode,
            size(self.image_bytes),
            seconds(self.total_seconds),
            rate(self.total_bytes_per_second),
            self.channels,
            if self.channels == 1 { "" } else { "s" },
            seconds(self.seconds),
        );
        if self.mode != "raw" {
            // What the session covered, zero pages (chunks) included.
            s.push_str(&format!(
                "{} {}, ",
                self.mode,
                rate(self.covered_bytes_per_second)
            ));
        }
        s.push_str(&format!(
            "data {} at {}",
            size(self.bytes),
            rate(self.data_bytes_per_second)
        ));
        if self.mode == "image" {
            s.push_str(&format!(", {} zero pages", self.zero_pages));
        }
        if self.kept_pages > 0 {
            s.push_str(&format!(
                ", {} pages kept (the receiver had them)",
                self.kept_pages
            ));
        }
        if self.in_place {
            s.push_str(", updated in place");
        }
        if self.reconnects > 0 {
            s.push_str(&format!(
                ", {} lost channel connection{} replaced",
                self.reconnects,
                if self.reconnects == 1 { "" } else { "s" }
            ));
        }
        if self.passes > 1 {
            s.push_str(&format!(", {} passes", self.passes));
        }
        if let (Some(c), true) = (&self.compress, self.wire_bytes > 0) {
            s.push_str(&format!(
                ", {c}: {} on the wire ({:.2}x smaller)",
                size(self.wire_bytes),
                self.bytes as f64 / self.wire_bytes as f64
            ));
        }
        if let Some(c) = self.max_bandwidth_bytes_per_second {
            s.push_str(&format!(", capped at {}", rate(c as f64)));
        }
        s.push_str(&format!(", CPU {:.0}%", self.cpu.percent));
        if self.verified {
            s.push_str(", verified");
        }
        if let Some(h) = &self.sha256 {
            s.push_str(&format!(", sha256 {h}"));
        }
        if verbose {
            let zero = match self.mode {
                "image" => "zero pages",
                "stream" => "zero chunks",
                _ => "",
            };
            for c in &self.per_channel {
                s.push_str(&format!(
                    "\ntransit:   channel {}: {} at {}, {} packets",
                    c.id,
                    size(c.bytes),
                    rate(c.data_bytes_per_second),
                    c.packets,
                ));
                if !zero.is_empty() {
                    s.push_str(&format!(", {} {zero}", c.zero_pages));
                }
                s.push_str(&format!(
                    ", busy {}, CPU {}",
                    seconds(c.busy_seconds),
                    seconds(c.cpu_seconds)
                ));
            }
        }
        s
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

    fn summary(mode: &'static str, seconds: f64, bytes: u64) -> Summary {
        let info = RunInfo {
            role: "recv",
            uri: "tcp:127.0.0.1:1".into(),
            peer: None,
            mode,
            passes: 1,
            page_size: if mode == "image" { 4096 } else { 0 },
            image_bytes: bytes,
            verified: true,
            file: None,
        };
        let mut stats = transit_transfer::send::raw_stats(bytes, seconds, 0.01);
        stats.pages = bytes / 4096;
        let mut s = Summary::new(info, &stats, &CpuClock::start());
        s.total_seconds = seconds;
        s.total_bytes_per_second = bytes as f64 / seconds;
        s
    }

    #[test]
    fn a_slow_stream_reads_in_mib_per_second_and_says_stream() {
        // 4 MiB in 2 s: the old line said "image 0.00 GB/s, data 4.00 MiB
        // at 0.00 GB/s".
        let line = summary("stream", 2.0, 4 << 20).human(false);
        assert!(
            line.contains("stream 4.00 MiB in 2.00 s, 2.00 MiB/s"),
            "{line}"
        );
        assert!(
            line.contains("stream 2.00 MiB/s, data 4.00 MiB at 2.00 MiB/s"),
            "{line}"
        );
        assert!(!line.contains("image"), "{line}");
        assert!(!line.contains("GB/s"), "{line}");
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn verbose_adds_a_line_per_channel() {
        let s = summary("image", 0.5, 1 << 30);
        let v = s.human(true);
        let lines: Vec<&str> = v.lines().collect();
        assert_eq!(lines.len(), 2, "{v}");
        assert!(
            lines[0].contains("image 1.00 GiB in 0.500 s, 2.00 GiB/s"),
            "{v}"
        );
        assert!(
            lines[1].starts_with("transit:   channel 0: 1.00 GiB at 2.00 GiB/s, 0 packets"),
            "{v}"
        );
    }

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

    #[test]
    fn cpu_clock_measures_work() {
        let c = CpuClock::start();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let (cpu, wall) = c.stop();
        assert!(wall > 0.0);
        assert!(cpu.user_seconds + cpu.system_seconds > 0.0);
    }
}

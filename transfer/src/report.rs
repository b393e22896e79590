//! The report of a run, as data: the final [`Summary`] (made from a
//! session's [`Stats`] by [`Summary::new`], one line for people by
//! [`Summary::human`]), the [`Interval`] objects of a run that reports as it
//! goes, the counters a monitor samples ([`Snapshot`]), and this process's
//! CPU time and peak memory ([`CpuClock`], [`rusage`]).
//!
//! People read binary units with three significant digits (see
//! [`crate::units`]). The *covered rate* counts every byte of the image or
//! stream the transfer covered (zero pages too), the *data rate* only the
//! payload bytes that crossed the channels.
//!
//! # JSON schema
//!
//! [`Summary`] and [`Interval`] derive `serde::Serialize`; serialized as
//! JSON (`transit --json` prints each as one object on its own line) they
//! are the objects `docs/cli.md` documents (section "Output": the summary
//! fields and the interval objects), an interface of the command line:
//!
//! * `"type"` says which object it is: `"summary"` or `"interval"`;
//! * the fields come in the order the structs declare them;
//! * a field's name says its unit: `*_bytes`, `*_seconds`,
//!   `*_bytes_per_second` (bytes, not bits, per second);
//! * `peer`, `digest` and `file` are `null` when unknown; `sha256`,
//!   `max_bandwidth_bytes_per_second`, `compress`, `kept_pages` (0),
//!   `reconnects` (0) and `in_place` (false) are left out when they do not
//!   apply.
//!
//! A change of a name, a unit or an omission is a change of that interface
//! (docs/cli.md says what changed).
//!
//! # Limits
//!
//! CPU time and peak memory are the whole process's (`getrusage`,
//! `/proc/self/status`): a program running several transfers at once sees
//! their sum in each summary. `total_seconds` counts from
//! [`mark_process_start`] (the wall seconds of the run if it was never
//! called).
//!
//! # Example
//!
//! ```no_run
//! use transit_transfer::report::{CpuClock, RunInfo, Summary};
//! # fn session() -> transit_multifd::Stats { unimplemented!() }
//!
//! let clock = CpuClock::start();
//! let stats = session(); // `Sender::finish` or `Receiver::run`
//! let info = RunInfo {
//!     role: "send",
//!     uri: "tcp:127.0.0.1:4444".into(),
//!     peer: None,
//!     mode: "image",
//!     passes: 1,
//!     page_size: 4096,
//!     image_bytes: 1 << 30,
//!     verified: true,
//!     file: None,
//! };
//! let summary = Summary::new(info, &stats, &clock);
//! eprintln!("{}", summary.human(false));
//! println!("{}", serde_json::to_string(&summary).unwrap());
//! ```

use std::time::Instant;

use serde::Serialize;
use transit_multifd::Stats;

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

/// Payload bytes and rate of one channel in an [`Interval`].
#[derive(Debug, Clone, Serialize)]
pub struct ChannelRate {
    /// Channel index.
    pub id: u32,
    /// Payload bytes so far.
    pub bytes: u64,
    /// Payload bytes per second over the interval.
    pub data_bytes_per_second: f64,
}

/// What a run did over one interval (`"type": "interval"`).
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Always `interval`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `send` or `recv`.
    pub role: &'static str,
    /// Seconds since the reports began.
    pub t_seconds: f64,
    /// Seconds this interval lasted.
    pub interval_seconds: f64,
    /// Bytes of the image or stream covered so far (zero pages included).
    pub covered_bytes: u64,
    /// Payload bytes so far.
    pub bytes: u64,
    /// Zero pages (stream: zero chunks) so far.
    pub zero_pages: u64,
    /// Covered bytes per second over the interval.
    pub covered_bytes_per_second: f64,
    /// Payload bytes per second over the interval.
    pub data_bytes_per_second: f64,
    /// Per channel.
    pub per_channel: Vec<ChannelRate>,
}

impl Interval {
    /// The interval from `prev` to `now`, `seconds` long (at least 1 ns
    /// is assumed), ending `t_seconds` after the reports began.
    pub fn between(
        role: &'static str,
        t_seconds: f64,
        seconds: f64,
        prev: &Snapshot,
        now: &Snapshot,
    ) -> Interval {
        let dt = seconds.max(1e-9);
        Interval {
            kind: "interval",
            role,
            t_seconds,
            interval_seconds: dt,
            covered_bytes: now.covered,
            bytes: now.bytes,
            zero_pages: now.zero_pages,
            covered_bytes_per_second: now.covered.saturating_sub(prev.covered) as f64 / dt,
            data_bytes_per_second: now.bytes.saturating_sub(prev.bytes) as f64 / dt,
            per_channel: now
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
        }
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
        let mut stats = crate::send::raw_stats(bytes, seconds, 0.01);
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
    fn the_json_has_its_fields_in_order_and_leaves_out_what_does_not_apply() {
        let mut s = summary("stream", 2.0, 4 << 20);
        let json = serde_json::to_string(&s).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        // serde_json without `preserve_order` sorts keys: check the order
        // on the text instead.
        let order = [
            "\"type\":\"summary\"",
            "\"version\"",
            "\"role\":\"recv\"",
            "\"uri\"",
            "\"peer\":null",
            "\"mode\":\"stream\"",
            "\"total_seconds\"",
            "\"total_bytes_per_second\"",
            "\"channels\":1",
            "\"passes\"",
            "\"page_size\"",
            "\"bytes\"",
            "\"wire_bytes\"",
            "\"image_bytes\"",
            "\"covered_bytes\"",
            "\"pages\"",
            "\"zero_pages\"",
            "\"packets\"",
            "\"syncs\"",
            "\"seconds\"",
            "\"wall_seconds\"",
            "\"covered_bytes_per_second\"",
            "\"data_bytes_per_second\"",
            "\"digest\":null",
            "\"verified\":true",
            "\"per_channel\":[{\"id\":0,\"bytes\"",
            "\"cpu\":{\"user_seconds\"",
            "\"max_rss_bytes\"",
            "\"file\":null}",
        ];
        let mut at = 0;
        for key in order {
            let i = json[at..]
                .find(key)
                .unwrap_or_else(|| panic!("{key} after {at}: {json}"));
            at += i + key.len();
        }
        assert_eq!(keys.len(), order.len(), "{json}");
        for absent in [
            "sha256",
            "max_bandwidth_bytes_per_second",
            "compress",
            "kept_pages",
            "reconnects",
            "in_place",
        ] {
            assert!(v.get(absent).is_none(), "{absent}: {json}");
        }
        s.sha256 = Some("ab".into());
        s.kept_pages = 3;
        s.in_place = true;
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.ends_with(r#""file":null,"sha256":"ab","kept_pages":3,"in_place":true}"#),
            "{json}"
        );
    }

    #[test]
    fn an_interval_has_the_rates_since_the_last_one() {
        let snap = |n: u64| Snapshot {
            covered: 2 * n,
            bytes: n,
            zero_pages: 0,
            channels: vec![n],
        };
        let i = Interval::between("send", 3.0, 0.5, &snap(100), &snap(300));
        assert_eq!(i.covered_bytes_per_second, 800.0);
        assert_eq!(i.data_bytes_per_second, 400.0);
        assert_eq!(i.per_channel[0].data_bytes_per_second, 400.0);
        let json = serde_json::to_string(&i).unwrap();
        assert!(
            json.starts_with(r#"{"type":"interval","role":"send","t_seconds":3.0,"interval_seconds":0.5,"covered_bytes":600,"#),
            "{json}"
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

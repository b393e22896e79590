//! A bandwidth cap shared by every channel of a session
//! ([`SendConfig::max_bandwidth`](crate::SendConfig::max_bandwidth)).
//!
//! One budget for the whole session, not one per channel: each page
//! channel asks [`RateLimit::take`] before it writes a packet, and the
//! limiter hands out send times on one virtual clock (the generic cell rate
//! algorithm): the *theoretical arrival time* `tat` advances by
//! `bytes / rate` per request, and a request may go once `tat - burst` is
//! reached. So over any window of length `T` at most `rate * (T + burst)`
//! bytes (plus one packet) leave, however many channels there are, and an
//! idle period earns no credit beyond `burst` ([`BURST`], 25 ms). The sender also
//! caps its packets at 25 ms worth of the rate, so a slow cap is met by
//! small packets evenly spaced rather than by bursts of one large packet
//! per channel.
//!
//! The limiter sleeps the calling thread; a sleep is cut into slices of at
//! most 50 ms that check a stop condition, so a failed session is not held
//! up by its cap.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use transit_multifd::rate::RateLimit;
//!
//! let cap = RateLimit::new(10_000_000); // 10 MB/s
//! let t0 = Instant::now();
//! // 4 MB in 64 KB requests: at least 0.4 s minus the 25 ms burst.
//! for _ in 0..64 {
//!     cap.take(62_500, || false);
//! }
//! assert!(t0.elapsed() >= Duration::from_millis(365));
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far ahead of the rate a sender may be (credit of an idle sender).
pub const BURST: Duration = Duration::from_millis(25);

/// The longest packet, in time at the capped rate: packets are cut to
/// this so a slow cap gives an even flow (see [`packet_limit`]).
pub const PACKET_TIME: Duration = Duration::from_millis(25);

/// The longest single sleep between checks of the stop condition.
const SLICE: Duration = Duration::from_millis(50);

/// A shared bandwidth budget, in bytes per second.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: u64,
    /// Theoretical arrival time of the next byte (`None` before the first
    /// request).
    tat: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A budget of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> RateLimit {
        RateLimit {
            bytes_per_second: bytes_per_second.max(1),
            tat: Mutex::new(None),
        }
    }

    /// The cap, in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// When a request of `n` bytes made at `now` may go (book it).
    pub fn schedule(&self, n: u64, now: Instant) -> Instant {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let start = match *tat {
            Some(t) if t > now => t,
            _ => now,
        };
        let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_second as f64);
        let next = start + cost;
        *tat = Some(next);
        // The request may go once the budget it uses is within BURST of
        // being earned.
        next.checked_sub(BURST).map_or(now, |t| t.max(now))
    }

    /// Wait until `n` more bytes fit the budget. Returns early (false)
    /// when `stop` says so; true when the bytes may go.
    pub fn take(&self, n: u64, stop: impl Fn() -> bool) -> bool {
        let at = self.schedule(n, Instant::now());
        loop {
            let now = Instant::now();
            if now >= at {
                return true;
            }
            if stop() {
                return false;
            }
            std::thread::sleep((at - now).min(SLICE));
        }
    }
}

/// The payload limit of one packet under a cap of `bytes_per_second`:
/// [`PACKET_TIME`] worth of the rate, rounded down to whole `unit`s, at
/// least one unit and at most `configured`.
pub fn packet_limit(configured: u32, unit: u32, bytes_per_second: u64) -> u32 {
    let unit = unit.max(1);
    let budget = (bytes_per_second as f64 * PACKET_TIME.as_secs_f64()) as u64;
    let units = (budget / u64::from(unit)).max(1);
    let limit = units.saturating_mul(u64::from(unit));
    limit
        .min(u64::from(configured))
        .max(u64::from(unit.min(configured))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes allowed to go in `[from, to)` by a schedule of requests.
    fn sent_between(times: &[(Instant, u64)], from: Instant, to: Instant) -> u64 {
        times
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| n)
            .sum()
    }

    #[test]
    fn the_schedule_never_exceeds_the_rate_plus_the_burst() {
        // 4 channels asking as fast as they can, 100 MB/s, 256 KB packets,
        // on a virtual clock that moves to each send time.
        let cap = RateLimit::new(100_000_000);
        let t0 = Instant::now();
        let mut now = t0;
        let mut times = Vec::new();
        for i in 0..2000u64 {
            let n = 250_000 + (i % 4) * 1000;
            let at = cap.schedule(n, now);
            times.push((at, n));
            now = at;
        }
        let end = times.last().unwrap().0;
        // Over the whole run: the rate (within one burst and one packet).
        let total: u64 = times.iter().map(|(_, n)| n).sum();
        let secs = (end - t0).as_secs_f64();
        let rate = total as f64 / secs;
        assert!(rate <= 100e6 * (1.0 + (0.025 + 0.003) / secs), "{rate}");
        assert!(rate >= 100e6 * 0.97, "{rate}");
        // Over every 100 ms window: at most 10 MB plus the 2.5 MB burst
        // plus a packet.
        let mut w = t0;
        while w < end {
            let n = sent_between(&times, w, w + Duration::from_millis(100));
            assert!(n <= 12_500_000 + 260_000, "{n} bytes in a 100 ms window");
            w += Duration::from_millis(10);
        }
    }

    #[test]
    fn idle_time_earns_no_more_than_the_burst() {
        let cap = RateLimit::new(1_000_000);
        let t0 = Instant::now();
        assert_eq!(cap.schedule(10_000, t0), t0);
        // Ten idle seconds later, 1 MB at once: only 25 ms of it is free.
        let later = t0 + Duration::from_secs(10);
        let at = cap.schedule(1_000_000, later);
        let wait = at - later;
        assert!(
            wait >= Duration::from_millis(970) && wait <= Duration::from_millis(980),
            "{wait:?}"
        );
    }

    #[test]
    fn packets_are_cut_to_25_ms_of_the_rate() {
        // 1 MB/s: 25 KB, so 6 pages of 4 KiB.
        assert_eq!(packet_limit(512 << 10, 4096, 1_000_000), 6 * 4096);
        // Fast caps keep the configured packet.
        assert_eq!(packet_limit(512 << 10, 4096, 1 << 40), 512 << 10);
        // Never below one unit.
        assert_eq!(packet_limit(512 << 10, 65536, 1000), 65536);
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let cap = RateLimit::new(1000);
        cap.take(1000, || false);
        let t0 = Instant::now();
        assert!(!cap.take(100_000, || true));
        assert!(t0.elapsed() < Duration::from_millis(100));
    }
}

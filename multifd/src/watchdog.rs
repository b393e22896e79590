//! The idle timeout: one watchdog thread per session that fails the
//! session with [`Error::Timeout`] when a channel waits on its peer
//! without progress for longer than the configured limit.
//!
//! Every channel of a session (the page channels, then the main channel)
//! has an [`Activity`]: a progress counter its thread bumps as data moves
//! (a packet header, its entries, its payload, a record) and a state that
//! says what the thread is waiting for:
//!
//! * [`Wait::Off`]: nothing the peer owes us. The thread works locally
//!   (scans, hashes, writes a slow sink, fsyncs), waits at a SYNC barrier
//!   for the *other* channels, waits for work from a slow producer (a
//!   stream source that is slow to produce), or is done. Never idle.
//! * [`Wait::Mid`]: in the middle of a structure the peer is sending or
//!   taking (after the first byte of a packet header, while entries or
//!   pages flow, while a packet is written). Idle on its own clock: no
//!   progress for the limit fails the session naming this channel and
//!   stage (half a packet header, then silence; a receiver that stopped
//!   reading).
//! * [`Wait::Next`]: waiting for the peer's next packet or record. A pass
//!   may leave a channel without packets for a long time while others
//!   work, and the main channel sees nothing between syncs, so these are
//!   idle only when the whole session is: no channel made progress for
//!   the limit. The first such channel is named, page channels first.
//!
//! The watchdog fails the session through [`Failure::fail`], which shuts
//! every channel down, so whichever thread is blocked wakes; it never
//! touches a socket itself and works for every transport. It checks about
//! eight times per limit (at most once a second), so a stall is reported
//! between 1x and 1.125x the limit after the last progress.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Ctx, Stage};
use crate::session::{lock, Failure};

/// What a channel's thread waits for; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Nothing the peer owes.
    Off,
    /// The peer's next packet or record.
    Next(Stage),
    /// The rest of a structure in flight.
    Mid(Stage),
}

const STAGES: [Stage; 8] = [
    Stage::Handshake,
    Stage::SendHeader,
    Stage::SendPages,
    Stage::Sync,
    Stage::End,
    Stage::RecvHeader,
    Stage::RecvPages,
    Stage::Data,
];

fn stage_index(s: Stage) -> u32 {
    STAGES.iter().position(|&x| x == s).unwrap_or(0) as u32
}

impl Wait {
    fn encode(self) -> u32 {
        match self {
            Wait::Off => 0,
            Wait::Next(s) => 1 + stage_index(s),
            Wait::Mid(s) => 1 + STAGES.len() as u32 + stage_index(s),
        }
    }

    fn decode(v: u32) -> Wait {
        let n = STAGES.len() as u32;
        match v {
            0 => Wait::Off,
            v if v <= n => Wait::Next(STAGES[(v - 1) as usize]),
            v => Wait::Mid(STAGES[((v - 1 - n) as usize).min(STAGES.len() - 1)]),
        }
    }
}

/// Progress and wait state of one channel, updated by its thread with
/// relaxed atomics (two stores per packet).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    ticks: AtomicU64,
    wait: AtomicU32,
}

impl Activity {
    /// Data moved.
    pub fn tick(&self) {
        self.ticks.fetch_add(1, Relaxed);
    }

    /// What the thread waits for from now on.
    pub fn set(&self, w: Wait) {
        self.wait.store(w.encode(), Relaxed);
    }

    fn load(&self) -> (u64, Wait) {
        (
            self.ticks.load(Relaxed),
            Wait::decode(self.wait.load(Relaxed)),
        )
    }
}

/// The activities of a session's channels: page channels `0..n`, then
/// the main channel at index `n`.
#[derive(Debug)]
pub(crate) struct Activities {
    all: Box<[Activity]>,
}

impl Activities {
    pub fn new(pages: usize) -> Arc<Activities> {
        Arc::new(Activities {
            all: (0..=pages).map(|_| Activity::default()).collect(),
        })
    }

    pub fn page(&self, i: usize) -> &Activity {
        &self.all[i]
    }

    pub fn main(&self) -> &Activity {
        &self.all[self.all.len() - 1]
    }
}

/// The running watchdog; stopping (or dropping) it ends the thread.
pub(crate) struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watch `acts` (with `ctxs` naming the same channels, main last) and
    /// fail `failure` when a channel is idle for `limit`; `None` (no limit)
    /// starts nothing.
    pub fn start(
        limit: Option<Duration>,
        acts: Arc<Activities>,
        ctxs: Vec<Ctx>,
        failure: Arc<Failure>,
        on_stall: Option<OnStall>,
    ) -> Option<Watchdog> {
        let limit = limit.filter(|l| !l.is_zero())?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("multifd-watchdog".into())
            .spawn(move || watch(limit, &acts, &ctxs, &failure, &flag, on_stall))
            // Without the thread the session runs as with no limit.
            .ok()?;
        Some(Watchdog {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop watching (the session is over or its outcome is decided).
    pub fn stop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Called with a page channel stalled mid-packet and the timeout error:
/// true if it cut that channel's connection to replace it (see
/// [`crate::rejoin`]), so the session goes on.
pub(crate) type OnStall = Arc<dyn Fn(usize, crate::Error) -> bool + Send + Sync>;

fn watch(
    limit: Duration,
    acts: &Activities,
    ctxs: &[Ctx],
    failure: &Failure,
    stop: &(Mutex<bool>, Condvar),
    on_stall: Option<OnStall>,
) {
    let period = (limit / 8).clamp(Duration::from_millis(5), Duration::from_secs(1));
    let start = Instant::now();
    // Per channel: last counter and state seen, and since when.
    let mut last: Vec<(u64, Wait, Instant)> = acts
        .all
        .iter()
        .map(|a| {
            let (t, w) = a.load();
            (t, w, start)
        })
        .collect();
    let mut session_since = start;
    let mut stopped = lock(&stop.0);
    loop {
        stopped = stop
            .1
            .wait_timeout(stopped, period)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if *stopped || failure.is_failed() {
            return;
        }
        let now = Instant::now();
        for (a, l) in acts.all.iter().zip(last.iter_mut()) {
            let (t, w) = a.load();
            if (t, w) != (l.0, l.1) {
                *l = (t, w, now);
                session_since = now;
            }
        }
        let stalled = |since: Instant| now.duration_since(since) >= limit;
        let mid = last.iter().enumerate().find_map(|(i, l)| match l.1 {
            Wait::Mid(stage) if stalled(l.2) => Some((i, stage)),
            _ => None,
        });
        let next = || {
            if !stalled(session_since) {
                return None;
            }
            last.iter().enumerate().find_map(|(i, l)| match l.1 {
                Wait::Next(stage) => Some((i, stage)),
                _ => None,
            })
        };
        if let (Some((i, stage)), Some(hook)) = (mid, on_stall.as_ref()) {
            let e = ctxs[i].timeout(stage, limit.as_secs_f64());
            if i + 1 < last.len() && hook(i, e) {
                // Cut for a new connection: a fresh start for its clock.
                last[i].2 = now;
                continue;
            }
        }
        if let Some((i, stage)) = mid.or_else(next) {
            drop(stopped);
            let e = ctxs[i].timeout(stage, limit.as_secs_f64());
            failure.fail(e, true);
            return;
        }
    }
}

/// Check that the stage codes round-trip (every stage has a code).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn wait_states_round_trip() {
        for s in STAGES {
            for w in [Wait::Next(s), Wait::Mid(s)] {
                assert_eq!(Wait::decode(w.encode()), w);
            }
        }
        assert_eq!(Wait::decode(Wait::Off.encode()), Wait::Off);
    }

    #[test]
    fn a_stalled_structure_fails_the_session_naming_its_channel() {
        let acts = Activities::new(2);
        let failure = Arc::new(Failure::default());
        let ctxs = vec![
            Ctx::new(crate::ChannelId::Page(0), "p0"),
            Ctx::new(crate::ChannelId::Page(1), "p1"),
            Ctx::new(crate::ChannelId::Main, "m"),
        ];
        acts.page(0).set(Wait::Next(Stage::RecvHeader));
        acts.page(1).set(Wait::Mid(Stage::RecvHeader));
        acts.main().set(Wait::Next(Stage::Sync));
        let limit = Duration::from_millis(100);
        let _w = Watchdog::start(Some(limit), acts.clone(), ctxs, failure.clone(), None);
        let started = Instant::now();
        while !failure.is_failed() && started.elapsed() < Duration::from_secs(5) {
            acts.page(0).tick();
            std::thread::sleep(Duration::from_millis(10));
        }
        let e = failure.take_error();
        assert!(
            matches!(
                e,
                Error::Timeout {
                    id: crate::ChannelId::Page(1),
                    stage: Stage::RecvHeader,
                    ..
                }
            ),
            "{e}"
        );
        assert!(started.elapsed() >= limit);
    }
}

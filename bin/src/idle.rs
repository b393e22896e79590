//! The idle timeout of plain-bytes (`--raw`) copies: multifd sessions have
//! their own watchdog in the library; a raw copy has one channel and a
//! byte counter, and this watches them.
//!
//! The copy marks when it waits on the channel ([`IdleWatch::waiting`]):
//! only those waits count, so a slow source on the sender (stdin) or a
//! slow disk on the receiver is not the peer's idling. When the counter
//! has not moved for the whole limit while the copy waits on the channel,
//! the watch shuts the channel down (the blocked read or write returns)
//! and [`IdleWatch::fired`] says why the copy failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use transit_channel::{Shutdown, ShutdownHandle};

struct Inner {
    waiting: AtomicBool,
    fired: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// A running idle watch (or none: [`IdleWatch::off`]). Dropping it stops
/// the watch.
pub struct IdleWatch {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl IdleWatch {
    /// No watch: never fires.
    pub fn off() -> IdleWatch {
        IdleWatch {
            inner: Arc::new(Inner {
                waiting: AtomicBool::new(false),
                fired: AtomicBool::new(false),
                stop: Mutex::new(false),
                wake: Condvar::new(),
            }),
            thread: None,
        }
    }

    /// Watch `count` (bytes moved so far): after `limit` without progress
    /// while the copy waits on the channel, shut the channel down through
    /// `handle`. `None` limit or handle: [`off`](Self::off).
    pub fn start(
        limit: Option<Duration>,
        count: Arc<AtomicU64>,
        handle: Option<ShutdownHandle>,
    ) -> IdleWatch {
        let mut w = IdleWatch::off();
        let (Some(limit), Some(handle)) = (limit, handle) else {
            return w;
        };
        let inner = w.inner.clone();
        let tick = (limit / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
        w.thread = std::thread::Builder::new()
            .name("raw-idle".into())
            .spawn(move || {
                let mut last = count.load(Ordering::Relaxed);
                let mut since = Instant::now();
                let mut stop = inner.stop.lock().unwrap_or_else(|e| e.into_inner());
                while !*stop {
                    let now = count.load(Ordering::Relaxed);
                    if now != last || !inner.waiting.load(Ordering::Acquire) {
                        last = now;
                        since = Instant::now();
                    } else if since.elapsed() >= limit {
                        inner.fired.store(true, Ordering::Release);
                        let _ = handle.shutdown(Shutdown::Both);
                        return;
                    }
                    stop = inner
                        .wake
                        .wait_timeout(stop, tick)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })
            .ok();
        w
    }

    /// The copy starts (`true`) or stops (`false`) waiting on the channel.
    pub fn waiting(&self, on: bool) {
        self.inner.waiting.store(on, Ordering::Release);
    }

    /// True if the watch shut the channel down.
    pub fn fired(&self) -> bool {
        self.inner.fired.load(Ordering::Acquire)
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        *self.inner.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transit_channel::Channel;

    #[test]
    fn fires_only_while_waiting_without_progress() {
        let (a, _b) = transit_channel::SocketChannel::pair().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let limit = Some(Duration::from_millis(150));
        let w = IdleWatch::start(limit, count.clone(), a.shutdown_handle().ok());
        // Not waiting on the channel: a slow source is not idle.
        std::thread::sleep(Duration::from_millis(400));
        assert!(!w.fired());
        // Waiting, with progress every 50 ms: not idle.
        w.waiting(true);
        for _ in 0..8 {
            count.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!w.fired());
        // Waiting, no progress: fires within the limit and a few ticks.
        let t = Instant::now();
        while !w.fired() {
            assert!(t.elapsed() < Duration::from_secs(5), "did not fire");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(IdleWatch::off().thread.is_none());
    }
}

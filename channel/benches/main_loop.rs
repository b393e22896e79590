//! Main-loop costs: fd-watch, idle and bottom-half dispatch per iteration,
//! and the cross-thread wake-to-run latency of a bottom half.
//!
//! Run: `cargo bench -p transit-channel --bench main_loop -- --warm-up-time 1 --measurement-time 3`.
//! Targets: fd-watch dispatch < 1 µs per iteration; cross-thread
//! wake-to-run < 10 µs.

use std::cell::Cell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use transit_channel::main_loop::{BottomHalf, ControlFlow, MainContext};
use transit_channel::{Condition, Readiness, WatchFds, WatchSource};

fn fd_watch_dispatch(c: &mut Criterion) {
    let ctx = MainContext::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    // Never read: the fd stays readable, the watch fires every iteration.
    b.write_all(b"x").unwrap();
    let ws = WatchSource {
        fds: WatchFds::One(a.as_raw_fd()),
        ready: Readiness::new(),
        name: "bench".into(),
    };
    let hits = Rc::new(Cell::new(0u64));
    let h = hits.clone();
    ctx.add_watch(&ws, Condition::IN, move |_| {
        h.set(h.get() + 1);
        ControlFlow::Continue
    });
    c.bench_function("fd_watch_dispatch", |bench| {
        bench.iter(|| assert!(ctx.iteration(false)))
    });
}

fn idle_dispatch(c: &mut Criterion) {
    let ctx = MainContext::new().unwrap();
    let hits = Rc::new(Cell::new(0u64));
    let h = hits.clone();
    ctx.idle_add(move || {
        h.set(h.get() + 1);
        ControlFlow::Continue
    });
    c.bench_function("idle_dispatch", |bench| {
        bench.iter(|| assert!(ctx.iteration(false)))
    });
}

fn bottom_half_dispatch(c: &mut Criterion) {
    let ctx = MainContext::new().unwrap();
    let hits = Rc::new(Cell::new(0u64));
    let h = hits.clone();
    let bh = ctx.bottom_half(move || h.set(h.get() + 1));
    c.bench_function("bottom_half_schedule_and_dispatch", |bench| {
        bench.iter(|| {
            bh.schedule();
            assert!(ctx.iteration(false));
        })
    });
}

/// Ping-pong between two loop threads, each blocked in `iteration(true)`:
/// this thread schedules the peer's bottom half, the peer's callback
/// schedules ours. One round trip is two wake-to-run latencies; the time
/// reported is half a round trip.
fn cross_thread_wake_to_run(c: &mut Criterion) {
    wake_to_run(c, "cross_thread_bottom_half_wake_to_run", Duration::ZERO);
    // Both loops spin up to 50 µs before sleeping (QEMU's poll-max-ns).
    wake_to_run(
        c,
        "cross_thread_bottom_half_wake_to_run_polling_50us",
        Duration::from_micros(50),
    );
}

/// One ping-pong run; `poll_max` is each context's adaptive polling.
fn wake_to_run(c: &mut Criterion, name: &str, poll_max: Duration) {
    let ctx = MainContext::new().unwrap();
    ctx.set_poll_max(poll_max);
    let pong = Rc::new(Cell::new(false));
    let p = pong.clone();
    let our_bh = ctx.bottom_half(move || p.set(true));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<BottomHalf>();
    let (remote_stop, reply) = (stop.clone(), our_bh.clone());
    let peer = std::thread::Builder::new()
        .name("bench-peer".into())
        .spawn(move || {
            let peer_ctx = MainContext::new().unwrap();
            peer_ctx.set_poll_max(poll_max);
            let peer_bh = peer_ctx.bottom_half(move || reply.schedule());
            tx.send(peer_bh).unwrap();
            while !remote_stop.load(Ordering::SeqCst) {
                peer_ctx.iteration(true);
            }
        })
        .unwrap();
    let peer_bh = rx.recv().unwrap();
    c.bench_function(name, |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                pong.set(false);
                peer_bh.schedule();
                while !pong.get() {
                    ctx.iteration(true);
                }
            }
            start.elapsed() / 2
        })
    });
    stop.store(true, Ordering::SeqCst);
    peer_bh.schedule();
    peer.join().unwrap();
    drop(our_bh);
}

/// The criterion group (its generated function has no doc of its own).
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group! {
        name = benches;
        config = Criterion::default().measurement_time(Duration::from_secs(3));
        targets = fd_watch_dispatch, idle_dispatch, bottom_half_dispatch,
            cross_thread_wake_to_run
    }
}
criterion_main!(group::benches);

//! Adaptive polling (`set_poll_max`): work from other threads, fds and
//! timers are all still delivered while a blocking iteration spins, and an
//! idle loop still sleeps once the spin budget is used up.

use std::cell::Cell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use transit_channel::main_loop::{ControlFlow, MainContext};
use transit_channel::{Condition, Readiness, WatchFds, WatchSource};

fn polling_ctx() -> MainContext {
    let ctx = MainContext::new().expect("context");
    ctx.set_poll_max(Duration::from_micros(200));
    ctx
}

/// Iterate until `done` or 10 s pass.
fn run_until(ctx: &MainContext, done: &dyn Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < end, "not delivered within 10 s");
        ctx.iteration(true);
    }
}

#[test]
fn a_bottom_half_from_another_thread_runs_while_the_loop_spins() {
    let ctx = polling_ctx();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let bh = ctx.bottom_half(move || r.set(r.get() + 1));
    for round in 1..=50 {
        let remote = bh.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_micros(50));
            remote.schedule();
        });
        run_until(&ctx, &|| runs.get() == round);
        t.join().expect("scheduler thread");
    }
    assert_eq!(runs.get(), 50);
}

#[test]
fn an_fd_that_becomes_readable_while_the_loop_spins_is_dispatched() {
    let ctx = polling_ctx();
    let (mut a, b) = UnixStream::pair().expect("pair");
    let ws = WatchSource {
        fds: WatchFds::One(b.as_raw_fd()),
        ready: Readiness::new(),
        name: "pair".into(),
    };
    let seen = Rc::new(Cell::new(false));
    let s = seen.clone();
    ctx.add_watch(&ws, Condition::IN, move |c| {
        assert!(c.contains(Condition::IN));
        s.set(true);
        ControlFlow::Remove
    });
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_micros(100));
        a.write_all(b"x").expect("write");
        a
    });
    run_until(&ctx, &|| seen.get());
    drop(t.join().expect("writer"));
}

#[test]
fn timers_fire_never_early_with_polling_on() {
    let ctx = polling_ctx();
    let start = Instant::now();
    let fired = Rc::new(Cell::new(None));
    let f = fired.clone();
    ctx.timeout_add(Duration::from_millis(3), move || {
        f.set(Some(Instant::now()));
        ControlFlow::Remove
    });
    run_until(&ctx, &|| fired.get().is_some());
    let at = fired.get().expect("fired");
    assert!(
        at.duration_since(start) >= Duration::from_millis(3),
        "fired early: {:?}",
        at.duration_since(start)
    );
}

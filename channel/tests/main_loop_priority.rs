//! Only the ready sources of the most urgent ready priority dispatch in one
//! iteration; bottom halves and invokes sit at `Priority::DEFAULT`.

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use transit_channel::main_loop::{ControlFlow, MainContext, Priority};
use transit_channel::{Condition, Readiness, WatchFds, WatchSource};

type Log = Rc<RefCell<Vec<&'static str>>>;

fn idle(ctx: &MainContext, log: &Log, prio: Priority, name: &'static str) {
    let log = log.clone();
    ctx.idle_add_full(prio, move || {
        log.borrow_mut().push(name);
        ControlFlow::Continue
    });
}

#[test]
fn only_the_most_urgent_ready_priority_dispatches() {
    let ctx = MainContext::new().unwrap();
    let log: Log = Rc::default();
    idle(&ctx, &log, Priority::DEFAULT_IDLE, "low");
    idle(&ctx, &log, Priority::HIGH_IDLE, "high-1");
    idle(&ctx, &log, Priority::LOW, "lowest");
    idle(&ctx, &log, Priority::HIGH_IDLE, "high-2");

    assert!(ctx.iteration(false));
    assert_eq!(*log.borrow(), ["high-1", "high-2"]);
    assert!(ctx.iteration(false));
    assert_eq!(*log.borrow(), ["high-1", "high-2", "high-1", "high-2"]);
}

#[test]
fn a_less_urgent_source_runs_once_the_urgent_ones_are_gone() {
    let ctx = MainContext::new().unwrap();
    let log: Log = Rc::default();
    idle(&ctx, &log, Priority::DEFAULT_IDLE, "low");
    let l = log.clone();
    ctx.idle_add_full(Priority::HIGH, move || {
        l.borrow_mut().push("once");
        ControlFlow::Remove
    });
    ctx.iteration(false);
    ctx.iteration(false);
    assert_eq!(*log.borrow(), ["once", "low"]);
}

#[test]
fn a_ready_high_priority_watch_starves_idle() {
    let ctx = MainContext::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let ws = WatchSource {
        fds: WatchFds::One(std::os::fd::AsRawFd::as_raw_fd(&a)),
        ready: Readiness::new(),
        name: "pair".into(),
    };
    let log: Log = Rc::default();
    let l = log.clone();
    ctx.add_watch_full(&ws, Condition::IN, Priority::HIGH, None, move |c| {
        assert!(c.contains(Condition::IN));
        l.borrow_mut().push("watch");
        ControlFlow::Continue
    });
    idle(&ctx, &log, Priority::DEFAULT_IDLE, "idle");
    for _ in 0..3 {
        assert!(ctx.iteration(false));
    }
    assert_eq!(*log.borrow(), ["watch", "watch", "watch"]);
}

#[test]
fn bottom_halves_and_invokes_run_at_default_priority() {
    let ctx = MainContext::new().unwrap();
    let log: Log = Rc::default();
    let l = log.clone();
    let bh = ctx.bottom_half(move || l.borrow_mut().push("bh"));
    let high: Log = log.clone();
    let high_id = ctx.idle_add_full(Priority::HIGH, move || {
        high.borrow_mut().push("high");
        ControlFlow::Continue
    });
    idle(&ctx, &log, Priority::DEFAULT_IDLE, "idle");
    bh.schedule();

    ctx.iteration(false);
    assert_eq!(*log.borrow(), ["high"], "HIGH beats a bottom half");
    ctx.remove(high_id);
    ctx.iteration(false);
    assert_eq!(*log.borrow(), ["high", "bh"], "a bottom half beats idle");
    ctx.iteration(false);
    assert_eq!(*log.borrow(), ["high", "bh", "idle"]);
}

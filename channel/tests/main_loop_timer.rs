//! Timeouts fire in deadline order and never early.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use transit_channel::main_loop::{ControlFlow, MainContext};

/// Iterate until `done()`, with a 10 s bound; panics if the bound is hit.
fn run_until(ctx: &MainContext, done: impl Fn() -> bool) {
    let limit = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < limit, "timers did not fire within 10 s");
        ctx.iteration(true);
    }
}

#[test]
fn timers_fire_in_deadline_order_and_never_early() {
    let ctx = MainContext::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let start = Instant::now();
    for ms in [30u64, 10, 20, 5] {
        let log = log.clone();
        ctx.timeout_add(Duration::from_millis(ms), move || {
            log.borrow_mut().push((ms, start.elapsed()));
            ControlFlow::Remove
        });
    }
    run_until(&ctx, || log.borrow().len() == 4);
    let log = log.borrow();
    let order: Vec<u64> = log.iter().map(|(ms, _)| *ms).collect();
    assert_eq!(order, [5, 10, 20, 30]);
    for (ms, elapsed) in log.iter() {
        assert!(
            *elapsed >= Duration::from_millis(*ms),
            "{ms} ms timer fired after {elapsed:?}"
        );
    }
}

#[test]
fn timers_due_in_the_same_iteration_dispatch_in_deadline_order() {
    let ctx = MainContext::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    for ms in [20u64, 10, 15] {
        let log = log.clone();
        ctx.timeout_add(Duration::from_millis(ms), move || {
            log.borrow_mut().push(ms);
            ControlFlow::Remove
        });
    }
    // All three are due before the loop looks.
    std::thread::sleep(Duration::from_millis(40));
    assert!(ctx.iteration(false));
    assert_eq!(*log.borrow(), [10, 15, 20]);
}

#[test]
fn sub_millisecond_and_odd_timeouts_are_never_early() {
    let ctx = MainContext::new().unwrap();
    for us in [300u64, 1_000, 1_500, 2_700, 7_100] {
        let want = Duration::from_micros(us);
        let got = Rc::new(Cell::new(None));
        let g = got.clone();
        let start = Instant::now();
        ctx.timeout_add(want, move || {
            g.set(Some(start.elapsed()));
            ControlFlow::Remove
        });
        run_until(&ctx, || got.get().is_some());
        let elapsed = got.get().unwrap();
        assert!(elapsed >= want, "{want:?} timer fired after {elapsed:?}");
    }
}

#[test]
fn a_repeating_timer_waits_a_full_interval_each_time() {
    let ctx = MainContext::new().unwrap();
    let interval = Duration::from_millis(3);
    let stamps = Rc::new(RefCell::new(vec![Instant::now()]));
    let s = stamps.clone();
    ctx.timeout_add(interval, move || {
        s.borrow_mut().push(Instant::now());
        if s.borrow().len() == 5 {
            ControlFlow::Remove
        } else {
            ControlFlow::Continue
        }
    });
    run_until(&ctx, || stamps.borrow().len() == 5);
    for pair in stamps.borrow().windows(2) {
        assert!(pair[1] - pair[0] >= interval);
    }
    // Removed after the fifth call: nothing is left to dispatch.
    assert!(!ctx.iteration(false));
    assert_eq!(stamps.borrow().len(), 5);
}

#[test]
fn next_deadline_names_the_nearest_timer() {
    let ctx = MainContext::new().unwrap();
    assert_eq!(ctx.next_deadline(), None);
    let before = Instant::now();
    ctx.timeout_add(Duration::from_secs(50), || ControlFlow::Remove);
    ctx.timeout_add(Duration::from_secs(5), || ControlFlow::Remove);
    let after = Instant::now();
    let d = ctx.next_deadline().unwrap();
    assert!(d >= before + Duration::from_secs(5) && d <= after + Duration::from_secs(5));
    ctx.idle_add(|| ControlFlow::Remove);
    assert!(ctx.next_deadline().unwrap() <= Instant::now());
}

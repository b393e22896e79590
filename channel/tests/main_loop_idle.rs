//! Idle sources run whenever nothing more urgent is ready, and keep the
//! loop from sleeping.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use transit_channel::main_loop::{ControlFlow, MainContext};

#[test]
fn idle_runs_every_iteration_until_removed() {
    let ctx = MainContext::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    ctx.idle_add(move || {
        r.set(r.get() + 1);
        if r.get() == 3 {
            ControlFlow::Remove
        } else {
            ControlFlow::Continue
        }
    });
    assert!(ctx.pending());
    for _ in 0..3 {
        assert!(ctx.iteration(false));
    }
    assert_eq!(runs.get(), 3);
    assert!(!ctx.iteration(false));
    assert!(!ctx.pending());
}

#[test]
fn a_blocking_iteration_with_an_idle_source_does_not_sleep() {
    let ctx = MainContext::new().unwrap();
    let watchdog = Rc::new(Cell::new(false));
    let w = watchdog.clone();
    ctx.timeout_add(Duration::from_secs(10), move || {
        w.set(true);
        ControlFlow::Remove
    });
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    ctx.idle_add(move || {
        r.set(true);
        ControlFlow::Remove
    });
    assert!(ctx.iteration(true));
    assert!(ran.get());
    assert!(!watchdog.get());
}

#[test]
fn idle_yields_to_a_due_timer() {
    let ctx = MainContext::new().unwrap();
    let timer = Rc::new(Cell::new(false));
    let t = timer.clone();
    ctx.timeout_add(Duration::from_millis(1), move || {
        t.set(true);
        ControlFlow::Remove
    });
    let idle_runs = Rc::new(Cell::new(0u32));
    let i = idle_runs.clone();
    ctx.idle_add(move || {
        i.set(i.get() + 1);
        ControlFlow::Continue
    });
    std::thread::sleep(Duration::from_millis(5));
    assert!(ctx.iteration(false));
    assert!(timer.get(), "the due timer (DEFAULT) goes before idle");
    assert_eq!(idle_runs.get(), 0);
}

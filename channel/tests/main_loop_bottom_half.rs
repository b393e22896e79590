//! Bottom halves: scheduled from any thread (also while the loop
//! dispatches), coalesced, cancellable, one-shot when dropped after a
//! schedule.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use transit_channel::main_loop::{ControlFlow, MainContext};

/// Iterate (blocking) until `done()` or a 10 s watchdog timer fires; true if
/// the watchdog fired.
fn run_until(ctx: &MainContext, done: impl Fn() -> bool) -> bool {
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let id = ctx.timeout_add(Duration::from_secs(10), move || {
        f.set(true);
        ControlFlow::Remove
    });
    while !done() && !fired.get() {
        ctx.iteration(true);
    }
    ctx.remove(id);
    fired.get()
}

#[test]
fn scheduled_from_another_thread_while_dispatching_still_runs() {
    let ctx = MainContext::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let bh = ctx.bottom_half(move || r.set(r.get() + 1));
    let bh2 = bh.clone();
    // The schedule happens on another thread while this thread is inside a
    // dispatch.
    ctx.idle_add(move || {
        let b = bh2.clone();
        std::thread::spawn(move || b.schedule()).join().unwrap();
        ControlFlow::Remove
    });
    assert!(ctx.iteration(false));
    assert_eq!(runs.get(), 0);
    assert!(
        !run_until(&ctx, || runs.get() == 1),
        "watchdog fired: wakeup lost"
    );
    assert_eq!(runs.get(), 1);
    drop(bh);
}

#[test]
fn scheduled_on_the_loop_thread_while_dispatching_does_not_block_the_next_poll() {
    let ctx = MainContext::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let bh = ctx.bottom_half(move || r.set(r.get() + 1));
    let bh2 = bh.clone();
    ctx.idle_add(move || {
        bh2.schedule();
        ControlFlow::Remove
    });
    assert!(ctx.iteration(false));
    assert!(
        !run_until(&ctx, || runs.get() == 1),
        "watchdog fired: wakeup lost"
    );
}

#[test]
fn many_schedules_from_many_threads_coalesce_into_one_run() {
    let ctx = MainContext::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let bh = Arc::new(ctx.bottom_half(move || r.set(r.get() + 1)));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let bh = bh.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    bh.schedule();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(bh.is_scheduled());
    while ctx.iteration(false) {}
    assert_eq!(runs.get(), 1);
    assert!(!bh.is_scheduled());
}

#[test]
fn a_bottom_half_that_reschedules_itself_runs_once_per_iteration() {
    let ctx = MainContext::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let me = Rc::new(std::cell::RefCell::new(None::<transit_channel::BottomHalf>));
    let me2 = me.clone();
    let bh = ctx.bottom_half(move || {
        r.set(r.get() + 1);
        if let Some(b) = me2.borrow().as_ref() {
            b.schedule();
        }
    });
    *me.borrow_mut() = Some(bh.clone());
    bh.schedule();
    for i in 1..=5 {
        assert!(ctx.iteration(false));
        assert_eq!(runs.get(), i);
    }
    me.borrow_mut().take();
}

#[test]
fn cancel_withdraws_a_schedule() {
    let ctx = MainContext::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let bh = ctx.bottom_half(move || r.set(r.get() + 1));
    bh.schedule();
    bh.cancel();
    assert!(!bh.is_scheduled());
    while ctx.iteration(false) {}
    assert_eq!(runs.get(), 0);
    bh.schedule();
    while ctx.iteration(false) {}
    assert_eq!(runs.get(), 1);
}

#[test]
fn dropping_every_handle_after_a_schedule_runs_it_once_then_deletes_it() {
    let ctx = MainContext::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let bh = ctx.bottom_half(move || r.set(r.get() + 1));
    let remote = bh.clone();
    drop(bh);
    std::thread::spawn(move || {
        remote.schedule();
        drop(remote);
    })
    .join()
    .unwrap();
    while ctx.iteration(false) {}
    assert_eq!(runs.get(), 1);
}

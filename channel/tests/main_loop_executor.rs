//! The local executor: wakers woken from other threads, tasks woken during
//! their own poll (calloop issue #171), block_on, cancellation.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use transit_channel::main_loop::{ControlFlow, MainContext};

/// Pending until `flag` is set; parks its waker in `slot`.
struct Flagged {
    flag: Arc<Mutex<bool>>,
    slot: Arc<Mutex<Option<Waker>>>,
}

impl Future for Flagged {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        if *self.flag.lock().unwrap() {
            return Poll::Ready(7);
        }
        *self.slot.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn watchdog(ctx: &MainContext) -> Rc<Cell<bool>> {
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    ctx.timeout_add(Duration::from_secs(10), move || {
        f.set(true);
        ControlFlow::Remove
    });
    fired
}

#[test]
fn a_waker_woken_from_another_thread_runs_the_task() {
    let ctx = MainContext::new().unwrap();
    let flag = Arc::new(Mutex::new(false));
    let slot = Arc::new(Mutex::new(None::<Waker>));
    let task = ctx.spawn_local(Flagged {
        flag: flag.clone(),
        slot: slot.clone(),
    });
    assert!(ctx.iteration(false), "first poll");
    assert!(!task.is_finished());
    let waker = slot.lock().unwrap().take().expect("task parked its waker");
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        *flag.lock().unwrap() = true;
        waker.wake();
    });
    let dog = watchdog(&ctx);
    while !task.is_finished() && !dog.get() {
        ctx.iteration(true);
    }
    t.join().unwrap();
    assert!(!dog.get(), "the cross-thread wake was lost");
    assert_eq!(ctx.block_on(task), 7);
}

/// Wakes itself during its first poll, completes on the second.
struct SelfWaking {
    polls: Rc<Cell<u32>>,
}

impl Future for SelfWaking {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.set(self.polls.get() + 1);
        if self.polls.get() == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(())
    }
}

#[test]
fn a_task_woken_during_its_own_poll_runs_again() {
    let ctx = MainContext::new().unwrap();
    let polls = Rc::new(Cell::new(0));
    let task = ctx.spawn_local(SelfWaking {
        polls: polls.clone(),
    });
    let dog = watchdog(&ctx);
    while !task.is_finished() && !dog.get() {
        ctx.iteration(true);
    }
    assert!(!dog.get(), "the self-wake was lost (calloop #171)");
    assert_eq!(polls.get(), 2);
}

#[test]
fn a_task_woken_by_another_callback_during_dispatch_runs() {
    let ctx = MainContext::new().unwrap();
    let flag = Arc::new(Mutex::new(false));
    let slot = Arc::new(Mutex::new(None::<Waker>));
    let task = ctx.spawn_local(Flagged {
        flag: flag.clone(),
        slot: slot.clone(),
    });
    ctx.iteration(false);
    ctx.idle_add(move || {
        *flag.lock().unwrap() = true;
        if let Some(w) = slot.lock().unwrap().take() {
            w.wake();
        }
        ControlFlow::Remove
    });
    let dog = watchdog(&ctx);
    while !task.is_finished() && !dog.get() {
        ctx.iteration(true);
    }
    assert!(!dog.get());
    assert!(task.is_finished());
}

#[test]
fn block_on_runs_spawned_tasks_and_sources() {
    let ctx = MainContext::new().unwrap();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    ctx.timeout_add(Duration::from_millis(1), move || {
        t.set(t.get() + 1);
        ControlFlow::Remove
    });
    let c2 = ctx.clone();
    let out = ctx.block_on(async move {
        let a = c2.spawn_local(async { 20 });
        let b = c2.spawn_local(async { 22 });
        a.await + b.await
    });
    assert_eq!(out, 42);
    let c3 = ctx.clone();
    let waited = ctx.block_on(async move {
        // Wait for the timer through the loop.
        while ticks.get() == 0 {
            let t = c3.spawn_local(async {});
            t.await;
        }
        ticks.get()
    });
    assert_eq!(waited, 1);
}

#[test]
fn a_nested_block_on_inside_a_task_can_wait_for_other_tasks() {
    let ctx = MainContext::new().unwrap();
    let c2 = ctx.clone();
    let outer = ctx.spawn_local(async move {
        let inner = c2.spawn_local(async { 5 });
        c2.block_on(inner) * 2
    });
    assert_eq!(ctx.block_on(outer), 10);
}

#[test]
fn dropping_the_task_handle_cancels_the_future() {
    let ctx = MainContext::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    struct Guard(Rc<Cell<bool>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let g = Guard(dropped.clone());
    let task = ctx.spawn_local(async move {
        let _g = g;
        std::future::pending::<()>().await;
    });
    ctx.iteration(false);
    assert!(!dropped.get());
    drop(task);
    // The cancelled task is scheduled once more so the loop drops it here.
    while ctx.iteration(false) {}
    assert!(dropped.get());
}

//! `ContextHandle::invoke` from other threads wakes a blocked loop and runs
//! closures in order on the context's thread.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use transit_channel::main_loop::{ControlFlow, MainContext};

#[test]
fn invoke_from_another_thread_wakes_a_blocked_iteration() {
    let ctx = MainContext::new().unwrap();
    let watchdog = Rc::new(Cell::new(false));
    let w = watchdog.clone();
    ctx.timeout_add(Duration::from_secs(10), move || {
        w.set(true);
        ControlFlow::Remove
    });
    let handle = ctx.handle();
    let (tx, rx) = mpsc::channel();
    let loop_thread = std::thread::current().id();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..3 {
            let tx = tx.clone();
            handle.invoke(move || tx.send((i, std::thread::current().id())).unwrap());
        }
    });
    // Blocks until the invokes arrive (or the watchdog fires).
    while rx.try_iter().next().is_none() && !watchdog.get() {
        ctx.iteration(true);
    }
    t.join().unwrap();
    while ctx.iteration(false) {}
    assert!(!watchdog.get(), "the invoke did not wake the loop");
    let rest: Vec<_> = rx.try_iter().collect();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
    assert!(rest.iter().all(|(_, id)| *id == loop_thread));
}

#[test]
fn wakeup_interrupts_a_blocking_poll() {
    let ctx = MainContext::new().unwrap();
    let watchdog = Rc::new(Cell::new(false));
    let w = watchdog.clone();
    ctx.timeout_add(Duration::from_secs(10), move || {
        w.set(true);
        ControlFlow::Remove
    });
    let handle = ctx.handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        handle.wakeup();
    });
    assert!(!ctx.iteration(true), "woken with nothing to dispatch");
    assert!(!watchdog.get());
    t.join().unwrap();
}

#[test]
fn invoke_after_the_context_is_gone_is_dropped() {
    let ctx = MainContext::new().unwrap();
    let handle = ctx.handle();
    assert!(handle.is_alive());
    drop(ctx);
    assert!(!handle.is_alive());
    let (tx, rx) = mpsc::channel::<()>();
    handle.invoke(move || tx.send(()).unwrap());
    // The closure (and its sender) was dropped without running.
    assert!(rx.recv().is_err());
}

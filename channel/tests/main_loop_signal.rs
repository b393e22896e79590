//! Signal sources (own test binary: signals are process-wide). Each test
//! uses its own signal so they can run in parallel.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use transit_channel::main_loop::{ControlFlow, MainContext};

fn disposition(signum: i32) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is valid; the query writes into it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: null new action = query only; `old` is a valid out pointer.
    let rc = unsafe { libc::sigaction(signum, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0);
    old.sa_sigaction
}

fn run_until(ctx: &MainContext, done: impl Fn() -> bool) -> bool {
    let dog = Rc::new(Cell::new(false));
    let d = dog.clone();
    let id = ctx.timeout_add(Duration::from_secs(10), move || {
        d.set(true);
        ControlFlow::Remove
    });
    while !done() && !dog.get() {
        ctx.iteration(true);
    }
    ctx.remove(id);
    !dog.get()
}

#[test]
fn a_raised_signal_runs_the_callback_on_the_context_thread() {
    let ctx = MainContext::new().unwrap();
    let before = disposition(libc::SIGUSR1);
    let hits = Rc::new(Cell::new(0));
    let h = hits.clone();
    let id = ctx
        .signal_add(libc::SIGUSR1, move || {
            h.set(h.get() + 1);
            ControlFlow::Continue
        })
        .unwrap();
    assert_ne!(disposition(libc::SIGUSR1), before, "handler installed");
    // SAFETY: raise has no memory preconditions; our handler is installed.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
    assert!(run_until(&ctx, || hits.get() == 1), "signal not delivered");
    // Twice before the loop looks: coalesced into one callback.
    // SAFETY: as above.
    unsafe {
        libc::raise(libc::SIGUSR1);
        libc::raise(libc::SIGUSR1);
    }
    assert!(run_until(&ctx, || hits.get() == 2));
    while ctx.iteration(false) {}
    assert_eq!(hits.get(), 2);
    assert!(ctx.remove(id));
    assert_eq!(disposition(libc::SIGUSR1), before, "disposition restored");
}

#[test]
fn a_signal_raised_from_another_thread_reaches_every_context() {
    let ctx1 = MainContext::new().unwrap();
    let before = disposition(libc::SIGUSR2);
    let got1 = Rc::new(Cell::new(false));
    let g = got1.clone();
    let id1 = ctx1
        .signal_add(libc::SIGUSR2, move || {
            g.set(true);
            ControlFlow::Remove
        })
        .unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (fire_tx, fire_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let ctx2 = MainContext::new().unwrap();
        let got2 = Rc::new(Cell::new(false));
        let g = got2.clone();
        ctx2.signal_add(libc::SIGUSR2, move || {
            g.set(true);
            ControlFlow::Remove
        })
        .unwrap();
        ready_tx.send(()).unwrap();
        fire_rx.recv().unwrap();
        run_until(&ctx2, || got2.get())
    });
    ready_rx.recv().unwrap();
    std::thread::spawn(|| {
        // SAFETY: kill on our own pid; both sources are installed.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
    })
    .join()
    .unwrap();
    fire_tx.send(()).unwrap();
    assert!(
        run_until(&ctx1, || got1.get()),
        "first context missed the signal"
    );
    assert!(other.join().unwrap(), "second context missed the signal");
    assert!(!ctx1.remove(id1), "the source removed itself");
    assert_eq!(disposition(libc::SIGUSR2), before, "disposition restored");
}

#[test]
fn fault_signals_are_refused() {
    let ctx = MainContext::new().unwrap();
    let err = ctx
        .signal_add(libc::SIGSEGV, || ControlFlow::Continue)
        .unwrap_err();
    assert!(err.to_string().contains("signal 11"), "{err}");
    assert!(ctx.signal_add(0, || ControlFlow::Continue).is_err());
}

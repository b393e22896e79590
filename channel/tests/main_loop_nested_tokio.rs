//! A context nested in a tokio current-thread runtime through `AsyncFd` on
//! the context's fd: timers, fd watches and cross-thread invokes all make
//! the fd readable.

use std::cell::Cell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use transit_channel::main_loop::{ControlFlow, MainContext};
use transit_channel::{Condition, Readiness, WatchFds, WatchSource};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Register the context's fd with tokio's reactor.
fn register(ctx: &MainContext) -> AsyncFd<MainContext> {
    // SAFETY: the AsyncFd owns a clone of the context, which keeps its epoll
    // fd open (and returns the same fd) for as long as the AsyncFd exists.
    unsafe { AsyncFd::register_with_interest(ctx.clone(), Interest::READABLE) }.unwrap()
}

/// Drive `ctx` from tokio until `done()`, at most 10 s; true if done.
async fn drive(ctx: &MainContext, done: impl Fn() -> bool) -> bool {
    let afd = register(ctx);
    let run = async {
        while !done() {
            let mut guard = afd.readable().await.unwrap();
            ctx.iteration(false);
            if !ctx.pending() {
                guard.clear_ready();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .is_ok()
}

#[test]
fn a_timer_fires_through_tokio_and_never_early() {
    runtime().block_on(async {
        let ctx = MainContext::new().unwrap();
        let fired = Rc::new(Cell::new(None));
        let f = fired.clone();
        let start = Instant::now();
        ctx.timeout_add(Duration::from_millis(30), move || {
            f.set(Some(start.elapsed()));
            ControlFlow::Remove
        });
        assert!(
            drive(&ctx, || fired.get().is_some()).await,
            "timer never fired"
        );
        assert!(fired.get().unwrap() >= Duration::from_millis(30));
    });
}

#[test]
fn an_fd_watch_and_a_cross_thread_invoke_wake_the_outer_loop() {
    runtime().block_on(async {
        let ctx = MainContext::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let ws = WatchSource {
            fds: WatchFds::One(a.as_raw_fd()),
            ready: Readiness::new(),
            name: "nested".into(),
        };
        let seen = Rc::new(Cell::new(false));
        let s = seen.clone();
        ctx.add_watch(&ws, Condition::IN, move |c| {
            assert!(c.contains(Condition::IN));
            s.set(true);
            ControlFlow::Remove
        });
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b.write_all(b"x").unwrap();
            b
        });
        assert!(
            drive(&ctx, || seen.get()).await,
            "fd readiness did not reach tokio"
        );
        let _b = writer.join().unwrap();

        let invoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (handle, i) = (ctx.handle(), invoked.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            handle.invoke(move || i.store(true, std::sync::atomic::Ordering::SeqCst));
        });
        let i = invoked.clone();
        assert!(
            drive(&ctx, move || i.load(std::sync::atomic::Ordering::SeqCst)).await,
            "invoke did not reach tokio"
        );
        t.join().unwrap();
    });
}

#[test]
fn tokio_timers_keep_running_while_the_context_is_idle() {
    runtime().block_on(async {
        let ctx = MainContext::new().unwrap();
        let afd = register(&ctx);
        // Nothing is due on the context: its fd must not be readable after
        // the first (export) iteration, so tokio's own sleep wins.
        let mut guard = afd.readable().await.unwrap();
        ctx.iteration(false);
        assert!(!ctx.pending());
        guard.clear_ready();
        let r = tokio::time::timeout(Duration::from_millis(30), afd.readable()).await;
        assert!(r.is_err(), "the idle context's fd reported readable");
    });
}

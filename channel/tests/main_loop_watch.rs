//! Fd watches: readiness from the poll and from `Readiness` bits, a read
//! gate, the same fd in several watches, fd pairs, hang-up, and no
//! re-entrant dispatch from a nested iteration.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use transit_channel::main_loop::{ControlFlow, MainContext, Priority};
use transit_channel::{Condition, Readiness, WatchFds, WatchSource};

fn ws_one(fd: &impl AsRawFd) -> WatchSource {
    WatchSource {
        fds: WatchFds::One(fd.as_raw_fd()),
        ready: Readiness::new(),
        name: "test-stream".into(),
    }
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Iterate (blocking) until `done()`, bounded by 10 s.
fn run_until(ctx: &MainContext, done: impl Fn() -> bool) {
    let limit = Instant::now() + Duration::from_secs(10);
    let _guard = ctx.timeout_add(Duration::from_millis(50), || ControlFlow::Continue);
    while !done() {
        assert!(Instant::now() < limit, "condition not reached within 10 s");
        ctx.iteration(true);
    }
    ctx.remove(_guard);
}

#[test]
fn a_watch_fires_when_data_arrives() {
    let ctx = MainContext::new().unwrap();
    let (a, mut b) = pair();
    let got = Rc::new(Cell::new(Condition::empty()));
    let g = got.clone();
    ctx.add_watch(&ws_one(&a), Condition::IN, move |c| {
        g.set(c);
        ControlFlow::Remove
    });
    assert!(!ctx.iteration(false), "nothing to read yet");
    b.write_all(b"ping").unwrap();
    run_until(&ctx, || !got.get().is_empty());
    assert!(got.get().contains(Condition::IN));
    assert!(!got.get().contains(Condition::OUT), "OUT was not asked for");
}

#[test]
fn readiness_bits_fire_without_any_fd() {
    let ctx = MainContext::new().unwrap();
    let ready = Readiness::new();
    let ws = WatchSource {
        fds: WatchFds::None,
        ready: ready.clone(),
        name: "buffered".into(),
    };
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    ctx.add_watch(&ws, Condition::IN, move |c| {
        g.borrow_mut().push(c);
        ControlFlow::Continue
    });
    assert!(!ctx.pending());
    ready.insert(Condition::IN | Condition::OUT);
    assert!(ctx.pending());
    // Ready without polling: even a blocking iteration returns at once.
    assert!(ctx.iteration(true));
    assert_eq!(
        *got.borrow(),
        [Condition::IN],
        "masked by the watched condition"
    );
    ready.set(Condition::empty());
    assert!(!ctx.iteration(false));
    assert_eq!(got.borrow().len(), 1);
}

#[test]
fn a_closed_gate_stops_polling_and_reopening_delivers_what_arrived() {
    let ctx = MainContext::new().unwrap();
    let (mut a, mut b) = pair();
    let open = Rc::new(Cell::new(false));
    let o = open.clone();
    let received = Rc::new(RefCell::new(Vec::new()));
    let r = received.clone();
    let fd = a.try_clone().unwrap();
    ctx.add_watch_full(
        &ws_one(&fd),
        Condition::IN,
        Priority::DEFAULT,
        Some(Box::new(move || o.get())),
        move |c| {
            assert!(c.contains(Condition::IN));
            let mut buf = [0u8; 64];
            let n = a.read(&mut buf).unwrap();
            r.borrow_mut().extend_from_slice(&buf[..n]);
            ControlFlow::Continue
        },
    );
    b.write_all(b"held back").unwrap();
    for _ in 0..5 {
        assert!(!ctx.iteration(false));
    }
    assert!(!ctx.pending(), "a gated fd is not ready");
    // A blocking iteration is not woken by the gated fd: with a 20 ms timer
    // it takes exactly one iteration (the timer), not a busy loop.
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    ctx.timeout_add(Duration::from_millis(20), move || {
        f.set(true);
        ControlFlow::Remove
    });
    let mut iterations = 0;
    while !fired.get() {
        ctx.iteration(true);
        iterations += 1;
        assert!(iterations < 1000, "the gated fd keeps waking the poll");
    }
    assert!(
        iterations <= 2,
        "{iterations} iterations: gated fd was polled"
    );
    assert!(received.borrow().is_empty());

    open.set(true);
    run_until(&ctx, || received.borrow().len() == 9);
    assert_eq!(&*received.borrow(), b"held back");
}

#[test]
fn the_same_fd_in_several_watches() {
    let ctx = MainContext::new().unwrap();
    let (a, mut b) = pair();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let in1 = ctx.add_watch(&ws_one(&a), Condition::IN, move |_| {
        l.borrow_mut().push("in-1");
        ControlFlow::Continue
    });
    let l = log.clone();
    ctx.add_watch(&ws_one(&a), Condition::IN, move |_| {
        l.borrow_mut().push("in-2");
        ControlFlow::Continue
    });
    let l = log.clone();
    let out = ctx.add_watch(&ws_one(&a), Condition::OUT, move |c| {
        assert!(c.contains(Condition::OUT) && !c.contains(Condition::IN));
        l.borrow_mut().push("out");
        ControlFlow::Continue
    });
    assert!(ctx.iteration(false));
    assert_eq!(*log.borrow(), ["out"], "writable, nothing to read");
    b.write_all(b"x").unwrap();
    log.borrow_mut().clear();
    assert!(ctx.iteration(false));
    assert_eq!(*log.borrow(), ["in-1", "in-2", "out"]);
    ctx.remove(in1);
    ctx.remove(out);
    log.borrow_mut().clear();
    assert!(ctx.iteration(false));
    assert_eq!(
        *log.borrow(),
        ["in-2"],
        "the remaining watch still polls the fd"
    );
}

#[test]
fn an_fd_pair_polls_in_on_the_read_fd_and_out_on_the_write_fd() {
    let ctx = MainContext::new().unwrap();
    let (r1, w1) = pipe();
    let (_r2, w2) = pipe();
    let ws = WatchSource {
        fds: WatchFds::Pair {
            read: r1.as_raw_fd(),
            write: w2.as_raw_fd(),
        },
        ready: Readiness::new(),
        name: "command".into(),
    };
    let got = Rc::new(Cell::new(Condition::empty()));
    let g = got.clone();
    let id = ctx.add_watch(&ws, Condition::IN, move |c| {
        g.set(c);
        ControlFlow::Continue
    });
    // The write fd of the pair is writable, but only IN is asked for.
    assert!(!ctx.iteration(false));
    std::fs::File::from(w1).write_all(b"x").unwrap();
    assert!(ctx.iteration(false));
    assert_eq!(got.get() & (Condition::IN | Condition::OUT), Condition::IN);
    ctx.remove(id);
    let g = got.clone();
    ctx.add_watch(&ws, Condition::OUT, move |c| {
        g.set(c);
        ControlFlow::Continue
    });
    assert!(ctx.iteration(false));
    assert_eq!(got.get() & (Condition::IN | Condition::OUT), Condition::OUT);
}

#[test]
fn a_closed_peer_is_reported() {
    let ctx = MainContext::new().unwrap();
    let (r, w) = pipe();
    let got = Rc::new(Cell::new(Condition::empty()));
    let g = got.clone();
    ctx.add_watch(&ws_one(&r), Condition::IN, move |c| {
        g.set(c);
        ControlFlow::Remove
    });
    drop(w);
    run_until(&ctx, || !got.get().is_empty());
    assert!(got.get().contains(Condition::HUP), "{:?}", got.get());
}

#[test]
fn a_nested_iteration_never_re_enters_the_dispatching_watch() {
    let ctx = MainContext::new().unwrap();
    let (a, mut b) = pair();
    b.write_all(b"never read").unwrap();
    let inside = Rc::new(Cell::new(false));
    let calls = Rc::new(Cell::new(0));
    let idle_runs = Rc::new(Cell::new(0));
    let i = idle_runs.clone();
    ctx.idle_add_full(Priority::DEFAULT, move || {
        i.set(i.get() + 1);
        ControlFlow::Remove
    });
    let (c2, inside2, calls2) = (ctx.clone(), inside.clone(), calls.clone());
    ctx.add_watch(&ws_one(&a), Condition::IN, move |_| {
        assert!(!inside2.get(), "watch dispatched re-entrantly");
        inside2.set(true);
        calls2.set(calls2.get() + 1);
        // The fd stays readable, but the nested iteration must neither run
        // this watch again nor be woken by its fd.
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        c2.timeout_add_full(Duration::from_millis(10), Priority::HIGH, move || {
            f.set(true);
            ControlFlow::Remove
        });
        let mut nested = 0;
        while !fired.get() {
            c2.iteration(true);
            nested += 1;
            assert!(
                nested < 1000,
                "the dispatching watch's fd keeps waking the poll"
            );
        }
        assert!(
            nested <= 3,
            "{nested} nested iterations: the blocked fd was polled"
        );
        inside2.set(false);
        ControlFlow::Remove
    });
    // Both the watch and the idle are at DEFAULT and ready.
    assert!(ctx.iteration(false));
    assert_eq!(calls.get(), 1);
    assert_eq!(
        idle_runs.get(),
        1,
        "other sources still run in a nested iteration"
    );
}

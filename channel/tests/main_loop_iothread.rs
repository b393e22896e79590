//! `IoThread`: a named thread with its own context; invoke onto it; stop
//! joins.

use std::sync::mpsc;
use std::time::Duration;

use transit_channel::main_loop::{ControlFlow, IoThread};

#[test]
fn invoke_runs_on_the_named_thread_and_stop_joins() {
    let io = IoThread::spawn("transit-io-1").unwrap();
    assert_eq!(io.name(), "transit-io-1");
    let (tx, rx) = mpsc::channel();
    io.handle().invoke(move || {
        let name = std::thread::current().name().map(str::to_owned);
        let ctx = IoThread::current_context().expect("runs on an io thread");
        // Attach a source to the io thread's own context.
        let tx2 = tx.clone();
        ctx.timeout_add(Duration::from_millis(5), move || {
            tx2.send("timer".to_owned()).unwrap();
            ControlFlow::Remove
        });
        tx.send(name.unwrap_or_default()).unwrap();
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "transit-io-1"
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "timer");
    let handle = io.handle();
    assert!(handle.is_alive());
    io.stop();
    assert!(!handle.is_alive(), "the context is gone once stop returns");
    assert!(IoThread::current_context().is_none());
}

#[test]
fn dropping_stops_and_removes_sources_that_hold_the_context() {
    let io = IoThread::spawn("transit-io-2").unwrap();
    let (tx, rx) = mpsc::channel();
    io.handle().invoke(move || {
        let ctx = IoThread::current_context().unwrap();
        let c2 = ctx.clone();
        // A reference cycle: the source holds its own context.
        ctx.timeout_add(Duration::from_secs(3600), move || {
            let _ = &c2;
            ControlFlow::Continue
        });
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let handle = io.handle();
    drop(io);
    assert!(!handle.is_alive());
}

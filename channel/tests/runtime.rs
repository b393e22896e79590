//! `main_loop::runtime::Runtime`: a signal that comes after a phase's work
//! succeeded does not undo it, the phases after it are cancelled, and a
//! work that failed while a signal came was cancelled. (Its own test
//! binary: a signal goes to every runtime in the process.)

use std::time::Duration;

use transit_channel::main_loop::runtime::{PhaseError, Runtime};

/// Run a work that raises `sig` and then returns `result`, on a fresh
/// runtime; the runtime is returned for the next phase.
fn raise_then(sig: i32, result: Result<u32, PhaseError>) -> (Runtime, Result<u32, PhaseError>) {
    let rt = Runtime::new().expect("runtime");
    let r = rt.run_task(
        "work",
        || {},
        move || {
            // SAFETY: raise has no memory effects; the runtime handles
            // SIGINT and SIGTERM for as long as it lives.
            unsafe { libc::raise(sig) };
            // Give the loop time to see the signal before the result.
            std::thread::sleep(Duration::from_millis(100));
            result
        },
    );
    (rt, r)
}

// One test, not two: a signal goes to every runtime in the process, so
// two tests running at once would cancel each other.
#[test]
fn a_signal_after_the_work_succeeded_does_not_undo_it() {
    let (rt, r) = raise_then(libc::SIGINT, Ok(42));
    assert_eq!(rt.cancelled(), Some(libc::SIGINT), "the signal was seen");
    assert_eq!(r.ok(), Some(42), "the finished work stands");
    // The phases after it are cancelled.
    let next: Result<(), PhaseError> = rt.run_task("next", || {}, || Ok(()));
    assert_eq!(next, Err(PhaseError::Cancelled(libc::SIGINT)));
    drop(rt);

    // Work that failed while a signal came was cancelled.
    let (_rt, r) = raise_then(libc::SIGTERM, Err(PhaseError::Failed("shut down".into())));
    assert_eq!(r, Err(PhaseError::Cancelled(libc::SIGTERM)));
}

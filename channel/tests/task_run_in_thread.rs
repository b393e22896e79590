//! `Task::run_in_thread`: completion on the context's thread with the
//! worker's result, first error wins, `wait_thread`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use transit_channel::main_loop::MainContext;
use transit_channel::task::{Task, TaskHandle};
use transit_channel::Error;

fn run_until_complete(ctx: &MainContext, task: &TaskHandle) {
    let limit = Instant::now() + Duration::from_secs(10);
    let _beat = ctx.timeout_add(Duration::from_millis(50), || {
        transit_channel::ControlFlow::Continue
    });
    while !task.is_complete() {
        assert!(Instant::now() < limit, "task did not complete within 10 s");
        ctx.iteration(true);
    }
}

#[test]
fn completion_runs_on_the_context_thread_with_the_result() {
    let ctx = MainContext::new().unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let ctx_thread = std::thread::current().id();
    let task = Task::run_in_thread(
        &ctx,
        "task-worker",
        move |_| {
            assert_ne!(std::thread::current().id(), ctx_thread);
            Ok(std::thread::current().name().map(str::to_owned))
        },
        move |r| {
            assert_eq!(std::thread::current().id(), ctx_thread);
            *g.borrow_mut() = Some(r.unwrap());
        },
    );
    assert!(!task.is_complete() || got.borrow().is_some());
    run_until_complete(&ctx, &task);
    assert_eq!(*got.borrow(), Some(Some("task-worker".to_owned())));
}

#[test]
fn the_first_error_wins() {
    let ctx = MainContext::new().unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let task = Task::run_in_thread(
        &ctx,
        "task-errors",
        |errors| {
            errors.set_error(Error::protocol("chan-a", "first"));
            errors.set_error(Error::protocol("chan-b", "second"));
            assert!(errors.has_error());
            Ok(1u32)
        },
        move |r: Result<u32, Error>| *g.borrow_mut() = Some(r),
    );
    run_until_complete(&ctx, &task);
    let err = got.borrow_mut().take().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "chan-a: first");
}

#[test]
fn a_returned_error_is_the_result_when_none_was_set() {
    let ctx = MainContext::new().unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let task = Task::run_in_thread(
        &ctx,
        "task-err",
        |_| Err::<(), _>(Error::protocol("chan", "broken")),
        move |r| *g.borrow_mut() = Some(r),
    );
    run_until_complete(&ctx, &task);
    let err = got.borrow_mut().take().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "chan: broken");
}

#[test]
fn wait_thread_completes_inline_and_only_once() {
    let ctx = MainContext::new().unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let task = Task::run_in_thread(
        &ctx,
        "task-wait",
        |_| {
            std::thread::sleep(Duration::from_millis(20));
            Ok(5)
        },
        move |r| {
            assert_eq!(r.unwrap(), 5);
            c.set(c.get() + 1);
        },
    );
    task.wait_thread();
    assert_eq!(calls.get(), 1, "done ran inline");
    // The completion scheduled on the context must not run it again.
    let deadline = Instant::now() + Duration::from_millis(50);
    while Instant::now() < deadline {
        ctx.iteration(false);
    }
    assert_eq!(calls.get(), 1);
}

#[test]
fn a_panicking_worker_still_completes_with_an_error() {
    let ctx = MainContext::new().unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let task = Task::run_in_thread(
        &ctx,
        "task-panic",
        |_| -> Result<(), Error> { panic!("boom") },
        move |r| *g.borrow_mut() = Some(r),
    );
    run_until_complete(&ctx, &task);
    let err = got.borrow_mut().take().unwrap().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("task-panic") && msg.contains("boom"), "{msg}");
}

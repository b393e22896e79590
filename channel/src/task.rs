//! [`Task`]: run blocking work on a worker thread and complete on a
//! context's thread (QEMU's `QIOTask` with `qio_task_run_in_thread`).
//!
//! The work gets a [`TaskErrors`] to report errors from deep inside (the
//! first one wins); the completion callback always runs on the context's
//! thread, at the context's next iteration after the worker finished, or
//! inline in [`TaskHandle::wait_thread`]. A panic in the work becomes an
//! error result rather than a lost completion.
//!
//! # Example
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use transit_channel::main_loop::MainContext;
//! use transit_channel::task::Task;
//!
//! let ctx = MainContext::new()?;
//! let got = Rc::new(Cell::new(0));
//! let g = got.clone();
//! let task = Task::run_in_thread(&ctx, "adder", |_errors| Ok(40 + 2), move |r| {
//!     g.set(r.unwrap());
//! });
//! while !task.is_complete() {
//!     ctx.iteration(true);
//! }
//! assert_eq!(got.get(), 42);
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::error::{Error, Result};
use crate::main_loop::MainContext;

/// Collects errors from a task's work; only the first one is kept.
#[derive(Debug, Default)]
pub struct TaskErrors {
    first: Mutex<Option<Error>>,
}

impl TaskErrors {
    /// Record `e` unless an error was recorded already (QEMU's
    /// `qio_task_set_error`).
    #[doc(alias = "qio_task_set_error")]
    pub fn set_error(&self, e: Error) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(e);
        }
    }

    /// True if an error was recorded.
    pub fn has_error(&self) -> bool {
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn take(&self) -> Option<Error> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Work on a worker thread with completion on a context (see the
/// [module documentation](self)). `T` is the work's result type.
pub struct Task<T> {
    _result: PhantomData<fn() -> T>,
}

/// Runs the completion once, whoever gets there first.
struct Completion {
    finish: RefCell<Option<Box<dyn FnOnce()>>>,
    complete: Cell<bool>,
}

impl Completion {
    fn run(&self) {
        let finish = self.finish.borrow_mut().take();
        if let Some(finish) = finish {
            finish();
            self.complete.set(true);
        }
    }
}

/// A running [`Task`], on the context's thread.
pub struct TaskHandle {
    name: String,
    completion: Rc<Completion>,
    thread: Option<JoinHandle<()>>,
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

impl<T: Send + 'static> Task<T> {
    /// Run `work` on a worker thread called `name`; `done(result)` runs
    /// later on `ctx`'s thread, always (unless the context is dropped
    /// first). If `work` recorded an error with
    /// [`TaskErrors::set_error`], the result is the first recorded error,
    /// whatever `work` returned. A panic in `work` becomes an error.
    #[doc(alias = "qio_task_run_in_thread")]
    pub fn run_in_thread(
        ctx: &MainContext,
        name: &str,
        work: impl FnOnce(&TaskErrors) -> Result<T> + Send + 'static,
        done: impl FnOnce(Result<T>) + 'static,
    ) -> TaskHandle {
        let slot: Arc<Mutex<Option<Result<T>>>> = Arc::new(Mutex::new(None));
        let task_name = name.to_owned();
        let read_slot = Arc::clone(&slot);
        let missing_name = task_name.clone();
        let completion = Rc::new(Completion {
            finish: RefCell::new(Some(Box::new(move || {
                let result = read_slot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_else(|| {
                        Err(Error::protocol(
                            &missing_name,
                            "task finished without a result",
                        ))
                    });
                done(result);
            }))),
            complete: Cell::new(false),
        });
        let on_ctx = Rc::clone(&completion);
        let bh = ctx.bottom_half(move || on_ctx.run());
        let worker_bh = bh.clone();
        let worker_slot = Arc::clone(&slot);
        let worker_name = task_name.clone();
        let spawned = thread::Builder::new()
            .name(task_name.clone())
            .spawn(move || {
                let errors = TaskErrors::default();
                let result = match catch_unwind(AssertUnwindSafe(|| work(&errors))) {
                    Ok(r) => r,
                    Err(panic) => Err(Error::protocol(
                        &worker_name,
                        format!("task worker panicked: {}", panic_message(panic.as_ref())),
                    )),
                };
                let result = match errors.take() {
                    Some(first) => Err(first),
                    None => result,
                };
                *worker_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                worker_bh.schedule();
            });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Err(Error::os(&task_name, "spawn the worker thread", e)));
                bh.schedule();
                None
            }
        };
        TaskHandle {
            name: task_name,
            completion,
            thread,
        }
    }
}

impl TaskHandle {
    /// From the context's thread, before completion: block until the worker
    /// finished and run `done` inline now (QEMU's `qio_task_wait_thread`).
    /// The completion scheduled on the context then does nothing. No-op if
    /// the task already completed.
    #[doc(alias = "qio_task_wait_thread")]
    pub fn wait_thread(mut self) {
        if self.completion.complete.get() {
            return;
        }
        if let Some(t) = self.thread.take() {
            // Panics in the work were caught and turned into the result.
            let _ = t.join();
        }
        self.completion.run();
    }

    /// True once `done` has run.
    pub fn is_complete(&self) -> bool {
        self.completion.complete.get()
    }

    /// The worker thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("name", &self.name)
            .field("complete", &self.is_complete())
            .finish()
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Task")
    }
}

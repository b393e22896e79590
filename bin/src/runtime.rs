//! The main loop every command runs on: a [`MainContext`] and a
//! [`MainLoop`], SIGINT/SIGTERM sources, and blocking work moved to worker
//! threads as [`Task`]s whose completion comes back on the loop.
//!
//! A command is a sequence of phases (prepare the payload, connect, run
//! the transfer); each phase is one or more tasks, and the loop runs until
//! they complete. Timers (progress, JSON intervals) are ordinary sources
//! on the same context. A signal runs the current phase's cancel action
//! (shut the channels down, abort the session) and the phase ends as soon
//! as its workers return; if they do not return within
//! [`CANCEL_GRACE`], the loop stops anyway. A second signal stops it at
//! once.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use transit_channel::task::Task;
use transit_channel::{ControlFlow, MainContext, MainLoop, SourceId};

use crate::error::AppError;

/// How long a cancelled phase may take to wind down.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

type Action = Rc<dyn Fn()>;

struct CancelState {
    signal: Cell<Option<i32>>,
    action: RefCell<Option<Action>>,
    ml: MainLoop,
}

/// A context, its loop and the signal handling of one command.
pub struct Runtime {
    ctx: MainContext,
    ml: MainLoop,
    cancel: Rc<CancelState>,
    signals: Vec<SourceId>,
}

impl Runtime {
    /// A new context with SIGINT and SIGTERM handled on it.
    pub fn new() -> Result<Runtime, AppError> {
        let ctx = MainContext::new().map_err(|e| AppError::failed(format!("main loop: {e}")))?;
        let ml = MainLoop::new(&ctx);
        let cancel = Rc::new(CancelState {
            signal: Cell::new(None),
            action: RefCell::new(None),
            ml: ml.clone(),
        });
        let mut signals = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let state = cancel.clone();
            let grace_ctx = ctx.clone();
            let id = ctx
                .signal_add(sig, move || {
                    on_signal(&state, &grace_ctx, sig);
                    ControlFlow::Continue
                })
                .map_err(|e| AppError::failed(format!("install the signal handler: {e}")))?;
            signals.push(id);
        }
        Ok(Runtime {
            ctx,
            ml,
            cancel,
            signals,
        })
    }

    /// The context (for timers and watches).
    pub fn ctx(&self) -> &MainContext {
        &self.ctx
    }

    /// The loop (callbacks call `quit` on it to end [`run_loop`](Self::run_loop)).
    pub fn main_loop(&self) -> &MainLoop {
        &self.ml
    }

    /// Run the loop until a callback quits it; `on_cancel` runs if a
    /// signal arrives meanwhile (the loop then stops by itself).
    pub fn run_loop(&self, on_cancel: impl Fn() + 'static) -> Result<(), AppError> {
        self.check()?;
        let ml = self.ml.clone();
        *self.cancel.action.borrow_mut() = Some(Rc::new(move || {
            on_cancel();
            ml.quit();
        }));
        self.ml.run();
        *self.cancel.action.borrow_mut() = None;
        self.check()
    }

    /// The signal that cancelled the run, if any.
    pub fn cancelled(&self) -> Option<i32> {
        self.cancel.signal.get()
    }

    /// `Err(Cancelled)` once a signal arrived.
    pub fn check(&self) -> Result<(), AppError> {
        match self.cancelled() {
            Some(sig) => Err(AppError::Cancelled(sig)),
            None => Ok(()),
        }
    }

    /// Run `work` on a worker thread named `name` and the loop until it
    /// completes. `on_cancel` runs on the loop's thread if a signal arrives
    /// meanwhile; a cancelled phase returns [`AppError::Cancelled`] unless
    /// the work succeeded all the same (the signal came too late to stop
    /// it): then its result stands, and the next phase is cancelled.
    pub fn run_task<T: Send + 'static>(
        &self,
        name: &str,
        on_cancel: impl Fn() + 'static,
        work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let mut out = self.run_tasks(
            vec![(name.to_owned(), Box::new(work) as Work<T>)],
            on_cancel,
        )?;
        out.pop()
            .ok_or_else(|| AppError::failed(format!("{name}: the task returned nothing")))
    }

    /// Run several works in parallel, one worker thread each, and the loop
    /// until all complete. Returns their results in order, or the first
    /// error in order.
    pub fn run_tasks<T: Send + 'static>(
        &self,
        works: Vec<(String, Work<T>)>,
        on_cancel: impl Fn() + 'static,
    ) -> Result<Vec<T>, AppError> {
        self.check()?;
        let n = works.len();
        type Slots<T> = Rc<RefCell<Vec<Option<Result<T, AppError>>>>>;
        let slots: Slots<T> = Rc::new(RefCell::new((0..n).map(|_| None).collect()));
        let left = Rc::new(Cell::new(n));
        *self.cancel.action.borrow_mut() = Some(Rc::new(on_cancel));
        let mut handles = Vec::with_capacity(n);
        for (i, (name, work)) in works.into_iter().enumerate() {
            let slots = slots.clone();
            let left = left.clone();
            let ml = self.ml.clone();
            let task_name = name.clone();
            handles.push(Task::run_in_thread(
                &self.ctx,
                &name,
                move |_| Ok(work()),
                move |r| {
                    let r = r.unwrap_or_else(|e| {
                        Err(AppError::failed(format!(
                            "{task_name}: internal error: {e}"
                        )))
                    });
                    slots.borrow_mut()[i] = Some(r);
                    left.set(left.get() - 1);
                    if left.get() == 0 {
                        ml.quit();
                    }
                },
            ));
        }
        if n > 0 {
            self.ml.run();
        }
        *self.cancel.action.borrow_mut() = None;
        let slots: Vec<_> = slots.borrow_mut().drain(..).collect();
        // A phase whose every work finished well is done, whatever signal
        // came meanwhile: the signal came too late to stop it (the output
        // is in place, the verdict sent), and saying "cancelled" would be
        // false. A signal stops the phases after it.
        let all_ok = slots.iter().all(|s| matches!(s, Some(Ok(_))));
        if !all_ok {
            self.check()?;
        }
        let mut out = Vec::with_capacity(n);
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(r) => out.push(r?),
                None => {
                    return Err(AppError::failed(format!(
                        "{}: the worker did not finish",
                        handles[i].name()
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// A boxed unit of blocking work.
pub type Work<T> = Box<dyn FnOnce() -> Result<T, AppError> + Send>;

fn on_signal(state: &Rc<CancelState>, ctx: &MainContext, sig: i32) {
    if state.signal.get().is_some() {
        // Second signal: stop now.
        state.ml.quit();
        return;
    }
    state.signal.set(Some(sig));
    let action = state.action.borrow().clone();
    match action {
        Some(a) => {
            a();
            let ml = state.ml.clone();
            ctx.timeout_add(CANCEL_GRACE, move || {
                ml.quit();
                ControlFlow::Remove
            });
        }
        None => state.ml.quit(),
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.signals.drain(..) {
            self.ctx.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a work that raises `sig` and then returns `result`, on a fresh
    /// runtime; the runtime is returned for the next phase.
    fn raise_then(sig: i32, result: Result<u32, AppError>) -> (Runtime, Result<u32, AppError>) {
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

    // One test, not two: a signal goes to every runtime in the process,
    // so two tests running at once would cancel each other.
    #[test]
    fn a_signal_after_the_work_succeeded_does_not_undo_it() {
        let (rt, r) = raise_then(libc::SIGINT, Ok(42));
        assert_eq!(rt.cancelled(), Some(libc::SIGINT), "the signal was seen");
        assert_eq!(r.ok(), Some(42), "the finished work stands");
        // The phases after it are cancelled.
        let next = rt.run_task("next", || {}, || Ok(()));
        assert!(matches!(next, Err(AppError::Cancelled(libc::SIGINT))));
        drop(rt);

        // Work that failed while a signal came was cancelled.
        let (_rt, r) = raise_then(libc::SIGTERM, Err(AppError::failed("shut down")));
        assert!(matches!(r, Err(AppError::Cancelled(libc::SIGTERM))));
    }
}

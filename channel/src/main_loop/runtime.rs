//! [`Runtime`]: the main loop a program runs its phases on: a
//! [`MainContext`] and a [`MainLoop`], SIGINT/SIGTERM sources, and blocking
//! work moved to worker threads as [`Task`]s whose completion comes back on
//! the loop.
//!
//! A program is a sequence of phases (prepare, connect, transfer); each
//! phase is one or more works on worker threads, and the loop runs until
//! they complete. Timers (progress, intervals) are ordinary sources on the
//! same context. A signal runs the current phase's cancel action (shut the
//! channels down, abort the session) and the phase ends as soon as its
//! workers return; if they do not return within [`CANCEL_GRACE`], the
//! loop stops anyway. A second signal stops it at once. A phase whose
//! works all succeeded stands even if a signal came meanwhile (too late to
//! stop it); the phases after it are cancelled. Errors are the caller's
//! type `E`, which says what [`PhaseError`]s become.
//!
//! Limits: the signal sources are process-wide (one `Runtime` at a time
//! per process sees SIGINT and SIGTERM); works cannot be cancelled from
//! outside except through their cancel action.
//!
//! ```
//! use transit_channel::main_loop::runtime::{PhaseError, Runtime};
//!
//! let rt = Runtime::new()?;
//! let n: Result<u32, PhaseError> = rt.run_task("sum", || {}, || Ok((1..=4).sum()));
//! assert_eq!(n.ok(), Some(10));
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::task::Task;
use crate::{ControlFlow, MainContext, MainLoop, SourceId};

/// Why a phase ended without its works' results.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhaseError {
    /// A signal (its number) cancelled it.
    #[error("cancelled by signal {0}")]
    Cancelled(i32),
    /// The runtime itself failed (a worker that did not finish).
    #[error("{0}")]
    Failed(String),
}

/// How long a cancelled phase may take to wind down.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

type Action = Rc<dyn Fn()>;

struct CancelState {
    signal: Cell<Option<i32>>,
    action: RefCell<Option<Action>>,
    ml: MainLoop,
}

/// A context, its loop and the signal handling of one program's run.
pub struct Runtime {
    ctx: MainContext,
    ml: MainLoop,
    cancel: Rc<CancelState>,
    signals: Vec<SourceId>,
}

impl Runtime {
    /// A new context with SIGINT and SIGTERM handled on it.
    pub fn new() -> crate::Result<Runtime> {
        let ctx = MainContext::new()?;
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
            let id = ctx.signal_add(sig, move || {
                on_signal(&state, &grace_ctx, sig);
                ControlFlow::Continue
            })?;
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
    pub fn run_loop(&self, on_cancel: impl Fn() + 'static) -> Result<(), PhaseError> {
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
    pub fn check(&self) -> Result<(), PhaseError> {
        match self.cancelled() {
            Some(sig) => Err(PhaseError::Cancelled(sig)),
            None => Ok(()),
        }
    }

    /// Run `work` on a worker thread named `name` and the loop until it
    /// completes. `on_cancel` runs on the loop's thread if a signal arrives
    /// meanwhile; a cancelled phase returns [`PhaseError::Cancelled`]
    /// (as `E`) unless the work succeeded all the same (the signal came too
    /// late to stop it): then its result stands, and the next phase is
    /// cancelled.
    pub fn run_task<T: Send + 'static, E: From<PhaseError> + Send + 'static>(
        &self,
        name: &str,
        on_cancel: impl Fn() + 'static,
        work: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let mut out = self.run_tasks(
            vec![(name.to_owned(), Box::new(work) as Work<T, E>)],
            on_cancel,
        )?;
        out.pop()
            .ok_or_else(|| PhaseError::Failed(format!("{name}: the task returned nothing")).into())
    }

    /// Run several works in parallel, one worker thread each, and the loop
    /// until all complete. Returns their results in order, or the first
    /// error in order.
    pub fn run_tasks<T: Send + 'static, E: From<PhaseError> + Send + 'static>(
        &self,
        works: Vec<(String, Work<T, E>)>,
        on_cancel: impl Fn() + 'static,
    ) -> Result<Vec<T>, E> {
        self.check()?;
        let n = works.len();
        type Slots<T, E> = Rc<RefCell<Vec<Option<Result<T, E>>>>>;
        let slots: Slots<T, E> = Rc::new(RefCell::new((0..n).map(|_| None).collect()));
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
                        Err(PhaseError::Failed(format!("{task_name}: internal error: {e}")).into())
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
                    return Err(PhaseError::Failed(format!(
                        "{}: the worker did not finish",
                        handles[i].name()
                    ))
                    .into())
                }
            }
        }
        Ok(out)
    }
}

/// A boxed unit of blocking work.
pub type Work<T, E> = Box<dyn FnOnce() -> Result<T, E> + Send>;

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

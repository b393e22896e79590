//! [`MainLoop`]: run a context until told to quit.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::context::MainContext;
use super::shared::ContextHandle;

/// Runs a [`MainContext`] until [`quit`](MainLoop::quit) (glib's
/// `GMainLoop`). Cheap to clone; loops may nest (a callback may run another
/// loop on the same context).
#[derive(Clone)]
pub struct MainLoop {
    ctx: MainContext,
    running: Arc<AtomicBool>,
}

/// A `Send + Sync` way to stop a [`MainLoop`] from any thread.
#[derive(Clone)]
pub struct QuitHandle {
    running: Arc<AtomicBool>,
    handle: ContextHandle,
}

impl MainLoop {
    /// A loop over `ctx`, not running yet.
    #[doc(alias = "g_main_loop_new")]
    pub fn new(ctx: &MainContext) -> MainLoop {
        MainLoop {
            ctx: ctx.clone(),
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Iterate the context (blocking) until [`quit`](Self::quit). As in
    /// glib, a quit made before `run` starts is forgotten.
    #[doc(alias = "g_main_loop_run")]
    pub fn run(&self) {
        self.running.store(true, Ordering::SeqCst);
        while self.running.load(Ordering::SeqCst) {
            self.ctx.iteration(true);
        }
    }

    /// Make [`run`](Self::run) return after the current iteration.
    #[doc(alias = "g_main_loop_quit")]
    pub fn quit(&self) {
        self.running.store(false, Ordering::SeqCst);
        self.ctx.handle().wakeup();
    }

    /// A handle that quits this loop from any thread.
    pub fn quit_handle(&self) -> QuitHandle {
        QuitHandle {
            running: Arc::clone(&self.running),
            handle: self.ctx.handle(),
        }
    }

    /// True between `run` and `quit`.
    #[doc(alias = "g_main_loop_is_running")]
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// The context this loop runs.
    pub fn context(&self) -> &MainContext {
        &self.ctx
    }
}

impl QuitHandle {
    /// Make the loop's `run` return after the current iteration (wakes the
    /// loop if it is blocked).
    pub fn quit(&self) {
        self.running.store(false, Ordering::SeqCst);
        self.handle.wakeup();
    }
}

impl fmt::Debug for MainLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MainLoop")
            .field("running", &self.is_running())
            .finish()
    }
}

impl fmt::Debug for QuitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuitHandle").finish_non_exhaustive()
    }
}

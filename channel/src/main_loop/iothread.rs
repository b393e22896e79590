//! [`IoThread`]: a named thread running a context of its own (QEMU's
//! `IOThread`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

use super::context::MainContext;
use super::shared::ContextHandle;
use crate::error::{Error, Result};

/// A named thread that runs its own [`MainContext`] until stopped.
///
/// Hand it work with [`handle`](IoThread::handle)`().invoke(..)`; closures
/// run on the thread, where [`IoThread::current_context`] gives them the
/// context to attach sources to. [`stop`](IoThread::stop), or dropping
/// the value, quits the loop, removes every source (breaking reference
/// cycles) and joins the thread.
pub struct IoThread {
    name: String,
    handle: ContextHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<MainContext>> = const { std::cell::RefCell::new(None) };
}

impl IoThread {
    /// Start a thread called `name` running a fresh context.
    pub fn spawn(name: &str) -> Result<IoThread> {
        let (tx, rx) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let ctx = match MainContext::new() {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
                let _ = tx.send(Ok(ctx.handle()));
                while !stop_flag.load(Ordering::SeqCst) {
                    ctx.iteration(true);
                }
                CURRENT.with(|c| c.borrow_mut().take());
                ctx.inner.shut_down();
            })
            .map_err(|e| Error::os(name, "spawn the io thread", e))?;
        let handle = match rx.recv() {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::protocol(name, "the io thread exited while starting"));
            }
        };
        Ok(IoThread {
            name: name.to_owned(),
            handle,
            stop,
            thread: Some(thread),
        })
    }

    /// The context of the io thread the caller runs on, if it runs on one
    /// (for closures invoked onto an [`IoThread`]).
    pub fn current_context() -> Option<MainContext> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// A handle on the thread's context: `invoke` runs closures there.
    pub fn handle(&self) -> ContextHandle {
        self.handle.clone()
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Quit the loop, remove every source and join the thread. A panic on
    /// the thread is propagated here.
    pub fn stop(mut self) {
        if let Err(panic) = self.stop_and_join() {
            std::panic::resume_unwind(panic);
        }
    }

    fn stop_and_join(&mut self) -> thread::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.wakeup();
        match self.thread.take() {
            // Stopped from its own thread: the loop ends after this
            // iteration; joining itself would deadlock.
            Some(t) if t.thread().id() == thread::current().id() => Ok(()),
            Some(t) => t.join(),
            None => Ok(()),
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        // A panic on the thread was already reported there; do not panic
        // in drop.
        let _ = self.stop_and_join();
    }
}

impl fmt::Debug for IoThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoThread")
            .field("name", &self.name)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

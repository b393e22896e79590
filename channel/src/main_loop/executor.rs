//! The local executor: futures polled on the context's thread, with wakers
//! that any thread may wake.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use async_task::{Runnable, Task};

use super::context::MainContext;
use super::shared::Shared;

impl MainContext {
    /// Run `future` on this context's thread; it makes progress while the
    /// context iterates (at [`Priority::DEFAULT`](super::Priority::DEFAULT)).
    ///
    /// Its wakers are `Send + Sync`: a wake from another thread queues the
    /// task and wakes the loop. A task woken while it runs (even by itself)
    /// runs again at the next iteration.
    ///
    /// Dropping the returned [`Task`] cancels the future (it is dropped on
    /// this thread at the next iteration); call
    /// [`Task::detach`] to let it run to completion on its own. A task still
    /// pending when the context is dropped is dropped with it (or leaked, if
    /// a wake from another thread arrives afterwards, since a local future
    /// may only be dropped on its own thread).
    pub fn spawn_local<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let shared = Arc::clone(&self.inner.shared);
        let schedule = move |runnable: Runnable| shared.push_task(runnable);
        let (runnable, task) = async_task::spawn_local(future, schedule);
        runnable.schedule();
        task
    }

    /// Run the context until `future` completes, and return its output.
    ///
    /// Every source, bottom half and spawned task keeps running meanwhile.
    /// May be nested (called from a callback or a task), as glib allows.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let flag = Arc::new(BlockOnWaker {
            woken: AtomicBool::new(true),
            shared: Arc::clone(&self.inner.shared),
        });
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if flag.woken.swap(false, Ordering::SeqCst) {
                if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            let woken = flag.woken.load(Ordering::SeqCst);
            self.iteration(!woken);
        }
    }
}

/// The waker of [`MainContext::block_on`]'s future.
struct BlockOnWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for BlockOnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            self.shared.notify();
        }
    }
}

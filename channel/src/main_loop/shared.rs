//! The thread-safe half of a context: the wakeup eventfd and the queues that
//! other threads push onto (invokes, bottom halves, executor tasks), plus
//! [`ContextHandle`].

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use async_task::Runnable;

use super::bh::BhState;

/// A closure handed over by [`ContextHandle::invoke`].
pub(crate) type Invoke = Box<dyn FnOnce() + Send + 'static>;

/// Work queued for the context's thread.
#[derive(Default)]
pub(crate) struct Queue {
    /// Set when the context is gone; later pushes are dropped.
    closed: bool,
    invokes: VecDeque<Invoke>,
    bhs: VecDeque<Arc<BhState>>,
    tasks: VecDeque<Runnable>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.invokes.is_empty() && self.bhs.is_empty() && self.tasks.is_empty()
    }
}

/// How many items of each kind were queued when a drain started.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueLens {
    pub invokes: usize,
    pub bhs: usize,
    pub tasks: usize,
}

thread_local! {
    /// Its address identifies the current thread cheaply.
    static THREAD_MARK: u8 = const { 0 };
}

/// A number unique to the calling thread among live threads (never 0).
pub(crate) fn thread_mark() -> usize {
    THREAD_MARK.with(|m| m as *const u8 as usize)
}

/// The part of a context that any thread may touch.
pub(crate) struct Shared {
    /// Eventfd registered in the context's poller; written to wake it.
    wake_fd: OwnedFd,
    /// True while a wakeup is written and not yet consumed (de-duplication).
    notified: AtomicBool,
    queue: Mutex<Queue>,
    /// True while `queue` holds anything (kept under the queue lock).
    has_work: AtomicBool,
    /// [`thread_mark`] of the thread in the check/dispatch phase of an
    /// iteration, else 0. Pushes from that thread need no wakeup: the loop
    /// is not polling and looks at the queues before it polls again.
    dispatching_on: AtomicUsize,
    /// [`thread_mark`] of the thread that drives the context.
    owner_mark: usize,
    /// The context's fd is nested in another loop: it must turn readable
    /// whenever work is queued outside an iteration, even by the owner.
    exported: AtomicBool,
    owner: ThreadId,
}

impl Shared {
    pub(crate) fn new() -> io::Result<Shared> {
        // SAFETY: eventfd has no memory preconditions; we check the result.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Shared {
            // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
            wake_fd: unsafe { OwnedFd::from_raw_fd(fd) },
            notified: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            has_work: AtomicBool::new(false),
            dispatching_on: AtomicUsize::new(0),
            owner_mark: thread_mark(),
            exported: AtomicBool::new(false),
            owner: thread::current().id(),
        })
    }

    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake_fd.as_raw_fd()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // No user code runs under this lock, so a poisoned lock still holds
        // a consistent queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the loop: a blocking poll returns and the context's fd becomes
    /// readable. De-duplicated until the loop consumes the wakeup.
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; a
            // failure (counter overflow, impossible with the flag) is harmless.
            unsafe {
                libc::write(
                    self.wake_fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    /// Wake the loop after queueing work, unless the caller is the loop's own
    /// thread: it is not blocked in a poll, and the next prepare sees the
    /// queue. In nesting mode the owner still notifies outside the dispatch
    /// phase, so the exported fd turns readable.
    fn notify_after_push(&self) {
        let me = thread_mark();
        if me == self.owner_mark
            && (!self.exported.load(Ordering::Relaxed)
                || self.dispatching_on.load(Ordering::SeqCst) == me)
        {
            return;
        }
        self.notify();
    }

    /// Switch to nesting mode (see `notify_after_push`).
    pub(crate) fn set_exported(&self) {
        self.exported.store(true, Ordering::SeqCst);
    }

    /// Consume a wakeup (the poll saw the eventfd readable).
    pub(crate) fn clear_notification(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from an eventfd we
        // own; EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.wake_fd.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        // Reset the flag only after draining: a notify racing with us either
        // saw the flag set (and its work is visible to the check that follows)
        // or writes a fresh wakeup.
        self.notified.store(false, Ordering::SeqCst);
    }

    /// Mark the current thread as dispatching (or not, with 0); returns the
    /// previous mark.
    pub(crate) fn set_dispatching(&self, mark: usize) -> usize {
        self.dispatching_on.swap(mark, Ordering::SeqCst)
    }

    pub(crate) fn has_work(&self) -> bool {
        self.has_work.load(Ordering::SeqCst)
    }

    pub(crate) fn push_invoke(&self, f: Invoke) {
        let mut q = self.lock();
        if q.closed {
            drop(q);
            drop(f);
            return;
        }
        q.invokes.push_back(f);
        self.has_work.store(true, Ordering::SeqCst);
        drop(q);
        self.notify_after_push();
    }

    /// Queue a bottom-half event; false if the context is gone.
    pub(crate) fn push_bh(&self, bh: Arc<BhState>) -> bool {
        let mut q = self.lock();
        if q.closed {
            return false;
        }
        q.bhs.push_back(bh);
        self.has_work.store(true, Ordering::SeqCst);
        drop(q);
        self.notify_after_push();
        true
    }

    pub(crate) fn push_task(&self, runnable: Runnable) {
        let mut q = self.lock();
        if q.closed {
            drop(q);
            if thread::current().id() == self.owner {
                drop(runnable);
            } else {
                // A local task may only be dropped on its own thread; the
                // context is gone, so the task can never run: leak it.
                std::mem::forget(runnable);
            }
            return;
        }
        q.tasks.push_back(runnable);
        self.has_work.store(true, Ordering::SeqCst);
        drop(q);
        self.notify_after_push();
    }

    pub(crate) fn lens(&self) -> QueueLens {
        let q = self.lock();
        QueueLens {
            invokes: q.invokes.len(),
            bhs: q.bhs.len(),
            tasks: q.tasks.len(),
        }
    }

    fn pop<T>(&self, f: impl FnOnce(&mut Queue) -> Option<T>) -> Option<T> {
        let mut q = self.lock();
        let item = f(&mut q);
        self.has_work.store(!q.is_empty(), Ordering::SeqCst);
        item
    }

    pub(crate) fn pop_invoke(&self) -> Option<Invoke> {
        self.pop(|q| q.invokes.pop_front())
    }

    pub(crate) fn pop_bh(&self) -> Option<Arc<BhState>> {
        self.pop(|q| q.bhs.pop_front())
    }

    pub(crate) fn pop_task(&self) -> Option<Runnable> {
        self.pop(|q| q.tasks.pop_front())
    }

    /// The context is going away: refuse further work and hand back what
    /// was queued (to be dropped on the owner thread).
    pub(crate) fn close(&self) -> Queue {
        let mut q = self.lock();
        q.closed = true;
        self.has_work.store(false, Ordering::SeqCst);
        Queue {
            closed: true,
            invokes: std::mem::take(&mut q.invokes),
            bhs: std::mem::take(&mut q.bhs),
            tasks: std::mem::take(&mut q.tasks),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// A `Send + Sync` handle on a [`MainContext`](super::MainContext) for other
/// threads: run closures on the context's thread, or wake it up.
///
/// Cheap to clone. Once the context is dropped, `invoke` drops its closure
/// and `wakeup` does nothing.
#[derive(Clone)]
pub struct ContextHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ContextHandle {
    /// Run `f` on the context's thread at its next iteration (at
    /// [`Priority::DEFAULT`](super::Priority::DEFAULT)); closures run in the
    /// order they were invoked.
    #[doc(alias = "g_main_context_invoke")]
    pub fn invoke(&self, f: impl FnOnce() + Send + 'static) {
        self.shared.push_invoke(Box::new(f));
    }

    /// Interrupt a blocking poll of the context (the iteration returns,
    /// possibly having dispatched nothing).
    #[doc(alias = "g_main_context_wakeup")]
    pub fn wakeup(&self) {
        self.shared.notify();
    }

    /// True while the context exists.
    pub fn is_alive(&self) -> bool {
        !self.shared.is_closed()
    }
}

impl fmt::Debug for ContextHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextHandle")
            .field("wake_fd", &self.shared.wake_fd())
            .finish()
    }
}

//! Bottom halves: callbacks on the context's thread that any thread can
//! schedule, coalesced (QEMU's `QEMUBH`).

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::context::{Inner, MainContext};
use super::shared::Shared;

/// The callback of a bottom half, kept on the context's thread.
pub(crate) type BhCallback = Rc<RefCell<Box<dyn FnMut()>>>;

/// The thread-safe state of a bottom half.
pub(crate) struct BhState {
    id: u64,
    /// Scheduled and not run yet.
    scheduled: AtomicBool,
    /// Every handle is gone: remove the callback once processed.
    deleted: AtomicBool,
    /// A nested iteration found the callback running: run it again when it
    /// returns.
    deferred: AtomicBool,
}

/// Owned by the handles; its drop deletes the bottom half.
struct BhHandle {
    state: Arc<BhState>,
    shared: Arc<Shared>,
}

impl Drop for BhHandle {
    fn drop(&mut self) {
        self.state.deleted.store(true, Ordering::SeqCst);
        self.shared.push_bh(Arc::clone(&self.state));
    }
}

/// A callback on a context's thread that any thread can
/// [`schedule`](BottomHalf::schedule) (QEMU's `qemu_bh_schedule`).
///
/// Schedules coalesce: however many times it is scheduled before it runs,
/// it runs once, and only the first schedule wakes the loop. The callback
/// runs at [`Priority::DEFAULT`](super::Priority::DEFAULT) and may schedule
/// itself again (it then runs at the next iteration).
///
/// `Clone + Send + Sync`. When the last handle is dropped the bottom half is
/// deleted; a schedule made before still runs once (so "schedule, then drop"
/// is a one-shot). Does nothing once the context is gone.
#[derive(Clone)]
pub struct BottomHalf {
    handle: Arc<BhHandle>,
}

impl BottomHalf {
    /// Run the callback at the context's next iteration (no-op if already
    /// scheduled).
    #[doc(alias = "qemu_bh_schedule")]
    pub fn schedule(&self) {
        let h = &self.handle;
        if !h.state.scheduled.swap(true, Ordering::SeqCst) {
            h.shared.push_bh(Arc::clone(&h.state));
        }
    }

    /// Withdraw a pending schedule (no-op if not scheduled).
    #[doc(alias = "qemu_bh_cancel")]
    pub fn cancel(&self) {
        self.handle.state.scheduled.store(false, Ordering::SeqCst);
    }

    /// True if scheduled and not run yet.
    pub fn is_scheduled(&self) -> bool {
        self.handle.state.scheduled.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for BottomHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BottomHalf")
            .field("id", &self.handle.state.id)
            .field("scheduled", &self.is_scheduled())
            .finish()
    }
}

impl MainContext {
    /// A bottom half running `f` on this context's thread whenever it is
    /// scheduled (from any thread).
    #[doc(alias = "qemu_bh_new")]
    pub fn bottom_half(&self, f: impl FnMut() + 'static) -> BottomHalf {
        let inner = &*self.inner;
        let id = inner.next_bh.get() + 1;
        inner.next_bh.set(id);
        let cb: BhCallback = Rc::new(RefCell::new(Box::new(f)));
        inner.bhs.borrow_mut().insert(id, cb);
        BottomHalf {
            handle: Arc::new(BhHandle {
                state: Arc::new(BhState {
                    id,
                    scheduled: AtomicBool::new(false),
                    deleted: AtomicBool::new(false),
                    deferred: AtomicBool::new(false),
                }),
                shared: Arc::clone(&inner.shared),
            }),
        }
    }
}

/// Process one queued bottom-half event; true if a callback ran.
pub(crate) fn run_bh(inner: &Inner, bh: Arc<BhState>) -> bool {
    let mut ran = false;
    if bh.scheduled.swap(false, Ordering::SeqCst) {
        let cb = inner.bhs.borrow().get(&bh.id).cloned();
        if let Some(cb) = cb {
            match cb.try_borrow_mut() {
                Ok(mut f) => {
                    f();
                    drop(f);
                    ran = true;
                    if bh.deferred.swap(false, Ordering::SeqCst) {
                        // A nested iteration met it while it ran.
                        inner.shared.push_bh(Arc::clone(&bh));
                    }
                }
                Err(_) => {
                    // Running further up the stack (a nested iteration): keep
                    // it scheduled; the running call re-queues it.
                    bh.scheduled.store(true, Ordering::SeqCst);
                    bh.deferred.store(true, Ordering::SeqCst);
                }
            }
        }
    }
    if bh.deleted.load(Ordering::SeqCst) {
        let removed = inner.bhs.borrow_mut().remove(&bh.id);
        drop(removed);
    }
    ran
}

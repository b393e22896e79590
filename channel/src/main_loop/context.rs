//! [`MainContext`]: the source registry and glib's iteration
//! (prepare, poll, check, dispatch).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bh::{run_bh, BhCallback};
use super::poll::{Poll, Timeout};
use super::shared::{thread_mark, ContextHandle, Shared};
use super::source::{Source, SourceFds};
use super::{ControlFlow, Priority, SourceId};
use crate::error::{Error, Result};

/// A source attached to a context.
pub(crate) struct SourceCell {
    id: u64,
    priority: i32,
    /// Borrowed while one of its methods runs: a failed borrow means the
    /// source is blocked (dispatching further up the stack).
    source: RefCell<Box<dyn Source>>,
    fds: RefCell<SourceFds>,
    destroyed: Cell<bool>,
    finalized: Cell<bool>,
}

#[derive(Default)]
struct Registry {
    map: HashMap<u64, Rc<SourceCell>>,
    /// Sorted by (priority, id): dispatch order.
    order: Vec<Rc<SourceCell>>,
    next_id: u64,
}

/// Ready in prepare.
const PREPARED: u8 = 1;
/// Ready after check.
const READY: u8 = 2;

/// Per-iteration buffers, reused so an iteration does not allocate.
#[derive(Default)]
struct Scratch {
    sources: Vec<Rc<SourceCell>>,
    flags: Vec<u8>,
    batch: Vec<usize>,
    timed_pos: Vec<usize>,
    timed: Vec<(Instant, usize)>,
}

impl Scratch {
    fn clear(&mut self) {
        self.sources.clear();
        self.flags.clear();
        self.batch.clear();
        self.timed_pos.clear();
        self.timed.clear();
    }
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    poll: Poll,
    registry: RefCell<Registry>,
    scratch: Cell<Option<Scratch>>,
    pub(crate) bhs: RefCell<HashMap<u64, BhCallback>>,
    pub(crate) next_bh: Cell<u64>,
    /// The fd was handed out for nesting: keep it readable while work is due.
    exported: Cell<bool>,
    /// Iterations on the stack.
    depth: Cell<u32>,
    /// Adaptive polling: how long a blocking iteration spins before it
    /// sleeps in the kernel (zero: never).
    poll_max: Cell<Duration>,
}

/// A glib-style main context: sources, priorities and one iteration at a
/// time. See the [module documentation](super) for the model and an
/// example.
///
/// Cheap to clone (a reference-counted handle); `!Send`: the thread that
/// created it drives it. Use [`MainContext::handle`] or a
/// [`BottomHalf`](super::BottomHalf) to reach it from other threads.
#[derive(Clone)]
pub struct MainContext {
    pub(crate) inner: Rc<Inner>,
}

/// Restores the dispatching mark and the depth when an iteration ends, even
/// by a panic.
struct IterGuard<'a> {
    inner: &'a Inner,
    saved_mark: usize,
}

impl Drop for IterGuard<'_> {
    fn drop(&mut self) {
        self.inner.shared.set_dispatching(self.saved_mark);
        self.inner.depth.set(self.inner.depth.get() - 1);
    }
}

impl MainContext {
    /// A new context with no sources.
    #[doc(alias = "g_main_context_new")]
    pub fn new() -> Result<MainContext> {
        let shared =
            Shared::new().map_err(|e| Error::os("main-context", "create the wakeup eventfd", e))?;
        let poll = Poll::new(shared.wake_fd())
            .map_err(|e| Error::os("main-context", "create the epoll instance", e))?;
        Ok(MainContext {
            inner: Rc::new(Inner {
                shared: Arc::new(shared),
                poll,
                registry: RefCell::new(Registry::default()),
                scratch: Cell::new(Some(Scratch::default())),
                bhs: RefCell::new(HashMap::new()),
                next_bh: Cell::new(0),
                exported: Cell::new(false),
                depth: Cell::new(0),
                poll_max: Cell::new(Duration::ZERO),
            }),
        })
    }

    /// One glib iteration: prepare, poll (blocking only if `may_block` and
    /// nothing is due), check, and dispatch the ready sources of the most
    /// urgent ready priority. True if anything was dispatched.
    ///
    /// May be called from a callback (a nested iteration); the source that
    /// is dispatching is skipped until its callback returns.
    #[doc(alias = "g_main_context_iteration")]
    pub fn iteration(&self, may_block: bool) -> bool {
        self.iterate(may_block, true)
    }

    /// True if an iteration would dispatch something now (prepare, a poll
    /// that does not wait, check; no dispatch).
    #[doc(alias = "g_main_context_pending")]
    pub fn pending(&self) -> bool {
        self.iterate(false, false)
    }

    /// When the context next needs to run if no fd becomes ready: `now` if
    /// something is due already, the nearest timer otherwise, `None` if only
    /// fds (or nothing) can wake it.
    pub fn next_deadline(&self) -> Option<Instant> {
        let inner = &*self.inner;
        let mut s = inner.scratch.take().unwrap_or_default();
        let now = Instant::now();
        let (ready, deadline) = inner.prepare_phase(&mut s, now);
        s.clear();
        inner.scratch.set(Some(s));
        if ready || inner.shared.has_work() {
            Some(now)
        } else {
            deadline
        }
    }

    /// Attach a custom source. Sources of equal priority dispatch in the
    /// order they were added.
    #[doc(alias = "g_source_attach")]
    pub fn add_source(&self, source: Box<dyn Source>, priority: Priority) -> SourceId {
        let inner = &*self.inner;
        let mut reg = inner.registry.borrow_mut();
        reg.next_id += 1;
        let id = reg.next_id;
        let cell = Rc::new(SourceCell {
            id,
            priority: priority.0,
            source: RefCell::new(source),
            fds: RefCell::new(SourceFds::default()),
            destroyed: Cell::new(false),
            finalized: Cell::new(false),
        });
        let pos = reg.order.partition_point(|c| c.priority <= priority.0);
        reg.order.insert(pos, Rc::clone(&cell));
        reg.map.insert(id, cell);
        drop(reg);
        if inner.exported.get() && inner.depth.get() == 0 {
            // An outer loop must iterate once to take the new source into
            // account (an idle source is due at once).
            inner.shared.notify();
        }
        SourceId(id)
    }

    /// Remove a source: it will not be dispatched again and its `finalize`
    /// runs (at once, or when its running callback returns). Works from
    /// inside any callback, the source's own included. False if `id` is
    /// unknown (already removed).
    #[doc(alias = "g_source_remove")]
    pub fn remove(&self, id: SourceId) -> bool {
        self.inner.remove_id(id.0)
    }

    /// True if the source `id` is attached.
    pub fn contains(&self, id: SourceId) -> bool {
        self.inner.registry.borrow().map.contains_key(&id.0)
    }

    /// Adaptive polling (QEMU's `poll-max-ns`): before a blocking iteration
    /// sleeps in the kernel, it spins up to `max` watching for work from
    /// other threads and for ready fds. A wakeup that arrives while it
    /// spins costs no sleep and no wakeup of an idle CPU (on virtual
    /// machines that wakeup alone can take tens of microseconds), at the
    /// price of up to `max` of CPU time per idle iteration. Zero (the
    /// default) turns it off. Timers are never delayed by it.
    pub fn set_poll_max(&self, max: Duration) {
        self.inner.poll_max.set(max);
    }

    /// A `Send + Sync` handle to invoke closures on this context's thread
    /// and to wake it.
    pub fn handle(&self) -> ContextHandle {
        ContextHandle {
            shared: Arc::clone(&self.inner.shared),
        }
    }

    fn iterate(&self, may_block: bool, dispatch: bool) -> bool {
        let inner = &*self.inner;
        let mut s = inner.scratch.take().unwrap_or_default();
        inner.depth.set(inner.depth.get() + 1);
        let guard = IterGuard {
            inner,
            saved_mark: inner.shared.set_dispatching(0),
        };

        let now = Instant::now();
        let (ready, deadline) = inner.prepare_phase(&mut s, now);
        let timeout = if ready || !may_block || inner.shared.has_work() {
            Timeout::Zero
        } else {
            match deadline {
                None => Timeout::Infinite,
                Some(d) if d <= now => Timeout::Zero,
                Some(d) => Timeout::Until(d),
            }
        };
        inner
            .poll
            .wait(timeout, &inner.shared, inner.poll_max.get());

        // From here on, pushes from this thread need no wakeup.
        inner.shared.set_dispatching(thread_mark());
        let now = Instant::now();
        let any = inner.check_phase(&mut s, now);
        let wake = inner.shared.has_work();
        let result = if dispatch {
            inner.dispatch_phase(&mut s, wake)
        } else {
            any || wake
        };
        s.clear();
        inner.scratch.set(Some(s));
        drop(guard);
        if inner.exported.get() && inner.depth.get() == 0 {
            inner.rearm_for_nesting();
        }
        result
    }
}

impl Inner {
    fn prepare_phase(&self, s: &mut Scratch, now: Instant) -> (bool, Option<Instant>) {
        s.sources.clear();
        s.sources
            .extend(self.registry.borrow().order.iter().cloned());
        s.flags.clear();
        s.flags.resize(s.sources.len(), 0);
        let mut ready = false;
        let mut deadline: Option<Instant> = None;
        for (cell, flag) in s.sources.iter().zip(s.flags.iter_mut()) {
            if cell.destroyed.get() {
                continue;
            }
            let Ok(mut src) = cell.source.try_borrow_mut() else {
                // Blocked: its callback is running further up the stack.
                // Keep its fds out of this (nested) poll.
                if let Ok(mut fds) = cell.fds.try_borrow_mut() {
                    self.poll.sync(&mut fds, true);
                }
                continue;
            };
            let Ok(mut fds) = cell.fds.try_borrow_mut() else {
                continue;
            };
            let mut wake_at = None;
            let r = src.prepare(now, &mut wake_at, &mut fds);
            drop(src);
            let sticky = !cell.destroyed.get() && self.poll.sync(&mut fds, false);
            drop(fds);
            self.after_callback(cell);
            if cell.destroyed.get() {
                continue;
            }
            if r || sticky {
                *flag = PREPARED;
                ready = true;
            }
            if let Some(t) = wake_at {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        }
        (ready, deadline)
    }

    fn check_phase(&self, s: &mut Scratch, now: Instant) -> bool {
        let mut any = false;
        for (cell, flag) in s.sources.iter().zip(s.flags.iter_mut()) {
            let prepared = *flag == PREPARED;
            *flag = 0;
            if cell.destroyed.get() {
                continue;
            }
            let Ok(mut src) = cell.source.try_borrow_mut() else {
                continue;
            };
            let Ok(mut fds) = cell.fds.try_borrow_mut() else {
                continue;
            };
            self.poll.fill_revents(&mut fds);
            let r = src.check(now, &fds);
            drop(src);
            drop(fds);
            self.after_callback(cell);
            if (r || prepared) && !cell.destroyed.get() {
                *flag = READY;
                any = true;
            }
        }
        any
    }

    fn dispatch_phase(&self, s: &mut Scratch, wake: bool) -> bool {
        // `order` is sorted by priority: the first ready source has the best.
        let best_source = s
            .sources
            .iter()
            .zip(&s.flags)
            .find(|(_, f)| **f == READY)
            .map(|(c, _)| c.priority);
        let default = Priority::DEFAULT.0;
        let best = match (best_source, wake) {
            (Some(p), true) => p.min(default),
            (Some(p), false) => p,
            (None, true) => default,
            (None, false) => return false,
        };
        let mut dispatched = false;
        if wake && best == default {
            dispatched |= self.run_queued();
        }
        s.batch.clear();
        for (i, (cell, flag)) in s.sources.iter().zip(&s.flags).enumerate() {
            if cell.priority > best {
                break;
            }
            if *flag == READY && cell.priority == best {
                s.batch.push(i);
            }
        }
        Self::order_by_deadline(s);
        for k in 0..s.batch.len() {
            dispatched |= self.dispatch_one(&s.sources[s.batch[k]]);
        }
        dispatched
    }

    /// Within the batch, sources with a deadline (timers) go in deadline
    /// order; the others keep their places.
    fn order_by_deadline(s: &mut Scratch) {
        s.timed.clear();
        s.timed_pos.clear();
        for (pos, &i) in s.batch.iter().enumerate() {
            if let Ok(src) = s.sources[i].source.try_borrow() {
                if let Some(d) = src.deadline() {
                    s.timed_pos.push(pos);
                    s.timed.push((d, i));
                }
            }
        }
        if s.timed.len() >= 2 {
            s.timed.sort_by_key(|&(d, _)| d);
            for (k, &pos) in s.timed_pos.iter().enumerate() {
                s.batch[pos] = s.timed[k].1;
            }
        }
    }

    fn dispatch_one(&self, cell: &Rc<SourceCell>) -> bool {
        if cell.destroyed.get() {
            return false;
        }
        let Ok(mut src) = cell.source.try_borrow_mut() else {
            return false;
        };
        let flow = src.dispatch();
        drop(src);
        if flow == ControlFlow::Remove {
            self.remove_id(cell.id);
        }
        self.after_callback(cell);
        true
    }

    /// Run the invokes, bottom halves and tasks queued when this starts (one
    /// at a time, so a nested iteration can run the rest).
    fn run_queued(&self) -> bool {
        let lens = self.shared.lens();
        let mut ran = false;
        for _ in 0..lens.invokes {
            let Some(f) = self.shared.pop_invoke() else {
                break;
            };
            f();
            ran = true;
        }
        for _ in 0..lens.bhs {
            let Some(bh) = self.shared.pop_bh() else {
                break;
            };
            ran |= run_bh(self, bh);
        }
        for _ in 0..lens.tasks {
            let Some(task) = self.shared.pop_task() else {
                break;
            };
            task.run();
            ran = true;
        }
        ran
    }

    /// After nesting-mode iterations: make the fd readable if work is due
    /// now, or arm the timerfd for the nearest deadline.
    fn rearm_for_nesting(&self) {
        let mut s = self.scratch.take().unwrap_or_default();
        let now = Instant::now();
        let (ready, deadline) = self.prepare_phase(&mut s, now);
        s.clear();
        self.scratch.set(Some(s));
        if ready || self.shared.has_work() {
            self.shared.notify();
        } else if let Some(d) = deadline {
            if d <= now || !self.poll.arm_timer(d) {
                self.shared.notify();
            }
        }
    }

    fn remove_id(&self, id: u64) -> bool {
        let (cell, from_order) = {
            let mut reg = self.registry.borrow_mut();
            let Some(cell) = reg.map.remove(&id) else {
                return false;
            };
            let from_order = reg
                .order
                .binary_search_by(|c| (c.priority, c.id).cmp(&(cell.priority, cell.id)))
                .ok()
                .map(|pos| reg.order.remove(pos));
            (cell, from_order)
        };
        // The registry borrow is released: finalize and drop may run user
        // code that uses the context.
        cell.destroyed.set(true);
        self.finalize_cell(&cell);
        drop(from_order);
        drop(cell);
        true
    }

    fn after_callback(&self, cell: &SourceCell) {
        if cell.destroyed.get() && !cell.finalized.get() {
            self.finalize_cell(cell);
        }
    }

    /// Unregister the fds and run `finalize`, unless one of the source's
    /// methods is running (then whoever runs it finalizes afterwards).
    fn finalize_cell(&self, cell: &SourceCell) {
        if cell.finalized.get() {
            return;
        }
        let Ok(mut src) = cell.source.try_borrow_mut() else {
            return;
        };
        let Ok(mut fds) = cell.fds.try_borrow_mut() else {
            return;
        };
        cell.finalized.set(true);
        self.poll.unregister(&mut fds);
        drop(fds);
        src.finalize();
    }
}

impl Inner {
    /// Shut the context down: refuse further work, drop what was queued (on
    /// this, the owner thread: local tasks must be dropped where they were
    /// spawned), remove every source and bottom half. Breaks reference
    /// cycles through callbacks that hold the context.
    pub(crate) fn shut_down(&self) {
        let queued = self.shared.close();
        drop(queued);
        let reg = std::mem::take(&mut *self.registry.borrow_mut());
        for cell in &reg.order {
            cell.destroyed.set(true);
            self.finalize_cell(cell);
        }
        drop(reg);
        let bhs = std::mem::take(&mut *self.bhs.borrow_mut());
        drop(bhs);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl AsFd for MainContext {
    /// The context's epoll fd: readable whenever anything is due. Asking for
    /// it switches the context to nesting mode (see the module docs).
    fn as_fd(&self) -> BorrowedFd<'_> {
        if !self.inner.exported.replace(true) {
            self.inner.shared.set_exported();
            // Let the outer loop iterate once; from then on every iteration
            // leaves the fd readable (or the timerfd armed) while work is due.
            self.inner.shared.notify();
        }
        self.inner.poll.as_fd()
    }
}

impl AsRawFd for MainContext {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl fmt::Debug for MainContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MainContext")
            .field("epoll_fd", &self.inner.poll.as_fd().as_raw_fd())
            .field("sources", &self.inner.registry.borrow().map.len())
            .finish()
    }
}

//! Fd watches on a channel's [`WatchSource`], with an optional read gate,
//! and [`WaitReady`], the future behind the async I/O helpers.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::context::MainContext;
use super::source::{FdTag, Source, SourceFds, ALWAYS};
use super::{ControlFlow, Priority, SourceId};
use crate::channel::{Condition, Readiness, WatchFds, WatchSource};

/// A read gate: while it answers false, the fd is not polled for `IN`.
type Gate = Box<dyn FnMut() -> bool>;

struct WatchSourceImpl<F> {
    fds: WatchFds,
    ready: Readiness,
    cond: Condition,
    gate: Option<Gate>,
    callback: F,
    /// Registered on first prepare: the fd (`One`) or the read and the
    /// write fd (`Pair`).
    tags: Option<[Option<FdTag>; 2]>,
    /// What the watch reports this iteration (cond minus a closed gate).
    mask: Condition,
    fired: Condition,
}

impl<F> WatchSourceImpl<F> {
    /// `mask` plus the always-reported conditions, if anything is watched.
    fn report(&self) -> Condition {
        if self.mask.is_empty() {
            Condition::empty()
        } else {
            self.mask | ALWAYS
        }
    }
}

impl<F: FnMut(Condition) -> ControlFlow> Source for WatchSourceImpl<F> {
    fn prepare(&mut self, _: Instant, _: &mut Option<Instant>, fds: &mut SourceFds) -> bool {
        let tags = *self.tags.get_or_insert_with(|| match self.fds {
            WatchFds::None => [None, None],
            WatchFds::One(fd) => [Some(fds.add(fd, Condition::empty())), None],
            WatchFds::Pair { read, write } => [
                Some(fds.add(read, Condition::empty())),
                Some(fds.add(write, Condition::empty())),
            ],
        });
        let open = self.gate.as_mut().is_none_or(|gate| gate());
        self.mask = self.cond;
        if !open {
            self.mask.remove(Condition::IN | Condition::PRI);
        }
        let reads = self.mask & (Condition::IN | Condition::PRI);
        let writes = self.mask & Condition::OUT;
        match tags {
            [Some(one), None] => fds.set_interest(one, reads | writes),
            [Some(read), Some(write)] => {
                fds.set_interest(read, reads);
                fds.set_interest(write, writes);
            }
            _ => {}
        }
        self.ready.get().intersects(self.report())
    }

    fn check(&mut self, _: Instant, fds: &SourceFds) -> bool {
        let mut got = self.ready.get();
        for tag in self.tags.iter().flatten().flatten() {
            got |= fds.revents(*tag);
        }
        self.fired = got & self.report();
        !self.fired.is_empty()
    }

    fn dispatch(&mut self) -> ControlFlow {
        (self.callback)(self.fired)
    }
}

impl MainContext {
    /// Watch `ws` for `cond`: `f` runs with the conditions that are ready
    /// (polled fds plus the [`Readiness`] bits), masked by `cond`; `ERR`,
    /// `HUP` and `NVAL` are always reported. At [`Priority::DEFAULT`].
    /// Level-triggered: `f` runs again next iteration while the condition
    /// holds.
    #[doc(alias = "qio_channel_add_watch")]
    pub fn add_watch(
        &self,
        ws: &WatchSource,
        cond: Condition,
        f: impl FnMut(Condition) -> ControlFlow + 'static,
    ) -> SourceId {
        self.add_watch_full(ws, cond, Priority::DEFAULT, None, f)
    }

    /// [`add_watch`](Self::add_watch) with a priority and an optional read
    /// gate (QEMU's `io_watch_poll` back-pressure).
    ///
    /// The gate runs before every poll. While it answers false the fd is
    /// not polled for `IN`/`PRI` at all (and `IN` readiness bits are
    /// ignored); once it answers true again, data that arrived meanwhile is
    /// reported at once. If the gate leaves nothing to watch, the fd leaves
    /// the poll entirely, so `ERR`/`HUP` wait for the gate too.
    #[doc(alias = "qio_channel_add_watch_full")]
    pub fn add_watch_full(
        &self,
        ws: &WatchSource,
        cond: Condition,
        priority: Priority,
        gate: Option<Box<dyn FnMut() -> bool>>,
        f: impl FnMut(Condition) -> ControlFlow + 'static,
    ) -> SourceId {
        let source = WatchSourceImpl {
            fds: ws.fds,
            ready: ws.ready.clone(),
            cond,
            gate,
            callback: f,
            tags: None,
            mask: cond,
            fired: Condition::empty(),
        };
        self.add_source(Box::new(source), priority)
    }

    /// A future that resolves with the ready conditions (`ERR`/`HUP`/`NVAL`
    /// included) once `ws` is ready for any of `cond` (QEMU's
    /// `qio_channel_yield`). Resolves at once if the [`Readiness`] bits
    /// already say so. The watch exists only while the future is pending;
    /// dropping the future removes it.
    #[doc(alias = "qio_channel_yield")]
    pub fn wait_ready(&self, ws: &WatchSource, cond: Condition) -> WaitReady {
        WaitReady {
            ctx: self.clone(),
            ws: ws.clone(),
            cond,
            state: Rc::new(RefCell::new(WaitState::default())),
            id: None,
        }
    }
}

#[derive(Default)]
struct WaitState {
    result: Option<Condition>,
    waker: Option<Waker>,
}

/// The future of [`MainContext::wait_ready`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitReady {
    ctx: MainContext,
    ws: WatchSource,
    cond: Condition,
    state: Rc<RefCell<WaitState>>,
    id: Option<SourceId>,
}

impl Future for WaitReady {
    type Output = Condition;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Condition> {
        let this = self.get_mut();
        let fired = this.state.borrow_mut().result.take();
        if let Some(c) = fired {
            // The watch removed itself when it fired.
            this.id = None;
            return Poll::Ready(c);
        }
        if this.id.is_none() {
            let now = this.ws.ready.get() & (this.cond | ALWAYS);
            if !now.is_empty() {
                return Poll::Ready(now);
            }
            let state = Rc::clone(&this.state);
            let id = this.ctx.add_watch(&this.ws, this.cond, move |c| {
                let mut s = state.borrow_mut();
                s.result = Some(c);
                let waker = s.waker.take();
                drop(s);
                if let Some(w) = waker {
                    w.wake();
                }
                ControlFlow::Remove
            });
            this.id = Some(id);
        }
        let mut s = this.state.borrow_mut();
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for WaitReady {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.ctx.remove(id);
        }
    }
}

impl fmt::Debug for WaitReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitReady")
            .field("channel", &self.ws.name)
            .field("cond", &self.cond)
            .field("watching", &self.id.is_some())
            .finish()
    }
}

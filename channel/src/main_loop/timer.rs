//! Timeout and idle sources.

use std::time::{Duration, Instant};

use super::context::MainContext;
use super::source::{Source, SourceFds};
use super::{ControlFlow, Priority, SourceId};

/// Fires every `interval`, never early.
struct TimeoutSource<F> {
    interval: Duration,
    /// `None`: the interval is too large to ever come.
    deadline: Option<Instant>,
    callback: F,
}

impl<F: FnMut() -> ControlFlow> Source for TimeoutSource<F> {
    fn prepare(
        &mut self,
        now: Instant,
        timeout: &mut Option<Instant>,
        _fds: &mut SourceFds,
    ) -> bool {
        match self.deadline {
            Some(d) if now >= d => true,
            Some(d) => {
                *timeout = Some(d);
                false
            }
            None => false,
        }
    }

    fn check(&mut self, now: Instant, _fds: &SourceFds) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    fn dispatch(&mut self) -> ControlFlow {
        let flow = (self.callback)();
        if flow == ControlFlow::Continue {
            // As glib: the next period starts when this one was dispatched.
            self.deadline = Instant::now().checked_add(self.interval);
        }
        flow
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Ready whenever nothing more urgent is.
struct IdleSource<F> {
    callback: F,
}

impl<F: FnMut() -> ControlFlow> Source for IdleSource<F> {
    fn prepare(&mut self, _: Instant, _: &mut Option<Instant>, _: &mut SourceFds) -> bool {
        true
    }

    fn check(&mut self, _: Instant, _: &SourceFds) -> bool {
        true
    }

    fn dispatch(&mut self) -> ControlFlow {
        (self.callback)()
    }
}

impl MainContext {
    /// Call `f` after `after`, then every `after` (measured from the end of
    /// each dispatch) until it returns [`ControlFlow::Remove`]; at
    /// [`Priority::DEFAULT`].
    ///
    /// Never early: the callback runs no sooner than `after` from now (the
    /// deadline is an `Instant`; the kernel timer is armed in nanoseconds,
    /// or rounded up to whole milliseconds where no timerfd exists). Timers
    /// ready in the same iteration run in deadline order.
    #[doc(alias = "g_timeout_add")]
    pub fn timeout_add(
        &self,
        after: Duration,
        f: impl FnMut() -> ControlFlow + 'static,
    ) -> SourceId {
        self.timeout_add_full(after, Priority::DEFAULT, f)
    }

    /// [`timeout_add`](Self::timeout_add) with a priority.
    #[doc(alias = "g_timeout_add_full")]
    pub fn timeout_add_full(
        &self,
        after: Duration,
        priority: Priority,
        f: impl FnMut() -> ControlFlow + 'static,
    ) -> SourceId {
        let source = TimeoutSource {
            interval: after,
            deadline: Instant::now().checked_add(after),
            callback: f,
        };
        self.add_source(Box::new(source), priority)
    }

    /// Call `f` whenever no more urgent source is ready, until it returns
    /// [`ControlFlow::Remove`]; at [`Priority::DEFAULT_IDLE`]. While an idle
    /// source exists the loop never sleeps.
    #[doc(alias = "g_idle_add")]
    pub fn idle_add(&self, f: impl FnMut() -> ControlFlow + 'static) -> SourceId {
        self.idle_add_full(Priority::DEFAULT_IDLE, f)
    }

    /// [`idle_add`](Self::idle_add) with a priority.
    #[doc(alias = "g_idle_add_full")]
    pub fn idle_add_full(
        &self,
        priority: Priority,
        f: impl FnMut() -> ControlFlow + 'static,
    ) -> SourceId {
        self.add_source(Box::new(IdleSource { callback: f }), priority)
    }
}

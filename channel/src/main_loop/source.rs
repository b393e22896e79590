//! The [`Source`] trait (glib's `GSource`) and the fds a source polls.

use std::os::fd::RawFd;
use std::time::Instant;

use super::ControlFlow;
use crate::channel::Condition;

/// Conditions a polled fd always reports, whatever its interest.
pub(crate) const ALWAYS: Condition = Condition::ERR.union(Condition::HUP).union(Condition::NVAL);

/// Conditions an fd can be polled for.
pub(crate) const POLLABLE: Condition = Condition::IN.union(Condition::OUT).union(Condition::PRI);

/// An event source, as glib's `GSource`. Implement it for custom sources and
/// attach with [`MainContext::add_source`](super::MainContext::add_source);
/// the context's convenience constructors (`add_watch`, `timeout_add`, ...)
/// build the common ones.
///
/// Every method runs on the context's thread and may use the context
/// (add or remove sources, even this one). While one of its methods runs, a
/// source is *blocked*: nested iterations skip it.
pub trait Source {
    /// Before polling. Return true if the source is ready without polling.
    ///
    /// `timeout` starts as `None` for each source; set it to the instant the
    /// source must be woken at (a timer's deadline). `fds` holds the fds the
    /// source polls: add them here (once) and change their interest whenever
    /// needed; the context registers them with the poller and only touches
    /// the poller again when an interest changes.
    fn prepare(&mut self, now: Instant, timeout: &mut Option<Instant>, fds: &mut SourceFds)
        -> bool;

    /// After polling, with [`SourceFds::revents`] filled in. Return true if
    /// the source is ready. Called even if `prepare` said ready.
    fn check(&mut self, now: Instant, fds: &SourceFds) -> bool;

    /// The source is ready and its priority is the most urgent ready one:
    /// run the callback.
    fn dispatch(&mut self) -> ControlFlow;

    /// The source was removed; called once, before it is dropped.
    fn finalize(&mut self) {}

    /// For sources that fire at a time: ready sources of one priority
    /// dispatch in the order of these instants (sources without one keep
    /// their places).
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// Names an fd added to [`SourceFds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdTag(pub(crate) usize);

/// One polled fd of a source.
#[derive(Debug, Clone)]
pub(crate) struct FdSlot {
    pub fd: RawFd,
    /// What the source asked for.
    pub want: Condition,
    /// What is registered with the poller on the source's behalf.
    pub applied: Condition,
    /// What the last poll found (masked by `applied` plus [`ALWAYS`]).
    pub revents: Condition,
    /// Counted as a user of the fd in the context's fd table.
    pub attached: bool,
    /// Removed by the source; detached at the next sync.
    pub removed: bool,
}

/// The fds a [`Source`] polls, with their interest and the results of the
/// last poll.
///
/// The same fd may be polled by several sources; the context merges their
/// interests. An empty interest takes the fd out of the poll entirely (so
/// not even `ERR`/`HUP` are reported: that is how a read gate works).
#[derive(Debug, Default)]
pub struct SourceFds {
    pub(crate) slots: Vec<FdSlot>,
}

impl SourceFds {
    /// Poll `fd` for `interest` (`IN`, `OUT`, `PRI`; `ERR`, `HUP` and `NVAL`
    /// are always reported while the interest is not empty).
    pub fn add(&mut self, fd: RawFd, interest: Condition) -> FdTag {
        self.slots.push(FdSlot {
            fd,
            want: interest & POLLABLE,
            applied: Condition::empty(),
            revents: Condition::empty(),
            attached: false,
            removed: false,
        });
        FdTag(self.slots.len() - 1)
    }

    /// Change what `tag`'s fd is polled for. Cheap when nothing changes.
    pub fn set_interest(&mut self, tag: FdTag, interest: Condition) {
        if let Some(slot) = self.slots.get_mut(tag.0) {
            if !slot.removed {
                slot.want = interest & POLLABLE;
            }
        }
    }

    /// What `tag`'s fd is polled for.
    pub fn interest(&self, tag: FdTag) -> Condition {
        self.slots
            .get(tag.0)
            .filter(|s| !s.removed)
            .map_or(Condition::empty(), |s| s.want)
    }

    /// What the last poll found on `tag`'s fd (empty outside `check` and
    /// `dispatch`, or if the fd was not polled).
    pub fn revents(&self, tag: FdTag) -> Condition {
        self.slots
            .get(tag.0)
            .map_or(Condition::empty(), |s| s.revents)
    }

    /// Stop polling `tag`'s fd. The tag is not reused.
    pub fn remove(&mut self, tag: FdTag) {
        if let Some(slot) = self.slots.get_mut(tag.0) {
            slot.removed = true;
            slot.want = Condition::empty();
            slot.revents = Condition::empty();
        }
    }

    /// True if no fd is being polled.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.removed)
    }
}

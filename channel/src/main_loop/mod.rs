//! A glib-style shared main loop: [`MainContext`] with sources, priorities,
//! fd watches with read back-pressure, timers, idle callbacks, bottom
//! halves, cross-thread `invoke`, a local async executor, unix signals, an
//! fd for nesting in other loops, and [`IoThread`].
//!
//! # Model
//!
//! A [`MainContext`] owns [`Source`]s. One thread drives it (the type is
//! `!Send`); other threads reach it through a [`ContextHandle`] or a
//! [`BottomHalf`], both `Send + Sync`. Each [`MainContext::iteration`] runs
//! glib's phases:
//!
//! 1. **prepare**: every source may say "ready now" and name the instant it
//!    wants to be woken;
//! 2. **poll**: wait on the fds for the nearest deadline; not at all when
//!    something is ready already (idle sources, pending bottom halves,
//!    invokes or tasks, [`Readiness`](crate::Readiness) bits), forever if
//!    nothing is due and the caller may block;
//! 3. **check**: every source looks at what the poll found;
//! 4. **dispatch**: only the ready sources of the most urgent (numerically
//!    lowest) [`Priority`] run, in the order they were added (timers in
//!    deadline order). A callback returns [`ControlFlow::Remove`] to go
//!    away.
//!
//! Sources may be added and removed from anywhere on the context's thread,
//! callbacks included (a source can remove itself or others while the loop
//! dispatches). A source that is dispatching is *blocked*: a callback that
//! runs a nested iteration never re-enters it, and its fds are left out of
//! the nested poll.
//!
//! Bottom halves, [`ContextHandle::invoke`] closures and the tasks of the
//! local executor ([`MainContext::spawn_local`], [`MainContext::block_on`])
//! run at [`Priority::DEFAULT`]. A wake from another thread costs one
//! eventfd write however many wakes pile up before the loop runs.
//!
//! # Nesting
//!
//! `MainContext` implements [`AsFd`](std::os::fd::AsFd): the fd is readable
//! whenever anything is due (fds, timers, idle sources, bottom halves,
//! invokes, tasks). Register it with another loop (tokio's `AsyncFd`, glib,
//! a `poll(2)` loop), call `iteration(false)` when it is readable, and clear
//! the readiness only once [`MainContext::pending`] says nothing is left.
//! [`MainContext::next_deadline`] tells a loop that wants to sleep on its
//! own timer when the next timer is due.
//!
//! # Limits
//!
//! * Linux only (epoll, eventfd, timerfd).
//! * Watched fds must stay open while their watch exists (the rule of
//!   [`WatchSource`](crate::WatchSource)); epoll silently forgets a closed
//!   fd, so a watch on an fd closed behind its back never fires.
//! * A priority that is always ready starves the less urgent ones, as in
//!   glib.
//! * Sources whose callbacks hold a clone of their own context keep it alive
//!   (reference cycle); remove them to free the context.
//!
//! # Example
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use std::time::Duration;
//! use transit_channel::main_loop::{ControlFlow, MainContext, MainLoop};
//!
//! let ctx = MainContext::new()?;
//! let main_loop = MainLoop::new(&ctx);
//!
//! // A timer that ticks three times, then stops the loop.
//! let ticks = Rc::new(Cell::new(0));
//! let (t, quit) = (ticks.clone(), main_loop.quit_handle());
//! ctx.timeout_add(Duration::from_millis(1), move || {
//!     t.set(t.get() + 1);
//!     if t.get() < 3 {
//!         return ControlFlow::Continue;
//!     }
//!     quit.quit();
//!     ControlFlow::Remove
//! });
//!
//! // Another thread hands work to the loop's thread (joined here, so the
//! // work is queued before the loop runs and the timer cannot win).
//! let handle = ctx.handle();
//! let (tx, rx) = std::sync::mpsc::channel();
//! std::thread::spawn(move || handle.invoke(move || tx.send(42).unwrap()))
//!     .join()
//!     .unwrap();
//!
//! main_loop.run();
//! assert_eq!(ticks.get(), 3);
//! assert_eq!(rx.try_recv(), Ok(42));
//!
//! // The local executor: futures run on this thread, wakers go anywhere.
//! let answer = ctx.block_on(async {
//!     let task = ctx.spawn_local(async { 6 * 7 });
//!     task.await
//! });
//! assert_eq!(answer, 42);
//! # Ok::<(), transit_channel::Error>(())
//! ```

mod bh;
mod context;
mod executor;
mod iothread;
mod poll;
mod run;
pub mod runtime;
mod shared;
mod signal;
mod source;
mod timer;
mod watch;

pub use bh::BottomHalf;
pub use context::MainContext;
pub use iothread::IoThread;
pub use run::{MainLoop, QuitHandle};
pub use shared::ContextHandle;
pub use source::{FdTag, Source, SourceFds};
pub use watch::WaitReady;

/// What a callback wants after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlFlow {
    /// Keep the source.
    Continue,
    /// Remove the source (glib's `G_SOURCE_REMOVE`).
    Remove,
}

/// How urgent a source is: lower numbers dispatch first (glib).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(pub i32);

impl Priority {
    /// More urgent than the default (glib `G_PRIORITY_HIGH`).
    pub const HIGH: Priority = Priority(-100);
    /// Fd watches, timers, bottom halves, invokes and tasks
    /// (`G_PRIORITY_DEFAULT`).
    pub const DEFAULT: Priority = Priority(0);
    /// Idle work more urgent than the default idle (`G_PRIORITY_HIGH_IDLE`).
    pub const HIGH_IDLE: Priority = Priority(100);
    /// Idle callbacks (`G_PRIORITY_DEFAULT_IDLE`).
    pub const DEFAULT_IDLE: Priority = Priority(200);
    /// Least urgent (`G_PRIORITY_LOW`).
    pub const LOW: Priority = Priority(300);
}

impl Default for Priority {
    fn default() -> Priority {
        Priority::DEFAULT
    }
}

/// Names a source added to a [`MainContext`]; never reused within a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub(crate) u64);

//! The poller of a context: an epoll set (owned by `polling::Poller`) with
//! the wakeup eventfd, a timerfd for deadlines and a table that merges the
//! interests of every source watching the same fd.
//!
//! Registration goes through `polling` (`add_with_mode`/`modify_with_mode`/
//! `delete`, level-triggered). The wait calls `epoll_wait(2)` on the
//! poller's fd directly: `Poller::wait` re-arms its own timerfd and notifier
//! around every call (five syscalls against one; the measured cost is in
//! `docs/benchmarks.md`), which alone would blow the per-iteration budget. We never call `Poller::notify` or
//! `Poller::wait`, so the poller's internal fds (registered one-shot with no
//! or never-triggered interest) never show up in our results.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use polling::{Event, PollMode, Poller};

use super::shared::Shared;
use super::source::{SourceFds, ALWAYS};
use crate::channel::Condition;

/// Event key of the wakeup eventfd.
const WAKE_KEY: usize = usize::MAX - 1;
/// Event key of the deadline timerfd.
const TIMER_KEY: usize = usize::MAX - 2;

/// How long a poll may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timeout {
    /// Do not wait.
    Zero,
    /// Until an fd is ready or a wakeup arrives.
    Infinite,
    /// At most until this instant.
    Until(Instant),
}

/// The merged state of one fd watched by one or more sources.
#[derive(Debug, Default)]
struct FdEntry {
    /// Slots (of any source) that reference this fd.
    users: u32,
    /// Slots polling it for `IN`/`PRI`.
    readers: u32,
    /// Slots polling it for `OUT`.
    writers: u32,
    /// Interest registered with epoll: bit 0 read, bit 1 write; 0 = absent.
    reg: u8,
    /// Present in the epoll set.
    in_epoll: bool,
    /// Conditions that hold without polling: a regular file (epoll refuses
    /// it; `poll(2)` calls it always ready) or a bad fd (`NVAL`).
    sticky: Condition,
    revents: Condition,
    /// Poll round `revents` belongs to.
    epoch: u64,
}

#[derive(Debug, Default)]
struct FdTable {
    entries: HashMap<RawFd, FdEntry>,
    epoch: u64,
}

pub(crate) struct Poll {
    poller: Poller,
    /// Timerfd armed at the nearest deadline; `None` if the kernel refused
    /// one (then waits round up to whole milliseconds).
    timer: Option<OwnedFd>,
    armed: Cell<Option<Instant>>,
    table: RefCell<FdTable>,
    events: RefCell<Vec<libc::epoll_event>>,
}

fn zero_event() -> libc::epoll_event {
    libc::epoll_event { events: 0, u64: 0 }
}

fn decode(bits: u32) -> Condition {
    let mut c = Condition::empty();
    let b = |flag: libc::c_int| bits & flag as u32 != 0;
    if b(libc::EPOLLIN) {
        c |= Condition::IN;
    }
    if b(libc::EPOLLOUT) {
        c |= Condition::OUT;
    }
    if b(libc::EPOLLPRI) {
        c |= Condition::PRI;
    }
    if b(libc::EPOLLERR) {
        c |= Condition::ERR;
    }
    if b(libc::EPOLLHUP) || b(libc::EPOLLRDHUP) {
        c |= Condition::HUP;
    }
    c
}

fn create_timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create has no memory preconditions; we check the result.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by timerfd_create and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Milliseconds until `deadline`, rounded up so a wait never ends early.
fn millis_until(deadline: Instant) -> libc::c_int {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_nanos().div_ceil(1_000_000);
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

impl Poll {
    pub(crate) fn new(wake_fd: RawFd) -> io::Result<Poll> {
        let poller = Poller::new()?;
        // SAFETY: the wakeup eventfd is owned by the context's `Shared`,
        // which outlives this poller (the context holds both and drops the
        // poller first).
        unsafe { poller.add_with_mode(wake_fd, Event::readable(WAKE_KEY), PollMode::Level)? };
        let timer = match create_timerfd() {
            Ok(fd) => {
                // SAFETY: `fd` is owned by this `Poll` and outlives its
                // registration in the poller (fields drop after use ends).
                unsafe {
                    poller.add_with_mode(
                        fd.as_raw_fd(),
                        Event::readable(TIMER_KEY),
                        PollMode::Level,
                    )?
                };
                Some(fd)
            }
            Err(_) => None,
        };
        Ok(Poll {
            poller,
            timer,
            armed: Cell::new(None),
            table: RefCell::new(FdTable::default()),
            events: RefCell::new(vec![zero_event(); 64]),
        })
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }

    /// Make the timerfd fire at `deadline` (not before). False if there is
    /// no timerfd or it could not be armed.
    pub(crate) fn arm_timer(&self, deadline: Instant) -> bool {
        let Some(timer) = &self.timer else {
            return false;
        };
        if self.armed.get() == Some(deadline) {
            return true;
        }
        // Relative to a `now` taken before the syscall: the timer runs out
        // no earlier than `deadline`. Zero would disarm, so use 1 ns.
        let rel = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: rel.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: rel.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec for the duration of the call,
        // the old-value pointer may be null, and the timerfd is ours.
        let rc =
            unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return false;
        }
        self.armed.set(Some(deadline));
        true
    }

    fn clear_timer(&self) {
        if let Some(timer) = &self.timer {
            let mut buf: u64 = 0;
            // SAFETY: reads at most 8 bytes into a live u64 from our timerfd;
            // EAGAIN is fine.
            unsafe { libc::read(timer.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
        }
        self.armed.set(None);
    }

    /// Adaptive polling: spin up to `poll_max` (never past the deadline)
    /// until work arrives from another thread or the poller has events;
    /// then the wait does not block. Otherwise the wait goes on as asked.
    fn spin(&self, timeout: Timeout, shared: &Shared, poll_max: Duration) -> Timeout {
        if poll_max.is_zero() || matches!(timeout, Timeout::Zero) {
            return timeout;
        }
        let start = Instant::now();
        let mut end = start + poll_max;
        if let Timeout::Until(d) = timeout {
            end = end.min(d);
        }
        let mut pfd = libc::pollfd {
            fd: self.poller.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut spins = 0u32;
        loop {
            if shared.has_work() {
                return Timeout::Zero;
            }
            // Every few spins, ask the kernel whether an fd is ready
            // (without consuming the events: the wait below collects them).
            if spins.is_multiple_of(16) {
                // SAFETY: one valid pollfd on our epoll fd, no timeout.
                if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
                    return Timeout::Zero;
                }
            }
            spins = spins.wrapping_add(1);
            if Instant::now() >= end {
                return timeout;
            }
            std::hint::spin_loop();
        }
    }

    /// Wait for events and record them in the fd table.
    pub(crate) fn wait(&self, timeout: Timeout, shared: &Shared, poll_max: Duration) {
        let timeout = self.spin(timeout, shared, poll_max);
        let ms = match timeout {
            Timeout::Zero => 0,
            Timeout::Infinite => -1,
            Timeout::Until(deadline) => {
                if self.arm_timer(deadline) {
                    -1
                } else {
                    millis_until(deadline)
                }
            }
        };
        let mut events = self.events.borrow_mut();
        let cap = events.len();
        // SAFETY: `events` holds `cap` initialised entries the kernel may
        // overwrite; the epoll fd stays open for the call (owned by poller).
        let n = unsafe {
            libc::epoll_wait(
                self.poller.as_raw_fd(),
                events.as_mut_ptr(),
                cap.min(libc::c_int::MAX as usize) as libc::c_int,
                ms,
            )
        };
        // EINTR (or anything else) counts as "nothing happened": the check
        // phase looks at the clock and the queues anyway.
        let n = usize::try_from(n).unwrap_or(0).min(cap);
        let mut table = self.table.borrow_mut();
        table.epoch += 1;
        let epoch = table.epoch;
        for ev in &events[..n] {
            // Copy out of the (packed) struct before use.
            let (bits, key) = (ev.events, ev.u64);
            match key as usize {
                WAKE_KEY => shared.clear_notification(),
                TIMER_KEY => self.clear_timer(),
                _ => {
                    if let Some(e) = table.entries.get_mut(&(key as RawFd)) {
                        e.revents = decode(bits);
                        e.epoch = epoch;
                    }
                }
            }
        }
        if n == cap && cap < 4096 {
            events.resize(cap * 2, zero_event());
        }
    }

    /// Bring the poller in line with what `fds` asks for (nothing if
    /// `blocked`). Returns true if a slot is ready without polling (regular
    /// file, bad fd).
    pub(crate) fn sync(&self, fds: &mut SourceFds, blocked: bool) -> bool {
        let mut ready = false;
        let mut table = self.table.borrow_mut();
        for slot in fds.slots.iter_mut() {
            let effective = if blocked || slot.removed {
                Condition::empty()
            } else {
                slot.want
            };
            if slot.fd < 0 {
                slot.applied = effective;
                ready |= !effective.is_empty();
                continue;
            }
            if !slot.attached && !slot.removed {
                table.entries.entry(slot.fd).or_default().users += 1;
                slot.attached = true;
            }
            if !slot.attached {
                continue;
            }
            if effective != slot.applied {
                self.apply(&mut table, slot.fd, slot.applied, effective);
                slot.applied = effective;
            }
            if slot.removed {
                self.detach(&mut table, slot.fd);
                slot.attached = false;
            } else if !effective.is_empty() {
                if let Some(e) = table.entries.get(&slot.fd) {
                    ready |= e.sticky.intersects(effective | Condition::NVAL);
                }
            }
        }
        ready
    }

    /// Drop every registration of `fds` (the source is going away).
    pub(crate) fn unregister(&self, fds: &mut SourceFds) {
        let mut table = self.table.borrow_mut();
        for slot in fds.slots.iter_mut() {
            if slot.fd >= 0 && slot.attached {
                self.apply(&mut table, slot.fd, slot.applied, Condition::empty());
                self.detach(&mut table, slot.fd);
            }
            slot.attached = false;
            slot.removed = true;
            slot.applied = Condition::empty();
            slot.revents = Condition::empty();
        }
    }

    /// Copy the results of the last poll into `fds`.
    pub(crate) fn fill_revents(&self, fds: &mut SourceFds) {
        let table = self.table.borrow();
        for slot in fds.slots.iter_mut() {
            slot.revents = Condition::empty();
            if slot.applied.is_empty() {
                continue;
            }
            if slot.fd < 0 {
                slot.revents = Condition::NVAL;
                continue;
            }
            if let Some(e) = table.entries.get(&slot.fd) {
                if e.epoch == table.epoch {
                    slot.revents = e.revents & (slot.applied | ALWAYS);
                }
                slot.revents |= e.sticky & (slot.applied | Condition::NVAL);
            }
        }
    }

    fn detach(&self, table: &mut FdTable, fd: RawFd) {
        if let Some(e) = table.entries.get_mut(&fd) {
            e.users = e.users.saturating_sub(1);
            if e.users == 0 {
                if e.in_epoll {
                    self.delete(fd);
                }
                table.entries.remove(&fd);
            }
        }
    }

    fn apply(&self, table: &mut FdTable, fd: RawFd, old: Condition, new: Condition) {
        let Some(e) = table.entries.get_mut(&fd) else {
            return;
        };
        let reads = |c: Condition| c.intersects(Condition::IN | Condition::PRI) as u32;
        let writes = |c: Condition| c.contains(Condition::OUT) as u32;
        e.readers = (e.readers + reads(new)).saturating_sub(reads(old));
        e.writers = (e.writers + writes(new)).saturating_sub(writes(old));
        let want = (e.readers > 0) as u8 | ((e.writers > 0) as u8) << 1;
        if want == e.reg {
            return;
        }
        e.reg = want;
        if want == 0 {
            // Out of the set entirely, so a gated fd does not even report
            // ERR/HUP.
            if e.in_epoll {
                self.delete(fd);
                e.in_epoll = false;
            }
            return;
        }
        let ev = Event::new(fd as usize, want & 1 != 0, want & 2 != 0);
        let res = if e.in_epoll {
            match self.modify(fd, ev) {
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                    // Closed and reopened behind our back: register again.
                    self.add(fd, ev)
                }
                r => r,
            }
        } else {
            match self.add(fd, ev) {
                Err(err) if err.raw_os_error() == Some(libc::EEXIST) => self.modify(fd, ev),
                r => r,
            }
        };
        match res {
            Ok(()) => {
                e.in_epoll = true;
                e.sticky = Condition::empty();
            }
            Err(err) => {
                e.in_epoll = false;
                e.sticky = match err.raw_os_error() {
                    // A regular file or directory: always ready, as poll(2).
                    Some(libc::EPERM) => Condition::IN | Condition::OUT,
                    Some(libc::EBADF) => Condition::NVAL,
                    _ => Condition::ERR,
                };
            }
        }
    }

    fn add(&self, fd: RawFd, ev: Event) -> io::Result<()> {
        // SAFETY: by the `WatchSource`/`SourceFds` contract the fd stays open
        // while a source polls it, and every source removes its
        // registrations (unregister) before it goes away.
        unsafe { self.poller.add_with_mode(fd, ev, PollMode::Level) }
    }

    fn modify(&self, fd: RawFd, ev: Event) -> io::Result<()> {
        // SAFETY: the fd is open for the duration of this call by the
        // `WatchSource` contract (a source polls it); the borrow does not
        // outlive the call.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.poller.modify_with_mode(bfd, ev, PollMode::Level)
    }

    fn delete(&self, fd: RawFd) {
        // SAFETY: as in `modify`; if the fd was closed anyway the kernel
        // answers EBADF/ENOENT, which we ignore (epoll already forgot it).
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = self.poller.delete(bfd);
    }
}

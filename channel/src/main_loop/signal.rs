//! Unix signal sources: a process-wide handler writes to a self-pipe per
//! source; the callback runs on the context's thread.
//!
//! The handler only does async-signal-safe work (atomics and `write(2)`),
//! keeps `errno`, and chains to a handler that was installed before ours.
//! The first source for a signal installs the handler; removing the last one
//! restores the previous disposition. Other threads are not affected (no
//! signal masks change).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::context::MainContext;
use super::source::{FdTag, Source, SourceFds};
use super::{ControlFlow, Priority, SourceId};
use crate::channel::Condition;
use crate::error::{Error, Result};

/// Signal sources that can exist at once in the process.
const MAX_SLOTS: usize = 64;
/// Highest signal number handled (Linux `SIGRTMAX`).
const MAX_SIGNAL: usize = 64;

/// One signal source's connection to the handler.
struct Slot {
    signum: AtomicI32,
    /// Write end of the source's pipe, -1 if free.
    fd: AtomicI32,
    /// Handlers currently using `fd`.
    busy: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            signum: AtomicI32::new(0),
            fd: AtomicI32::new(-1),
            busy: AtomicU32::new(0),
        }
    }
}

static SLOTS: [Slot; MAX_SLOTS] = [const { Slot::new() }; MAX_SLOTS];
/// The handler that was installed before ours (0: none to chain to).
static CHAIN: [AtomicUsize; MAX_SIGNAL + 1] = [const { AtomicUsize::new(0) }; MAX_SIGNAL + 1];
/// The previous handler takes `siginfo` (SA_SIGINFO).
static CHAIN_SIGINFO: [AtomicBool; MAX_SIGNAL + 1] =
    [const { AtomicBool::new(false) }; MAX_SIGNAL + 1];

/// A signal with our handler installed.
struct Installed {
    signum: i32,
    /// Sources using it.
    users: usize,
    /// The disposition to restore.
    old: libc::sigaction,
}

// SAFETY: `libc::sigaction` is plain data (a handler address, a mask and
// flags); moving it between threads is sound.
unsafe impl Send for Installed {}

/// Installations and slot allocation (never touched by the handler).
static REGISTRY: Mutex<Vec<Installed>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<Installed>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the thread's lifetime.
    let saved_errno = unsafe { *libc::__errno_location() };
    for slot in SLOTS.iter() {
        if slot.signum.load(Ordering::SeqCst) != sig {
            continue;
        }
        slot.busy.fetch_add(1, Ordering::SeqCst);
        let fd = slot.fd.load(Ordering::SeqCst);
        if fd >= 0 {
            let byte = 1u8;
            // SAFETY: write(2) is async-signal-safe; `fd` stays open while
            // `busy` is non-zero (release waits for it); a full pipe
            // (EAGAIN) already means "signal pending".
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        }
        slot.busy.fetch_sub(1, Ordering::SeqCst);
    }
    if let Some(idx) = usize::try_from(sig).ok().filter(|&s| s <= MAX_SIGNAL) {
        let prev = CHAIN[idx].load(Ordering::SeqCst);
        if prev != 0 {
            if CHAIN_SIGINFO[idx].load(Ordering::SeqCst) {
                // SAFETY: `prev` is the sa_sigaction of the handler installed
                // before ours, registered with SA_SIGINFO, so it has this
                // signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev) };
                f(sig, info, uctx);
            } else {
                // SAFETY: `prev` is a plain sa_handler installed before ours.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
                f(sig);
            }
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// A live registration: a slot (and the handler installed for its signal).
struct Registration {
    slot: usize,
    signum: i32,
}

impl Registration {
    fn new(signum: i32, write_fd: i32) -> io::Result<Registration> {
        let mut reg = registry();
        let slot = SLOTS
            .iter()
            .position(|s| s.fd.load(Ordering::SeqCst) < 0 && s.signum.load(Ordering::SeqCst) == 0)
            .ok_or_else(|| io::Error::other(format!("more than {MAX_SLOTS} signal sources")))?;
        // Claim the slot before the handler can see the signal.
        SLOTS[slot].fd.store(write_fd, Ordering::SeqCst);
        SLOTS[slot].signum.store(signum, Ordering::SeqCst);
        if let Some(inst) = reg.iter_mut().find(|i| i.signum == signum) {
            inst.users += 1;
        } else if let Err(e) = install(&mut reg, signum) {
            release_slot(slot);
            return Err(e);
        }
        Ok(Registration { slot, signum })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = registry();
        if let Some(pos) = reg.iter().position(|i| i.signum == self.signum) {
            reg[pos].users -= 1;
            if reg[pos].users == 0 {
                let inst = reg.remove(pos);
                // SAFETY: restores the disposition saved by `install`; the
                // old-action pointer may be null.
                unsafe { libc::sigaction(inst.signum, &inst.old, std::ptr::null_mut()) };
                let idx = inst.signum as usize;
                CHAIN[idx].store(0, Ordering::SeqCst);
                CHAIN_SIGINFO[idx].store(false, Ordering::SeqCst);
            }
        }
        release_slot(self.slot);
    }
}

fn release_slot(slot: usize) {
    let s = &SLOTS[slot];
    s.fd.store(-1, Ordering::SeqCst);
    // A handler that read the old fd finishes its write before the pipe
    // may close.
    while s.busy.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    s.signum.store(0, Ordering::SeqCst);
}

fn install(reg: &mut Vec<Installed>, signum: i32) -> io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = on_signal as *const () as libc::sighandler_t;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: `new.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    let idx = signum as usize;
    // SAFETY: both pointers are valid sigaction values for the call.
    if unsafe { libc::sigaction(signum, &new, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let prev = old.sa_sigaction;
    if prev != libc::SIG_DFL && prev != libc::SIG_IGN && prev != on_signal as *const () as usize {
        CHAIN_SIGINFO[idx].store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::SeqCst);
        CHAIN[idx].store(prev, Ordering::SeqCst);
    }
    reg.push(Installed {
        signum,
        users: 1,
        old,
    });
    Ok(())
}

/// Fields drop in order: the registration goes before the pipe closes.
struct SignalSource<F> {
    registration: Option<Registration>,
    signum: i32,
    tag: Option<FdTag>,
    callback: F,
    read: OwnedFd,
    /// Kept open while the registration may write to it.
    _write: OwnedFd,
}

impl<F: FnMut() -> ControlFlow> Source for SignalSource<F> {
    fn prepare(&mut self, _: Instant, _: &mut Option<Instant>, fds: &mut SourceFds) -> bool {
        if self.tag.is_none() {
            self.tag = Some(fds.add(self.read.as_raw_fd(), Condition::IN));
        }
        false
    }

    fn check(&mut self, _: Instant, fds: &SourceFds) -> bool {
        self.tag
            .is_some_and(|t| fds.revents(t).contains(Condition::IN))
    }

    fn dispatch(&mut self) -> ControlFlow {
        // Drain: several deliveries before we ran make one callback.
        let mut buf = [0u8; 64];
        // SAFETY: reads into a live buffer of the given length from our own
        // non-blocking pipe; stops at EAGAIN.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
        (self.callback)()
    }

    fn finalize(&mut self) {
        self.registration.take();
    }
}

impl<F> fmt::Debug for SignalSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalSource")
            .field("signum", &self.signum)
            .finish()
    }
}

impl MainContext {
    /// Call `f` on this context's thread after `signum` (`SIGINT`,
    /// `SIGTERM`, `SIGHUP`, `SIGUSR1`, ...) is delivered to the process,
    /// until it returns [`ControlFlow::Remove`]; at [`Priority::DEFAULT`].
    /// Deliveries that pile up before the callback runs make one call.
    ///
    /// While the source exists the signal no longer has its previous effect
    /// (a handler installed before is still called); removing the last
    /// source for a signal restores the previous disposition. Fault signals
    /// (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`) and `SIGKILL`/`SIGSTOP` are
    /// refused.
    #[doc(alias = "g_unix_signal_add")]
    pub fn signal_add(
        &self,
        signum: i32,
        f: impl FnMut() -> ControlFlow + 'static,
    ) -> Result<SourceId> {
        let name = format!("signal {signum}");
        let forbidden = [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ];
        if signum <= 0 || signum as usize > MAX_SIGNAL || forbidden.contains(&signum) {
            return Err(Error::os(
                &name,
                "add a signal source",
                io::Error::new(io::ErrorKind::InvalidInput, "signal cannot be watched"),
            ));
        }
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(Error::last_os(
                "signal source",
                format!("create a pipe for {name}"),
            ));
        }
        // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let registration = Registration::new(signum, write.as_raw_fd())
            .map_err(|e| Error::os(&name, "install the signal handler", e))?;
        let source = SignalSource {
            signum,
            read,
            _write: write,
            registration: Some(registration),
            tag: None,
            callback: f,
        };
        Ok(self.add_source(Box::new(source), Priority::DEFAULT))
    }
}

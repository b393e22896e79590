//! [`CommandChannel`]: a child process' stdin and stdout as one channel
//! (QEMU's `QIOChannelCommand`, behind `exec:`), and [`PipeChannel`]: any
//! read fd + write fd pair as one channel, among them this process' own
//! stdin and stdout ([`PipeChannel::stdio`], behind `stdio:`, the far end of
//! `exec:ssh HOST transit recv stdio:`).
//!
//! # Command
//!
//! [`CommandChannel::spawn`] runs an argv, [`CommandChannel::spawn_shell`]
//! runs `/bin/sh -c STRING` (what `exec:` does). Writes go to the child's
//! stdin, reads come from its stdout; its stderr is inherited (passed
//! through). Stdin and stdout are each one direction of a UNIX stream
//! socket pair rather than a pipe: a pipe's writer and reader copy under one
//! lock and so take turns, a socket's copy at the same time, which doubles
//! the throughput between two processes on two cores. Our ends are
//! close-on-exec, so no other child inherits them. The text below says
//! "pipe" for either.
//! The watch is [`WatchFds::Pair`]: `IN` on stdout, `OUT` on stdin;
//! [`Channel::set_blocking`] applies to both.
//!
//! * The child runs in a process group of its own, and every signal goes
//!   to the group: `sh -c` runs a command as its child (and a pipeline as
//!   several), and a signal to the shell alone would leave them running.
//!   The flip side: a command in another process group cannot read the
//!   terminal (an `ssh` password prompt stops with `SIGTTIN`), and the
//!   terminal's Ctrl-C reaches only this process, whose `close` ends the
//!   command.
//! * [`Shutdown::Write`] closes the child's stdin (it sees end of file).
//!   [`Shutdown::Read`] makes later reads end of file and sends the child's
//!   group `SIGTERM`, because a thread blocked on a pipe can only be woken by the
//!   writer going away (pipes have no `shutdown(2)`). Both work from any
//!   thread through [`Channel::shutdown_handle`] and never block.
//! * [`Channel::close`] never hangs (QEMU's close does a blocking
//!   `waitpid`): it closes both pipes so the child sees end of file, waits
//!   for it to exit until the close timeout
//!   ([`CommandChannel::set_close_timeout`], 5 s by default) has passed
//!   since its stdin closed (at `Shutdown::Write`, or now), then sends the
//!   group `SIGTERM`, waits up to the kill timeout
//!   ([`CommandChannel::set_kill_timeout`], 2 s), then sends the group
//!   `SIGKILL` (which also ends what the command left behind if the
//!   command itself exited on `SIGTERM`).
//! * The exit status is checked: an exit with a non-zero status or death by
//!   a signal is an [`Error::Protocol`] naming the command and saying
//!   `exited with status 3` or `killed by signal 9 (SIGKILL)`. `close`
//!   reports it; so does a read that meets end of file on stdout after the
//!   child exited (in blocking mode the read waits up to the close timeout
//!   for the exit; in non-blocking mode it looks once). A child that had to
//!   be killed by `close` is an error even if the signal was ours.
//! * A write after the child died fails with `EPIPE` rather than killing
//!   this process: Rust's runtime sets `SIGPIPE` to "ignore" before `main`
//!   in every Rust binary (and test harness), and children spawned through
//!   `std::process::Command` get the default disposition back. A non-Rust
//!   host that embeds this library must ignore `SIGPIPE` itself.
//!
//! # Stdio
//!
//! [`PipeChannel::stdio`] reads from a duplicate of fd 0 and writes to a
//! duplicate of fd 1, so closing the channel leaves the process' own
//! standard streams open. The duplicates share the open file description
//! with fds 0 and 1: `set_blocking(false)` makes them non-blocking too, so
//! the channel restores the original flags when it closes.
//!
//! # Example
//!
//! ```
//! use transit_channel::{command::CommandChannel, io, Channel, Shutdown};
//!
//! let mut ch = CommandChannel::spawn_shell("tr a-z A-Z")?;
//! io::write_all(&mut ch, b"hello")?;
//! ch.shutdown(Shutdown::Write)?; // tr sees end of file
//! let mut buf = [0u8; 5];
//! io::read_all(&mut ch, &mut buf)?;
//! assert_eq!(&buf, b"HELLO");
//! ch.close()?; // exit status 0
//!
//! let mut failing = CommandChannel::spawn_shell("exit 3")?;
//! let err = failing.close().unwrap_err();
//! assert!(err.to_string().contains("exited with status 3"), "{err}");
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, ReadFlags, Readiness,
    Shutdown, ShutdownChannel, ShutdownHandle, WatchFds, WatchSource, WriteFlags,
};
use crate::error::{Cause, Error, Result};

/// The most iovecs one system call takes (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Ends a [`CommandChannel`]'s command early: `SIGTERM` to its process
/// group, unless the child was reaped already (its pid may be reused then,
/// so nothing is sent). A `close` in progress sees the exit at once and
/// reports the signal.
#[derive(Clone)]
pub struct Terminator(Arc<Shared>);

impl Terminator {
    /// Send `SIGTERM` to the command's process group now.
    pub fn terminate(&self) {
        self.0.lock().signal_group(libc::SIGTERM);
    }
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Terminator").field(&self.0.name).finish()
    }
}

/// What the shutdown handle and the channel share.
struct Shared {
    name: String,
    /// Set by `Shutdown::Write`: writes fail from then on.
    write_shut: AtomicBool,
    state: Mutex<SharedState>,
}

struct SharedState {
    /// False once the channel closed its fds: the numbers may be reused,
    /// so the handle must not touch them.
    fds_open: bool,
    read_fd: RawFd,
    write_fd: RawFd,
    /// The child (command channels only). Every reap goes through
    /// [`reap`], which records `status`: while `status` is `None` the child
    /// is not reaped, so its pid (and process group id) cannot be reused.
    child: Option<Child>,
    status: Option<ExitStatus>,
    /// When the child's stdin was closed (`Shutdown::Write` or `close`):
    /// the close timeout counts from here.
    input_closed: Option<Instant>,
}

impl SharedState {
    /// Reap the child if it exited (never blocks), recording its status.
    fn reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        self.status = status;
        Ok(status)
    }

    /// Send `sig` to the child's process group (the command and everything
    /// it started that stayed in the group), if the child is not reaped.
    fn signal_group(&self, sig: libc::c_int) {
        if self.status.is_some() {
            return;
        }
        if let Some(pid) = self
            .child
            .as_ref()
            .and_then(|c| libc::pid_t::try_from(c.id()).ok())
        {
            // SAFETY: kill has no memory effects. The child is not reaped
            // (a zombie at worst), so `pid` is still its pid and, as it
            // was made a group leader at spawn, the id of its group.
            unsafe { libc::kill(-pid, sig) };
        }
    }

    /// True if the child has exited, without reaping it (the group id
    /// stays reserved for a last signal).
    fn exited_unreaped(&self) -> bool {
        if self.status.is_some() {
            return true;
        }
        let Some(pid) = self
            .child
            .as_ref()
            .and_then(|c| libc::pid_t::try_from(c.id()).ok())
        else {
            return false;
        };
        // SAFETY: an all-zero siginfo_t is a valid value of the plain C
        // struct; waitid writes into it and WNOWAIT leaves the child
        // waitable.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (or left it zeroed: si_pid 0).
        rc == 0 && unsafe { info.si_pid() } != 0
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // A panic while holding the lock leaves consistent plain data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ShutdownChannel for Shared {
    fn shutdown(&self, how: Shutdown) -> Result<()> {
        let mut st = self.lock();
        if !st.fds_open {
            return Ok(());
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.write_shut.store(true, Ordering::Release);
            st.input_closed.get_or_insert_with(Instant::now);
            // Replace our pipe end by /dev/null: the pipe's last write end
            // goes away and the child sees end of file.
            replace_with_devnull(st.write_fd, libc::O_WRONLY)
                .map_err(|e| Error::os(&self.name, "shut down writes (close stdin)", e))?;
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            replace_with_devnull(st.read_fd, libc::O_RDONLY)
                .map_err(|e| Error::os(&self.name, "shut down reads", e))?;
            st.signal_group(libc::SIGTERM);
        }
        Ok(())
    }
}

/// Atomically make `fd` refer to /dev/null (close-on-exec).
fn replace_with_devnull(fd: RawFd, mode: libc::c_int) -> io::Result<()> {
    // SAFETY: the path is a valid NUL-terminated string; open returns a new
    // fd or -1.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), mode | libc::O_CLOEXEC) };
    if null < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `null` is the fd we just opened and `fd` is one of the
    // channel's open fds (the caller holds the lock that keeps it open);
    // dup3 atomically replaces it. Then we close our temporary `null`.
    let rc = unsafe { libc::dup3(null, fd, libc::O_CLOEXEC) };
    let err = io::Error::last_os_error();
    // SAFETY: `null` is ours and closed exactly once.
    unsafe { libc::close(null) };
    if rc < 0 {
        return Err(err);
    }
    Ok(())
}

/// A read fd and a write fd as one channel: the core of both channels here.
struct PipePair {
    name: String,
    /// Operation names for errors ("read from the command's stdout", ...).
    ops: [&'static str; 2],
    read: Option<OwnedFd>,
    write: Option<OwnedFd>,
    blocking: bool,
    shared: Arc<Shared>,
}

impl PipePair {
    fn new(name: String, read: OwnedFd, write: OwnedFd, child: Option<Child>) -> PipePair {
        let shared = Arc::new(Shared {
            name: name.clone(),
            write_shut: AtomicBool::new(false),
            state: Mutex::new(SharedState {
                fds_open: true,
                read_fd: read.as_raw_fd(),
                write_fd: write.as_raw_fd(),
                child,
                status: None,
                input_closed: None,
            }),
        });
        let ops = if shared.lock().child.is_some() {
            [
                "read from the command's stdout",
                "write to the command's stdin",
            ]
        } else {
            ["read", "write"]
        };
        PipePair {
            name,
            ops,
            read: Some(read),
            write: Some(write),
            blocking: true,
            shared,
        }
    }

    fn fds(&self) -> Result<(RawFd, RawFd)> {
        match (&self.read, &self.write) {
            (Some(r), Some(w)) => Ok((r.as_raw_fd(), w.as_raw_fd())),
            _ => Err(Error::closed(&self.name)),
        }
    }

    fn readv(&mut self, bufs: &mut [IoSliceMut<'_>]) -> Result<usize> {
        let (fd, _) = self.fds()?;
        if bufs.is_empty() {
            return Ok(0);
        }
        let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
        let iov = bufs.as_mut_ptr().cast::<libc::iovec>();
        loop {
            // SAFETY: IoSliceMut is ABI-compatible with `struct iovec`;
            // `iov` points to `cnt` valid, writable buffers for the call.
            let n = unsafe { libc::readv(fd, iov, cnt) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::os(&self.name, self.ops[0], err));
            }
        }
    }

    fn writev(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let (_, fd) = self.fds()?;
        if self.shared.write_shut.load(Ordering::Acquire) {
            return Err(Error::os(
                &self.name,
                "write (writes were shut down)",
                io::Error::from_raw_os_error(libc::EPIPE),
            ));
        }
        if bufs.is_empty() {
            return Ok(0);
        }
        let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
        let iov = bufs.as_ptr().cast::<libc::iovec>();
        loop {
            // SAFETY: IoSlice is ABI-compatible with `struct iovec`; `iov`
            // points to `cnt` valid buffers for the call.
            let n = unsafe { libc::writev(fd, iov, cnt) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::os(&self.name, self.ops[1], err));
            }
        }
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        let (r, w) = self.fds()?;
        for fd in [r, w] {
            set_nonblock(fd, !blocking)
                .map_err(|e| Error::os(&self.name, "fcntl(O_NONBLOCK)", e))?;
        }
        self.blocking = blocking;
        Ok(())
    }

    fn watch_source(&self) -> WatchSource {
        match self.fds() {
            Ok((read, write)) => WatchSource {
                fds: WatchFds::Pair { read, write },
                ready: Readiness::new(),
                name: self.name.clone(),
            },
            Err(_) => WatchSource {
                fds: WatchFds::None,
                ready: Readiness::always(Condition::NVAL),
                name: self.name.clone(),
            },
        }
    }

    /// Close both fds (the shutdown handle becomes a no-op first).
    fn close_fds(&mut self) {
        self.shared.lock().fds_open = false;
        self.read = None;
        self.write = None;
    }
}

fn set_nonblock(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: `fd` is open (owned by the channel); F_GETFL reads flags only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    // SAFETY: `fd` is open; F_SETFL changes status flags only.
    if new != fl && unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// "exited with status 3", "killed by signal 9 (SIGKILL)".
fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        // The shell's own codes for a command it could not run.
        let why = match code {
            127 => " (command not found: is it installed and on PATH?)",
            126 => " (found but not executable)",
            _ => "",
        };
        return format!("exited with status {code}{why}");
    }
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGHUP => " (SIGHUP)",
            libc::SIGINT => " (SIGINT)",
            libc::SIGQUIT => " (SIGQUIT)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGPIPE => " (SIGPIPE)",
            libc::SIGTERM => " (SIGTERM)",
            _ => "",
        };
        return format!("killed by signal {sig}{name}");
    }
    format!("ended with {status}")
}

/// How long a write that met a closed stdin (EPIPE) waits for the child's
/// exit status.
const EPIPE_REAP_WAIT: Duration = Duration::from_millis(200);

/// A child process' stdin and stdout as one channel; see the
/// [module documentation](self).
pub struct CommandChannel {
    pipes: PipePair,
    pid: u32,
    close_timeout: Duration,
    kill_timeout: Duration,
    closed: bool,
}

impl std::fmt::Debug for CommandChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandChannel")
            .field("name", &self.pipes.name)
            .field("pid", &self.pid)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl CommandChannel {
    /// Run `argv[0]` with arguments `argv[1..]` (looked up in `PATH`). The
    /// channel is named `exec:ARGV...`.
    #[doc(alias = "qio_channel_command_new_spawn")]
    pub fn spawn<S: AsRef<OsStr>>(argv: &[S]) -> Result<CommandChannel> {
        let shown: Vec<String> = argv
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let name = format!("exec:{}", shown.join(" "));
        let Some((prog, args)) = argv.split_first() else {
            return Err(Error::protocol(&name, "cannot run an empty command"));
        };
        let mut cmd = Command::new(prog);
        cmd.args(args);
        CommandChannel::spawn_command(cmd, name)
    }

    /// Run `/bin/sh -c command`. The channel is named `exec:COMMAND`.
    pub fn spawn_shell(command: &str) -> Result<CommandChannel> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(command);
        CommandChannel::spawn_command(cmd, format!("exec:{command}"))
    }

    /// Run a prepared [`Command`] (environment, working directory, ...);
    /// its stdin and stdout are replaced by one-way socket pairs, stderr
    /// is inherited.
    pub fn spawn_command(mut cmd: Command, name: String) -> Result<CommandChannel> {
        // One UNIX stream socket pair per direction, not a pipe: a pipe
        // copies in and out under one lock, so the writer's copy and the
        // reader's copy take turns; a socket's sender and receiver copy at
        // the same time. Each pair carries one direction only, and the
        // other is shut down, so the child sees the streams a pipe would
        // give it.
        let pair = |dir: &str| {
            std::os::unix::net::UnixStream::pair()
                .map_err(|e| Error::os(&name, format!("socketpair for the command's {dir}"), e))
        };
        let (stdin_ours, stdin_child) = pair("stdin")?;
        let (stdout_ours, stdout_child) = pair("stdout")?;
        for (writer, reader) in [(&stdin_ours, &stdin_child), (&stdout_child, &stdout_ours)] {
            // The writing end never reads and the reading end never writes.
            let _ = writer.shutdown(std::net::Shutdown::Read);
            let _ = reader.shutdown(std::net::Shutdown::Write);
            // A deeper buffer than the default (the kernel caps it at
            // net.core.wmem_max); failure only keeps the default.
            let size: libc::c_int = 1 << 20;
            // SAFETY: setsockopt on an open socket of ours with a valid
            // pointer to an int of the given length.
            unsafe {
                libc::setsockopt(
                    writer.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        // Its own process group, so that the signals of `close` reach what
        // the command started (`sh -c` runs commands as its children), not
        // only the command itself.
        cmd.process_group(0);
        cmd.stdin(Stdio::from(OwnedFd::from(stdin_child)))
            .stdout(Stdio::from(OwnedFd::from(stdout_child)))
            .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .map_err(|e| Error::os(&name, "spawn the command", e))?;
        let pid = child.id();
        Ok(CommandChannel {
            pipes: PipePair::new(
                name,
                OwnedFd::from(stdout_ours),
                OwnedFd::from(stdin_ours),
                Some(child),
            ),
            pid,
            close_timeout: Duration::from_secs(5),
            kill_timeout: Duration::from_secs(2),
            closed: false,
        })
    }

    /// How long `close` waits for the child to exit after closing its
    /// pipes before it sends `SIGTERM` (default 5 s).
    pub fn set_close_timeout(&mut self, timeout: Duration) {
        self.close_timeout = timeout;
    }

    /// How long `close` waits after `SIGTERM` before `SIGKILL` (default
    /// 2 s).
    pub fn set_kill_timeout(&mut self, timeout: Duration) {
        self.kill_timeout = timeout;
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A handle that ends the command from another thread, even while
    /// this channel is inside [`Channel::close`] waiting out its close
    /// timeout (a caller that failed has nothing left to wait for).
    pub fn terminator(&self) -> Terminator {
        Terminator(self.pipes.shared.clone())
    }

    /// The child's exit status, if it was reaped already.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.pipes.shared.lock().status
    }

    /// Reap the child if it exited (never blocks).
    fn try_reap(&self) -> Result<Option<ExitStatus>> {
        self.pipes
            .shared
            .lock()
            .reap()
            .map_err(|e| Error::os(&self.pipes.name, "waitpid", e))
    }

    /// The end of the close timeout: `close_timeout` after the child's
    /// stdin was closed (now, if it is still open).
    fn close_deadline(&self) -> Instant {
        let closed = self.pipes.shared.lock().input_closed;
        closed.unwrap_or_else(Instant::now) + self.close_timeout
    }

    /// Wait up to `timeout` for the child to exit.
    fn wait_exit(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.wait_exit_until(Instant::now() + timeout)
    }

    /// Wait until `deadline` for the child to exit (reaping it); looks
    /// once if the deadline passed.
    fn wait_exit_until(&self, deadline: Instant) -> Result<Option<ExitStatus>> {
        let mut step = Duration::from_micros(200);
        loop {
            if let Some(s) = self.try_reap()? {
                return Ok(Some(s));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(step.min(deadline - now));
            step = (step * 2).min(Duration::from_millis(20));
        }
    }

    /// Signal the child's process group (nothing once it is reaped).
    fn signal(&self, sig: libc::c_int) {
        self.pipes.shared.lock().signal_group(sig);
    }

    /// Wait up to `timeout` for the child to exit without reaping it;
    /// true if it did.
    fn wait_exit_unreaped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut step = Duration::from_micros(200);
        loop {
            if self.pipes.shared.lock().exited_unreaped() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(step.min(deadline - now));
            step = (step * 2).min(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the group, up to `kill_timeout` for the command to
    /// exit, then SIGKILL to the group: to the command if it is still
    /// there, and to whatever it started and left behind either way (the
    /// command is not reaped yet, so its group id still names its group).
    fn terminate_group(&self, kill_timeout: Duration) -> bool {
        self.signal(libc::SIGTERM);
        let exited = self.wait_exit_unreaped(kill_timeout);
        self.signal(libc::SIGKILL);
        exited
    }

    fn status_result(&self, status: ExitStatus, extra: &str) -> Result<()> {
        if status.success() && extra.is_empty() {
            return Ok(());
        }
        Err(Error::layer(
            &self.pipes.name,
            format_args!("command {extra}{}", describe_exit(status)),
            Cause::Exited(status),
        ))
    }
}

impl Channel for CommandChannel {
    fn name(&self) -> &str {
        &self.pipes.name
    }

    fn set_name(&mut self, name: String) {
        self.pipes.name = name;
    }

    fn features(&self) -> Features {
        Features::SHUTDOWN
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        check_read_request(self, fds.is_some(), flags)?;
        let n = self.pipes.readv(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // End of file: report a failed child here already.
            let status = if self.pipes.blocking {
                self.wait_exit_until(self.close_deadline())?
            } else {
                self.try_reap()?
            };
            if let Some(s) = status {
                self.status_result(s, "")?;
            }
        }
        Ok(n)
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        check_write_request(self, !fds.is_empty(), flags)?;
        match self.pipes.writev(bufs) {
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                // Say why: the child closed its stdin, almost always
                // because it is exiting; give it a moment to be reaped so
                // the error carries its exit status (a child that closed
                // stdin and goes on gets the plain broken pipe).
                match self.wait_exit(EPIPE_REAP_WAIT)? {
                    Some(s) => Err(Error::layer(
                        &self.pipes.name,
                        format_args!(
                            "cannot write: the command {} (broken pipe)",
                            describe_exit(s)
                        ),
                        Cause::Exited(s),
                    )),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.pipes.set_blocking(blocking)
    }

    fn is_blocking(&self) -> bool {
        self.pipes.blocking
    }

    /// Close the pipes, wait for the child (close timeout), then `SIGTERM`,
    /// wait (kill timeout), then `SIGKILL`; report its exit status.
    #[doc(alias = "qio_channel_command_close")]
    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.pipes
            .shared
            .lock()
            .input_closed
            .get_or_insert_with(Instant::now);
        self.pipes.close_fds();
        // The close timeout counts from the moment stdin closed, which may
        // have been a while ago (a caller that drained stdout first).
        if let Some(s) = self.wait_exit_until(self.close_deadline())? {
            return self.status_result(s, "");
        }
        if self.terminate_group(self.kill_timeout) {
            let s = self.wait_exit(Duration::from_secs(1))?;
            if let Some(s) = s {
                let extra = format!(
                    "did not exit within {:.1} s after its input closed; sent SIGTERM; ",
                    self.close_timeout.as_secs_f64()
                );
                return self.status_result(s, &extra);
            }
        }
        if let Some(s) = self.wait_exit(self.kill_timeout.max(Duration::from_secs(1)))? {
            let extra = format!(
                "did not exit within {:.1} s after its input closed, nor after SIGTERM; sent SIGKILL; ",
                self.close_timeout.as_secs_f64()
            );
            return self.status_result(s, &extra);
        }
        Err(Error::protocol(
            &self.pipes.name,
            format_args!("command (pid {}) refused to die after SIGKILL", self.pid),
        ))
    }

    fn watch_source(&self) -> WatchSource {
        self.pipes.watch_source()
    }

    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        Ok(self.pipes.shared.clone())
    }
}

impl Drop for CommandChannel {
    /// Without `close`: close the pipes and make sure the child ends
    /// (`SIGTERM` if it has not exited, reaped in the background by a short
    /// wait). Use `close` to learn the exit status.
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            self.pipes.close_fds();
            if let Ok(None) = self.wait_exit(Duration::from_millis(10)) {
                self.terminate_group(Duration::from_millis(100));
                let _ = self.wait_exit(Duration::from_millis(100));
            }
        }
    }
}

/// A read fd and a write fd as one channel: this process' stdin and stdout
/// ([`PipeChannel::stdio`], for `stdio:`), or any pair of pipe or socket
/// fds ([`PipeChannel::new`]: another process' stdout and stdin, fds that
/// arrived over a UNIX socket). Watched as an fd pair; `shutdown` replaces
/// our fd by /dev/null (thread safe, never touches a closed number).
pub struct PipeChannel {
    pipes: PipePair,
    /// Original status flags of the fds, restored on close (stdio only).
    saved_flags: Option<[libc::c_int; 2]>,
    closed: bool,
}

impl std::fmt::Debug for PipeChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeChannel")
            .field("name", &self.pipes.name)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl PipeChannel {
    /// Own `read` and `write` as one channel called `name` (blocking).
    ///
    /// ```
    /// use std::io::{pipe, Read, Write};
    /// use transit_channel::{io, PipeChannel};
    ///
    /// let (r, mut w_far) = pipe().expect("pipe");
    /// let (mut r_far, w) = pipe().expect("pipe");
    /// let mut ch = PipeChannel::new("pair", r.into(), w.into());
    /// w_far.write_all(b"in").expect("write");
    /// let mut buf = [0u8; 2];
    /// io::read_all(&mut ch, &mut buf)?;
    /// io::write_all(&mut ch, b"out")?;
    /// drop(ch);
    /// let mut out = String::new();
    /// r_far.read_to_string(&mut out).expect("read");
    /// assert_eq!((&buf, out.as_str()), (b"in", "out"));
    /// # Ok::<(), transit_channel::Error>(())
    /// ```
    pub fn new(name: impl Into<String>, read: OwnedFd, write: OwnedFd) -> PipeChannel {
        PipeChannel {
            pipes: PipePair::new(name.into(), read, write, None),
            saved_flags: None,
            closed: false,
        }
    }

    /// This process' stdin and stdout: duplicates of fds 0 and 1
    /// (close-on-exec), named `stdio:`. Closing restores the original
    /// blocking mode of fds 0 and 1 and leaves them open.
    pub fn stdio() -> Result<PipeChannel> {
        let name = "stdio:".to_owned();
        let dup = |fd: RawFd| -> Result<OwnedFd> {
            // SAFETY: F_DUPFD_CLOEXEC on a standard fd returns a new fd we
            // own, or -1.
            let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if n < 0 {
                return Err(Error::last_os(&name, format_args!("duplicate fd {fd}")));
            }
            // SAFETY: `n` is a fresh fd owned by nobody else.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
        };
        let read = dup(0)?;
        let write = dup(1)?;
        let mut saved_flags = [0; 2];
        for (slot, fd) in saved_flags.iter_mut().zip([&read, &write]) {
            // SAFETY: `fd` is open; F_GETFL reads flags only.
            let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
            if fl < 0 {
                return Err(Error::last_os(&name, "fcntl(F_GETFL)"));
            }
            *slot = fl;
        }
        let blocking = saved_flags[0] & libc::O_NONBLOCK == 0;
        let mut pipes = PipePair::new(name, read, write, None);
        pipes.blocking = blocking;
        Ok(PipeChannel {
            pipes,
            saved_flags: Some(saved_flags),
            closed: false,
        })
    }

    fn restore_flags(&mut self) {
        let Some(saved) = self.saved_flags else {
            return;
        };
        if let Ok((r, w)) = self.pipes.fds() {
            for (fd, fl) in [r, w].into_iter().zip(saved) {
                let _ = set_nonblock(fd, fl & libc::O_NONBLOCK != 0);
            }
        }
    }
}

impl Channel for PipeChannel {
    fn name(&self) -> &str {
        &self.pipes.name
    }

    fn set_name(&mut self, name: String) {
        self.pipes.name = name;
    }

    fn features(&self) -> Features {
        Features::SHUTDOWN
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        check_read_request(self, fds.is_some(), flags)?;
        self.pipes.readv(bufs)
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        check_write_request(self, !fds.is_empty(), flags)?;
        self.pipes.writev(bufs)
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.pipes.set_blocking(blocking)
    }

    fn is_blocking(&self) -> bool {
        self.pipes.blocking
    }

    /// Close both fds (for [`PipeChannel::stdio`]: restore the original
    /// blocking mode of fds 0 and 1 and close the duplicates; the process'
    /// own fds 0 and 1 stay open).
    fn close(&mut self) -> Result<()> {
        if !self.closed {
            self.closed = true;
            self.restore_flags();
            self.pipes.close_fds();
        }
        Ok(())
    }

    fn watch_source(&self) -> WatchSource {
        self.pipes.watch_source()
    }

    /// `Write`: later writes fail and our write fd is replaced by /dev/null
    /// (for stdio the peer sees end of file only once fd 1 closes too, at
    /// exit). `Read`: later reads are end of file.
    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        Ok(self.pipes.shared.clone())
    }
}

impl Drop for PipeChannel {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

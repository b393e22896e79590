//! `exec:COMMAND` as a channel whose drop never blocks.
//!
//! [`ExecChannel`] is a [`CommandChannel`] (`/bin/sh -c COMMAND`) whose
//! drop hands the command to a reaper thread: multifd drops its channels
//! when their threads end, and a command at the far end (`ssh HOST transit
//! recv stdio:`) may still be putting its output in place, so it gets the
//! close timeout to finish before SIGTERM and SIGKILL. [`wait_commands`]
//! waits for every reaper and reports the first command that failed (its
//! exit status, typed in the channel error's cause);
//! [`abort_commands`] ends them at once after a failed session.
//!
//! Limits: the reapers are process-wide (one list for every session of
//! the process): a program running two sessions with `exec:` at once
//! waits for both sessions' commands in `wait_commands`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::thread::JoinHandle;

use transit_channel::{
    Channel, CommandChannel, Condition, Features, ReadFlags, Readiness, Shutdown, ShutdownHandle,
    WatchSource, WriteFlags,
};

/// `exec:COMMAND`: a [`CommandChannel`] (`/bin/sh -c COMMAND`).
///
/// Dropping it (multifd drops its channels when their threads end) never
/// blocks: the command's pipes close and a reaper thread waits for its
/// exit (the close timeout, then SIGTERM, then SIGKILL); [`wait_commands`]
/// waits for every reaper and reports the first command that failed.
pub struct ExecChannel {
    inner: Option<CommandChannel>,
    name: String,
}

impl ExecChannel {
    /// Run `/bin/sh -c command`.
    pub fn spawn(command: &str) -> Result<ExecChannel, transit_channel::Error> {
        let inner = CommandChannel::spawn_shell(command)?;
        Ok(ExecChannel {
            name: inner.name().to_owned(),
            inner: Some(inner),
        })
    }

    fn ch(&mut self) -> transit_channel::Result<&mut CommandChannel> {
        self.inner
            .as_mut()
            .ok_or_else(|| transit_channel::Error::closed(&self.name))
    }

    fn ch_ref(&self) -> Option<&CommandChannel> {
        self.inner.as_ref()
    }
}

/// A reaper thread and the way to hurry its command.
type Reaper = (JoinHandle<Result<(), String>>, transit_channel::Terminator);

/// Reaper threads of dropped command channels.
static REAPERS: Mutex<Vec<Reaper>> = Mutex::new(Vec::new());

/// Wait until every dropped `exec:` command has exited (each bounded by
/// its close and kill timeouts); the first failure (non-zero status,
/// killed) is the error.
pub fn wait_commands() -> Result<(), String> {
    let reapers: Vec<Reaper> =
        std::mem::take(&mut *REAPERS.lock().unwrap_or_else(|e| e.into_inner()));
    let mut first = None;
    for (r, _) in reapers {
        let res = r
            .join()
            .unwrap_or_else(|_| Err("a command reaper panicked".into()));
        if let (Err(e), None) = (res, &first) {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// After a failed session: end every dropped `exec:` command now
/// (`SIGTERM` to its group) instead of granting it the close timeout, and
/// wait for the reapers. Their errors (killed by SIGTERM) are the
/// consequence of the failure already being reported, so they are dropped.
pub fn abort_commands() {
    let reapers: Vec<Reaper> =
        std::mem::take(&mut *REAPERS.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, t) in &reapers {
        t.terminate();
    }
    for (r, _) in reapers {
        let _ = r.join();
    }
}

impl Channel for ExecChannel {
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        if let Some(c) = self.inner.as_mut() {
            c.set_name(name.clone());
        }
        self.name = name;
    }
    fn features(&self) -> Features {
        self.ch_ref().map_or(Features::empty(), |c| c.features())
    }
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> transit_channel::Result<usize> {
        self.ch()?.readv(bufs, fds, flags)
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> transit_channel::Result<usize> {
        // The command channel turns a broken pipe into the command's exit
        // status already.
        self.ch()?.writev(bufs, fds, flags)
    }
    fn set_blocking(&mut self, blocking: bool) -> transit_channel::Result<()> {
        self.ch()?.set_blocking(blocking)
    }
    fn is_blocking(&self) -> bool {
        self.ch_ref().is_some_and(|c| c.is_blocking())
    }
    fn close(&mut self) -> transit_channel::Result<()> {
        match self.inner.as_mut() {
            Some(c) => c.close(),
            None => Ok(()),
        }
    }
    fn watch_source(&self) -> WatchSource {
        match self.ch_ref() {
            Some(c) => c.watch_source(),
            None => WatchSource {
                fds: transit_channel::WatchFds::None,
                ready: Readiness::always(Condition::NVAL),
                name: self.name.clone(),
            },
        }
    }
    fn shutdown(&mut self, how: Shutdown) -> transit_channel::Result<()> {
        self.ch()?.shutdown(how)
    }
    fn shutdown_handle(&self) -> transit_channel::Result<ShutdownHandle> {
        match self.ch_ref() {
            Some(c) => c.shutdown_handle(),
            None => Err(transit_channel::Error::closed(&self.name)),
        }
    }
    fn bye(&mut self) -> transit_channel::Result<()> {
        self.ch()?.bye()
    }
}

impl Drop for ExecChannel {
    /// Hand the command to a reaper thread: it sees end of file and gets
    /// the close timeout to finish (a far-end `transit recv` may still be
    /// putting its output in place) before SIGTERM and SIGKILL.
    fn drop(&mut self) {
        let Some(mut c) = self.inner.take() else {
            return;
        };
        let hurry = c.terminator();
        let spawned = std::thread::Builder::new()
            .name("exec-reaper".into())
            .spawn(move || c.close().map_err(|e| e.to_string()));
        if let Ok(h) = spawned {
            REAPERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((h, hurry));
        }
    }
}

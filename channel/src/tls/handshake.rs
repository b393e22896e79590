//! The TLS handshake: one resumable step, and three drivers over it: a
//! blocking call, an async fn for the local executor, and a main-loop task
//! driven by one-shot watches ([`TlsHandshake`], QEMU's
//! `qio_channel_tls_handshake` task).
//!
//! # Cancellation (CVE-2023-3354)
//!
//! QEMU once closed a TLS channel while its handshake watch was still
//! attached; the watch later fired on freed memory. Here the task *owns*
//! the channel while the handshake runs, so the channel cannot be closed
//! behind its back: cancelling ([`TlsHandshake::cancel`], or dropping the
//! handle) removes the pending watch, closes the channel and drops the
//! completion unrun. [`TlsChannel::handshake_async`] borrows the channel
//! mutably for the same reason; dropping its future drops its watch.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use super::channel::TlsChannel;
use crate::channel::{Channel, Condition};
use crate::error::{Cause, Error, Result};
use crate::io::wait_blocking;
use crate::main_loop::{ControlFlow, MainContext, Priority, SourceId};

/// Where a handshake step stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The handshake is complete and the peer passed every check.
    Done,
    /// The inner channel must become ready for this condition first.
    Want(Condition),
}

impl TlsChannel {
    /// Run the handshake as far as the inner channel allows without
    /// blocking (or to the end, if the inner channel blocks).
    pub(crate) fn handshake_step(&mut self) -> Result<Step> {
        self.check_usable()?;
        if self.handshake_done {
            return Ok(Step::Done);
        }
        loop {
            while self.conn_wants_write() {
                match self.write_tls_once() {
                    Ok(_) => {}
                    Err(Error::WouldBlock) => return Ok(Step::Want(Condition::OUT)),
                    Err(e) => return Err(e),
                }
            }
            if !self.conn_is_handshaking() {
                self.handshake_done = true;
                // Records that came with the last flight (data, a TLS 1.3
                // refusal of our certificate) are processed now.
                if self.raw_pending() {
                    self.pump("handshake")?;
                }
                self.update_ready();
                return Ok(Step::Done);
            }
            if self.raw_pending() {
                if self.pump("handshake")? {
                    continue;
                }
                return Err(Error::protocol(
                    self.name(),
                    "TLS handshake stalled: rustls took no bytes",
                ));
            }
            if self.inner_eof_seen() {
                return Err(Error::layer(
                    self.name(),
                    format!(
                        "TLS handshake with the {} failed: the connection closed during the handshake \
                         (TLS on one side only? the peer may not speak TLS: give --tls-creds to both \
                         ends or neither; or it refused our certificate)",
                        self.endpoint().peer()
                    ),
                    Cause::TlsClosedInHandshake,
                ));
            }
            match self.fill_raw() {
                Ok(_) => {}
                Err(Error::WouldBlock) => return Ok(Step::Want(Condition::IN)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Run the whole handshake, waiting for the inner channel as needed
    /// (with `poll` if it is non-blocking). On success the peer passed
    /// every check: CA, validity dates, revocation, host name (client),
    /// client certificate and authz (server).
    #[doc(alias = "qio_channel_tls_handshake")]
    pub fn handshake_blocking(&mut self) -> Result<()> {
        loop {
            match self.handshake_step()? {
                Step::Done => return Ok(()),
                Step::Want(cond) => {
                    wait_blocking(&self.inner.watch_source(), cond, None)?;
                }
            }
        }
    }

    /// [`handshake_blocking`](Self::handshake_blocking) that gives up at
    /// `deadline` with [`Error::TimedOut`]: the channel is non-blocking
    /// for the call (so no read can outlive the deadline) and back in its
    /// mode afterwards. No thread watches it.
    pub fn handshake_until(&mut self, deadline: std::time::Instant) -> Result<()> {
        let start = std::time::Instant::now();
        let was_blocking = self.is_blocking();
        if was_blocking {
            self.set_blocking(false)?;
        }
        let r = loop {
            let step = match self.handshake_step() {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            let cond = match step {
                Step::Done => break Ok(()),
                Step::Want(cond) => cond,
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ready = if left.is_zero() {
                Ok(Condition::empty())
            } else {
                wait_blocking(&self.inner.watch_source(), cond, Some(left))
            };
            match ready {
                Ok(c) if c.is_empty() => {
                    break Err(Error::TimedOut {
                        channel: self.name().to_owned(),
                        waited: start.elapsed(),
                    })
                }
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        // The handshake's own outcome comes first: a failed restore only
        // matters when the handshake succeeded.
        let restored = if was_blocking {
            self.set_blocking(true)
        } else {
            Ok(())
        };
        r.and(restored)
    }

    /// Run the handshake on `ctx`'s local executor, awaiting readiness of
    /// the inner channel (which should be non-blocking, or the context's
    /// thread blocks). Dropping the future cancels the handshake and its
    /// watch; the channel stays usable only for `close`.
    pub async fn handshake_async(&mut self, ctx: &MainContext) -> Result<()> {
        loop {
            match self.handshake_step()? {
                Step::Done => return Ok(()),
                Step::Want(cond) => {
                    let ws = self.inner.watch_source();
                    ctx.wait_ready(&ws, cond).await;
                }
            }
        }
    }

    /// Run the handshake as a main-loop task on `ctx`: the channel is made
    /// non-blocking, each step runs from a one-shot watch on the inner
    /// channel (`IN` or `OUT`, as rustls wants), and `done` runs on `ctx`'s
    /// thread with the channel (back in its original blocking mode) or the
    /// error. `done` never runs inside this call; the first step runs at
    /// the next iteration.
    ///
    /// Keep the returned [`TlsHandshake`]: dropping it cancels the
    /// handshake (call [`TlsHandshake::detach`] to let it finish alone).
    #[doc(alias = "qio_channel_tls_handshake")]
    pub fn handshake_task(
        self,
        ctx: &MainContext,
        done: impl FnOnce(Result<TlsChannel>) + 'static,
    ) -> TlsHandshake {
        let was_blocking = self.is_blocking();
        let state = Rc::new(RefCell::new(TaskState {
            chan: Some(self),
            source: None,
            done: Some(Box::new(done)),
            was_blocking,
            finished: false,
        }));
        let first = {
            let state = Rc::clone(&state);
            let ctx2 = ctx.clone();
            ctx.idle_add_full(Priority::DEFAULT, move || {
                run_step(&state, &ctx2);
                ControlFlow::Remove
            })
        };
        state.borrow_mut().source = Some(first);
        TlsHandshake {
            ctx: ctx.clone(),
            state,
            detached: false,
        }
    }

    fn conn_wants_write(&self) -> bool {
        self.conn_ref().wants_write()
    }

    fn conn_is_handshaking(&self) -> bool {
        self.conn_ref().is_handshaking()
    }
}

type Done = Box<dyn FnOnce(Result<TlsChannel>)>;

struct TaskState {
    chan: Option<TlsChannel>,
    /// The pending idle or watch source.
    source: Option<SourceId>,
    done: Option<Done>,
    was_blocking: bool,
    finished: bool,
}

/// Run one step from a source callback; arm the next watch or complete.
fn run_step(state: &Rc<RefCell<TaskState>>, ctx: &MainContext) {
    let (chan, was_blocking) = {
        let mut st = state.borrow_mut();
        // The source that called us removes itself when we return.
        st.source = None;
        match st.chan.take() {
            Some(c) => (c, st.was_blocking),
            None => return,
        }
    };
    let mut chan = chan;
    let result = chan
        .set_blocking(false)
        .and_then(|()| chan.handshake_step());
    match result {
        Ok(Step::Want(cond)) => {
            let ws = chan.inner.watch_source();
            let next = Rc::clone(state);
            let ctx2 = ctx.clone();
            let id = ctx.add_watch(&ws, cond, move |_| {
                run_step(&next, &ctx2);
                ControlFlow::Remove
            });
            let mut st = state.borrow_mut();
            st.chan = Some(chan);
            st.source = Some(id);
        }
        Ok(Step::Done) => {
            let result = chan.set_blocking(was_blocking).map(|()| chan);
            finish(state, result);
        }
        Err(e) => {
            let _ = chan.close();
            finish(state, Err(e));
        }
    }
}

fn finish(state: &Rc<RefCell<TaskState>>, result: Result<TlsChannel>) {
    let done = {
        let mut st = state.borrow_mut();
        st.finished = true;
        st.done.take()
    };
    if let Some(done) = done {
        done(result);
    }
}

/// A handshake running as a main-loop task (see
/// [`TlsChannel::handshake_task`]). Dropping it cancels the handshake.
#[must_use = "dropping a TlsHandshake cancels the handshake; keep it or call detach()"]
pub struct TlsHandshake {
    ctx: MainContext,
    state: Rc<RefCell<TaskState>>,
    detached: bool,
}

impl fmt::Debug for TlsHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.borrow();
        f.debug_struct("TlsHandshake")
            .field("source", &st.source)
            .field("finished", &st.finished)
            .finish()
    }
}

impl TlsHandshake {
    /// True once `done` has run (or is running).
    pub fn is_finished(&self) -> bool {
        self.state.borrow().finished
    }

    /// The source (idle or watch) the handshake waits on now, if any.
    pub fn pending_source(&self) -> Option<SourceId> {
        self.state.borrow().source
    }

    /// Stop the handshake: remove its pending watch, close the channel
    /// (without bye) and drop `done` without running it. A no-op once
    /// finished.
    pub fn cancel(mut self) {
        self.cancel_now();
    }

    /// Let the handshake run to completion without this handle.
    pub fn detach(mut self) {
        self.detached = true;
    }

    fn cancel_now(&mut self) {
        let (source, chan, done) = {
            let mut st = self.state.borrow_mut();
            (st.source.take(), st.chan.take(), st.done.take())
        };
        if let Some(id) = source {
            self.ctx.remove(id);
        }
        if let Some(mut chan) = chan {
            let _ = chan.close();
        }
        drop(done);
    }
}

impl Drop for TlsHandshake {
    fn drop(&mut self) {
        if !self.detached {
            self.cancel_now();
        }
    }
}

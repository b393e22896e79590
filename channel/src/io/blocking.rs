//! Blocking "all" helpers and [`wait_blocking`]; the rules are in the
//! [parent module](super).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::all::{read_loop, run_now, write_loop, Op, Wait};
use crate::channel::{Channel, Condition, WatchFds, WatchSource};
use crate::error::{Error, Result};

/// Wait by blocking the thread in `poll(2)`.
struct Block;

impl Wait for Block {
    async fn wait(&mut self, ws: &WatchSource, cond: Condition) -> Result<()> {
        wait_blocking(ws, cond, None).map(drop)
    }
}

/// Wait in `poll(2)` until a deadline; past it, [`Error::TimedOut`].
struct Until {
    deadline: Instant,
    started: Instant,
    channel: String,
}

impl Wait for Until {
    async fn wait(&mut self, ws: &WatchSource, cond: Condition) -> Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let ready = wait_blocking(ws, cond, Some(left))?;
        if ready.is_empty() {
            return Err(Error::TimedOut {
                channel: std::mem::take(&mut self.channel),
                waited: self.started.elapsed(),
            });
        }
        Ok(())
    }
}

/// Run `f` with `ch` non-blocking (so a wait can honour a deadline), then
/// give it back its mode.
fn nonblocking<C: Channel + ?Sized, T>(
    ch: &mut C,
    f: impl FnOnce(&mut C, &mut Until) -> Result<T>,
    deadline: Instant,
) -> Result<T> {
    let was = ch.is_blocking();
    if was {
        ch.set_blocking(false)?;
    }
    let mut until = Until {
        deadline,
        started: Instant::now(),
        channel: ch.name().to_owned(),
    };
    let r = f(ch, &mut until);
    if was {
        let _ = ch.set_blocking(true);
    }
    r
}

/// Read and discard what `ch` sends until it closes, fails or `deadline`
/// passes, keeping the first `keep` bytes (returned): the draining half
/// of a graceful close. Closing a socket with unread data makes the
/// kernel answer with a reset, which can destroy what the peer has not
/// read yet; draining first lets it see end of file instead. `flags` go to
/// every read (e.g. [`crate::ReadFlags::RELAXED_EOF`]).
pub fn drain_until(
    ch: &mut (impl Channel + ?Sized),
    deadline: Instant,
    keep: usize,
    flags: crate::ReadFlags,
) -> Vec<u8> {
    let was = ch.is_blocking();
    if was && ch.set_blocking(false).is_err() {
        return Vec::new();
    }
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match wait_blocking(&ch.watch_source(), Condition::IN, Some(left)) {
            Ok(c) if c.is_empty() => break,
            Ok(_) => {}
            Err(_) => break,
        }
        match ch.readv(&mut [IoSliceMut::new(&mut buf)], None, flags) {
            Ok(0) => break,
            Ok(n) => {
                let take = n.min(keep.saturating_sub(head.len()));
                head.extend_from_slice(&buf[..take]);
            }
            Err(e) if e.is_would_block() => {}
            Err(_) => break,
        }
    }
    if was {
        let _ = ch.set_blocking(true);
    }
    head
}

/// Close `ch` gracefully: end of file to the peer, read and discard
/// what it still sends until it closes too (at most until `deadline`,
/// keeping the first `keep` bytes, returned), then close. A peer that
/// reads our last words (an error record, a TLS alert, a websocket close)
/// after a reset might never see them; this way it sees them and then end
/// of file. Layers say goodbye first where they have one
/// ([`Channel::bye`] is the caller's choice: it can fail, and that
/// failure may matter). The close's own error is the second value (a
/// command's exit status, for instance).
pub fn close_gracefully(
    ch: &mut (impl Channel + ?Sized),
    deadline: Instant,
    keep: usize,
    flags: crate::ReadFlags,
) -> (Vec<u8>, Result<()>) {
    let _ = ch.shutdown(crate::Shutdown::Write);
    let head = drain_until(ch, deadline, keep, flags);
    (head, ch.close())
}

/// [`read_all`] that gives up at `deadline` with [`Error::TimedOut`]
/// (the channel is non-blocking for the call, whatever its mode).
pub fn read_all_until(
    ch: &mut (impl Channel + ?Sized),
    buf: &mut [u8],
    deadline: Instant,
) -> Result<()> {
    nonblocking(
        ch,
        |ch, w| {
            run_now(read_loop(
                w,
                ch,
                &mut [IoSliceMut::new(buf)],
                None,
                Op::READ_ALL,
            ))
            .map(drop)
        },
        deadline,
    )
}

/// [`read_all_eof`] that gives up at `deadline` with [`Error::TimedOut`].
pub fn read_all_eof_until(
    ch: &mut (impl Channel + ?Sized),
    buf: &mut [u8],
    deadline: Instant,
) -> Result<bool> {
    nonblocking(
        ch,
        |ch, w| {
            run_now(read_loop(
                w,
                ch,
                &mut [IoSliceMut::new(buf)],
                None,
                Op::READ_ALL_EOF,
            ))
        },
        deadline,
    )
}

/// [`write_all`] that gives up at `deadline` with [`Error::TimedOut`].
pub fn write_all_until(
    ch: &mut (impl Channel + ?Sized),
    buf: &[u8],
    deadline: Instant,
) -> Result<()> {
    nonblocking(
        ch,
        |ch, w| {
            run_now(write_loop(
                w,
                ch,
                &mut [IoSlice::new(buf)],
                &[],
                "write_all",
            ))
        },
        deadline,
    )
}

/// Conditions a wait always reports, whatever was asked for.
const ALWAYS: Condition = Condition::ERR.union(Condition::HUP).union(Condition::NVAL);

/// Read exactly `buf.len()` bytes.
///
/// End of file before the first byte is an [`Error::UnexpectedEof`] with
/// `op` `"read_all before any data"`; after some bytes it says how many were
/// missing.
#[doc(alias = "qio_channel_read_all")]
pub fn read_all(ch: &mut (impl Channel + ?Sized), buf: &mut [u8]) -> Result<()> {
    run_now(read_loop(
        &mut Block,
        ch,
        &mut [IoSliceMut::new(buf)],
        None,
        Op::READ_ALL,
    ))
    .map(drop)
}

/// Read exactly `buf.len()` bytes; `Ok(false)` on a clean end of file before
/// the first byte, `Ok(true)` once the buffer is full.
#[doc(alias = "qio_channel_read_all_eof")]
pub fn read_all_eof(ch: &mut (impl Channel + ?Sized), buf: &mut [u8]) -> Result<bool> {
    run_now(read_loop(
        &mut Block,
        ch,
        &mut [IoSliceMut::new(buf)],
        None,
        Op::READ_ALL_EOF,
    ))
}

/// Fill every buffer in `bufs`, in order. End of file is an error as in
/// [`read_all`]. `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all")]
pub fn readv_all(ch: &mut (impl Channel + ?Sized), bufs: &mut [IoSliceMut<'_>]) -> Result<()> {
    run_now(read_loop(&mut Block, ch, bufs, None, Op::READV_ALL)).map(drop)
}

/// Fill every buffer in `bufs`; `Ok(false)` on a clean end of file before
/// the first byte. `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all_eof")]
pub fn readv_all_eof(
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
) -> Result<bool> {
    run_now(read_loop(&mut Block, ch, bufs, None, Op::READV_ALL_EOF))
}

/// Fill every buffer in `bufs`, receiving file descriptors with the first
/// chunk (appended to `fds`). End of file is an error as in [`read_all`].
///
/// Fds that arrive with zero data bytes do not count as end of file. On
/// error the fds this call appended are closed and removed again.
#[doc(alias = "qio_channel_readv_full_all")]
pub fn readv_full_all(
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
    fds: Option<&mut Vec<OwnedFd>>,
) -> Result<()> {
    run_now(read_loop(&mut Block, ch, bufs, fds, Op::READV_FULL_ALL)).map(drop)
}

/// Fill every buffer in `bufs`, receiving file descriptors with the first
/// chunk; `Ok(false)` on a clean end of file before any byte or fd.
///
/// Fds that arrive with zero data bytes do not count as end of file. On
/// error the fds this call appended are closed and removed again. With
/// `fds` present and empty `bufs`, one read is made to collect fds.
#[doc(alias = "qio_channel_readv_full_all_eof")]
pub fn readv_full_all_eof(
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
    fds: Option<&mut Vec<OwnedFd>>,
) -> Result<bool> {
    run_now(read_loop(&mut Block, ch, bufs, fds, Op::READV_FULL_ALL_EOF))
}

/// Write all of `buf`.
#[doc(alias = "qio_channel_write_all")]
pub fn write_all(ch: &mut (impl Channel + ?Sized), buf: &[u8]) -> Result<()> {
    run_now(write_loop(
        &mut Block,
        ch,
        &mut [IoSlice::new(buf)],
        &[],
        "write_all",
    ))
}

/// Write every buffer in `bufs`, in order. `bufs` is advanced in place.
#[doc(alias = "qio_channel_writev_all")]
pub fn writev_all(ch: &mut (impl Channel + ?Sized), bufs: &mut [IoSlice<'_>]) -> Result<()> {
    run_now(write_loop(&mut Block, ch, bufs, &[], "writev_all"))
}

/// Write every buffer in `bufs`; `fds` go with the first chunk only. Fds
/// need at least one byte of data to travel with. `bufs` is advanced in
/// place.
#[doc(alias = "qio_channel_writev_full_all")]
pub fn writev_full_all(
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> Result<()> {
    run_now(write_loop(&mut Block, ch, bufs, fds, "writev_full_all"))
}

/// Block the calling thread until `ws` is ready for any of `cond`, or until
/// `timeout` passes.
///
/// Returns at once if the watch's [`Readiness`](crate::Readiness) already
/// has any of `cond` (or `ERR`/`HUP`/`NVAL`) set. Otherwise polls the fds
/// with `poll(2)`: [`WatchFds::One`] for everything asked,
/// [`WatchFds::Pair`] with `IN`/`PRI` on the read fd and `OUT` on the write
/// fd. `EINTR` is retried with the time that remains. The result holds the
/// conditions that became ready, `ERR`/`HUP`/`NVAL` included;
/// `Ok(Condition::empty())` means the timeout passed.
///
/// A watch without fds ([`WatchFds::None`]) and without the wanted
/// readiness is re-checked with a short sleep (at most 10 ms) until another
/// thread sets its readiness or the timeout passes.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use transit_channel::{io::wait_blocking, BufferChannel, Channel, Condition};
///
/// // An in-memory buffer is always ready.
/// let ch = BufferChannel::new();
/// let ready = wait_blocking(&ch.watch_source(), Condition::IN, Some(Duration::ZERO))?;
/// assert!(ready.contains(Condition::IN));
/// # Ok::<(), transit_channel::Error>(())
/// ```
pub fn wait_blocking(
    ws: &WatchSource,
    cond: Condition,
    timeout: Option<Duration>,
) -> Result<Condition> {
    let wanted = cond | ALWAYS;
    let ready = ws.ready.get() & wanted;
    if !ready.is_empty() {
        return Ok(ready);
    }
    // No deadline: wait forever (also for a timeout too large to represent).
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));

    let read_events = to_poll_events(cond & (Condition::IN | Condition::PRI));
    let write_events = to_poll_events(cond & Condition::OUT);
    let mut pfds = [empty_pollfd(), empty_pollfd()];
    let npfds = match ws.fds {
        WatchFds::None => return wait_readiness(ws, wanted, deadline),
        WatchFds::One(fd) => {
            pfds[0] = pollfd(fd, read_events | write_events);
            1
        }
        WatchFds::Pair { read, write } => {
            let mut n = 0;
            let only_errors = read_events == 0 && write_events == 0;
            if read_events != 0 || only_errors {
                pfds[n] = pollfd(read, read_events);
                n += 1;
            }
            if write_events != 0 || only_errors {
                pfds[n] = pollfd(write, write_events);
                n += 1;
            }
            n
        }
    };

    loop {
        let ms = deadline.map_or(-1, millis_until);
        // SAFETY: `pfds` is a valid, initialized array of `pollfd` and
        // `npfds` <= its length; poll only writes the `revents` fields.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), npfds as libc::nfds_t, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::os(&ws.name, "poll", err));
        }
        if rc == 0 {
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    return Ok(ws.ready.get() & wanted);
                }
            }
            continue;
        }
        let mut got = Condition::empty();
        for p in &pfds[..npfds] {
            got |= from_poll_events(p.revents);
        }
        return Ok((got | ws.ready.get()) & wanted);
    }
}

/// Wait on a watch without fds: sleep in short steps until its readiness
/// has any of `wanted` or `deadline` passes.
fn wait_readiness(
    ws: &WatchSource,
    wanted: Condition,
    deadline: Option<Instant>,
) -> Result<Condition> {
    let mut step = Duration::from_micros(100);
    loop {
        let ready = ws.ready.get() & wanted;
        if !ready.is_empty() {
            return Ok(ready);
        }
        let mut sleep = step;
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                return Ok(Condition::empty());
            }
            sleep = sleep.min(d - now);
        }
        std::thread::sleep(sleep);
        step = (step * 2).min(Duration::from_millis(10));
    }
}

/// Milliseconds until `deadline` for poll(2), rounded up so poll never
/// returns before the deadline; 0 once it has passed.
fn millis_until(deadline: Instant) -> libc::c_int {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

fn empty_pollfd() -> libc::pollfd {
    pollfd(-1, 0)
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn to_poll_events(cond: Condition) -> libc::c_short {
    let mut ev = 0;
    if cond.contains(Condition::IN) {
        ev |= libc::POLLIN;
    }
    if cond.contains(Condition::OUT) {
        ev |= libc::POLLOUT;
    }
    if cond.contains(Condition::PRI) {
        ev |= libc::POLLPRI;
    }
    ev
}

fn from_poll_events(ev: libc::c_short) -> Condition {
    let mut cond = Condition::empty();
    for (bit, c) in [
        (libc::POLLIN, Condition::IN),
        (libc::POLLOUT, Condition::OUT),
        (libc::POLLPRI, Condition::PRI),
        (libc::POLLERR, Condition::ERR),
        (libc::POLLHUP, Condition::HUP),
        (libc::POLLNVAL, Condition::NVAL),
    ] {
        if ev & bit != 0 {
            cond |= c;
        }
    }
    cond
}

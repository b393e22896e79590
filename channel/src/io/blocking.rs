//! Blocking "all" helpers and [`wait_blocking`]; the rules are in the
//! [parent module](super).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::channel::{Channel, Condition, ReadFlags, WatchFds, WatchSource, WriteFlags};
use crate::error::{Error, Result};

/// Conditions a wait always reports, whatever was asked for.
const ALWAYS: Condition = Condition::ERR.union(Condition::HUP).union(Condition::NVAL);

/// Read exactly `buf.len()` bytes.
///
/// End of file before the first byte is an [`Error::UnexpectedEof`] with
/// `op` `"read_all before any data"`; after some bytes it says how many were
/// missing.
#[doc(alias = "qio_channel_read_all")]
pub fn read_all(ch: &mut (impl Channel + ?Sized), buf: &mut [u8]) -> Result<()> {
    read_loop(ch, &mut [IoSliceMut::new(buf)], None, Op::READ_ALL).map(drop)
}

/// Read exactly `buf.len()` bytes; `Ok(false)` on a clean end of file before
/// the first byte, `Ok(true)` once the buffer is full.
#[doc(alias = "qio_channel_read_all_eof")]
pub fn read_all_eof(ch: &mut (impl Channel + ?Sized), buf: &mut [u8]) -> Result<bool> {
    read_loop(ch, &mut [IoSliceMut::new(buf)], None, Op::READ_ALL_EOF)
}

/// Fill every buffer in `bufs`, in order. End of file is an error as in
/// [`read_all`]. `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all")]
pub fn readv_all(ch: &mut (impl Channel + ?Sized), bufs: &mut [IoSliceMut<'_>]) -> Result<()> {
    read_loop(ch, bufs, None, Op::READV_ALL).map(drop)
}

/// Fill every buffer in `bufs`; `Ok(false)` on a clean end of file before
/// the first byte. `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all_eof")]
pub fn readv_all_eof(
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
) -> Result<bool> {
    read_loop(ch, bufs, None, Op::READV_ALL_EOF)
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
    read_loop(ch, bufs, fds, Op::READV_FULL_ALL).map(drop)
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
    read_loop(ch, bufs, fds, Op::READV_FULL_ALL_EOF)
}

/// Write all of `buf`.
#[doc(alias = "qio_channel_write_all")]
pub fn write_all(ch: &mut (impl Channel + ?Sized), buf: &[u8]) -> Result<()> {
    write_loop(ch, &mut [IoSlice::new(buf)], &[], "write_all")
}

/// Write every buffer in `bufs`, in order. `bufs` is advanced in place.
#[doc(alias = "qio_channel_writev_all")]
pub fn writev_all(ch: &mut (impl Channel + ?Sized), bufs: &mut [IoSlice<'_>]) -> Result<()> {
    write_loop(ch, bufs, &[], "writev_all")
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
    write_loop(ch, bufs, fds, "writev_full_all")
}

/// Names of a read helper, for error messages.
struct Op {
    name: &'static str,
    /// `op` of the error for end of file before any data.
    before_data: &'static str,
    /// Clean end of file before any data is `Ok(false)`.
    eof_ok: bool,
}

impl Op {
    const READ_ALL: Op = Op::strict("read_all", "read_all before any data");
    const READ_ALL_EOF: Op = Op::eof_ok("read_all_eof");
    const READV_ALL: Op = Op::strict("readv_all", "readv_all before any data");
    const READV_ALL_EOF: Op = Op::eof_ok("readv_all_eof");
    const READV_FULL_ALL: Op = Op::strict("readv_full_all", "readv_full_all before any data");
    const READV_FULL_ALL_EOF: Op = Op::eof_ok("readv_full_all_eof");

    const fn strict(name: &'static str, before_data: &'static str) -> Op {
        Op {
            name,
            before_data,
            eof_ok: false,
        }
    }

    const fn eof_ok(name: &'static str) -> Op {
        Op {
            name,
            before_data: name,
            eof_ok: true,
        }
    }
}

fn total_len(lens: impl Iterator<Item = usize>) -> Option<usize> {
    lens.into_iter()
        .try_fold(0usize, |acc, n| acc.checked_add(n))
}

fn overflow(ch: &(impl Channel + ?Sized), op: &str) -> Error {
    Error::os(
        ch.name(),
        op,
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "total buffer size overflows usize",
        ),
    )
}

fn overrun(ch: &(impl Channel + ?Sized), op: &str, n: usize, left: usize) -> Error {
    Error::protocol(
        ch.name(),
        format!("{op}: channel reported {n} bytes moved but only {left} were requested"),
    )
}

fn read_loop(
    ch: &mut (impl Channel + ?Sized),
    mut bufs: &mut [IoSliceMut<'_>],
    mut fds: Option<&mut Vec<OwnedFd>>,
    op: Op,
) -> Result<bool> {
    let expected = total_len(bufs.iter().map(|b| b.len())).ok_or_else(|| overflow(ch, op.name))?;
    let fds_start = fds.as_ref().map_or(0, |v| v.len());
    let mut want_fds = fds.is_some();
    if expected == 0 && !want_fds {
        return Ok(true);
    }
    // Drop leading empty buffers so a channel never sees a zero-length head.
    IoSliceMut::advance_slices(&mut bufs, 0);
    let mut left = expected;
    // True once anything (a byte or an fd) has arrived.
    let mut partial = false;

    let result = loop {
        if left == 0 && !want_fds {
            break Ok(true);
        }
        let ask = if want_fds { fds.as_deref_mut() } else { None };
        match ch.readv(bufs, ask, ReadFlags::empty()) {
            Ok(0) => {
                let got_fds = want_fds && fds.as_ref().is_some_and(|v| v.len() > fds_start);
                if got_fds {
                    // Fds without data: not end of file; read the data next.
                    want_fds = false;
                    partial = true;
                    continue;
                }
                if !partial && op.eof_ok {
                    break Ok(false);
                }
                break Err(eof(ch, &op, expected, left, partial));
            }
            Ok(n) => {
                if n > left {
                    break Err(overrun(ch, op.name, n, left));
                }
                left -= n;
                IoSliceMut::advance_slices(&mut bufs, n);
                want_fds = false;
                partial = true;
            }
            Err(Error::WouldBlock) => {
                if let Err(e) = wait_blocking(&ch.watch_source(), Condition::IN, None) {
                    break Err(e);
                }
            }
            Err(e) => break Err(e),
        }
    };
    if result.is_err() {
        if let Some(v) = fds {
            // Close what this call received; the caller's earlier fds stay.
            v.truncate(fds_start);
        }
    }
    result
}

fn eof(
    ch: &(impl Channel + ?Sized),
    op: &Op,
    expected: usize,
    left: usize,
    partial: bool,
) -> Error {
    Error::UnexpectedEof {
        channel: ch.name().to_owned(),
        op: if partial { op.name } else { op.before_data },
        expected,
        missing: left,
    }
}

fn write_loop(
    ch: &mut (impl Channel + ?Sized),
    mut bufs: &mut [IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    op: &'static str,
) -> Result<()> {
    let mut left = total_len(bufs.iter().map(|b| b.len())).ok_or_else(|| overflow(ch, op))?;
    if left == 0 {
        if fds.is_empty() {
            return Ok(());
        }
        return Err(Error::os(
            ch.name(),
            op,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "file descriptors need at least one byte of data to travel with",
            ),
        ));
    }
    IoSlice::advance_slices(&mut bufs, 0);
    let mut send_fds = fds;
    while left > 0 {
        match ch.writev(bufs, send_fds, WriteFlags::empty()) {
            Ok(0) => {
                return Err(Error::os(
                    ch.name(),
                    op,
                    io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("the channel accepted none of the {left} remaining bytes"),
                    ),
                ))
            }
            Ok(n) => {
                if n > left {
                    return Err(overrun(ch, op, n, left));
                }
                left -= n;
                IoSlice::advance_slices(&mut bufs, n);
                send_fds = &[];
            }
            Err(Error::WouldBlock) => {
                wait_blocking(&ch.watch_source(), Condition::OUT, None)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

//! The one implementation of the "all" loops, shared by the blocking
//! ([`super::blocking`]) and async ([`super::future`]) helpers: the loops are
//! written once as `async fn`s over a [`Wait`] strategy. The blocking
//! strategy waits with `poll(2)` inside `wait` and never suspends, so
//! [`run_now`] completes the future in a single poll; the async strategy
//! awaits readiness on a `MainContext`.

use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::channel::{Channel, Condition, ReadFlags, WatchSource, WriteFlags};
use crate::error::{Error, Result};

/// How a loop waits when the channel says `WouldBlock`.
pub(super) trait Wait {
    /// Wait until `ws` is ready for `cond` (or has an error to report).
    fn wait(&mut self, ws: &WatchSource, cond: Condition) -> impl Future<Output = Result<()>>;
}

/// Complete a future whose waits never suspend (the blocking strategy).
pub(super) fn run_now<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(r) => r,
        // Unreachable with a waiter that never suspends; report rather than
        // panic or spin.
        Poll::Pending => Err(Error::protocol("io", "a blocking helper was suspended")),
    }
}

/// Names of a read helper, for error messages.
pub(super) struct Op {
    name: &'static str,
    /// `op` of the error for end of file before any data.
    before_data: &'static str,
    /// Clean end of file before any data is `Ok(false)`.
    eof_ok: bool,
}

impl Op {
    pub(super) const READ_ALL: Op = Op::strict("read_all", "read_all before any data");
    pub(super) const READ_ALL_EOF: Op = Op::eof_ok("read_all_eof");
    pub(super) const READV_ALL: Op = Op::strict("readv_all", "readv_all before any data");
    pub(super) const READV_ALL_EOF: Op = Op::eof_ok("readv_all_eof");
    pub(super) const READV_FULL_ALL: Op =
        Op::strict("readv_full_all", "readv_full_all before any data");
    pub(super) const READV_FULL_ALL_EOF: Op = Op::eof_ok("readv_full_all_eof");

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

pub(super) async fn read_loop(
    waiter: &mut impl Wait,
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
                if let Err(e) = waiter.wait(&ch.watch_source(), Condition::IN).await {
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

pub(super) async fn write_loop(
    waiter: &mut impl Wait,
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
                waiter.wait(&ch.watch_source(), Condition::OUT).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

//! Async "all" helpers: the rules of the [parent module](super), awaiting
//! readiness on a [`MainContext`] instead of blocking the thread (QEMU's
//! coroutine path, `qio_channel_yield`).
//!
//! On [`Error::WouldBlock`] a helper awaits
//! [`MainContext::wait_ready`] on the channel's watch source (`IN` to read,
//! `OUT` to write) and retries, so a non-blocking channel never blocks the
//! context's thread. Run them in a task of the same context
//! ([`MainContext::spawn_local`] or [`MainContext::block_on`]).
//!
//! # Example
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use transit_channel::io::{read_all_eof_async, write_all_async};
//! use transit_channel::main_loop::MainContext;
//! # use std::io::{IoSlice, IoSliceMut, Read, Write};
//! # use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
//! # use transit_channel::*;
//! # struct Stream(UnixStream);
//! # impl Channel for Stream {
//! #     fn name(&self) -> &str { "doc-stream" }
//! #     fn set_name(&mut self, _: String) {}
//! #     fn features(&self) -> Features { Features::empty() }
//! #     fn readv(&mut self, b: &mut [IoSliceMut<'_>], _: Option<&mut Vec<OwnedFd>>, _: ReadFlags) -> Result<usize> {
//! #         self.0.read_vectored(b).map_err(|e| Error::os("doc-stream", "read", e))
//! #     }
//! #     fn writev(&mut self, b: &[IoSlice<'_>], _: &[BorrowedFd<'_>], _: WriteFlags) -> Result<usize> {
//! #         self.0.write_vectored(b).map_err(|e| Error::os("doc-stream", "write", e))
//! #     }
//! #     fn set_blocking(&mut self, b: bool) -> Result<()> { self.0.set_nonblocking(!b).map_err(|e| Error::os("doc-stream", "fcntl", e)) }
//! #     fn is_blocking(&self) -> bool { false }
//! #     fn close(&mut self) -> Result<()> { Ok(()) }
//! #     fn watch_source(&self) -> WatchSource {
//! #         WatchSource { fds: WatchFds::One(self.0.as_raw_fd()), ready: Readiness::new(), name: "doc-stream".into() }
//! #     }
//! # }
//! let ctx = MainContext::new()?;
//! let (a, b) = UnixStream::pair().expect("socketpair");
//! a.set_nonblocking(true).expect("nonblocking");
//! b.set_nonblocking(true).expect("nonblocking");
//! let (mut tx, mut rx) = (Stream(a), Stream(b));
//!
//! let writer = ctx.spawn_local({
//!     let ctx = ctx.clone();
//!     async move { write_all_async(&ctx, &mut tx, b"hello").await }
//! });
//! let mut buf = [0u8; 5];
//! let full = ctx.block_on(read_all_eof_async(&ctx, &mut rx, &mut buf))?;
//! ctx.block_on(writer)?;
//! assert!(full);
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::channel::{Channel, Condition, ReadFlags, WriteFlags};
use crate::error::{Error, Result};
use crate::main_loop::MainContext;

/// Names of a read helper, for error messages (the same as the blocking
/// forms: the operation is the same).
struct ReadOp {
    name: &'static str,
    /// `op` of the error for end of file before any data.
    before_data: &'static str,
    /// Clean end of file before any data is `Ok(false)`.
    eof_ok: bool,
}

const READ_ALL: ReadOp = ReadOp {
    name: "read_all",
    before_data: "read_all before any data",
    eof_ok: false,
};
const READ_ALL_EOF: ReadOp = ReadOp {
    name: "read_all_eof",
    before_data: "read_all_eof",
    eof_ok: true,
};
const READV_ALL: ReadOp = ReadOp {
    name: "readv_all",
    before_data: "readv_all before any data",
    eof_ok: false,
};
const READV_ALL_EOF: ReadOp = ReadOp {
    name: "readv_all_eof",
    before_data: "readv_all_eof",
    eof_ok: true,
};
const READV_FULL_ALL: ReadOp = ReadOp {
    name: "readv_full_all",
    before_data: "readv_full_all before any data",
    eof_ok: false,
};
const READV_FULL_ALL_EOF: ReadOp = ReadOp {
    name: "readv_full_all_eof",
    before_data: "readv_full_all_eof",
    eof_ok: true,
};

/// Read exactly `buf.len()` bytes, awaiting readiness on `ctx`. End of file
/// is an [`Error::UnexpectedEof`] (before the first byte with `op`
/// `"read_all before any data"`).
#[doc(alias = "qio_channel_read_all")]
pub async fn read_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    buf: &mut [u8],
) -> Result<()> {
    read_loop(ctx, ch, &mut [IoSliceMut::new(buf)], None, READ_ALL)
        .await
        .map(drop)
}

/// Read exactly `buf.len()` bytes; `Ok(false)` on a clean end of file
/// before the first byte, `Ok(true)` once the buffer is full.
#[doc(alias = "qio_channel_read_all_eof")]
pub async fn read_all_eof_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    buf: &mut [u8],
) -> Result<bool> {
    read_loop(ctx, ch, &mut [IoSliceMut::new(buf)], None, READ_ALL_EOF).await
}

/// Fill every buffer in `bufs`, in order; end of file is an error.
/// `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all")]
pub async fn readv_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
) -> Result<()> {
    read_loop(ctx, ch, bufs, None, READV_ALL).await.map(drop)
}

/// Fill every buffer in `bufs`; `Ok(false)` on a clean end of file before
/// the first byte. `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all_eof")]
pub async fn readv_all_eof_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
) -> Result<bool> {
    read_loop(ctx, ch, bufs, None, READV_ALL_EOF).await
}

/// Fill every buffer in `bufs`, receiving file descriptors with the first
/// chunk (appended to `fds`); end of file is an error. Fds that arrive with
/// zero data bytes are not end of file; on error the fds this call
/// appended are closed and removed.
#[doc(alias = "qio_channel_readv_full_all")]
pub async fn readv_full_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
    fds: Option<&mut Vec<OwnedFd>>,
) -> Result<()> {
    read_loop(ctx, ch, bufs, fds, READV_FULL_ALL)
        .await
        .map(drop)
}

/// [`readv_full_all_async`] where a clean end of file before any byte or
/// fd is `Ok(false)`.
#[doc(alias = "qio_channel_readv_full_all_eof")]
pub async fn readv_full_all_eof_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
    fds: Option<&mut Vec<OwnedFd>>,
) -> Result<bool> {
    read_loop(ctx, ch, bufs, fds, READV_FULL_ALL_EOF).await
}

/// Write all of `buf`, awaiting readiness on `ctx`.
#[doc(alias = "qio_channel_write_all")]
pub async fn write_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    buf: &[u8],
) -> Result<()> {
    write_loop(ctx, ch, &mut [IoSlice::new(buf)], &[], "write_all").await
}

/// Write every buffer in `bufs`, in order. `bufs` is advanced in place.
#[doc(alias = "qio_channel_writev_all")]
pub async fn writev_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSlice<'_>],
) -> Result<()> {
    write_loop(ctx, ch, bufs, &[], "writev_all").await
}

/// Write every buffer in `bufs`; `fds` go with the first chunk only and
/// need at least one byte of data. `bufs` is advanced in place.
#[doc(alias = "qio_channel_writev_full_all")]
pub async fn writev_full_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> Result<()> {
    write_loop(ctx, ch, bufs, fds, "writev_full_all").await
}

fn total_len(mut lens: impl Iterator<Item = usize>) -> Option<usize> {
    lens.try_fold(0usize, |acc, n| acc.checked_add(n))
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

async fn read_loop(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    mut bufs: &mut [IoSliceMut<'_>],
    mut fds: Option<&mut Vec<OwnedFd>>,
    op: ReadOp,
) -> Result<bool> {
    let expected = total_len(bufs.iter().map(|b| b.len())).ok_or_else(|| overflow(ch, op.name))?;
    let fds_start = fds.as_ref().map_or(0, |v| v.len());
    let mut want_fds = fds.is_some();
    if expected == 0 && !want_fds {
        return Ok(true);
    }
    // Drop leading empty buffers so the channel never sees an empty head.
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
                break Err(Error::UnexpectedEof {
                    channel: ch.name().to_owned(),
                    op: if partial { op.name } else { op.before_data },
                    expected,
                    missing: left,
                });
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
                ctx.wait_ready(&ch.watch_source(), Condition::IN).await;
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

async fn write_loop(
    ctx: &MainContext,
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
                ctx.wait_ready(&ch.watch_source(), Condition::OUT).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

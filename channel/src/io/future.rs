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

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use super::all::{read_loop, write_loop, Op, Wait};
use crate::channel::{Channel, Condition, WatchSource};
use crate::error::Result;
use crate::main_loop::MainContext;

/// Wait by awaiting readiness on a context.
struct Await<'a>(&'a MainContext);

impl Wait for Await<'_> {
    async fn wait(&mut self, ws: &WatchSource, cond: Condition) -> Result<()> {
        self.0.wait_ready(ws, cond).await;
        Ok(())
    }
}

/// Read exactly `buf.len()` bytes, awaiting readiness on `ctx`. End of file
/// is an [`Error::UnexpectedEof`](crate::Error::UnexpectedEof) (before the first byte with `op`
/// `"read_all before any data"`).
#[doc(alias = "qio_channel_read_all")]
pub async fn read_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    buf: &mut [u8],
) -> Result<()> {
    read_loop(
        &mut Await(ctx),
        ch,
        &mut [IoSliceMut::new(buf)],
        None,
        Op::READ_ALL,
    )
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
    read_loop(
        &mut Await(ctx),
        ch,
        &mut [IoSliceMut::new(buf)],
        None,
        Op::READ_ALL_EOF,
    )
    .await
}

/// Fill every buffer in `bufs`, in order; end of file is an error.
/// `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all")]
pub async fn readv_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
) -> Result<()> {
    read_loop(&mut Await(ctx), ch, bufs, None, Op::READV_ALL)
        .await
        .map(drop)
}

/// Fill every buffer in `bufs`; `Ok(false)` on a clean end of file before
/// the first byte. `bufs` is advanced in place.
#[doc(alias = "qio_channel_readv_all_eof")]
pub async fn readv_all_eof_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSliceMut<'_>],
) -> Result<bool> {
    read_loop(&mut Await(ctx), ch, bufs, None, Op::READV_ALL_EOF).await
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
    read_loop(&mut Await(ctx), ch, bufs, fds, Op::READV_FULL_ALL)
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
    read_loop(&mut Await(ctx), ch, bufs, fds, Op::READV_FULL_ALL_EOF).await
}

/// Write all of `buf`, awaiting readiness on `ctx`.
#[doc(alias = "qio_channel_write_all")]
pub async fn write_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    buf: &[u8],
) -> Result<()> {
    write_loop(
        &mut Await(ctx),
        ch,
        &mut [IoSlice::new(buf)],
        &[],
        "write_all",
    )
    .await
}

/// Write every buffer in `bufs`, in order. `bufs` is advanced in place.
#[doc(alias = "qio_channel_writev_all")]
pub async fn writev_all_async(
    ctx: &MainContext,
    ch: &mut (impl Channel + ?Sized),
    bufs: &mut [IoSlice<'_>],
) -> Result<()> {
    write_loop(&mut Await(ctx), ch, bufs, &[], "writev_all").await
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
    write_loop(&mut Await(ctx), ch, bufs, fds, "writev_full_all").await
}

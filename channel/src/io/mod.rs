//! I/O helpers over any [`Channel`](crate::Channel): loops that move every
//! byte, a blocking wait for readiness, and `std::io` adapters.
//!
//! A channel's `readv`/`writev` may move fewer bytes than asked, and a
//! non-blocking channel answers [`Error::WouldBlock`](crate::Error::WouldBlock)
//! when it can make no progress. The helpers here follow QEMU's
//! `qio_channel_*_all` rules:
//!
//! * They loop until every byte of every buffer has moved.
//! * On `WouldBlock` they wait with [`wait_blocking`] on the channel's
//!   [`WatchSource`](crate::WatchSource) (`IN` to read, `OUT` to write) and
//!   retry, so they work on blocking and non-blocking channels alike.
//! * Reads: a clean end of file before the first byte is `Ok(false)` for the
//!   `_eof` forms ([`read_all_eof`], [`readv_all_eof`],
//!   [`readv_full_all_eof`]) and an [`Error::UnexpectedEof`](crate::Error::UnexpectedEof)
//!   "before any data" for the others; end of file after some bytes is
//!   always an `UnexpectedEof` that says how many bytes were missing.
//! * File descriptors are requested (read) or sent (write) only with the
//!   first chunk. Receiving fds with zero data bytes is not end of file. If
//!   a read fails, the fds it had already received are closed.
//! * Zero-length requests return at once without touching the channel.
//! * Vectored forms advance the caller's `IoSlice`/`IoSliceMut` array in
//!   place (no copy, no allocation); its contents are unspecified afterwards.
//!
//! [`ChannelIo`] wraps a channel as [`std::io::Read`] + [`std::io::Write`]
//! for libraries (rustls, tungstenite, `std::io::copy`) that speak `std::io`;
//! `WouldBlock` surfaces as [`std::io::ErrorKind::WouldBlock`].
//!
//! # Example
//!
//! ```
//! use std::io::{IoSliceMut, SeekFrom};
//! use transit_channel::{io, BufferChannel, Channel};
//!
//! let mut ch = BufferChannel::new();
//! io::write_all(&mut ch, b"header+payload")?;
//! ch.seek(SeekFrom::Start(0))?;
//!
//! let (mut header, mut payload) = ([0u8; 7], [0u8; 7]);
//! let mut bufs = [IoSliceMut::new(&mut header), IoSliceMut::new(&mut payload)];
//! assert!(io::readv_all_eof(&mut ch, &mut bufs)?); // everything arrived
//! assert_eq!((&header, &payload), (b"header+", b"payload"));
//!
//! let mut more = [0u8; 1];
//! assert!(!io::read_all_eof(&mut ch, &mut more)?); // clean EOF
//! # Ok::<(), transit_channel::Error>(())
//! ```

mod adapters;
mod all;
mod blocking;
mod future;

pub use adapters::ChannelIo;
pub use blocking::{
    close_gracefully, drain_until, read_all, read_all_eof, read_all_eof_until, read_all_until,
    readv_all, readv_all_eof, readv_full_all, readv_full_all_eof, wait_blocking, write_all,
    write_all_until, writev_all, writev_full_all,
};
pub use future::{
    read_all_async, read_all_eof_async, readv_all_async, readv_all_eof_async, readv_full_all_async,
    readv_full_all_eof_async, write_all_async, writev_all_async, writev_full_all_async,
};

/// Copy the front of `src` into `bufs`, in order, as far as they hold;
/// returns the bytes copied (a channel's `readv` out of bytes it holds).
pub(crate) fn scatter(src: &[u8], bufs: &mut [std::io::IoSliceMut<'_>]) -> usize {
    let mut src = src;
    // Reading from a byte slice cannot fail.
    std::io::Read::read_vectored(&mut src, bufs).unwrap_or(0)
}

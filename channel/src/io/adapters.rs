//! [`ChannelIo`]: a channel as [`std::io::Read`] + [`std::io::Write`].

use std::io::{self, IoSlice, IoSliceMut};

use crate::channel::{Channel, ReadFlags, WriteFlags};
use crate::error::Error;

/// A [`Channel`] seen through `std::io`: [`io::Read`] (with
/// `read_vectored`) and [`io::Write`] (with `write_vectored`).
///
/// Each call is one `readv`/`writev` on the channel: partial reads and
/// writes pass through, `Ok(0)` from a read is end of file, and
/// [`Error::WouldBlock`] becomes [`io::ErrorKind::WouldBlock`] so that
/// non-blocking consumers (rustls `read_tls`/`write_tls`, tungstenite) see
/// the kind they expect. Other errors keep their message (which names the
/// channel) and map to the matching [`io::ErrorKind`].
///
/// [`io::Write::flush`] does nothing: the adapter never writes zero-copy, so
/// nothing is pending once `write` returns.
///
/// `C` may be an owned channel, a `Box<dyn Channel>` or a borrowed
/// `&mut dyn Channel`.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use transit_channel::{io::ChannelIo, BufferChannel, Channel};
///
/// let mut io = ChannelIo::new(BufferChannel::new());
/// io.write_all(b"through std::io")?;
/// io.get_mut().seek(std::io::SeekFrom::Start(0))?;
/// let mut text = String::new();
/// io.read_to_string(&mut text)?;
/// assert_eq!(text, "through std::io");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ChannelIo<C> {
    inner: C,
}

impl<C: Channel> ChannelIo<C> {
    /// Wrap `inner`.
    pub fn new(inner: C) -> ChannelIo<C> {
        ChannelIo { inner }
    }

    /// The channel.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The channel, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Unwrap the channel.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

/// Map a channel error to `std::io`, keeping `WouldBlock` cheap and exact.
fn to_io(e: Error) -> io::Error {
    match e {
        Error::WouldBlock => io::ErrorKind::WouldBlock.into(),
        e => e.into(),
    }
}

impl<C: Channel> io::Read for ChannelIo<C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.inner
            .readv(&mut [IoSliceMut::new(buf)], None, ReadFlags::empty())
            .map_err(to_io)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        self.inner
            .readv(bufs, None, ReadFlags::empty())
            .map_err(to_io)
    }
}

impl<C: Channel> io::Write for ChannelIo<C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.inner
            .writev(&[IoSlice::new(buf)], &[], WriteFlags::empty())
            .map_err(to_io)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        self.inner
            .writev(bufs, &[], WriteFlags::empty())
            .map_err(to_io)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

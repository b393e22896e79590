//! [`BufferChannel`]: a growable, seekable in-memory channel (QEMU's
//! `QIOChannelBuffer`).
//!
//! The channel holds a byte vector and a position. Reads copy from the
//! position up to the end of the data (a read at or past the end is EOF,
//! `Ok(0)`); writes store at the position, overwriting what is there and
//! growing the data as needed. Seeking past the end and then writing fills
//! the gap with zeros. Everything is always ready: the watch has no fds and
//! its [`Readiness`] is fixed to `IN | OUT`.
//!
//! Unlike QEMU's buffer channel, a write after seeking backwards overwrites
//! in place (QEMU appends at the end of the data), the zero-fill of a gap
//! clears the gap itself (QEMU clears the start of the buffer), and
//! [`SeekFrom::Current`] / [`SeekFrom::End`] are honoured (QEMU ignores the
//! `whence`).
//!
//! Limits: no file descriptors ([`Error::Unsupported`]), no `MSG_PEEK`, no
//! shutdown. Blocking mode is recorded but changes nothing (the channel
//! never blocks). A position or size that cannot be allocated is an error,
//! not an abort. After [`Channel::close`] the data is freed and every
//! operation fails with [`Error::Closed`].
//!
//! # Example
//!
//! ```
//! use std::io::SeekFrom;
//! use transit_channel::{io, BufferChannel, Channel};
//!
//! let mut ch = BufferChannel::new();
//! io::write_all(&mut ch, b"hello world")?;
//! ch.seek(SeekFrom::Start(6))?;
//! io::write_all(&mut ch, b"WORLD")?; // overwrites in place
//! ch.seek(SeekFrom::Start(0))?;
//! let mut buf = [0u8; 11];
//! io::read_all(&mut ch, &mut buf)?;
//! assert_eq!(&buf, b"hello WORLD");
//! assert_eq!(ch.into_inner(), b"hello WORLD");
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::io::{self, IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, ReadFlags, Readiness,
    WatchFds, WatchSource, WriteFlags,
};
use crate::error::{Error, Result};

/// The default name of a [`BufferChannel`].
const DEFAULT_NAME: &str = "buffer";

/// A growable in-memory channel with a position; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct BufferChannel {
    name: String,
    data: Vec<u8>,
    offset: usize,
    blocking: bool,
    closed: bool,
    ready: Readiness,
}

impl Default for BufferChannel {
    fn default() -> Self {
        BufferChannel::from_vec(Vec::new())
    }
}

impl BufferChannel {
    /// An empty buffer at position 0.
    pub fn new() -> BufferChannel {
        BufferChannel::default()
    }

    /// An empty buffer with room for `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> BufferChannel {
        BufferChannel::from_vec(Vec::with_capacity(capacity))
    }

    /// A buffer holding `data`, positioned at its start (ready to be read).
    pub fn from_vec(data: Vec<u8>) -> BufferChannel {
        BufferChannel {
            name: DEFAULT_NAME.to_owned(),
            data,
            offset: 0,
            blocking: true,
            closed: false,
            ready: Readiness::always(Condition::IN | Condition::OUT),
        }
    }

    /// The data written so far (empty after close).
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Take the data out of the channel.
    pub fn into_inner(self) -> Vec<u8> {
        self.data
    }

    /// Bytes of data held (QEMU's `usage`).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True if no data is held.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The current position.
    pub fn position(&self) -> usize {
        self.offset
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::closed(&self.name))
        } else {
            Ok(())
        }
    }

    /// Copy from `pos` into `bufs`; returns the bytes copied.
    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], pos: usize) -> usize {
        crate::io::scatter(self.data.get(pos..).unwrap_or(&[]), bufs)
    }

    /// Store `bufs` at `pos`, zero-filling any gap after the data; returns
    /// the bytes stored.
    fn write_at(&mut self, bufs: &[IoSlice<'_>], pos: usize, op: &str) -> Result<usize> {
        let total = bufs
            .iter()
            .try_fold(0usize, |acc, b| acc.checked_add(b.len()))
            .ok_or_else(|| self.too_big(op))?;
        if total == 0 {
            return Ok(0);
        }
        let end = pos.checked_add(total).ok_or_else(|| self.too_big(op))?;
        if end > self.data.len() {
            let grow = end - self.data.len();
            self.data.try_reserve(grow).map_err(|e| {
                Error::os(
                    &self.name,
                    op,
                    io::Error::new(io::ErrorKind::OutOfMemory, e),
                )
            })?;
            if pos > self.data.len() {
                // The gap between the old end and `pos` reads back as zeros.
                self.data.resize(pos, 0);
            }
        }
        let mut at = pos;
        for buf in bufs {
            let overlap = self.data.len().saturating_sub(at).min(buf.len());
            self.data[at..at + overlap].copy_from_slice(&buf[..overlap]);
            self.data.extend_from_slice(&buf[overlap..]);
            at += buf.len();
        }
        Ok(total)
    }

    fn too_big(&self, op: &str) -> Error {
        Error::os(
            &self.name,
            op,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "position beyond the addressable size",
            ),
        )
    }

    fn to_position(&self, pos: u64, op: &str) -> Result<usize> {
        usize::try_from(pos).map_err(|_| self.too_big(op))
    }
}

impl Channel for BufferChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn features(&self) -> Features {
        Features::SEEKABLE
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        self.check_open()?;
        check_read_request(self, fds.is_some(), flags)?;
        let n = self.read_at(bufs, self.offset);
        self.offset += n;
        Ok(n)
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        self.check_open()?;
        check_write_request(self, !fds.is_empty(), flags)?;
        let n = self.write_at(bufs, self.offset, "write")?;
        self.offset += n;
        Ok(n)
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.check_open()?;
        self.blocking = blocking;
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        self.blocking
    }

    fn close(&mut self) -> Result<()> {
        self.closed = true;
        self.data = Vec::new();
        self.offset = 0;
        Ok(())
    }

    fn watch_source(&self) -> WatchSource {
        WatchSource {
            fds: WatchFds::None,
            ready: self.ready.clone(),
            name: self.name.clone(),
        }
    }

    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.check_open()?;
        let (base, delta) = match pos {
            SeekFrom::Start(p) => (0i128, i128::from(p)),
            SeekFrom::Current(d) => (self.offset as i128, i128::from(d)),
            SeekFrom::End(d) => (self.data.len() as i128, i128::from(d)),
        };
        let target = base + delta;
        if target < 0 {
            return Err(Error::os(
                &self.name,
                "seek",
                io::Error::new(io::ErrorKind::InvalidInput, "seek to a negative position"),
            ));
        }
        let target = usize::try_from(target).map_err(|_| self.too_big("seek"))?;
        self.offset = target;
        Ok(target as u64)
    }

    fn preadv(&mut self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<usize> {
        self.check_open()?;
        let pos = self.to_position(offset, "positioned read")?;
        Ok(self.read_at(bufs, pos))
    }

    fn pwritev(&mut self, bufs: &[IoSlice<'_>], offset: u64) -> Result<usize> {
        self.check_open()?;
        let pos = self.to_position(offset, "positioned write")?;
        self.write_at(bufs, pos, "positioned write")
    }
}

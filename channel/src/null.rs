//! [`NullChannel`]: reads are EOF, writes are discarded (QEMU's
//! `QIOChannelNull`).
//!
//! Every read returns `Ok(0)`, every write reports the full length as
//! written, [`Channel::seek`] and positioned I/O succeed and go nowhere
//! (seek always returns 0), and watches are always ready for `IN | OUT`.
//! After [`Channel::close`] every read, write and seek fails with
//! [`Error::Closed`]. File descriptors and `MSG_PEEK` are
//! [`Error::Unsupported`], as on every channel without those features.
//!
//! # Example
//!
//! ```
//! use transit_channel::{io, Channel, NullChannel};
//!
//! let mut ch = NullChannel::new();
//! io::write_all(&mut ch, b"into the void")?;
//! let mut buf = [0u8; 4];
//! assert_eq!(io::read_all_eof(&mut ch, &mut buf)?, false); // clean EOF
//! ch.close()?;
//! assert!(io::write_all(&mut ch, b"x").is_err());
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, ReadFlags, Readiness,
    WatchFds, WatchSource, WriteFlags,
};
use crate::error::{Error, Result};

/// A channel that reads EOF and discards writes; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct NullChannel {
    name: String,
    blocking: bool,
    closed: bool,
    ready: Readiness,
}

impl Default for NullChannel {
    fn default() -> Self {
        NullChannel {
            name: "null".to_owned(),
            blocking: true,
            closed: false,
            ready: Readiness::always(Condition::IN | Condition::OUT),
        }
    }
}

impl NullChannel {
    /// A new open null channel named `null`.
    pub fn new() -> NullChannel {
        NullChannel::default()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::closed(&self.name))
        } else {
            Ok(())
        }
    }
}

fn total_len(bufs: &[IoSlice<'_>]) -> usize {
    bufs.iter()
        .fold(0usize, |acc, b| acc.saturating_add(b.len()))
}

impl Channel for NullChannel {
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
        _bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        self.check_open()?;
        check_read_request(self, fds.is_some(), flags)?;
        Ok(0)
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        self.check_open()?;
        check_write_request(self, !fds.is_empty(), flags)?;
        Ok(total_len(bufs))
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.blocking = blocking;
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        self.blocking
    }

    fn close(&mut self) -> Result<()> {
        self.closed = true;
        Ok(())
    }

    fn watch_source(&self) -> WatchSource {
        WatchSource {
            fds: WatchFds::None,
            ready: self.ready.clone(),
            name: self.name.clone(),
        }
    }

    fn seek(&mut self, _pos: SeekFrom) -> Result<u64> {
        self.check_open()?;
        Ok(0)
    }

    fn preadv(&mut self, _bufs: &mut [IoSliceMut<'_>], _offset: u64) -> Result<usize> {
        self.check_open()?;
        Ok(0)
    }

    fn pwritev(&mut self, bufs: &[IoSlice<'_>], _offset: u64) -> Result<usize> {
        self.check_open()?;
        Ok(total_len(bufs))
    }
}

//! [`FailAfter`]: a test double that wraps a channel and breaks it after a
//! number of bytes, as a reset connection would.
//!
//! Writes pass through until `limit` bytes went out (the write that crosses
//! the limit is cut short at it); the next write fails with `ECONNRESET`
//! and shuts the inner channel down in both directions, so the peer reads
//! end of file in the middle of whatever it was reading. Reads pass
//! through until then and fail the same way after. With
//! [`FailAfter::stall`] the channel hangs instead of failing: the write
//! that reaches the limit blocks until the channel is shut down (as a
//! connection whose packets are dropped would), then fails.
//!
//! # Example
//!
//! ```
//! use transit_channel::{io, fault::FailAfter, Channel, SocketChannel};
//!
//! let (a, mut b) = SocketChannel::pair()?;
//! let mut a = FailAfter::new(Box::new(a), 3);
//! assert!(io::write_all(&mut a, b"hello").is_err());
//! let mut got = [0u8; 3];
//! io::read_all(&mut b, &mut got)?;
//! assert_eq!(&got, b"hel");
//! assert!(io::read_all(&mut b, &mut [0u8; 1]).is_err()); // end of file
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};

use crate::{
    Channel, Error, Features, FlushOutcome, ReadFlags, Result, Shutdown, ShutdownChannel,
    ShutdownHandle, WatchSource, WriteFlags,
};

/// A channel that fails (or stalls) after `limit` bytes written.
pub struct FailAfter {
    inner: Box<dyn Channel>,
    left: u64,
    tripped: bool,
    stall: bool,
    /// Set when shut down (wakes a stalled write).
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    down: Mutex<bool>,
    cv: Condvar,
}

struct GateHandle {
    gate: Arc<Gate>,
    inner: Option<ShutdownHandle>,
}

impl ShutdownChannel for GateHandle {
    fn shutdown(&self, how: Shutdown) -> Result<()> {
        *self.gate.down.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.gate.cv.notify_all();
        match &self.inner {
            Some(h) => h.shutdown(how),
            None => Ok(()),
        }
    }
}

impl FailAfter {
    /// Fail with `ECONNRESET` once `limit` bytes were written.
    pub fn new(inner: Box<dyn Channel>, limit: u64) -> FailAfter {
        FailAfter {
            inner,
            left: limit,
            tripped: false,
            stall: false,
            gate: Arc::default(),
        }
    }

    /// Hang once `limit` bytes were written, until shut down.
    pub fn stall(inner: Box<dyn Channel>, limit: u64) -> FailAfter {
        FailAfter {
            stall: true,
            ..FailAfter::new(inner, limit)
        }
    }

    fn reset(&self, op: &str) -> Error {
        Error::os(
            self.inner.name(),
            op,
            std::io::Error::from_raw_os_error(libc::ECONNRESET),
        )
    }

    fn trip(&mut self) {
        if !self.tripped {
            self.tripped = true;
            let _ = self.inner.shutdown(Shutdown::Both);
        }
    }
}

impl Channel for FailAfter {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn set_name(&mut self, name: String) {
        self.inner.set_name(name)
    }
    fn features(&self) -> Features {
        self.inner.features()
    }
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        if self.tripped {
            return Err(self.reset("readv"));
        }
        self.inner.readv(bufs, fds, flags)
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        if self.tripped {
            return Err(self.reset("writev"));
        }
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if len == 0 {
            return self.inner.writev(bufs, fds, flags);
        }
        if self.left == 0 {
            if self.stall {
                let mut down = self.gate.down.lock().unwrap_or_else(|e| e.into_inner());
                while !*down {
                    down = self.gate.cv.wait(down).unwrap_or_else(|e| e.into_inner());
                }
            }
            self.trip();
            return Err(self.reset("writev"));
        }
        if len <= self.left {
            let n = self.inner.writev(bufs, fds, flags)?;
            self.left -= n as u64;
            return Ok(n);
        }
        // Cut the vector at the limit.
        let mut cut = Vec::with_capacity(bufs.len());
        let mut room = self.left as usize;
        for b in bufs {
            if room == 0 {
                break;
            }
            let take = b.len().min(room);
            cut.push(IoSlice::new(&b[..take]));
            room -= take;
        }
        let n = self.inner.writev(&cut, fds, flags)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.inner.set_blocking(blocking)
    }
    fn is_blocking(&self) -> bool {
        self.inner.is_blocking()
    }
    fn close(&mut self) -> Result<()> {
        self.inner.close()
    }
    fn watch_source(&self) -> WatchSource {
        self.inner.watch_source()
    }
    fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        self.shutdown_handle()?.shutdown(how)
    }
    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        Ok(Arc::new(GateHandle {
            gate: self.gate.clone(),
            inner: self.inner.shutdown_handle().ok(),
        }))
    }
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.inner.seek(pos)
    }
    fn flush(&mut self) -> Result<FlushOutcome> {
        self.inner.flush()
    }
    fn bye(&mut self) -> Result<()> {
        if self.tripped {
            return Err(self.reset("bye"));
        }
        self.inner.bye()
    }
}

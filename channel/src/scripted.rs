//! [`ScriptedChannel`]: a test double that replays scripted reads and
//! writes and records every call.
//!
//! Layers that sit on another channel (TLS, websocket, the `io` helpers)
//! must survive partial I/O and `WouldBlock` at any byte. A scripted channel
//! makes those cases reproducible:
//!
//! * Reads follow a queue of [`ReadStep`]s: a chunk of bytes (delivered
//!   over as many reads as it takes; one read never crosses into the next
//!   chunk), a chunk with file descriptors, `WouldBlock`, end of file or an
//!   error. When the queue is empty, reads are end of file.
//! * Writes follow a queue of [`WriteStep`]s, one per `writev` call: accept
//!   up to N bytes, `WouldBlock`, or an error. When the queue is empty,
//!   writes accept everything.
//! * In *trickle* mode ([`ScriptedChannel::trickle`]) every read and every
//!   write first answers `WouldBlock`, then moves at most one byte, then
//!   `WouldBlock` again, and so on.
//! * Every accepted byte is recorded, and every call is logged
//!   ([`ReadCall`], [`WriteCall`]) with the sizes and fds involved.
//!
//! The script and the record live behind a [`ScriptHandle`], so a test can
//! keep a handle, move the channel into a layer (`Box<dyn Channel>`), feed
//! more input later and inspect what the layer wrote.
//!
//! The channel is non-blocking by default and its watch has no fds and a
//! [`Readiness`] fixed to `IN | OUT`, so [`crate::io::wait_blocking`] and
//! main-loop watches never hang on it: the caller simply retries. Features
//! default to none; add [`Features::FD_PASS`] with
//! [`ScriptedChannel::with_features`] to pass fds. After close, I/O fails
//! with [`Error::Closed`].
//!
//! # Example
//!
//! ```
//! use transit_channel::{io, scripted::ReadStep, ScriptedChannel};
//!
//! // A peer that sends "hello" one byte at a time with WouldBlock before
//! // each byte, and takes our writes one byte at a time.
//! let mut ch = ScriptedChannel::trickle(b"hello".to_vec());
//! let log = ch.handle();
//! let mut buf = [0u8; 5];
//! io::read_all(&mut ch, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! io::write_all(&mut ch, b"bye")?;
//! assert_eq!(log.written(), b"bye");
//! assert_eq!(log.write_calls().len(), 6); // WouldBlock, 1 byte, x3
//!
//! // Scripted steps: a short read, a WouldBlock, then end of file.
//! let mut ch = ScriptedChannel::new()
//!     .read(ReadStep::Data(b"ab".to_vec()))
//!     .read(ReadStep::WouldBlock)
//!     .read(ReadStep::Eof);
//! let mut buf = [0u8; 4];
//! let err = io::read_all(&mut ch, &mut buf).unwrap_err();
//! assert!(err.to_string().contains("2 of 4 bytes missing"));
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, ReadFlags, Readiness,
    WatchFds, WatchSource, WriteFlags,
};
use crate::error::{Error, Result};

/// One scripted answer to reads.
#[derive(Debug)]
pub enum ReadStep {
    /// Bytes, delivered over as many reads as the caller's buffers need.
    Data(Vec<u8>),
    /// Bytes with file descriptors; the fds arrive with the first read of
    /// this step (even when the bytes are empty, which returns `Ok(0)` with
    /// fds). A read that does not ask for fds drops (closes) them.
    DataWithFds(Vec<u8>, Vec<OwnedFd>),
    /// One read answers [`Error::WouldBlock`].
    WouldBlock,
    /// One read answers end of file (`Ok(0)`).
    Eof,
    /// One read fails with this error.
    Error(Error),
}

/// One scripted answer to a `writev` call.
#[derive(Debug)]
pub enum WriteStep {
    /// Accept up to this many bytes (fewer if fewer were offered).
    Accept(usize),
    /// Answer [`Error::WouldBlock`].
    WouldBlock,
    /// Fail with this error.
    Error(Error),
}

/// How a recorded call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Moved this many bytes (0 on a read is end of file).
    Bytes(usize),
    /// Answered [`Error::WouldBlock`].
    WouldBlock,
    /// Failed with an error (scripted, closed or unsupported).
    Failed,
}

/// A recorded `readv` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCall {
    /// Bytes of buffer space offered.
    pub requested: usize,
    /// The caller asked for fds.
    pub wanted_fds: bool,
    /// Fds handed to the caller.
    pub fds_received: usize,
    /// What the call returned.
    pub outcome: Outcome,
}

/// A recorded `writev` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteCall {
    /// Bytes offered.
    pub offered: usize,
    /// The raw numbers of the fds offered with the call.
    pub fds: Vec<RawFd>,
    /// What the call returned.
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
struct State {
    reads: VecDeque<ReadStep>,
    writes: VecDeque<WriteStep>,
    written: Vec<u8>,
    read_calls: Vec<ReadCall>,
    write_calls: Vec<WriteCall>,
    trickle: bool,
    read_block_next: bool,
    write_block_next: bool,
}

/// Shared access to a [`ScriptedChannel`]'s script and record; cheap to
/// clone, usable after the channel moved into another layer.
#[derive(Debug, Clone)]
pub struct ScriptHandle(Arc<Mutex<State>>);

impl ScriptHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind;
        // keep using it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a read step.
    pub fn push_read(&self, step: ReadStep) {
        self.lock().reads.push_back(step);
    }

    /// Append a write step.
    pub fn push_write(&self, step: WriteStep) {
        self.lock().writes.push_back(step);
    }

    /// Every byte accepted by writes so far.
    pub fn written(&self) -> Vec<u8> {
        self.lock().written.clone()
    }

    /// Take (and clear) the bytes accepted so far.
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().written)
    }

    /// Every `readv` call so far.
    pub fn read_calls(&self) -> Vec<ReadCall> {
        self.lock().read_calls.clone()
    }

    /// Every `writev` call so far.
    pub fn write_calls(&self) -> Vec<WriteCall> {
        self.lock().write_calls.clone()
    }

    /// Read steps not yet consumed (a partly read chunk counts as one).
    pub fn pending_reads(&self) -> usize {
        self.lock().reads.len()
    }
}

/// A scripted channel; see the [module documentation](self).
#[derive(Debug)]
pub struct ScriptedChannel {
    name: String,
    features: Features,
    blocking: bool,
    closed: bool,
    ready: Readiness,
    state: ScriptHandle,
}

impl Default for ScriptedChannel {
    fn default() -> Self {
        ScriptedChannel {
            name: "scripted".to_owned(),
            features: Features::empty(),
            blocking: false,
            closed: false,
            ready: Readiness::always(Condition::IN | Condition::OUT),
            state: ScriptHandle(Arc::new(Mutex::new(State::default()))),
        }
    }
}

impl ScriptedChannel {
    /// An empty script: reads are end of file, writes accept everything.
    pub fn new() -> ScriptedChannel {
        ScriptedChannel::default()
    }

    /// A channel that reads `data` and then end of file, answering
    /// `WouldBlock` before every byte (and before the end of file), and
    /// accepts writes one byte per call with a `WouldBlock` before each.
    pub fn trickle(data: Vec<u8>) -> ScriptedChannel {
        let ch = ScriptedChannel::new().read(ReadStep::Data(data));
        {
            let mut st = ch.state.lock();
            st.trickle = true;
            st.read_block_next = true;
            st.write_block_next = true;
        }
        ch
    }

    /// Append a read step (builder form of [`ScriptHandle::push_read`]).
    pub fn read(self, step: ReadStep) -> ScriptedChannel {
        self.state.push_read(step);
        self
    }

    /// Append a write step (builder form of [`ScriptHandle::push_write`]).
    pub fn write(self, step: WriteStep) -> ScriptedChannel {
        self.state.push_write(step);
        self
    }

    /// Set the channel's name.
    pub fn with_name(mut self, name: &str) -> ScriptedChannel {
        self.name = name.to_owned();
        self
    }

    /// Set the channel's features (for example [`Features::FD_PASS`]).
    pub fn with_features(mut self, features: Features) -> ScriptedChannel {
        self.features = features;
        self
    }

    /// A handle on the script and the record.
    pub fn handle(&self) -> ScriptHandle {
        self.state.clone()
    }

    /// Every byte accepted by writes so far.
    pub fn written(&self) -> Vec<u8> {
        self.state.written()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::closed(&self.name))
        } else {
            Ok(())
        }
    }

    fn do_read(
        &mut self,
        st: &mut State,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        requested: usize,
    ) -> Result<(usize, usize)> {
        if st.trickle {
            let block = st.read_block_next;
            st.read_block_next = !block;
            if block {
                return Err(Error::WouldBlock);
            }
        }
        let limit = if st.trickle { 1 } else { usize::MAX };
        let Some(step) = st.reads.front_mut() else {
            return Ok((0, 0));
        };
        let (data, step_fds) = match step {
            ReadStep::Data(d) => (d, None),
            ReadStep::DataWithFds(d, f) => (d, Some(f)),
            ReadStep::WouldBlock => {
                st.reads.pop_front();
                return Err(Error::WouldBlock);
            }
            ReadStep::Eof => {
                st.reads.pop_front();
                return Ok((0, 0));
            }
            ReadStep::Error(_) => match st.reads.pop_front() {
                Some(ReadStep::Error(e)) => return Err(e),
                _ => return Ok((0, 0)),
            },
        };
        let mut nfds = 0;
        if let Some(f) = step_fds {
            let taken = std::mem::take(f);
            nfds = taken.len();
            match fds {
                Some(out) => out.extend(taken),
                None => nfds = 0, // dropped: closed, like discarded SCM_RIGHTS
            }
        }
        let want = requested.min(limit).min(data.len());
        let copied = crate::io::scatter(&data[..want], bufs);
        data.drain(..copied);
        if data.is_empty() {
            st.reads.pop_front();
        }
        Ok((copied, nfds))
    }

    fn do_write(&mut self, st: &mut State, bufs: &[IoSlice<'_>], offered: usize) -> Result<usize> {
        if st.trickle {
            let block = st.write_block_next;
            st.write_block_next = !block;
            if block {
                return Err(Error::WouldBlock);
            }
        }
        let mut allow = match st.writes.pop_front() {
            None => usize::MAX,
            Some(WriteStep::Accept(n)) => n,
            Some(WriteStep::WouldBlock) => return Err(Error::WouldBlock),
            Some(WriteStep::Error(e)) => return Err(e),
        };
        if st.trickle {
            allow = allow.min(1);
        }
        let take = offered.min(allow);
        let mut left = take;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let n = buf.len().min(left);
            st.written.extend_from_slice(&buf[..n]);
            left -= n;
        }
        Ok(take)
    }
}

fn outcome(r: &Result<usize>) -> Outcome {
    match r {
        Ok(n) => Outcome::Bytes(*n),
        Err(Error::WouldBlock) => Outcome::WouldBlock,
        Err(_) => Outcome::Failed,
    }
}

impl Channel for ScriptedChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn features(&self) -> Features {
        self.features
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        let requested = bufs.iter().fold(0usize, |a, b| a.saturating_add(b.len()));
        let wanted_fds = fds.is_some();
        let state = self.state.clone();
        let mut st = state.lock();
        let result = self
            .check_open()
            .and_then(|()| check_read_request(self, wanted_fds, flags))
            .and_then(|()| self.do_read(&mut st, bufs, fds, requested));
        let fds_received = result.as_ref().map_or(0, |r| r.1);
        let result = result.map(|r| r.0);
        st.read_calls.push(ReadCall {
            requested,
            wanted_fds,
            fds_received,
            outcome: outcome(&result),
        });
        result
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        let offered = bufs.iter().fold(0usize, |a, b| a.saturating_add(b.len()));
        let state = self.state.clone();
        let mut st = state.lock();
        let result = self
            .check_open()
            .and_then(|()| check_write_request(self, !fds.is_empty(), flags))
            .and_then(|()| self.do_write(&mut st, bufs, offered));
        st.write_calls.push(WriteCall {
            offered,
            fds: fds.iter().map(|f| f.as_raw_fd()).collect(),
            outcome: outcome(&result),
        });
        result
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
}

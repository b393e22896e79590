//! The [`Channel`] trait: one byte-stream abstraction for every transport.
//!
//! A channel is QEMU's `QIOChannel` in Rust: vectored reads and writes with
//! optional file descriptors and flags, blocking or non-blocking mode, a way
//! to be watched by the main loop, and optional hooks (shutdown, Nagle, cork,
//! seek, zero-copy flush) whose defaults say "unsupported" or do nothing.
//!
//! The trait is object safe and `Send`, so transports stack as
//! `Box<dyn Channel>`: TLS over a socket, a websocket over TLS over a socket,
//! anything over a command's pipes.
//!
//! # Semantics
//!
//! * A non-blocking channel returns [`Error::WouldBlock`] when it can make no
//!   progress. A blocking channel waits.
//! * A read that returns `Ok(0)` (with non-empty buffers) is end of file.
//! * Partial reads and writes are normal; the helpers in [`crate::io`] loop.
//! * If a write with file descriptors returns `Ok(n)` with `n > 0`, every fd
//!   went with it.
//! * Asking for a feature the channel lacks (fds on a TCP socket, `MSG_PEEK`
//!   on a pipe, `seek` on a socket) is [`Error::Unsupported`], never ignored.
//!
//! # Shutdown from another thread
//!
//! A worker thread that owns a channel may be blocked inside `readv`. To wake
//! it, take a [`ShutdownHandle`] with [`Channel::shutdown_handle`] *before*
//! handing the channel over; the handle is `Send + Sync`, never blocks, and
//! keeps working (as a no-op) after the channel is closed.
//!
//! # Watching
//!
//! [`Channel::watch_source`] says what the main loop must poll: zero, one or
//! two fds, plus a [`Readiness`] for layers that hold buffered data (TLS
//! plaintext, an in-memory buffer) and are ready without any fd becoming
//! readable. The main loop's `create_watch` turns that into a source.
//!
//! # Example
//!
//! ```
//! use std::io::{IoSlice, IoSliceMut};
//! use transit_channel::{BufferChannel, Channel, ReadFlags, WriteFlags};
//!
//! let mut ch = BufferChannel::new();
//! ch.writev(&[IoSlice::new(b"hello "), IoSlice::new(b"world")], &[], WriteFlags::empty())?;
//! ch.seek(std::io::SeekFrom::Start(0))?;
//! let (mut a, mut b) = ([0u8; 6], [0u8; 5]);
//! let n = ch.readv(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], None, ReadFlags::empty())?;
//! assert_eq!((n, &a, &b), (11, b"hello ", b"world"));
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::fmt;
use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::address::SocketAddress;
use crate::error::{Error, Result};

bitflags::bitflags! {
    /// Optional capabilities of a channel (QEMU's `QIO_CHANNEL_FEATURE_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Features: u32 {
        /// Can carry file descriptors (SCM_RIGHTS): UNIX sockets only.
        const FD_PASS = 1 << 0;
        /// [`Channel::shutdown`] and [`Channel::shutdown_handle`] work.
        const SHUTDOWN = 1 << 1;
        /// A listening socket.
        const LISTEN = 1 << 2;
        /// [`WriteFlags::ZERO_COPY`] writes (MSG_ZEROCOPY) are possible.
        const WRITE_ZERO_COPY = 1 << 3;
        /// [`ReadFlags::MSG_PEEK`] reads are possible.
        const READ_MSG_PEEK = 1 << 4;
        /// [`Channel::seek`] and positioned I/O work.
        const SEEKABLE = 1 << 5;
    }
}

bitflags::bitflags! {
    /// Flags for [`Channel::readv`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ReadFlags: u32 {
        /// Look at the data without consuming it (needs `READ_MSG_PEEK`).
        const MSG_PEEK = 1 << 0;
        /// TLS: a peer that closes without close_notify is a clean EOF.
        const RELAXED_EOF = 1 << 1;
        /// Leave received fds in the blocking mode they arrived in (by
        /// default they are made blocking).
        const FD_PRESERVE_BLOCKING = 1 << 2;
    }
}

bitflags::bitflags! {
    /// Flags for [`Channel::writev`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct WriteFlags: u32 {
        /// Send without copying (MSG_ZEROCOPY); the buffers must stay
        /// unchanged until [`Channel::flush`] returns.
        const ZERO_COPY = 1 << 0;
    }
}

bitflags::bitflags! {
    /// I/O conditions, as in glib's `GIOCondition`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Condition: u32 {
        /// Data to read (or EOF).
        const IN = 1 << 0;
        /// Room to write.
        const OUT = 1 << 1;
        /// Urgent data.
        const PRI = 1 << 2;
        /// An error is pending.
        const ERR = 1 << 3;
        /// The peer hung up.
        const HUP = 1 << 4;
        /// The fd is not open.
        const NVAL = 1 << 5;
    }
}

/// Which direction(s) [`Channel::shutdown`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// No more reads; a blocked reader wakes with EOF.
    Read,
    /// No more writes; the peer sees EOF.
    Write,
    /// Both directions.
    Both,
}

/// What [`Channel::flush`] learned about zero-copy writes since the last
/// flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Nothing was pending, or the channel has no zero-copy writes.
    Nothing,
    /// All zero-copy writes completed and at least one avoided the copy.
    ZeroCopy,
    /// Every zero-copy write since the last flush fell back to copying
    /// (always the case over loopback).
    Copied,
}

/// A thread-safe way to shut a channel down while another thread uses it.
///
/// Obtained from [`Channel::shutdown_handle`]. Implementations never block
/// and become no-ops once the channel is closed.
pub trait ShutdownChannel: Send + Sync {
    /// Shut down `how`; a thread blocked in the channel wakes up.
    fn shutdown(&self, how: Shutdown) -> Result<()>;
}

/// A shared [`ShutdownChannel`].
pub type ShutdownHandle = Arc<dyn ShutdownChannel>;

/// Conditions a channel is ready for without polling any fd, shared between
/// a channel and the watches made from it.
///
/// A layer that buffers data (TLS plaintext, an in-memory buffer) sets
/// [`Condition::IN`] here while it holds unread data; the main loop treats
/// those bits as already polled.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicU32>);

impl Readiness {
    /// A readiness with no bits set.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// A readiness fixed to `cond` (for channels that are always ready).
    pub fn always(cond: Condition) -> Readiness {
        let r = Readiness::new();
        r.set(cond);
        r
    }

    /// The conditions ready now.
    pub fn get(&self) -> Condition {
        Condition::from_bits_truncate(self.0.load(Ordering::Acquire))
    }

    /// Replace the ready conditions.
    pub fn set(&self, cond: Condition) {
        self.0.store(cond.bits(), Ordering::Release);
    }

    /// Add `cond` to the ready conditions.
    pub fn insert(&self, cond: Condition) {
        self.0.fetch_or(cond.bits(), Ordering::AcqRel);
    }

    /// Remove `cond` from the ready conditions.
    pub fn remove(&self, cond: Condition) {
        self.0.fetch_and(!cond.bits(), Ordering::AcqRel);
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Readiness").field(&self.get()).finish()
    }
}

/// The fds a watch polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFds {
    /// Nothing to poll: readiness comes only from [`Readiness`].
    None,
    /// One fd for both directions.
    One(RawFd),
    /// Separate fds: `IN` is polled on `read`, `OUT` on `write` (command
    /// channels, glib's fd-pair source).
    Pair {
        /// Polled for `IN`.
        read: RawFd,
        /// Polled for `OUT`.
        write: RawFd,
    },
}

/// Everything the main loop needs to watch a channel.
#[derive(Debug, Clone)]
pub struct WatchSource {
    /// The fds to poll. They must stay open while a watch made from this
    /// exists; a closed channel's watch reports `NVAL`/`HUP`.
    pub fds: WatchFds,
    /// Conditions ready without polling (buffered data).
    pub ready: Readiness,
    /// The channel's name, for naming the source.
    pub name: String,
}

/// A bidirectional byte stream: socket, file, TLS, websocket, command,
/// buffer, null or RDMA.
///
/// See the [module documentation](self) for the semantics.
pub trait Channel: Send {
    /// A human-readable name used in errors and source names, for example
    /// `multifd-send-2 tcp:127.0.0.1:4444`.
    fn name(&self) -> &str;

    /// Rename the channel.
    fn set_name(&mut self, name: String);

    /// Capabilities of this channel.
    fn features(&self) -> Features;

    /// True if the channel has every feature in `f`.
    fn has_feature(&self, f: Features) -> bool {
        self.features().contains(f)
    }

    /// Read into `bufs` in order. `Ok(0)` is EOF.
    ///
    /// With `fds` present, file descriptors that arrive are appended to it
    /// (needs [`Features::FD_PASS`]); they are close-on-exec and, unless
    /// [`ReadFlags::FD_PRESERVE_BLOCKING`], blocking.
    #[doc(alias = "qio_channel_readv_full")]
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize>;

    /// Write from `bufs` in order; `fds` go with the first byte (needs
    /// [`Features::FD_PASS`]).
    #[doc(alias = "qio_channel_writev_full")]
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize>;

    /// Switch between blocking and non-blocking mode.
    fn set_blocking(&mut self, blocking: bool) -> Result<()>;

    /// True if the channel is in blocking mode.
    fn is_blocking(&self) -> bool;

    /// Release the transport. Later I/O fails with [`Error::Closed`]; a
    /// second close is a no-op.
    fn close(&mut self) -> Result<()>;

    /// What the main loop polls to watch this channel.
    fn watch_source(&self) -> WatchSource;

    /// Shut down one or both directions (thread safe, never blocks).
    fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        self.shutdown_handle()?.shutdown(how)
    }

    /// A handle that shuts this channel down from any thread.
    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        Err(Error::unsupported(self.name(), "shutdown"))
    }

    /// End the stream cleanly at this layer and the layers below: TLS sends
    /// close_notify, a websocket sends its close frame. No writes may
    /// follow; reads may go on until the peer's EOF. Plain transports have
    /// nothing to say and return `Ok(())`. multifd calls it on every channel
    /// of a successful session so a receiver can tell truncation from the
    /// end.
    #[doc(alias = "qio_channel_tls_bye")]
    fn bye(&mut self) -> Result<()> {
        Ok(())
    }

    /// Enable (true) or disable Nagle's algorithm. A hint: ignored where it
    /// means nothing.
    fn set_delay(&mut self, _enabled: bool) -> Result<()> {
        Ok(())
    }

    /// Cork (hold back partial frames) or uncork. A hint.
    fn set_cork(&mut self, _enabled: bool) -> Result<()> {
        Ok(())
    }

    /// Move the file position (needs [`Features::SEEKABLE`]).
    fn seek(&mut self, _pos: SeekFrom) -> Result<u64> {
        Err(Error::unsupported(self.name(), "seek"))
    }

    /// Wait until every zero-copy write has completed; say whether the
    /// kernel avoided the copy.
    fn flush(&mut self) -> Result<FlushOutcome> {
        Ok(FlushOutcome::Nothing)
    }

    /// Make `region` eligible for [`WriteFlags::ZERO_COPY`] writes, once,
    /// for the rest of the channel's life (multifd registers its whole
    /// source image this way).
    ///
    /// Only transports whose zero-copy writes need memory registered up
    /// front do real work here (RDMA: the device must know the memory).
    /// Channels whose zero-copy writes need no registration (a socket with
    /// `MSG_ZEROCOPY`: the kernel pins the pages of each send itself)
    /// return `Ok(())`. Channels without [`Features::WRITE_ZERO_COPY`], and
    /// layers that must transform the bytes (TLS, websocket), return
    /// [`Error::Unsupported`] (the default); zero-copy writes through a
    /// channel that accepted no registration either fail or copy, and
    /// [`Channel::flush`] says which.
    ///
    /// # Safety
    ///
    /// The memory of `region` must stay allocated and mapped until the
    /// channel is closed or dropped (the transport may read it at any time
    /// until then). Its bytes may change, but only while no zero-copy write
    /// from it is pending: between a [`Channel::flush`] and the next
    /// zero-copy write of the changed bytes.
    unsafe fn register_region(&mut self, region: &[u8]) -> Result<()> {
        let _ = region;
        Err(Error::unsupported(self.name(), "memory registration"))
    }

    /// The local address, where the channel has one.
    fn local_address(&self) -> Option<SocketAddress> {
        None
    }

    /// The peer's address, where the channel has one.
    fn peer_address(&self) -> Option<SocketAddress> {
        None
    }

    /// Who is at the other end, for reports: the peer's address, else the
    /// channel's name.
    fn peer_name(&self) -> String {
        self.peer_address()
            .map(|a| a.to_string())
            .unwrap_or_else(|| self.name().to_owned())
    }

    /// Read at `offset` without moving the file position (needs
    /// [`Features::SEEKABLE`]).
    fn preadv(&mut self, _bufs: &mut [IoSliceMut<'_>], _offset: u64) -> Result<usize> {
        Err(Error::unsupported(self.name(), "positioned read"))
    }

    /// Write at `offset` without moving the file position (needs
    /// [`Features::SEEKABLE`]).
    fn pwritev(&mut self, _bufs: &[IoSlice<'_>], _offset: u64) -> Result<usize> {
        Err(Error::unsupported(self.name(), "positioned write"))
    }
}

/// Forward every `Channel` method through a pointer-like wrapper.
macro_rules! forward_channel {
    ($ty:ty) => {
        impl<C: Channel + ?Sized> Channel for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn set_name(&mut self, name: String) {
                (**self).set_name(name)
            }
            fn features(&self) -> Features {
                (**self).features()
            }
            fn readv(
                &mut self,
                bufs: &mut [IoSliceMut<'_>],
                fds: Option<&mut Vec<OwnedFd>>,
                flags: ReadFlags,
            ) -> Result<usize> {
                (**self).readv(bufs, fds, flags)
            }
            fn writev(
                &mut self,
                bufs: &[IoSlice<'_>],
                fds: &[BorrowedFd<'_>],
                flags: WriteFlags,
            ) -> Result<usize> {
                (**self).writev(bufs, fds, flags)
            }
            fn set_blocking(&mut self, blocking: bool) -> Result<()> {
                (**self).set_blocking(blocking)
            }
            fn is_blocking(&self) -> bool {
                (**self).is_blocking()
            }
            fn close(&mut self) -> Result<()> {
                (**self).close()
            }
            fn watch_source(&self) -> WatchSource {
                (**self).watch_source()
            }
            fn shutdown(&mut self, how: Shutdown) -> Result<()> {
                (**self).shutdown(how)
            }
            fn shutdown_handle(&self) -> Result<ShutdownHandle> {
                (**self).shutdown_handle()
            }
            fn bye(&mut self) -> Result<()> {
                (**self).bye()
            }
            fn set_delay(&mut self, enabled: bool) -> Result<()> {
                (**self).set_delay(enabled)
            }
            fn set_cork(&mut self, enabled: bool) -> Result<()> {
                (**self).set_cork(enabled)
            }
            fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
                (**self).seek(pos)
            }
            fn flush(&mut self) -> Result<FlushOutcome> {
                (**self).flush()
            }
            unsafe fn register_region(&mut self, region: &[u8]) -> Result<()> {
                // SAFETY: the caller upholds `register_region`'s contract,
                // which is the same for the wrapped channel.
                unsafe { (**self).register_region(region) }
            }
            fn local_address(&self) -> Option<SocketAddress> {
                (**self).local_address()
            }
            fn peer_address(&self) -> Option<SocketAddress> {
                (**self).peer_address()
            }
            fn preadv(&mut self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<usize> {
                (**self).preadv(bufs, offset)
            }
            fn pwritev(&mut self, bufs: &[IoSlice<'_>], offset: u64) -> Result<usize> {
                (**self).pwritev(bufs, offset)
            }
        }
    };
}

forward_channel!(Box<C>);
forward_channel!(&mut C);

/// Check the generic rules of `readv` before a transport runs it: fds need
/// `FD_PASS`, `MSG_PEEK` needs `READ_MSG_PEEK`.
pub fn check_read_request(
    ch: &(impl Channel + ?Sized),
    want_fds: bool,
    flags: ReadFlags,
) -> Result<()> {
    if want_fds && !ch.has_feature(Features::FD_PASS) {
        return Err(Error::unsupported(ch.name(), "fd passing"));
    }
    if flags.contains(ReadFlags::MSG_PEEK) && !ch.has_feature(Features::READ_MSG_PEEK) {
        return Err(Error::unsupported(ch.name(), "MSG_PEEK"));
    }
    Ok(())
}

/// Check the generic rules of `writev`: fds need `FD_PASS`, zero copy needs
/// `WRITE_ZERO_COPY`, and fds never go with zero copy.
pub fn check_write_request(
    ch: &(impl Channel + ?Sized),
    has_fds: bool,
    flags: WriteFlags,
) -> Result<()> {
    if has_fds && !ch.has_feature(Features::FD_PASS) {
        return Err(Error::unsupported(ch.name(), "fd passing"));
    }
    if flags.contains(WriteFlags::ZERO_COPY) {
        if !ch.has_feature(Features::WRITE_ZERO_COPY) {
            return Err(Error::unsupported(ch.name(), "zero-copy write"));
        }
        if has_fds {
            return Err(Error::unsupported(
                ch.name(),
                "fd passing together with zero-copy write",
            ));
        }
    }
    Ok(())
}

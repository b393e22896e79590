//! The socket transport: TCP (IPv4 and IPv6), UNIX path and abstract
//! sockets, vsock and inherited socket fds, as one [`Channel`].
//!
//! Setup uses [`socket2`]: [`SocketChannel::connect_sync`],
//! [`SocketChannel::listen_sync`] / [`SocketChannel::listen_on`] and
//! [`SocketChannel::accept`], [`SocketChannel::from_fd`] /
//! [`SocketChannel::from_address`] for inherited fds, and
//! [`SocketChannel::pair`]. Every TCP connection made by `connect_sync`
//! or `accept` gets TCP keep-alive, [`KeepAlive::DEFAULT`] (first probe
//! after 30 s idle, every 5 s, 3 probes; change it with
//! [`SocketChannel::set_keepalive`]). The sync setup calls block (name resolution,
//! connect) and are `Send`-friendly: run them on a worker thread (a
//! [`crate::task`] Task) to keep a main loop responsive.
//!
//! I/O is `recvmsg`/`sendmsg` straight from and into the caller's buffers:
//!
//! * `EAGAIN` is [`Error::WouldBlock`]; `EINTR` is retried; sends use
//!   `MSG_NOSIGNAL`, so a closed peer is `EPIPE`, never `SIGPIPE`.
//! * [`ReadFlags::MSG_PEEK`] on connected and accepted sockets
//!   ([`Features::READ_MSG_PEEK`]).
//! * File descriptors (SCM_RIGHTS) on UNIX sockets only
//!   ([`Features::FD_PASS`]): at most 16 per message; received fds are
//!   close-on-exec and blocking (unless
//!   [`ReadFlags::FD_PRESERVE_BLOCKING`]); truncated control data is an
//!   error and the fds that did arrive are closed.
//! * `MSG_ZEROCOPY` (Linux) after [`SocketChannel::enable_zero_copy`] on a
//!   connected TCP socket: [`WriteFlags::ZERO_COPY`] writes only *queue* the
//!   pages, so the buffers must stay unchanged until [`Channel::flush`]
//!   returns; `flush` reaps the completions from the error queue and reports
//!   [`FlushOutcome::Copied`] when every send since the last flush fell back
//!   to copying. Over loopback the kernel always copies (the receiver needs
//!   its own copy), so loopback proves correctness only; the gain is
//!   measurable on real NICs. An `ENOBUFS` (locked-memory or `optmem`
//!   limit) is answered with one flush and one retry. While completions are
//!   queued the socket polls `ERR`; watches on it see that bit.
//!
//! # Shutdown and close
//!
//! [`Channel::shutdown_handle`] gives a `Send + Sync` handle holding a weak
//! reference to the socket: it never blocks, wakes a thread blocked in
//! `readv`/`accept`, and is a no-op once the channel is closed (so is
//! [`Channel::shutdown`]; `ENOTCONN`, a peer already gone, is not an error
//! either). `close`
//! shuts both directions down (the peer sees EOF even if the fd was shared),
//! releases the socket, unlinks the path of a UNIX listener it created, and
//! is idempotent; later I/O fails with [`Error::Closed`].
//!
//! The fd *number* stays reserved until the channel is dropped: `close`
//! swaps the socket for an unconnected placeholder socket (with `dup3`), so a
//! watch made before `close` polls the placeholder, which reports `HUP`,
//! never an unrelated file that reused the number. A watch made after
//! `close` polls nothing and is ready with `HUP | NVAL`. Remove watches
//! before dropping the channel, as with any fd.
//!
//! # Limits
//!
//! Linux only (abstract sockets, vsock, `MSG_ZEROCOPY`, `dup3`). Stream
//! sockets only. `flush` blocks in `poll` even on a non-blocking channel:
//! completions need the peer to acknowledge the data.
//!
//! # Example
//!
//! ```
//! use std::io::{IoSlice, IoSliceMut};
//! use transit_channel::{Channel, ReadFlags, SocketAddress, SocketChannel, WriteFlags};
//!
//! let mut listener = SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse()?, 4)?;
//! let addr: SocketAddress = listener.local_address().expect("bound");
//! let mut client = SocketChannel::connect_sync(&addr)?;
//! let mut server = listener.accept()?;
//!
//! client.writev(&[IoSlice::new(b"ping")], &[], WriteFlags::empty())?;
//! let mut buf = [0u8; 4];
//! let n = server.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())?;
//! assert_eq!(&buf[..n], &b"ping"[..n]);
//! client.close()?;
//! # Ok::<(), transit_channel::Error>(())
//! ```

mod addr;
mod fdpass;
mod setup;
mod tasks;
mod zerocopy;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::address::SocketAddress;
use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, FlushOutcome, ReadFlags,
    Readiness, Shutdown, ShutdownChannel, ShutdownHandle, WatchFds, WatchSource, WriteFlags,
};
use crate::error::{Error, Result};

pub use fdpass::MAX_FDS;

/// TCP keep-alive settings for [`SocketChannel::set_keepalive`]. `None`
/// fields keep the system default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepAlive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub idle: Option<Duration>,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
    pub count: Option<u32>,
}

impl KeepAlive {
    /// What every TCP connection gets from [`SocketChannel::connect_sync`]
    /// and [`SocketChannel::accept`]: the first probe after 30 s without
    /// traffic, then one every 5 s, and the connection fails after 3
    /// unanswered probes, so a peer whose host vanished or whose path broke
    /// is noticed within about 45 s of silence (the system default, two
    /// hours, would hold a transfer that long). Keep-alive only proves the
    /// peer's kernel answers: a stopped or stuck peer process is the idle
    /// timeout's business (multifd's `idle_timeout`).
    pub const DEFAULT: KeepAlive = KeepAlive {
        idle: Some(Duration::from_secs(30)),
        interval: Some(Duration::from_secs(5)),
        count: Some(3),
    };
}

/// What the socket is, for features and option checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Unix,
    Vsock,
    Other,
}

/// The socket fd shared with shutdown handles.
#[derive(Debug)]
struct SockFd {
    fd: OwnedFd,
    closed: AtomicBool,
}

impl SockFd {
    fn shutdown(&self, name: &str, how: Shutdown) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let how_c = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown(2) on an fd this struct owns; it touches no memory.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), how_c) } < 0 {
            let err = io::Error::last_os_error();
            // Nothing connected (peer already gone): nothing to shut down.
            if err.raw_os_error() != Some(libc::ENOTCONN) {
                return Err(Error::os(name, format!("shutdown({how:?})"), err));
            }
        }
        Ok(())
    }
}

/// The [`ShutdownChannel`] of a socket: a weak reference, so it never keeps
/// the socket alive and never touches a reused fd number.
struct SocketShutdown {
    fd: Weak<SockFd>,
    name: String,
}

impl ShutdownChannel for SocketShutdown {
    fn shutdown(&self, how: Shutdown) -> Result<()> {
        match self.fd.upgrade() {
            Some(fd) => fd.shutdown(&self.name, how),
            None => Ok(()),
        }
    }
}

/// A UNIX path this listener created, unlinked on close if it still is
/// the same socket file.
#[derive(Debug)]
struct ListenPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// A socket as a [`Channel`]: TCP, UNIX, vsock or an inherited socket fd.
///
/// See the [module documentation](self).
#[derive(Debug)]
pub struct SocketChannel {
    fd: Arc<SockFd>,
    name: String,
    features: Features,
    kind: Kind,
    blocking: bool,
    closed: bool,
    listen_path: Option<ListenPath>,
    zc: zerocopy::ZeroCopyState,
}

impl SocketChannel {
    /// Wrap a socket fd whose kind and state are known.
    fn wrap(fd: OwnedFd, kind: Kind, listening: bool, name: Option<String>) -> SocketChannel {
        let mut features = Features::SHUTDOWN;
        if listening {
            features |= Features::LISTEN;
        } else {
            features |= Features::READ_MSG_PEEK;
            if kind == Kind::Unix {
                features |= Features::FD_PASS;
            }
        }
        let name = name.unwrap_or_else(|| addr::describe(&SockRef::from(&fd), listening));
        let blocking = !fdpass::is_nonblocking(fd.as_raw_fd()).unwrap_or(false);
        SocketChannel {
            fd: Arc::new(SockFd {
                fd,
                closed: AtomicBool::new(false),
            }),
            name,
            features,
            kind,
            blocking,
            closed: false,
            listen_path: None,
            zc: zerocopy::ZeroCopyState::default(),
        }
    }

    /// The raw fd if the channel is open, else [`Error::Closed`].
    fn live(&self) -> Result<RawFd> {
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        Ok(self.fd.fd.as_raw_fd())
    }

    fn sock(&self) -> Result<SockRef<'_>> {
        self.live()?;
        Ok(SockRef::from(&self.fd.fd))
    }

    fn require_tcp(&self, what: &'static str) -> Result<()> {
        if self.kind != Kind::Tcp {
            return Err(Error::unsupported(&self.name, what));
        }
        Ok(())
    }

    /// True once [`Channel::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True for a listening socket.
    pub fn is_listener(&self) -> bool {
        self.features.contains(Features::LISTEN)
    }

    /// Turn on `MSG_ZEROCOPY` (`SO_ZEROCOPY`) for a connected TCP socket
    /// and add [`Features::WRITE_ZERO_COPY`].
    ///
    /// Zero-copy writes pin the caller's pages until the kernel is done with
    /// them, which counts against `RLIMIT_MEMLOCK` for unprivileged
    /// processes; see the [module documentation](self).
    pub fn enable_zero_copy(&mut self) -> Result<()> {
        let fd = self.live()?;
        self.require_tcp("zero-copy write (MSG_ZEROCOPY needs TCP)")?;
        if self.is_listener() {
            return Err(Error::unsupported(
                &self.name,
                "zero-copy write on a listening socket",
            ));
        }
        if SockRef::from(&self.fd.fd).peer_addr().is_err() {
            return Err(Error::unsupported(
                &self.name,
                "zero-copy write on an unconnected socket",
            ));
        }
        zerocopy::enable(fd).map_err(|e| Error::os(&self.name, "enable SO_ZEROCOPY", e))?;
        self.features |= Features::WRITE_ZERO_COPY;
        Ok(())
    }

    /// Apply TCP keep-alive (`Some`) or turn it off (`None`).
    pub fn set_keepalive(&mut self, keepalive: Option<KeepAlive>) -> Result<()> {
        let sock = self.sock()?;
        self.require_tcp("TCP keep-alive")?;
        let res = match keepalive {
            None => sock.set_keepalive(false),
            Some(ka) => {
                let mut params = TcpKeepalive::new();
                if let Some(t) = ka.idle {
                    params = params.with_time(t);
                }
                if let Some(t) = ka.interval {
                    params = params.with_interval(t);
                }
                if let Some(n) = ka.count {
                    params = params.with_retries(n);
                }
                sock.set_tcp_keepalive(&params)
            }
        };
        res.map_err(|e| Error::os(&self.name, "set TCP keep-alive", e))
    }

    /// Set `SO_SNDBUF` (the kernel doubles the value for its bookkeeping).
    #[doc(alias = "qio_channel_socket_set_send_buffer")]
    pub fn set_send_buffer(&mut self, bytes: usize) -> Result<()> {
        self.sock()?
            .set_send_buffer_size(bytes)
            .map_err(|e| Error::os(&self.name, format!("set SO_SNDBUF to {bytes}"), e))
    }

    /// Set `SO_RCVBUF` (the kernel doubles the value for its bookkeeping).
    pub fn set_recv_buffer(&mut self, bytes: usize) -> Result<()> {
        self.sock()?
            .set_recv_buffer_size(bytes)
            .map_err(|e| Error::os(&self.name, format!("set SO_RCVBUF to {bytes}"), e))
    }

    fn addr_of(&self, peer: bool) -> Option<SocketAddress> {
        let sock = self.sock().ok()?;
        let sa = if peer {
            sock.peer_addr()
        } else {
            sock.local_addr()
        };
        sa.ok().and_then(|a| addr::from_sockaddr(&a))
    }

    /// Release the socket but keep the fd number reserved (see the module
    /// docs): dup an unconnected placeholder socket over it.
    fn retire_fd(&self) {
        let fd = self.fd.fd.as_raw_fd();
        // SAFETY: socket(2) creates a new fd; no memory is touched.
        let ph = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if ph < 0 {
            return; // keep the shut-down socket in place; it polls HUP too
        }
        // SAFETY: `ph` is our new fd and `fd` is owned by `self.fd`; dup3
        // atomically makes `fd` refer to the placeholder (closing the socket
        // it referred to) without freeing the number, and we then close
        // `ph`, which nothing else knows about.
        unsafe {
            libc::dup3(ph, fd, libc::O_CLOEXEC);
            libc::close(ph);
        }
    }

    /// Close: mark closed (handles become no-ops), shut both directions
    /// down, release the socket (keeping the number if `retire`), unlink a
    /// listener's path.
    fn close_inner(&mut self, retire: bool) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.fd.closed.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on our own fd; errors (ENOTCONN on a listener or
        // an unconnected socket) do not matter here.
        unsafe { libc::shutdown(self.fd.fd.as_raw_fd(), libc::SHUT_RDWR) };
        if retire {
            self.retire_fd();
        }
        self.unlink_listen_path()
    }

    fn unlink_listen_path(&mut self) -> Result<()> {
        let Some(lp) = self.listen_path.take() else {
            return Ok(());
        };
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&lp.path) {
            Ok(m) if m.dev() == lp.dev && m.ino() == lp.ino => std::fs::remove_file(&lp.path)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| Error::os(&self.name, format!("unlink {}", lp.path.display()), e)),
            // Gone, or replaced by someone else's file: leave it alone.
            _ => Ok(()),
        }
    }
}

impl AsFd for SocketChannel {
    /// The socket (after close: the placeholder that reserves the number).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.fd.as_fd()
    }
}

impl AsRawFd for SocketChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.fd.as_raw_fd()
    }
}

impl Channel for SocketChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn features(&self) -> Features {
        self.features
    }

    #[doc(alias = "qio_channel_socket_readv")]
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        let fd = self.live()?;
        check_read_request(self, fds.is_some(), flags)?;
        fdpass::recv(fd, &self.name, bufs, fds, flags)
    }

    #[doc(alias = "qio_channel_socket_writev")]
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        let fd = self.live()?;
        check_write_request(self, !fds.is_empty(), flags)?;
        if fds.len() > MAX_FDS {
            return Err(Error::unsupported(
                &self.name,
                "more than 16 file descriptors in one message",
            ));
        }
        let zero_copy = flags.contains(WriteFlags::ZERO_COPY);
        if bufs.iter().all(|b| b.is_empty()) {
            if !fds.is_empty() {
                // A stream socket drops fds sent without data; refuse instead.
                return Err(Error::unsupported(
                    &self.name,
                    "file descriptors without at least one data byte",
                ));
            }
            if zero_copy {
                return Ok(0);
            }
        }
        let mut retried = false;
        loop {
            match fdpass::send(fd, bufs, fds, zero_copy) {
                Ok(n) => {
                    if zero_copy {
                        self.zc.note_queued();
                    }
                    return Ok(n);
                }
                Err(e) if zero_copy && e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if retried {
                        return Err(Error::os(
                            &self.name,
                            "zero-copy sendmsg (the process can't lock enough memory for \
                             MSG_ZEROCOPY: raise RLIMIT_MEMLOCK or net.core.optmem_max, or \
                             flush more often)",
                            e,
                        ));
                    }
                    retried = true;
                    self.zc.drain(fd, &self.name)?;
                }
                Err(e) => {
                    let op = if fds.is_empty() {
                        "sendmsg".to_owned()
                    } else {
                        format!("sendmsg with {} file descriptor(s)", fds.len())
                    };
                    return Err(Error::os(&self.name, op, e));
                }
            }
        }
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        let fd = self.live()?;
        fdpass::set_nonblocking(fd, !blocking)
            .map_err(|e| Error::os(&self.name, "set O_NONBLOCK", e))?;
        self.blocking = blocking;
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        self.blocking
    }

    #[doc(alias = "qio_channel_socket_close")]
    fn close(&mut self) -> Result<()> {
        self.close_inner(true)
    }

    fn watch_source(&self) -> WatchSource {
        if self.closed {
            return WatchSource {
                fds: WatchFds::None,
                ready: Readiness::always(Condition::HUP | Condition::NVAL),
                name: self.name.clone(),
            };
        }
        WatchSource {
            fds: WatchFds::One(self.fd.fd.as_raw_fd()),
            ready: Readiness::new(),
            name: self.name.clone(),
        }
    }

    fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        self.fd.shutdown(&self.name, how)
    }

    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        let fd = if self.closed {
            Weak::new()
        } else {
            Arc::downgrade(&self.fd)
        };
        Ok(Arc::new(SocketShutdown {
            fd,
            name: self.name.clone(),
        }))
    }

    fn set_delay(&mut self, enabled: bool) -> Result<()> {
        let sock = self.sock()?;
        if self.kind != Kind::Tcp || self.is_listener() {
            return Ok(());
        }
        sock.set_nodelay(!enabled)
            .map_err(|e| Error::os(&self.name, "set TCP_NODELAY", e))
    }

    fn set_cork(&mut self, enabled: bool) -> Result<()> {
        let sock = self.sock()?;
        if self.kind != Kind::Tcp || self.is_listener() {
            return Ok(());
        }
        sock.set_cork(enabled)
            .map_err(|e| Error::os(&self.name, "set TCP_CORK", e))
    }

    #[doc(alias = "qio_channel_socket_flush")]
    fn flush(&mut self) -> Result<FlushOutcome> {
        let fd = self.live()?;
        self.zc.drain(fd, &self.name)?;
        Ok(self.zc.take_outcome())
    }

    /// `MSG_ZEROCOPY` needs no registration (the kernel pins the pages of
    /// each send until its completion): a no-op with zero copy enabled,
    /// [`Error::Unsupported`] without.
    unsafe fn register_region(&mut self, _region: &[u8]) -> Result<()> {
        self.live()?;
        if self.features.contains(Features::WRITE_ZERO_COPY) {
            Ok(())
        } else {
            Err(Error::unsupported(
                &self.name,
                "memory registration (zero copy is not enabled)",
            ))
        }
    }

    #[doc(alias = "qio_channel_socket_get_local_address")]
    fn local_address(&self) -> Option<SocketAddress> {
        self.addr_of(false)
    }

    #[doc(alias = "qio_channel_socket_get_remote_address")]
    fn peer_address(&self) -> Option<SocketAddress> {
        self.addr_of(true)
    }
}

impl Drop for SocketChannel {
    fn drop(&mut self) {
        // The number is freed right after; no need for a placeholder.
        let _ = self.close_inner(false);
    }
}

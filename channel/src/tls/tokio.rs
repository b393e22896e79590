//! tokio interop (cargo feature `tokio`): [`AsyncChannel`] gives any
//! [`Channel`] tokio's `AsyncRead` + `AsyncWrite`, and [`connector`] /
//! [`acceptor`] build tokio-rustls endpoints from the same [`TlsCreds`] (and
//! [`Authz`]) as [`TlsChannel`](super::TlsChannel), so a tokio program and a
//! transit one talk TLS with the same directory of credentials.
//!
//! [`AsyncChannel`] puts the channel in non-blocking mode and waits with
//! tokio's `AsyncFd` on the fd(s) of its [`WatchSource`](crate::WatchSource);
//! before waiting it always tries the channel first, so data a layer holds
//! in memory (TLS plaintext) is read without the fd becoming readable.
//! A call that would block waits for readiness in *both* directions (the
//! first write of a TLS channel runs the handshake, which must read), then
//! retries. Channels without fds (in-memory ones) are not supported. A
//! `poll_write` that returns `Pending` expects the same bytes again (the
//! rule of [`crate::io::write_all`]), as tokio's `write_all` does.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use transit_channel::tls::{tokio::{connector, server_name}, Endpoint, TlsCreds};
//!
//! let creds = TlsCreds::from_dir("/etc/pki/transit", Endpoint::Client)?;
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:4444").await?;
//! let mut tls = connector(&creds)?.connect(server_name("localhost")?, tcp).await?;
//! tls.write_all(b"hello").await?;
//! tls.shutdown().await?; // close_notify
//! # Ok(()) }
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Authz, TlsCreds};
use crate::channel::{Channel, ReadFlags, Shutdown, WatchFds, WriteFlags};
use crate::error::{Error, Result};

/// A tokio connector that checks the server as [`TlsChannel::client`]
/// does, from client credentials.
///
/// [`TlsChannel::client`]: super::TlsChannel::client
pub fn connector(creds: &TlsCreds) -> Result<TlsConnector> {
    Ok(TlsConnector::from(creds.client_config()?))
}

/// A tokio acceptor that checks clients as [`TlsChannel::server`] does,
/// from server credentials and an optional allow-list.
///
/// [`TlsChannel::server`]: super::TlsChannel::server
pub fn acceptor(creds: &TlsCreds, authz: Option<&Authz>) -> Result<TlsAcceptor> {
    Ok(TlsAcceptor::from(creds.server_config(authz)?))
}

/// The server name for [`TlsConnector::connect`]: a DNS name or an IP
/// address (IPv6 may be in brackets).
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|_| Error::Address {
        input: host.to_owned(),
        expected: "a DNS name or an IP address for the TLS server name check".to_owned(),
    })
}

/// An fd registered with tokio (the channel keeps it open).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A [`Channel`] as tokio `AsyncRead` + `AsyncWrite`; see the [module
/// documentation](self). Must be created inside a tokio runtime with I/O
/// enabled.
pub struct AsyncChannel<C: Channel> {
    // Field order matters: the registrations drop before the channel.
    read_fd: AsyncFd<Fd>,
    /// `None` when reads and writes share one fd.
    write_fd: Option<AsyncFd<Fd>>,
    ch: C,
}

impl<C: Channel> std::fmt::Debug for AsyncChannel<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncChannel")
            .field("channel", &self.ch.name())
            .finish_non_exhaustive()
    }
}

/// Register `fd` (owned by the channel of an [`AsyncChannel`]) with tokio.
fn register(name: &str, fd: RawFd) -> Result<AsyncFd<Fd>> {
    // SAFETY: `fd` is a watch fd of the channel the AsyncChannel owns; a
    // channel keeps its watch fds open while it exists and the channel is
    // not reachable mutably from outside (no `get_mut`), so nobody can
    // close it. The AsyncFd fields are declared (and so dropped) before the
    // channel, and `into_inner` drops them before handing the channel back.
    unsafe { AsyncFd::register(Fd(fd)) }
        .map_err(|e| Error::os(name, "register with tokio", io::Error::from(e)))
}

impl<C: Channel> AsyncChannel<C> {
    /// Wrap `ch`, making it non-blocking and registering its fd(s) with the
    /// current tokio runtime.
    pub fn new(mut ch: C) -> Result<AsyncChannel<C>> {
        ch.set_blocking(false)?;
        let ws = ch.watch_source();
        let (read_fd, write_fd) = match ws.fds {
            WatchFds::One(fd) => (register(ch.name(), fd)?, None),
            WatchFds::Pair { read, write } => (
                register(ch.name(), read)?,
                Some(register(ch.name(), write)?),
            ),
            WatchFds::None => {
                return Err(Error::unsupported(
                    ch.name(),
                    "tokio AsyncRead/AsyncWrite on a channel without fds",
                ))
            }
        };
        Ok(AsyncChannel {
            read_fd,
            write_fd,
            ch,
        })
    }

    /// The channel.
    pub fn get_ref(&self) -> &C {
        &self.ch
    }

    /// Unwrap the channel (still non-blocking), unregistering its fds.
    pub fn into_inner(self) -> C {
        let AsyncChannel {
            read_fd,
            write_fd,
            ch,
        } = self;
        drop(write_fd);
        drop(read_fd);
        ch
    }

    fn write_fd(&self) -> &AsyncFd<Fd> {
        self.write_fd.as_ref().unwrap_or(&self.read_fd)
    }

    /// After `WouldBlock`: wait until the fd is ready in either direction.
    /// A layer may need the other direction than the call's (a TLS
    /// handshake run by the first write must read), so both are watched;
    /// the readiness that fired is cleared before the caller retries.
    fn poll_ready_any(&self, cx: &mut Context<'_>, write_first: bool) -> Poll<io::Result<()>> {
        let (first, second) = if write_first {
            (
                self.write_fd().poll_write_ready(cx),
                self.read_fd.poll_read_ready(cx),
            )
        } else {
            (
                self.read_fd.poll_read_ready(cx),
                self.write_fd().poll_write_ready(cx),
            )
        };
        for ready in [first, second] {
            if let Poll::Ready(guard) = ready {
                guard?.clear_ready();
                return Poll::Ready(Ok(()));
            }
        }
        Poll::Pending
    }
}

fn to_io(e: Error) -> io::Error {
    e.into()
}

impl<C: Channel + Unpin> AsyncRead for AsyncChannel<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let dst = buf.initialize_unfilled();
            if dst.is_empty() {
                return Poll::Ready(Ok(()));
            }
            match this
                .ch
                .readv(&mut [IoSliceMut::new(dst)], None, ReadFlags::empty())
            {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(Error::WouldBlock) => {}
                Err(e) => return Poll::Ready(Err(to_io(e))),
            }
            ready!(this.poll_ready_any(cx, false))?;
        }
    }
}

impl<C: Channel + Unpin> AsyncWrite for AsyncChannel<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.ch.writev(bufs, &[], WriteFlags::empty()) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(Error::WouldBlock) => {}
                Err(e) => return Poll::Ready(Err(to_io(e))),
            }
            ready!(this.poll_ready_any(cx, true))?;
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Say bye (TLS close_notify, ...), then shut the write side down where
    /// the channel can.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.ch.bye() {
                Ok(()) => break,
                Err(Error::WouldBlock) => {}
                Err(e) => return Poll::Ready(Err(to_io(e))),
            }
            ready!(this.poll_ready_any(cx, true))?;
        }
        if this.ch.has_feature(crate::channel::Features::SHUTDOWN) {
            this.ch.shutdown(Shutdown::Write).map_err(to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}

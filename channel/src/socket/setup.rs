//! Creating socket channels: connect, listen, accept, adopt, pair.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::addr::{self, describe, resolve_connect, resolve_listen, to_sockaddr};
use super::{KeepAlive, Kind, ListenPath, SocketChannel};
use crate::address::SocketAddress;
use crate::channel::Features;
use crate::error::{Error, Result};

fn backlog_c(backlog: u32) -> i32 {
    i32::try_from(backlog).unwrap_or(i32::MAX)
}

/// Connect `sock` to `sa`, finishing the connect in `poll` if a signal
/// interrupted it (a blocking connect cannot simply be restarted).
fn connect_retry(sock: &Socket, sa: &SockAddr) -> io::Result<()> {
    match sock.connect(sa) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            loop {
                let mut pfd = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let r = unsafe { libc::poll(&mut pfd, 1, -1) };
                if r >= 0 {
                    break;
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            match sock.take_error()? {
                Some(err) => Err(err),
                None => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

fn kind_of(domain: Domain) -> Kind {
    if domain == Domain::IPV4 || domain == Domain::IPV6 {
        Kind::Tcp
    } else if domain == Domain::UNIX {
        Kind::Unix
    } else if domain == Domain::VSOCK {
        Kind::Vsock
    } else {
        Kind::Other
    }
}

/// Duplicate an inherited fd number (close-on-exec), leaving the original
/// to whoever owns it.
fn dup_inherited(n: i32, label: &str) -> Result<OwnedFd> {
    if n < 0 {
        return Err(Error::Address {
            input: label.to_owned(),
            expected: "a file descriptor number >= 0".to_owned(),
        });
    }
    // SAFETY: F_DUPFD_CLOEXEC only reads the fd table; if `n` is not open it
    // fails with EBADF.
    let d = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 0) };
    if d < 0 {
        return Err(Error::last_os(
            label,
            "duplicate the inherited file descriptor",
        ));
    }
    // SAFETY: `d` is a fresh fd that only we know about.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

impl SocketChannel {
    /// Connect to `addr` (blocking). A TCP host name is resolved and every
    /// address is tried in turn; the first success wins and the last error is
    /// reported. `fd:N` adopts an inherited socket as
    /// [`SocketChannel::from_address`] does.
    #[doc(alias = "qio_channel_socket_connect_sync")]
    pub fn connect_sync(addr: &SocketAddress) -> Result<SocketChannel> {
        let label = addr.to_string();
        match addr {
            SocketAddress::Inet { host, port } => {
                let targets = resolve_connect(host, *port)
                    .map_err(|e| Error::os(&label, format!("resolve {host:?}"), e))?;
                let mut last = None;
                for target in &targets {
                    match connect_tcp(*target) {
                        Ok(s) => {
                            return Ok(with_keepalive(SocketChannel::wrap(
                                s.into(),
                                Kind::Tcp,
                                false,
                                None,
                            )))
                        }
                        Err(e) => last = Some((*target, e)),
                    }
                }
                let (target, err) = last.unwrap_or_else(|| {
                    (
                        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port),
                        io::Error::new(io::ErrorKind::NotFound, "no addresses"),
                    )
                });
                let wanted = if host.is_empty() {
                    format!("localhost:{port}")
                } else {
                    label.trim_start_matches("tcp:").to_owned()
                };
                let shown = SocketAddress::from(target).to_string();
                let shown = shown.trim_start_matches("tcp:");
                let op = if targets.len() == 1 && shown == wanted {
                    format!("connect to {wanted}")
                } else {
                    format!(
                        "connect to {wanted} ({} addresses tried, the last was {shown})",
                        targets.len()
                    )
                };
                Err(Error::os(&label, op, err))
            }
            SocketAddress::Fd(n) => SocketChannel::adopt(dup_inherited(*n, &label)?, Some(&label)),
            SocketAddress::Unix(_)
            | SocketAddress::UnixAbstract(_)
            | SocketAddress::Vsock { .. } => {
                let (domain, kind) = match addr {
                    SocketAddress::Vsock { .. } => (Domain::VSOCK, Kind::Vsock),
                    _ => (Domain::UNIX, Kind::Unix),
                };
                let sa = direct_sockaddr(addr, &label)?;
                let sock = Socket::new(domain, Type::STREAM, None)
                    .map_err(|e| Error::os(&label, "create socket", e))?;
                connect_retry(&sock, &sa).map_err(|e| Error::os(&label, "connect", e))?;
                Ok(SocketChannel::wrap(sock.into(), kind, false, None))
            }
        }
    }

    /// Listen on `addr` with `backlog` pending connections (blocking).
    ///
    /// TCP: one socket, on the numeric host or the first address the name
    /// resolves to; an empty host listens on `[::]` dual-stack (falling back
    /// to `0.0.0.0` without IPv6). `SO_REUSEADDR` is set. Use
    /// [`SocketChannel::listen_on`] to choose the address and `IPV6_V6ONLY`.
    /// UNIX path: a stale socket file at the path (one that refuses a
    /// connect) is removed first; a socket something still listens on is
    /// an [`Error::Os`] with `EADDRINUSE` ("in use"), as is any other kind
    /// of file. The path is unlinked again when the listener closes. `fd:N` puts an inherited socket in listening
    /// state.
    #[doc(alias = "qio_channel_socket_listen_sync")]
    pub fn listen_sync(addr: &SocketAddress, backlog: u32) -> Result<SocketChannel> {
        let label = addr.to_string();
        match addr {
            SocketAddress::Inet { host, port } if host.is_empty() => {
                let v6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), *port);
                match SocketChannel::listen_on(v6, backlog, Some(false)) {
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                        ) =>
                    {
                        let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port);
                        SocketChannel::listen_on(v4, backlog, None)
                    }
                    other => other,
                }
            }
            SocketAddress::Inet { host, port } => {
                let sa = resolve_listen(host, *port).map_err(|e| {
                    Error::os(&format!("listen {label}"), format!("resolve {host:?}"), e)
                })?;
                SocketChannel::listen_on(sa, backlog, None)
            }
            SocketAddress::Unix(path) => listen_unix(addr, path, backlog),
            SocketAddress::UnixAbstract(_) | SocketAddress::Vsock { .. } => {
                let name = format!("listen {label}");
                let (domain, kind) = match addr {
                    SocketAddress::Vsock { .. } => (Domain::VSOCK, Kind::Vsock),
                    _ => (Domain::UNIX, Kind::Unix),
                };
                let sa = direct_sockaddr(addr, &name)?;
                let sock = Socket::new(domain, Type::STREAM, None)
                    .map_err(|e| Error::os(&name, "create socket", e))?;
                sock.bind(&sa).map_err(|e| Error::os(&name, "bind", e))?;
                sock.listen(backlog_c(backlog))
                    .map_err(|e| Error::os(&name, "listen", e))?;
                Ok(SocketChannel::wrap(sock.into(), kind, true, None))
            }
            SocketAddress::Fd(n) => {
                let fd = dup_inherited(*n, &label)?;
                let sock = SockRef::from(&fd);
                if let Err(e) = sock.listen(backlog_c(backlog)) {
                    return Err(Error::os(&label, "listen on the inherited socket", e));
                }
                SocketChannel::adopt(fd, Some(&label))
            }
        }
    }

    /// Listen on one numeric TCP address. `v6only` sets `IPV6_V6ONLY` on an
    /// IPv6 socket (`None` keeps the system default); `SO_REUSEADDR` is set.
    pub fn listen_on(
        addr: SocketAddr,
        backlog: u32,
        v6only: Option<bool>,
    ) -> Result<SocketChannel> {
        let name = format!("listen {}", SocketAddress::from(addr));
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| Error::os(&name, "create socket", e))?;
        sock.set_reuse_address(true)
            .map_err(|e| Error::os(&name, "set SO_REUSEADDR", e))?;
        if let (SocketAddr::V6(_), Some(only)) = (addr, v6only) {
            sock.set_only_v6(only)
                .map_err(|e| Error::os(&name, "set IPV6_V6ONLY", e))?;
        }
        sock.bind(&addr.into())
            .map_err(|e| Error::os(&name, "bind", e))?;
        sock.listen(backlog_c(backlog))
            .map_err(|e| Error::os(&name, "listen", e))?;
        Ok(SocketChannel::wrap(sock.into(), Kind::Tcp, true, None))
    }

    /// Accept one connection (blocking unless the listener is non-blocking,
    /// then [`Error::WouldBlock`]). `EINTR` is retried; the new socket is
    /// close-on-exec and blocking.
    #[doc(alias = "qio_channel_socket_accept")]
    pub fn accept(&mut self) -> Result<SocketChannel> {
        let sock = self.sock()?;
        if !self.is_listener() {
            return Err(Error::unsupported(
                &self.name,
                "accept on a socket that is not listening",
            ));
        }
        let conn = loop {
            match sock.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::os(&self.name, "accept", e)),
            }
        };
        Ok(with_keepalive(SocketChannel::wrap(
            conn.into(),
            self.kind,
            false,
            None,
        )))
    }

    /// Adopt a socket fd (connected, listening, or neither). A fd that is
    /// not a stream socket is refused (and closed).
    ///
    /// Features follow the socket: `LISTEN` if it listens, `READ_MSG_PEEK`
    /// if it is connected, `FD_PASS` for UNIX sockets.
    #[doc(alias = "qio_channel_socket_new_fd")]
    pub fn from_fd(fd: OwnedFd) -> Result<SocketChannel> {
        SocketChannel::adopt(fd, None)
    }

    /// Adopt the inherited socket named by `fd:N`.
    ///
    /// The number is duplicated (close-on-exec) and the duplicate adopted, so
    /// this never takes ownership of an fd it cannot prove it owns; the
    /// original number stays open. Closing the channel still ends the
    /// connection for both (it shuts the socket down). To take over the
    /// number itself, wrap it in an `OwnedFd` and use
    /// [`SocketChannel::from_fd`]. Other address kinds are an
    /// [`Error::Address`].
    pub fn from_address(addr: &SocketAddress) -> Result<SocketChannel> {
        match addr {
            SocketAddress::Fd(n) => {
                let label = addr.to_string();
                SocketChannel::adopt(dup_inherited(*n, &label)?, Some(&label))
            }
            other => Err(Error::Address {
                input: other.to_string(),
                expected: "fd:N (use connect_sync or listen_sync for other addresses)".to_owned(),
            }),
        }
    }

    /// A connected pair of UNIX stream sockets (`socketpair`), named
    /// `socketpair[0]` and `socketpair[1]`.
    pub fn pair() -> Result<(SocketChannel, SocketChannel)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)
            .map_err(|e| Error::os("socketpair", "socketpair(AF_UNIX, SOCK_STREAM)", e))?;
        Ok((
            SocketChannel::wrap(a.into(), Kind::Unix, false, Some("socketpair[0]".into())),
            SocketChannel::wrap(b.into(), Kind::Unix, false, Some("socketpair[1]".into())),
        ))
    }

    fn adopt(fd: OwnedFd, label: Option<&str>) -> Result<SocketChannel> {
        let raw: RawFd = fd.as_raw_fd();
        let who = label.map_or_else(|| format!("fd {raw}"), str::to_owned);
        let sock = SockRef::from(&fd);
        let ty = sock
            .r#type()
            .map_err(|e| Error::os(&who, "adopt file descriptor (it must be a socket)", e))?;
        if ty != Type::STREAM && ty != Type::SEQPACKET {
            return Err(Error::unsupported(
                &who,
                "sockets other than stream or seqpacket sockets",
            ));
        }
        let listening = sock
            .is_listener()
            .map_err(|e| Error::os(&who, "query SO_ACCEPTCONN", e))?;
        let domain = sock
            .domain()
            .map_err(|e| Error::os(&who, "query SO_DOMAIN", e))?;
        let connected = sock.peer_addr().is_ok();
        let mut name = describe(&sock, listening);
        if let Some(l) = label {
            name = format!("{l} {name}");
        }
        let mut ch = SocketChannel::wrap(fd, kind_of(domain), listening, Some(name));
        if !listening && !connected {
            ch.features.remove(Features::READ_MSG_PEEK);
        }
        Ok(ch)
    }
}

/// The kernel address of a UNIX, abstract or vsock address.
fn direct_sockaddr(addr: &SocketAddress, name: &str) -> Result<SockAddr> {
    match to_sockaddr(addr) {
        Some(r) => r.map_err(|e| Error::os(name, "build the socket address", e)),
        None => Err(Error::Address {
            input: addr.to_string(),
            expected: "a UNIX, abstract or vsock address".to_owned(),
        }),
    }
}

/// Turn on [`KeepAlive::DEFAULT`] on a connected TCP socket (no-op for
/// other kinds). Best effort: a socket that refuses the option still
/// works, it only loses the early detection of a dead peer.
fn with_keepalive(mut ch: SocketChannel) -> SocketChannel {
    if ch.kind == Kind::Tcp {
        let _ = ch.set_keepalive(Some(KeepAlive::DEFAULT));
    }
    ch
}

fn connect_tcp(target: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    connect_retry(&sock, &target.into())?;
    Ok(sock)
}

/// What a connect to an existing UNIX socket path found.
enum Probe {
    /// Nobody listens (`ECONNREFUSED`), or the path went away.
    Stale,
    /// Something accepted the connection or has a full backlog.
    Live,
    /// The connect failed otherwise (no permission, ...).
    Unknown(io::Error),
}

/// Connect to `sa` without blocking and hang up at once.
fn probe_unix(sa: &SockAddr) -> Probe {
    let sock = match Socket::new(Domain::UNIX, Type::STREAM, None) {
        Ok(s) => s,
        Err(e) => return Probe::Unknown(e),
    };
    if let Err(e) = sock.set_nonblocking(true) {
        return Probe::Unknown(e);
    }
    match sock.connect(sa) {
        Ok(()) => Probe::Live,
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED | libc::ENOENT) => Probe::Stale,
            // A full backlog, or a socket of another type bound there.
            Some(libc::EAGAIN | libc::EINPROGRESS | libc::EPROTOTYPE) => Probe::Live,
            _ => Probe::Unknown(e),
        },
    }
}

fn listen_unix(addr: &SocketAddress, path: &Path, backlog: u32) -> Result<SocketChannel> {
    let name = format!("listen {addr}");
    let sa = addr::unix_sockaddr(
        std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()),
        false,
    )
    .map_err(|e| Error::os(&name, "build the socket address", e))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A live listener answers a connect: taking its path over would
            // steal its clients. Only a socket nobody answers is stale.
            match probe_unix(&sa) {
                Probe::Stale => {}
                Probe::Live => {
                    return Err(Error::os(
                        &name,
                        format!(
                            "bind ({} is in use: another process listens on it)",
                            path.display()
                        ),
                        io::Error::from_raw_os_error(libc::EADDRINUSE),
                    ));
                }
                Probe::Unknown(e) => {
                    return Err(Error::os(
                        &name,
                        format!(
                            "bind ({} exists and cannot be probed, so it may be in use)",
                            path.display()
                        ),
                        e,
                    ));
                }
            }
            std::fs::remove_file(path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(Error::os(&name, "remove the stale socket file", e)),
            })?;
        }
        Ok(_) => {
            return Err(Error::os(
                &name,
                format!("bind ({} exists and is not a socket)", path.display()),
                io::Error::from_raw_os_error(libc::EADDRINUSE),
            ));
        }
        Err(_) => {} // absent (or unreadable: bind will say why)
    }
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| Error::os(&name, "create socket", e))?;
    sock.bind(&sa).map_err(|e| Error::os(&name, "bind", e))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        let _ = std::fs::remove_file(path);
        Error::os(&name, "stat the bound socket path", e)
    })?;
    let listen_path = ListenPath {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    if let Err(e) = sock.listen(backlog_c(backlog)) {
        let _ = std::fs::remove_file(path);
        return Err(Error::os(&name, "listen", e));
    }
    let mut ch = SocketChannel::wrap(sock.into(), Kind::Unix, true, None);
    ch.listen_path = Some(listen_path);
    Ok(ch)
}

//! Conversions between [`SocketAddress`] and kernel socket addresses, name
//! resolution for connect and listen, and default channel names.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;

use socket2::{SockAddr, SockRef};

use crate::address::{SocketAddress, UNIX_ABSTRACT_MAX, UNIX_PATH_MAX};

/// Resolve `host` for an outgoing connection: every address, in the order to
/// try them. An empty host is the local host (as `getaddrinfo(NULL, ...)`).
///
/// Names go through the process-wide [`crate::dns::Resolver`] (hosts file,
/// then DNS, bounded in time); numeric hosts need no lookup. An empty host
/// means the local machine: 127.0.0.1, then ::1.
pub(crate) fn resolve_connect(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if host.is_empty() {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    let addrs = crate::dns::Resolver::global()
        .lookup_connect(host, port)
        .map_err(io::Error::from)?;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no addresses"),
        ));
    }
    Ok(addrs)
}

/// Resolve `host` for listening: the numeric address, or the first address
/// the name resolves to. (The empty wildcard is handled by the caller.)
pub(crate) fn resolve_listen(host: &str, port: u16) -> io::Result<SocketAddr> {
    let addrs = resolve_connect(host, port)?;
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no addresses")))
}

/// A `sockaddr_un` for a path (`abstract_ = false`, at most 108 bytes, NUL
/// terminated when it fits) or an abstract name (at most 107 bytes, tight
/// length: exactly the name, no trailing NULs).
pub(crate) fn unix_sockaddr(bytes: &[u8], abstract_: bool) -> io::Result<SockAddr> {
    let max = if abstract_ {
        UNIX_ABSTRACT_MAX
    } else {
        UNIX_PATH_MAX
    };
    if bytes.len() > max || (!abstract_ && (bytes.is_empty() || bytes.contains(&0))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "UNIX socket {} must be 1-{max} bytes without NUL",
                if abstract_ { "name" } else { "path" }
            ),
        ));
    }
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let off = mem::offset_of!(libc::sockaddr_un, sun_path);
    let start = usize::from(abstract_);
    {
        // SAFETY: sockaddr_storage is larger than and aligned at least as
        // strictly as sockaddr_un; we only write plain integers into it.
        let un = unsafe { &mut *ptr::addr_of_mut!(storage).cast::<libc::sockaddr_un>() };
        un.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, &b) in un.sun_path[start..].iter_mut().zip(bytes) {
            *dst = b as libc::c_char;
        }
    }
    // A path gets its terminating NUL when there is room for it.
    let nul = usize::from(!abstract_ && bytes.len() < UNIX_PATH_MAX);
    let len = off + start + bytes.len() + nul;
    // SAFETY: `storage` holds a sockaddr_un whose first `len` bytes are
    // initialised (the rest are zero) and `len <= size_of::<sockaddr_un>()`.
    Ok(unsafe { SockAddr::new(storage, len as libc::socklen_t) })
}

/// The kernel address of a [`SocketAddress`] that needs no resolution.
/// `None` for TCP names and `fd:`.
pub(crate) fn to_sockaddr(addr: &SocketAddress) -> Option<io::Result<SockAddr>> {
    match addr {
        SocketAddress::Inet { .. } => addr.to_socket_addr().map(|a| Ok(SockAddr::from(a))),
        SocketAddress::Unix(p) => Some(unix_sockaddr(p.as_os_str().as_bytes(), false)),
        SocketAddress::UnixAbstract(n) => Some(unix_sockaddr(n, true)),
        SocketAddress::Vsock { cid, port } => Some(Ok(SockAddr::vsock(*cid, *port))),
        SocketAddress::Fd(_) => None,
    }
}

/// The [`SocketAddress`] of a kernel address; `None` for unnamed UNIX
/// sockets and unknown families.
pub(crate) fn from_sockaddr(sa: &SockAddr) -> Option<SocketAddress> {
    if let Some(a) = sa.as_socket() {
        return Some(a.into());
    }
    if let Some((cid, port)) = sa.as_vsock_address() {
        return Some(SocketAddress::Vsock { cid, port });
    }
    if sa.family() != libc::AF_UNIX as libc::sa_family_t {
        return None;
    }
    let off = mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = (sa.len() as usize).min(mem::size_of::<libc::sockaddr_un>());
    if len <= off {
        return None; // unnamed
    }
    // SAFETY: the family is AF_UNIX, so the storage holds a sockaddr_un;
    // the storage is at least as large and as aligned as sockaddr_un.
    let un = unsafe { &*sa.as_ptr().cast::<libc::sockaddr_un>() };
    let raw: Vec<u8> = un.sun_path[..len - off].iter().map(|&c| c as u8).collect();
    if raw[0] == 0 {
        return Some(SocketAddress::UnixAbstract(raw[1..].to_vec()));
    }
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(SocketAddress::Unix(PathBuf::from(
        std::ffi::OsStr::from_bytes(&raw[..end]),
    )))
}

/// `HOST:PORT` of a TCP address (brackets around IPv6), or the URI.
fn endpoint(addr: &SocketAddress) -> String {
    match addr {
        SocketAddress::Inet { host, port } if host.contains(':') => format!("[{host}]:{port}"),
        SocketAddress::Inet { host, port } => format!("{host}:{port}"),
        SocketAddress::Vsock { cid, port } => format!("{cid}:{port}"),
        other => other.to_string(),
    }
}

/// The default name of a socket: `tcp 127.0.0.1:5000->127.0.0.1:40000`
/// (local->peer), `unix:/path` (the named end), `listen tcp:0.0.0.0:5000`.
pub(crate) fn describe(sock: &SockRef<'_>, listening: bool) -> String {
    let local = sock.local_addr().ok().and_then(|a| from_sockaddr(&a));
    if listening {
        return match local {
            Some(l) => format!("listen {l}"),
            None => "listen socket".to_owned(),
        };
    }
    let peer = sock.peer_addr().ok().and_then(|a| from_sockaddr(&a));
    let show = |a: &Option<SocketAddress>| a.as_ref().map_or("?".to_owned(), endpoint);
    match (&local, &peer) {
        (Some(SocketAddress::Inet { .. }), _) => format!("tcp {}->{}", show(&local), show(&peer)),
        (Some(SocketAddress::Vsock { .. }), _) => {
            format!("vsock {}->{}", show(&local), show(&peer))
        }
        (_, Some(p @ (SocketAddress::Unix(_) | SocketAddress::UnixAbstract(_)))) => p.to_string(),
        (Some(l @ (SocketAddress::Unix(_) | SocketAddress::UnixAbstract(_))), _) => l.to_string(),
        _ => match sock.domain() {
            Ok(d) if d == socket2::Domain::UNIX => "unix socket (unnamed)".to_owned(),
            _ => "socket".to_owned(),
        },
    }
}

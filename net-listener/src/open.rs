//! Listening on every resolved address: dual-stack with a `V6ONLY` retry,
//! one shared port when the kernel picks it.

use std::net::{IpAddr, SocketAddr};

use transit_channel::socket::SocketChannel;
use transit_channel::{Channel, Error, Result, SocketAddress};

/// How many times a set of addresses on port 0 is retried when the port the
/// kernel gave the first socket is taken on another address.
const PORT0_ATTEMPTS: usize = 8;

/// Listen on every address in `resolved` (the resolver's answer for
/// `requested`). Succeeds if at least one listens; otherwise returns the
/// first error. A wildcard address (`0.0.0.0`, `::`) whose port another
/// socket holds (`EADDRINUSE`) fails the whole call, even if the other
/// family listens: `tcp::PORT` means both families.
pub(crate) fn listen_all(
    name: &str,
    requested: &SocketAddress,
    resolved: &[SocketAddress],
    backlog: u32,
) -> Result<Vec<SocketChannel>> {
    let mut opened = Vec::new();
    let mut first_err: Option<Error> = None;
    let mut inet = Vec::new();
    for addr in resolved {
        match addr {
            SocketAddress::Inet { host, port } => match host.parse::<IpAddr>() {
                Ok(ip) => inet.push(SocketAddr::new(ip, *port)),
                Err(_) => {
                    first_err.get_or_insert_with(|| {
                        Error::protocol(
                            name,
                            format!("the resolver returned a non-numeric host {host:?}"),
                        )
                    });
                }
            },
            other => match SocketChannel::listen_sync(other, backlog) {
                Ok(sock) => opened.push(sock),
                Err(e) => {
                    first_err.get_or_insert(context(e, name, other));
                }
            },
        }
    }

    if !inet.is_empty() {
        let shared_port = inet.len() > 1 && inet.iter().all(|a| a.port() == 0);
        let attempts = if shared_port { PORT0_ATTEMPTS } else { 1 };
        for attempt in 1..=attempts {
            let set = listen_inet_set(name, &inet, backlog, shared_port);
            if set.port_taken && attempt < attempts {
                // Close this set and ask the kernel for another port.
                for mut sock in set.socks {
                    let _ = sock.close();
                }
                continue;
            }
            if let Some(e) = set.in_use {
                // Listening on the other family alone would hand part of
                // the clients to whoever holds the port.
                for mut sock in set.socks.into_iter().chain(opened) {
                    let _ = sock.close();
                }
                return Err(e);
            }
            opened.extend(set.socks);
            if let Some(e) = set.first_err {
                first_err.get_or_insert(e);
            }
            break;
        }
    }

    if opened.is_empty() {
        return Err(first_err.unwrap_or_else(|| {
            Error::protocol(name, format!("{requested} resolved to no address"))
        }));
    }
    Ok(opened)
}

/// The outcome of one pass over the inet addresses.
struct InetSet {
    socks: Vec<SocketChannel>,
    first_err: Option<Error>,
    /// With a shared kernel port: a later address found that port taken.
    port_taken: bool,
    /// A wildcard address whose port another socket holds: the whole open
    /// fails with this error.
    in_use: Option<Error>,
}

fn listen_inet_set(name: &str, addrs: &[SocketAddr], backlog: u32, shared_port: bool) -> InetSet {
    let mut set = InetSet {
        socks: Vec::new(),
        first_err: None,
        port_taken: false,
        in_use: None,
    };
    let mut port: Option<u16> = None;
    for &addr in addrs {
        let mut addr = addr;
        if let (true, Some(p)) = (shared_port, port) {
            addr.set_port(p);
        }
        match listen_one(addr, backlog) {
            Ok(sock) => {
                if port.is_none() {
                    port = match sock.local_address() {
                        Some(SocketAddress::Inet { port, .. }) => Some(port),
                        _ => None,
                    };
                }
                set.socks.push(sock);
            }
            Err(e) => {
                if shared_port && port.is_some() && e.raw_os_error() == Some(libc::EADDRINUSE) {
                    set.port_taken = true;
                }
                let requested = SocketAddress::Inet {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                };
                if !set.port_taken
                    && e.raw_os_error() == Some(libc::EADDRINUSE)
                    && addr.ip().is_unspecified()
                    && !held_by_own_dual_stack(&set.socks, addr)
                {
                    set.in_use
                        .get_or_insert_with(|| in_use(name, &requested, e));
                    continue;
                }
                set.first_err.get_or_insert(context(e, name, &requested));
            }
        }
    }
    set
}

/// True if `addr` (an IPv4 wildcard) collides only with our own
/// dual-stack `::` socket on the same port, which serves IPv4 already.
fn held_by_own_dual_stack(socks: &[SocketChannel], addr: SocketAddr) -> bool {
    addr.is_ipv4()
        && socks.iter().any(|s| {
            matches!(
                s.local_address(),
                Some(SocketAddress::Inet { host, port }) if host == "::" && port == addr.port()
            )
        })
}

/// The error for a wildcard address whose port is taken.
fn in_use(name: &str, addr: &SocketAddress, e: Error) -> Error {
    let (family, other) = match addr {
        SocketAddress::Inet { host, .. } if host.contains(':') => ("IPv6", "IPv4"),
        _ => ("IPv4", "IPv6"),
    };
    match e {
        Error::Os { source, .. } => Error::Os {
            channel: name.to_owned(),
            op: format!(
                "listen on {addr}: {family} bind (another socket holds the port; \
                 not listening on {other} alone)"
            ),
            source,
        },
        other => other,
    }
}

/// Listen on one inet address. IPv6 first tries dual-stack; if that
/// collides with an IPv4 socket on the same port, `IPV6_V6ONLY`.
fn listen_one(addr: SocketAddr, backlog: u32) -> Result<SocketChannel> {
    if addr.is_ipv6() {
        match SocketChannel::listen_on(addr, backlog, Some(false)) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                SocketChannel::listen_on(addr, backlog, Some(true))
            }
            other => other,
        }
    } else {
        SocketChannel::listen_on(addr, backlog, None)
    }
}

/// Name the listener and the address in a listen error.
fn context(e: Error, name: &str, addr: &SocketAddress) -> Error {
    match e {
        Error::Os { op, source, .. } => Error::Os {
            channel: name.to_owned(),
            op: format!("listen on {addr}: {op}"),
            source,
        },
        Error::Protocol { message, .. } => {
            Error::protocol(name, format!("listen on {addr}: {message}"))
        }
        other => other,
    }
}

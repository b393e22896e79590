//! Endpoint addresses and their URI grammar.
//!
//! A [`SocketAddress`] names where a socket channel connects or listens. It
//! parses from and prints to a short URI that follows QEMU and socat habits,
//! and the two round-trip: `addr.to_string().parse() == Ok(addr)`.
//!
//! | URI | meaning |
//! |---|---|
//! | `tcp:HOST:PORT` | TCP; HOST is a name, an IPv4 address or an IPv6 address in brackets (`tcp:[::1]:4444`) |
//! | `tcp::PORT` | TCP on the wildcard address (listen) or the local host (connect) |
//! | `unix:PATH` | UNIX socket in the file system; PATH is at most 108 bytes (`sun_path`) |
//! | `unix-abstract:NAME` | Linux abstract UNIX socket; NAME is at most 107 bytes |
//! | `vsock:CID:PORT` | virtio vsock; CID and PORT are decimal `u32` |
//! | `fd:N` | an inherited socket file descriptor |
//!
//! Port 0 asks the kernel for a free port when listening. Abstract names may
//! hold any byte: bytes outside printable ASCII, and the backslash itself,
//! print as `\xNN` and parse back. UNIX paths print as given; a path that is
//! not UTF-8 prints lossily (it cannot come from a string either).
//!
//! Parse errors are [`Error::Address`]: they quote the input and say what was
//! expected (a missing port, a port out of range, an unknown scheme and the
//! known ones, an unbalanced bracket, a path too long for `sun_path`, ...).
//!
//! # Example
//!
//! ```
//! use transit_channel::SocketAddress;
//!
//! let a: SocketAddress = "tcp:[::1]:4444".parse()?;
//! assert_eq!(a, SocketAddress::inet("::1", 4444));
//! assert_eq!(a.to_string(), "tcp:[::1]:4444");
//!
//! let w: SocketAddress = "tcp::5000".parse()?;
//! assert!(w.is_wildcard());
//!
//! let err = "tcp:localhost".parse::<SocketAddress>().unwrap_err();
//! assert!(err.to_string().contains("port"));
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::Error;

/// Longest UNIX socket path: the size of `sun_path`.
pub const UNIX_PATH_MAX: usize = 108;

/// Longest abstract UNIX socket name: `sun_path` minus the leading NUL.
pub const UNIX_ABSTRACT_MAX: usize = UNIX_PATH_MAX - 1;

/// The URI schemes [`SocketAddress`] understands, as listed in errors.
pub const SCHEMES: &str = "tcp:HOST:PORT, unix:PATH, unix-abstract:NAME, vsock:CID:PORT or fd:N";

/// Where a socket channel connects or listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddress {
    /// `tcp:HOST:PORT`: a host name or numeric address (IPv6 without
    /// brackets here) and a port. An empty host means the wildcard.
    Inet {
        /// Host name or numeric address; empty for the wildcard.
        host: String,
        /// Port number; 0 asks the kernel for one when listening.
        port: u16,
    },
    /// `unix:PATH`: a UNIX socket in the file system.
    Unix(PathBuf),
    /// `unix-abstract:NAME`: a Linux abstract UNIX socket.
    UnixAbstract(Vec<u8>),
    /// `vsock:CID:PORT`.
    Vsock {
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
    /// `fd:N`: an inherited file descriptor.
    Fd(i32),
}

impl SocketAddress {
    /// A TCP address. `host` is a name or a numeric address (IPv6 without
    /// brackets); empty means the wildcard.
    pub fn inet(host: impl Into<String>, port: u16) -> SocketAddress {
        SocketAddress::Inet {
            host: host.into(),
            port,
        }
    }

    /// A UNIX socket path.
    pub fn unix(path: impl Into<PathBuf>) -> SocketAddress {
        SocketAddress::Unix(path.into())
    }

    /// A Linux abstract UNIX socket name.
    pub fn unix_abstract(name: impl Into<Vec<u8>>) -> SocketAddress {
        SocketAddress::UnixAbstract(name.into())
    }

    /// A vsock address.
    pub fn vsock(cid: u32, port: u32) -> SocketAddress {
        SocketAddress::Vsock { cid, port }
    }

    /// True for a TCP address whose host is empty, `0.0.0.0` or `::`.
    pub fn is_wildcard(&self) -> bool {
        match self {
            SocketAddress::Inet { host, .. } => {
                host.is_empty()
                    || host
                        .parse::<IpAddr>()
                        .map(|ip| ip.is_unspecified())
                        .unwrap_or(false)
            }
            _ => false,
        }
    }

    /// The TCP or vsock port, if the address has one.
    pub fn port(&self) -> Option<u32> {
        match self {
            SocketAddress::Inet { port, .. } => Some(u32::from(*port)),
            SocketAddress::Vsock { port, .. } => Some(*port),
            _ => None,
        }
    }

    /// The numeric socket address of a TCP address whose host is an IP
    /// address (no name lookup). `None` for names, the empty wildcard and
    /// non-TCP addresses.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        match self {
            SocketAddress::Inet { host, port } => host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, *port)),
            _ => None,
        }
    }

    /// Check that the address could be printed and parsed back: a UNIX path
    /// that fits `sun_path`, an abstract name that fits, a host without
    /// characters the grammar cannot carry.
    pub fn validate(&self) -> Result<(), Error> {
        let input = self.to_string();
        match self {
            SocketAddress::Inet { host, .. } => check_host(&input, host, host.contains(':')),
            SocketAddress::Unix(path) => check_unix_path(&input, path),
            SocketAddress::UnixAbstract(name) => check_abstract(&input, name.len()),
            SocketAddress::Vsock { .. } => Ok(()),
            SocketAddress::Fd(n) if *n < 0 => Err(bad(&input, "a file descriptor number >= 0")),
            SocketAddress::Fd(_) => Ok(()),
        }
    }
}

impl From<SocketAddr> for SocketAddress {
    /// A numeric TCP address. A non-zero IPv6 scope id is kept as
    /// `%SCOPE` in the host.
    fn from(addr: SocketAddr) -> SocketAddress {
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) if a.scope_id() != 0 => format!("{}%{}", a.ip(), a.scope_id()),
            SocketAddr::V6(a) => a.ip().to_string(),
        };
        SocketAddress::Inet {
            host,
            port: addr.port(),
        }
    }
}

impl From<std::net::SocketAddrV4> for SocketAddress {
    fn from(addr: std::net::SocketAddrV4) -> SocketAddress {
        SocketAddr::V4(addr).into()
    }
}

impl From<std::net::SocketAddrV6> for SocketAddress {
    fn from(addr: std::net::SocketAddrV6) -> SocketAddress {
        SocketAddr::V6(addr).into()
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Inet { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            SocketAddress::Inet { host, port } => write!(f, "tcp:{host}:{port}"),
            SocketAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            SocketAddress::UnixAbstract(name) => {
                f.write_str("unix-abstract:")?;
                for &b in name {
                    if b == b'\\' || !(0x20..0x7f).contains(&b) {
                        write!(f, "\\x{b:02x}")?;
                    } else {
                        write!(f, "{}", char::from(b))?;
                    }
                }
                Ok(())
            }
            SocketAddress::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            SocketAddress::Fd(n) => write!(f, "fd:{n}"),
        }
    }
}

impl FromStr for SocketAddress {
    type Err = Error;

    fn from_str(input: &str) -> Result<SocketAddress, Error> {
        let Some((scheme, rest)) = input.split_once(':') else {
            return Err(bad(
                input,
                format!("SCHEME:... where SCHEME is one of {SCHEMES}"),
            ));
        };
        match scheme {
            "tcp" => parse_tcp(input, rest),
            "unix" => {
                let path = Path::new(rest);
                check_unix_path(input, path)?;
                Ok(SocketAddress::Unix(path.to_path_buf()))
            }
            "unix-abstract" => {
                let name = unescape(input, rest)?;
                check_abstract(input, name.len())?;
                Ok(SocketAddress::UnixAbstract(name))
            }
            "vsock" => {
                let Some((cid, port)) = rest.split_once(':') else {
                    return Err(bad(input, "vsock:CID:PORT (missing port)"));
                };
                let cid = parse_u32(input, cid, "a vsock CID (decimal 0-4294967295)")?;
                let port = parse_u32(input, port, "a vsock port (decimal 0-4294967295)")?;
                Ok(SocketAddress::Vsock { cid, port })
            }
            "fd" => {
                if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(input, "fd:N with N a decimal file descriptor number"));
                }
                let n = rest
                    .parse::<i32>()
                    .map_err(|_| bad(input, "a file descriptor number at most 2147483647"))?;
                Ok(SocketAddress::Fd(n))
            }
            other => Err(bad(
                input,
                format!("a known scheme, not {other:?}: one of {SCHEMES}"),
            )),
        }
    }
}

fn bad(input: &str, expected: impl Into<String>) -> Error {
    Error::Address {
        input: input.to_owned(),
        expected: expected.into(),
    }
}

fn parse_tcp(input: &str, rest: &str) -> Result<SocketAddress, Error> {
    let (host, port, bracketed) = if let Some(after) = rest.strip_prefix('[') {
        let Some((host, tail)) = after.split_once(']') else {
            return Err(bad(
                input,
                "a closing ']' after the IPv6 address (tcp:[ADDR]:PORT)",
            ));
        };
        let Some(port) = tail.strip_prefix(':') else {
            return Err(bad(input, "':PORT' after ']' (tcp:[ADDR]:PORT)"));
        };
        (host, port, true)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(bad(input, "tcp:HOST:PORT (missing port)"));
        };
        if host.contains(':') {
            return Err(bad(
                input,
                "an IPv6 address in brackets, like tcp:[::1]:4444",
            ));
        }
        if host.contains(']') {
            return Err(bad(input, "an opening '[' before ']' (tcp:[ADDR]:PORT)"));
        }
        (host, port, false)
    };
    check_host(input, host, bracketed)?;
    if port.is_empty() {
        return Err(bad(
            input,
            "a port number after the last ':' (missing port)",
        ));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(input, format!("a decimal port number, not {port:?}")));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| bad(input, format!("a port in 0-65535, not {port}")))?;
    Ok(SocketAddress::Inet {
        host: host.to_owned(),
        port,
    })
}

/// `host` is bracketed (or would print bracketed) when it holds a ':'.
fn check_host(input: &str, host: &str, bracketed: bool) -> Result<(), Error> {
    if bracketed {
        let ip = host.split_once('%').map_or(host, |(ip, _)| ip);
        let scope_ok = host
            .split_once('%')
            .is_none_or(|(_, s)| !s.is_empty() && s.bytes().all(is_name_byte));
        if ip.parse::<Ipv6Addr>().is_err() || !scope_ok {
            return Err(bad(
                input,
                format!("an IPv6 address inside the brackets, not {host:?}"),
            ));
        }
        return Ok(());
    }
    if let Some(b) = host.bytes().find(|&b| !is_name_byte(b)) {
        return Err(bad(
            input,
            format!(
                "a host name or IPv4 address (letters, digits, '.', '-', '_'), found {:?}",
                char::from(b)
            ),
        ));
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

fn check_unix_path(input: &str, path: &Path) -> Result<(), Error> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(bad(input, "a socket path after 'unix:'"));
    }
    if bytes.contains(&0) {
        return Err(bad(input, "a socket path without NUL bytes"));
    }
    if bytes.len() > UNIX_PATH_MAX {
        return Err(bad(
            input,
            format!(
                "a socket path of at most {UNIX_PATH_MAX} bytes (sun_path), not {}",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

fn check_abstract(input: &str, len: usize) -> Result<(), Error> {
    if len > UNIX_ABSTRACT_MAX {
        return Err(bad(
            input,
            format!("an abstract socket name of at most {UNIX_ABSTRACT_MAX} bytes, not {len}"),
        ));
    }
    Ok(())
}

fn parse_u32(input: &str, s: &str, what: &str) -> Result<u32, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(input, format!("{what}, not {s:?}")));
    }
    s.parse::<u32>()
        .map_err(|_| bad(input, format!("{what}, not {s} (out of range)")))
}

/// Decode `\xNN` escapes (the only escape; a lone backslash is an error).
fn unescape(input: &str, s: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next(), bytes.next(), bytes.next()];
        let byte = match hex {
            [Some(b'x'), Some(h), Some(l)] => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match byte {
            Some(v) => out.push(v),
            None => {
                return Err(bad(
                    input,
                    "'\\xNN' (two hex digits) after a backslash in the abstract name",
                ))
            }
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

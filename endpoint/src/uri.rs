//! Endpoints typed by people: socket addresses, `file:PATH`, websockets,
//! commands and this process' own standard streams.
//!
//! `tcp:HOST:PORT`, `unix:PATH`, `unix-abstract:NAME`, `vsock:CID:PORT` and
//! `fd:N` are [`SocketAddress`]es (parsed by transit-channel);
//! `file:PATH` holds the payload bytes; `ws://HOST:PORT/PATH` and
//! `wss://HOST:PORT/PATH` carry the stream in websocket frames (over TLS for
//! `wss://`); `exec:COMMAND` runs `/bin/sh -c COMMAND` and talks to its
//! stdin and stdout; `stdio:` is this process' stdin and stdout (the far end
//! of `exec:`).
//!
//! ```
//! use transit_endpoint::Endpoint;
//!
//! assert!(matches!(Endpoint::parse("tcp:127.0.0.1:4444"), Ok(Endpoint::Socket(_))));
//! assert!(matches!(Endpoint::parse("wss://localhost:8443/m"), Ok(Endpoint::WebSocket(u)) if u.secure));
//! assert_eq!(Endpoint::parse("exec:cat >/dev/null"), Ok(Endpoint::Exec("cat >/dev/null".into())));
//! assert_eq!(Endpoint::parse("stdio:"), Ok(Endpoint::Stdio));
//! assert!(Endpoint::parse("exec:").is_err());
//! ```

use std::fmt;
use std::path::PathBuf;

use transit_channel::websocket::WebSocketUrl;
use transit_channel::SocketAddress;

/// Where `send` sends to or `recv` receives from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket to connect to (send) or listen on (recv).
    Socket(SocketAddress),
    /// A file holding the payload bytes.
    File(PathBuf),
    /// A websocket: connect to (send) or listen on (recv) `HOST:PORT` and
    /// upgrade with `PATH`; `wss://` puts TLS beneath.
    WebSocket(WebSocketUrl),
    /// A shell command: its stdin receives (send), its stdout supplies
    /// (recv).
    Exec(String),
    /// This process' stdin (recv) and stdout (send).
    Stdio,
    /// `rdma:HOST:PORT`: RDMA connections through rdma_cm, one queue pair
    /// per channel (needs an RDMA device and the `rdma` feature).
    Rdma(SocketAddress),
}

impl Endpoint {
    /// Parse a URI; errors quote the input and list the accepted forms.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(format!("invalid address {s:?}: expected file:PATH"));
            }
            return Ok(Endpoint::File(PathBuf::from(path)));
        }
        if let Some(cmd) = s.strip_prefix("exec:") {
            if cmd.trim().is_empty() {
                return Err(format!("invalid address {s:?}: expected exec:COMMAND"));
            }
            return Ok(Endpoint::Exec(cmd.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("stdio:") {
            if !rest.is_empty() {
                return Err(format!(
                    "invalid address {s:?}: expected stdio: (nothing after the colon)"
                ));
            }
            return Ok(Endpoint::Stdio);
        }
        if s.starts_with("ws://") || s.starts_with("wss://") {
            return WebSocketUrl::parse(s)
                .map(Endpoint::WebSocket)
                .map_err(|e| e.to_string());
        }
        if s.starts_with("ws:") || s.starts_with("wss:") {
            return Err(format!(
                "invalid address {s:?}: expected ws://HOST:PORT/PATH or wss://HOST:PORT/PATH"
            ));
        }
        if s.starts_with("rdma:") {
            return transit_channel::rdma::parse_address(s)
                .map(Endpoint::Rdma)
                .map_err(|e| e.to_string());
        }
        // The URL habit: tcp://HOST:PORT.
        for scheme in ["tcp", "unix", "unix-abstract", "vsock", "fd", "rdma"] {
            if let Some(rest) = s.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
                return Err(format!(
                    "invalid address {s:?}: did you mean {scheme}:{rest}? (transit addresses \
                     have no //, except ws:// and wss://)"
                ));
            }
        }
        let known = ["tcp:", "unix:", "unix-abstract:", "vsock:", "fd:"];
        s.parse::<SocketAddress>()
            .map(Endpoint::Socket)
            .map_err(|e| {
                if known.iter().any(|k| s.starts_with(k)) {
                    // The scheme is right: the rest of the address is not.
                    return e.to_string();
                }
                let hint = match s.rsplit_once(':') {
                    _ if s.starts_with('/') => format!(" (did you mean unix:{s} or file:{s}?)"),
                    Some((_, port))
                        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        format!(" (did you mean tcp:{s}?)")
                    }
                    _ => String::new(),
                };
                format!(
                    "invalid address {s:?}: expected tcp:HOST:PORT, unix:PATH, \
                     unix-abstract:NAME, vsock:CID:PORT, fd:N, rdma:HOST:PORT, \
                     ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, exec:COMMAND, stdio: or \
                     file:PATH{hint}"
                )
            })
    }

    /// The host a TLS client checks the server's certificate against when
    /// `--tls-hostname` is not given: the URI's host, if it has one.
    pub fn tls_host(&self) -> Option<String> {
        match self {
            Endpoint::Socket(SocketAddress::Inet { host, .. }) if !host.is_empty() => {
                Some(host.clone())
            }
            Endpoint::WebSocket(u) => Some(u.host.clone()),
            Endpoint::Rdma(SocketAddress::Inet { host, .. }) if !host.is_empty() => {
                Some(host.clone())
            }
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Socket(a) => write!(f, "{a}"),
            Endpoint::File(p) => write!(f, "file:{}", p.display()),
            Endpoint::WebSocket(u) => write!(f, "{u}"),
            Endpoint::Exec(c) => write!(f, "exec:{c}"),
            Endpoint::Stdio => f.write_str("stdio:"),
            Endpoint::Rdma(a) => f.write_str(&transit_channel::rdma::format_address(a)),
        }
    }
}

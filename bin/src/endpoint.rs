//! Endpoints typed by people: socket addresses plus `file:PATH`.
//!
//! `tcp:HOST:PORT`, `unix:PATH`, `unix-abstract:NAME`, `vsock:CID:PORT` and
//! `fd:N` are [`SocketAddress`]es (parsed by transit-channel); `file:PATH`
//! sends the framed stream into a file or receives it from one.

use std::fmt;
use std::path::PathBuf;

use transit_channel::SocketAddress;

/// Where `send` sends to or `recv` receives from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket to connect to (send) or listen on (recv).
    Socket(SocketAddress),
    /// A file holding the stream.
    File(PathBuf),
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
        for later in ["exec:", "stdio:", "ws:", "wss:", "rdma:"] {
            if s.starts_with(later) {
                return Err(format!(
                    "{s:?}: the {} transport is not available in this build",
                    later.trim_end_matches(':')
                ));
            }
        }
        s.parse::<SocketAddress>()
            .map(Endpoint::Socket)
            .map_err(|e| format!("{e} (or file:PATH)"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Socket(a) => write!(f, "{a}"),
            Endpoint::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

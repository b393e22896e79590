//! Endpoint addresses and their URI grammar.

use std::path::PathBuf;

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

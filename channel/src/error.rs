//! The error type shared by every channel, helper and main-loop call.
//!
//! Each variant tells the caller what to do next:
//!
//! * [`Error::WouldBlock`]: a non-blocking channel has nothing to give or no
//!   room to take; wait for readiness (a watch, or [`crate::io`] helpers) and
//!   retry.
//! * [`Error::UnexpectedEof`]: the peer closed in the middle of a record; the
//!   message says how many bytes were still missing.
//! * [`Error::Unsupported`]: the channel lacks a feature the call needs
//!   (fd passing, seeking, peeking, ...); asking again will not help.
//! * [`Error::Closed`]: the channel was closed by this side.
//! * [`Error::Os`]: the operating system refused an operation; the message
//!   names the operation and the channel.
//! * [`Error::Address`]: an endpoint string could not be parsed; the message
//!   quotes it and says what was expected.
//! * [`Error::Protocol`]: a peer sent something that breaks the rules of a
//!   layer (TLS, websocket, multifd, ...), or a layer failed; where the
//!   layer knows the typed reason (the rustls error or the alert the peer
//!   sent, a websocket close code, a command's exit status), it is in
//!   [`Error::cause`], so callers decide from types, never from the text.
//!
//! Every variant but `WouldBlock` carries the channel's name, so a message
//! that reaches a user says which channel failed.

use std::fmt;
use std::io;

/// `Result` with the channel [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a channel operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A non-blocking channel cannot make progress now.
    #[error("operation would block")]
    WouldBlock,

    /// The peer closed the stream before a whole unit arrived.
    #[error(
        "{channel}: unexpected end of file during {op}: {missing} of {expected} bytes missing"
    )]
    UnexpectedEof {
        /// Name of the channel.
        channel: String,
        /// The operation that hit EOF (for example `read_all`).
        op: &'static str,
        /// Bytes the caller asked for.
        expected: usize,
        /// Bytes that never arrived.
        missing: usize,
    },

    /// The channel does not support a feature the call needs.
    #[error("{channel}: {feature} is not supported by this channel")]
    Unsupported {
        /// Name of the channel.
        channel: String,
        /// The feature or operation, for example `fd passing`.
        feature: &'static str,
    },

    /// The channel was closed by this side.
    #[error("{channel}: channel is closed")]
    Closed {
        /// Name of the channel.
        channel: String,
    },

    /// The operating system refused an operation.
    #[error("{channel}: {op} failed: {source}")]
    Os {
        /// Name of the channel (or of the object, for a listener).
        channel: String,
        /// The operation, for example `connect to 127.0.0.1:4444`.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// An endpoint string could not be parsed.
    #[error("invalid address {input:?}: expected {expected}")]
    Address {
        /// The input as given.
        input: String,
        /// What the parser expected.
        expected: String,
    },

    /// A wait with a deadline ([`crate::io::read_all_until`] and friends)
    /// ran out.
    #[error("{channel}: timed out after {:.1} s", waited.as_secs_f64())]
    TimedOut {
        /// Name of the channel.
        channel: String,
        /// How long the call waited.
        waited: std::time::Duration,
    },

    /// A peer broke the rules of a protocol layer, or a layer failed.
    #[error("{channel}: {message}")]
    Protocol {
        /// Name of the channel.
        channel: String,
        /// What was wrong.
        message: String,
        /// The typed reason, where the layer has one (boxed: errors stay
        /// small on the hot paths' `Result`s).
        cause: Option<Box<Cause>>,
    },
}

/// The typed reason of a layer's failure (see [`Error::cause`]): what a
/// caller decides on (rank errors, choose an exit code, retry or not),
/// while the message stays for people.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Cause {
    /// TLS: rustls' error. A certificate or parameter refused here, or
    /// `rustls::Error::AlertReceived` when the peer refused us.
    Tls(rustls::Error),
    /// TLS: the connection closed during the handshake (TLS on one side
    /// only, or the peer refused our certificate without an alert).
    TlsClosedInHandshake,
    /// TLS: the connection ended inside a record: data was truncated.
    TlsTruncated,
    /// Websocket: the peer's close frame (`Some(code)`), or a failed upgrade
    /// or broken framing (`None`).
    WebSocket {
        /// The status code of the peer's close frame.
        close_code: Option<u16>,
    },
    /// A command's exit status: a code or a signal.
    Exited(std::process::ExitStatus),
}

impl Error {
    /// An [`Error::Os`] for `channel` from `source`, mapping `EAGAIN` to
    /// [`Error::WouldBlock`].
    pub fn os(channel: &str, op: impl fmt::Display, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::WouldBlock {
            return Error::WouldBlock;
        }
        Error::Os {
            channel: channel.to_owned(),
            op: op.to_string(),
            source,
        }
    }

    /// An [`Error::Os`] from `errno` right now.
    pub fn last_os(channel: &str, op: impl fmt::Display) -> Error {
        Error::os(channel, op, io::Error::last_os_error())
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(channel: &str, feature: &'static str) -> Error {
        Error::Unsupported {
            channel: channel.to_owned(),
            feature,
        }
    }

    /// An [`Error::Closed`].
    pub fn closed(channel: &str) -> Error {
        Error::Closed {
            channel: channel.to_owned(),
        }
    }

    /// An [`Error::Protocol`] without a typed cause.
    pub fn protocol(channel: &str, message: impl fmt::Display) -> Error {
        Error::Protocol {
            channel: channel.to_owned(),
            message: message.to_string(),
            cause: None,
        }
    }

    /// An [`Error::Protocol`] with its typed cause.
    pub fn layer(channel: &str, message: impl fmt::Display, cause: Cause) -> Error {
        Error::Protocol {
            channel: channel.to_owned(),
            message: message.to_string(),
            cause: Some(Box::new(cause)),
        }
    }

    /// The typed reason of a layer's failure, if it has one.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Error::Protocol { cause, .. } => cause.as_deref(),
            _ => None,
        }
    }

    /// The exit status of a command whose end this error reports.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        match self.cause() {
            Some(Cause::Exited(s)) => Some(*s),
            _ => None,
        }
    }

    /// True when the peer is gone or never answered the way a transit peer
    /// would: the connection was reset or refused, the pipe broke, it
    /// closed mid-message or during a TLS handshake. These are symptoms;
    /// a refusal that says why (a TLS alert, a websocket status) is not.
    pub fn is_peer_gone(&self) -> bool {
        match self {
            Error::UnexpectedEof { .. } => true,
            Error::Os { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNREFUSED | libc::ECONNABORTED)
                ) || matches!(
                    source.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                )
            }
            _ => matches!(self.cause(), Some(Cause::TlsClosedInHandshake)),
        }
    }

    /// True when a connect found nobody listening at the address: refused
    /// (`ECONNREFUSED`), or a UNIX socket path that is gone (`ENOENT`).
    /// A peer that was there and has ended looks like this; a network that
    /// is down does not (it times out or is unreachable).
    pub fn is_nobody_listening(&self) -> bool {
        match self {
            Error::Os { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ENOENT)
                ) || source.kind() == io::ErrorKind::ConnectionRefused
            }
            _ => false,
        }
    }

    /// True when the peer refused us and said so: a TLS alert it sent.
    pub fn is_peer_refusal(&self) -> bool {
        matches!(
            self.cause(),
            Some(Cause::Tls(rustls::Error::AlertReceived(_)))
        )
    }

    /// True for a failure of the TLS or websocket layer.
    pub fn is_tls_or_websocket(&self) -> bool {
        matches!(
            self.cause(),
            Some(
                Cause::Tls(_)
                    | Cause::TlsClosedInHandshake
                    | Cause::TlsTruncated
                    | Cause::WebSocket { .. }
            )
        )
    }

    /// True for [`Error::WouldBlock`].
    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::WouldBlock)
    }

    /// True for [`Error::TimedOut`]: a deadline ran out.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Error::TimedOut { .. })
    }

    /// The raw OS error number, if this is an OS error that has one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::UnexpectedEof { .. } => io::ErrorKind::UnexpectedEof,
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
            Error::Closed { .. } => io::ErrorKind::NotConnected,
            Error::Os { source, .. } => source.kind(),
            Error::Address { .. } => io::ErrorKind::InvalidInput,
            Error::Protocol { .. } => io::ErrorKind::InvalidData,
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
        };
        if let Error::Os { source, .. } = &e {
            if let Some(code) = source.raw_os_error() {
                // Keep errno visible to callers that inspect it, but keep our
                // message (which names the channel) as well.
                return io::Error::new(io::Error::from_raw_os_error(code).kind(), e);
            }
        }
        io::Error::new(kind, e)
    }
}

//! The error type of multifd sessions.
//!
//! Every variant that comes from a channel says which channel ([`ChannelId`]:
//! the main channel, page channel N, or a connection not yet classified),
//! the peer (the channel's name, which transports set to their peer
//! address) and the [`Stage`] of the session. The first error of a session
//! wins; later ones (other channels failing because the session was shut
//! down) are dropped.

use std::fmt;
use std::io;

use crate::wire::{ErrorCode, Totals, WireError};

/// `Result` with the multifd [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which channel of a session an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelId {
    /// The main channel (session header, records, verdict).
    Main,
    /// Page channel `n` (0-based).
    Page(u32),
    /// A connection that has not been classified yet.
    Unclassified,
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelId::Main => f.write_str("main channel"),
            ChannelId::Page(n) => write!(f, "page channel {n}"),
            ChannelId::Unclassified => f.write_str("unclassified connection"),
        }
    }
}

/// The part of a session an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Session header, init packets, the receiver's accept reply.
    Handshake,
    /// Writing a page packet header.
    SendHeader,
    /// Writing pages or stream chunks.
    SendPages,
    /// A sync barrier.
    Sync,
    /// The end record and the verdict.
    End,
    /// Reading a page packet header.
    RecvHeader,
    /// Reading pages or chunks.
    RecvPages,
    /// Reading the source of a stream or writing the destination.
    Data,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Handshake => "handshake",
            Stage::SendHeader => "send header",
            Stage::SendPages => "send pages",
            Stage::Sync => "sync",
            Stage::End => "end",
            Stage::RecvHeader => "receive header",
            Stage::RecvPages => "receive pages",
            Stage::Data => "data",
        })
    }
}

/// What went wrong in a multifd session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A channel operation failed (I/O error, unexpected end of file,
    /// timeout, shut down by the peer).
    #[error("multifd {id} ({peer}), stage {stage}: {source}")]
    Channel {
        /// The channel.
        id: ChannelId,
        /// The channel's name (its peer address for sockets).
        peer: String,
        /// The stage.
        stage: Stage,
        /// The channel error.
        #[source]
        source: transit_channel::Error,
    },

    /// The peer broke the wire protocol.
    #[error("multifd {id} ({peer}), stage {stage}: protocol violation: {source}")]
    Protocol {
        /// The channel.
        id: ChannelId,
        /// The channel's name.
        peer: String,
        /// The stage.
        stage: Stage,
        /// What was wrong.
        #[source]
        source: WireError,
    },

    /// The peer stopped the session and said why (an error record).
    #[error("multifd {id} ({peer}), stage {stage}: the peer reported: {message} ({code})")]
    Remote {
        /// The channel the report came on.
        id: ChannelId,
        /// The channel's name.
        peer: String,
        /// Our stage when the report arrived.
        stage: Stage,
        /// The peer's error class.
        code: ErrorCode,
        /// The peer's message, with control characters escaped
        /// ([`transit_channel::peer_text::escape`]): a peer cannot drive
        /// our terminal through it.
        message: String,
    },

    /// The receiver's totals or digest differ from the sender's: the data
    /// was corrupted on the way or applied wrongly.
    #[error("multifd: verification failed: sender sent {sender}, receiver got {receiver}")]
    Mismatch {
        /// What the sender counted.
        sender: Totals,
        /// What the receiver counted.
        receiver: Totals,
    },

    /// Waiting for a peer took longer than the configured limit.
    #[error("multifd {id} ({peer}), stage {stage}: timed out after {seconds:.1} s")]
    Timeout {
        /// The channel.
        id: ChannelId,
        /// The channel's name.
        peer: String,
        /// The stage.
        stage: Stage,
        /// The limit that passed.
        seconds: f64,
    },

    /// A local parameter is invalid (page size, channel count, payload
    /// size, a call that does not fit the session's layout).
    #[error("multifd: invalid configuration: {0}")]
    Config(String),

    /// Creating or using an image, reading the stream source or writing the
    /// stream sink failed.
    #[error("multifd: {op}: {source}")]
    Data {
        /// What was being done, for example `create destination file x`.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The session was aborted locally (an [`AbortHandle`](crate::AbortHandle)).
    #[error("multifd: aborted: {0}")]
    Aborted(String),

    /// An in-place update's undo journal ([`crate::undo`]): an interrupted
    /// update could not be rolled back before the session (a live
    /// receiver holds it, it is damaged, it belongs to another file), or
    /// the journal could not be created.
    #[error("multifd: {0}")]
    Undo(#[from] crate::undo::UndoError),

    /// The session failed (`cause`), and rolling back its in-place update
    /// failed too: the undo journal stays next to the file, and the next
    /// receive on that path rolls back before anything else.
    #[error("{cause}; rolling back the in-place update failed too: {rollback} (the undo journal stays: the next receive on this path rolls back first)")]
    NotRolledBack {
        /// Why the session failed.
        cause: Box<Error>,
        /// Why the rollback failed.
        rollback: crate::undo::UndoError,
    },
}

impl Error {
    /// The channel the error is about, when there is one.
    pub fn channel(&self) -> Option<ChannelId> {
        match self {
            Error::Channel { id, .. }
            | Error::Protocol { id, .. }
            | Error::Remote { id, .. }
            | Error::Timeout { id, .. } => Some(*id),
            Error::NotRolledBack { cause, .. } => cause.channel(),
            _ => None,
        }
    }

    /// True for a connection's rejection that ends the session it was
    /// offered to ([`Receiver::accept_channel`](crate::Receiver::accept_channel)):
    /// the sender's channels cannot all be filed (a channel-count mismatch,
    /// a duplicate channel, an id out of range) or its image does not fit.
    /// Other rejections (a stranger, another session's channel, a timeout)
    /// leave the receiver waiting for good connections.
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            Error::Protocol {
                source: WireError::ChannelCountMismatch { .. }
                    | WireError::ImageTooLarge { .. }
                    | WireError::DuplicateChannel { .. }
                    | WireError::ChannelIdOutOfRange { .. },
                ..
            }
        )
    }

    /// The stage the error happened in, when known.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Error::Channel { stage, .. }
            | Error::Protocol { stage, .. }
            | Error::Remote { stage, .. }
            | Error::Timeout { stage, .. } => Some(*stage),
            Error::Mismatch { .. } => Some(Stage::End),
            Error::NotRolledBack { cause, .. } => cause.stage(),
            _ => None,
        }
    }

    /// The error class sent to the peer in an error record.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Error::Channel { .. } | Error::Timeout { .. } | Error::Data { .. } => ErrorCode::Io,
            Error::Protocol { .. } => ErrorCode::Protocol,
            Error::Remote { code, .. } => *code,
            Error::Mismatch { .. } => ErrorCode::Mismatch,
            Error::Config(_) => ErrorCode::Refused,
            Error::Aborted(_) => ErrorCode::Aborted,
            Error::Undo(crate::undo::UndoError::Busy { .. }) => ErrorCode::Refused,
            Error::Undo(_) => ErrorCode::Io,
            Error::NotRolledBack { cause, .. } => cause.code(),
        }
    }

    /// A data error: `op` (what was being done, e.g. `put the output in
    /// place at vm.img`) failed with `source`.
    pub fn data(op: impl Into<String>, source: io::Error) -> Error {
        Error::Data {
            op: op.into(),
            source,
        }
    }
}

/// Where a channel error happened: the context that turns a
/// `transit_channel::Error` or a [`WireError`] into an [`Error`].
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub id: ChannelId,
    pub peer: String,
}

impl Ctx {
    pub fn new(id: ChannelId, peer: impl Into<String>) -> Ctx {
        Ctx {
            id,
            peer: peer.into(),
        }
    }

    pub fn io(&self, stage: Stage, source: transit_channel::Error) -> Error {
        Error::Channel {
            id: self.id,
            peer: self.peer.clone(),
            stage,
            source,
        }
    }

    pub fn proto(&self, stage: Stage, source: WireError) -> Error {
        Error::Protocol {
            id: self.id,
            peer: self.peer.clone(),
            stage,
            source,
        }
    }

    /// The error for an error record the peer sent: the one place where
    /// a peer's message enters our errors, so it is escaped here.
    pub fn remote(&self, stage: Stage, code: ErrorCode, message: String) -> Error {
        Error::Remote {
            id: self.id,
            peer: self.peer.clone(),
            stage,
            code,
            message: transit_channel::peer_text::escape(&message),
        }
    }

    pub fn timeout(&self, stage: Stage, seconds: f64) -> Error {
        Error::Timeout {
            id: self.id,
            peer: self.peer.clone(),
            stage,
            seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_rejections_end_the_session() {
        let ctx = Ctx::new(ChannelId::Page(3), "peer");
        let ends = |e: WireError| ctx.proto(Stage::Handshake, e).ends_session();
        assert!(ends(WireError::DuplicateChannel { id: 3 }));
        assert!(ends(WireError::ChannelCountMismatch {
            found: 2,
            expected: 4
        }));
        assert!(!ends(WireError::UnknownConnection { found: 7 }));
        assert!(!ends(WireError::ExtraConnection { channels: 4 }));
        assert!(!ctx.timeout(Stage::Handshake, 1.0).ends_session());
    }
}

//! Plain bytes (`--raw`) meeting a framed transit peer, from either side.
//!
//! A raw copy is one channel of plain bytes with no protocol. When one
//! end runs raw and the other speaks the framed protocol, both must fail
//! and say so, rather than the raw receiver writing a session header into
//! a file or the raw sender's bytes being taken for a stranger's:
//!
//! - a raw receiver looks at its connection's first bytes
//!   ([`expect_plain`]): a session header, an init packet or a framed
//!   sender's error record is refused with an error record of its own;
//! - a raw sender ends its copy with [`end`], which reads what the peer
//!   answered before closing: a framed receiver's refusal fails the copy.
//!   After a failed write, [`refusal`] reads it too.
//!
//! Limits: a plain stream that starts with a complete, valid error record
//! is taken for a framed peer (see [`wire::framed_start`]).

use std::time::{Duration, Instant};

use transit_channel::{io as chio, Channel, ReadFlags};

use crate::wire::{self, FramedStart};

/// The longest error record a framed receiver answers plain bytes with.
pub const REFUSAL_MAX: usize = wire::RECORD_HEADER_LEN + 8 + wire::MAX_ERROR_MESSAGE;

/// Why a raw copy cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The peer speaks the framed protocol; its reason, if it sent one
    /// (a framed sender that gave up, a framed receiver's refusal).
    #[error("the peer speaks transit's framed protocol")]
    Framed {
        /// What the peer said.
        said: Option<String>,
    },
    /// The channel failed.
    #[error(transparent)]
    Channel(#[from] transit_channel::Error),
}

/// A raw receiver's first look at its connection: plain bytes read to
/// decide are put back in front. A framed sender is told why it is
/// refused and the connection closed gracefully (for at most `linger`).
pub fn expect_plain(
    mut ch: Box<dyn Channel>,
    linger: Duration,
) -> Result<Box<dyn Channel>, RawError> {
    let mut head = Vec::new();
    loop {
        match wire::framed_start(&head) {
            FramedStart::Raw => break,
            FramedStart::NeedMore(n) => {
                let at = head.len();
                head.resize(n, 0);
                let k = ch.readv(
                    &mut [std::io::IoSliceMut::new(&mut head[at..])],
                    None,
                    ReadFlags::empty(),
                )?;
                head.truncate(at + k);
                if k == 0 {
                    break;
                }
            }
            FramedStart::Framed { reason } => {
                crate::incoming::refuse(
                    &mut *ch,
                    "the receiver runs with --raw and takes plain bytes on one \
                     connection: drop --raw there, or use it on both ends",
                );
                let _ = chio::close_gracefully(
                    &mut *ch,
                    Instant::now() + linger,
                    0,
                    ReadFlags::empty(),
                );
                return Err(RawError::Framed { said: reason });
            }
        }
    }
    Ok(if head.is_empty() {
        ch
    } else {
        Box::new(transit_channel::Prefixed::new(head, ch))
    })
}

/// End a raw send: the layers' goodbye (TLS close_notify, the websocket
/// close frame), end of file, then read what the peer still sends until
/// it closes (at most `linger`), then close (a command's exit status is
/// checked here). A framed receiver's refusal among what it sent fails
/// the send: the copy looked fine here and was refused there.
pub fn end(ch: &mut dyn Channel, linger: Duration) -> Result<(), RawError> {
    ch.bye()?;
    let (answer, closed) = chio::close_gracefully(
        ch,
        Instant::now() + linger,
        REFUSAL_MAX,
        ReadFlags::RELAXED_EOF,
    );
    if let FramedStart::Framed { reason } = wire::framed_start(&answer) {
        return Err(RawError::Framed { said: reason });
    }
    Ok(closed?)
}

/// After a failed raw write: the refusal a framed receiver sent before it
/// closed, if that is what it sent (read for at most `within`).
pub fn refusal(ch: &mut dyn Channel, within: Duration) -> Option<RawError> {
    let answer = chio::drain_until(
        ch,
        Instant::now() + within,
        REFUSAL_MAX,
        ReadFlags::RELAXED_EOF,
    );
    match wire::framed_start(&answer) {
        FramedStart::Framed { reason } => Some(RawError::Framed { said: reason }),
        _ => None,
    }
}

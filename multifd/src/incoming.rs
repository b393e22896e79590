//! What a receiver's connection is, from its first bytes, and how one
//! that cannot join is told why.
//!
//! A receiver that listens gets connections in any order: the main channel
//! of a session (it starts with the session header), its page channels
//! (each starts with an init packet), strangers, and later senders while a
//! session runs. [`head`] tells them apart as their first bytes come (a
//! decider for [`transit_channel::prefixed::sniff`] or a non-blocking
//! reader on a main loop), asking for whole structures, so the session
//! header is in hand when the destination is chosen
//! ([`Receiver::new`](crate::Receiver::new) takes it from the header the
//! caller read). [`sniff`] does the reading on a blocking thread.
//! [`refuse`] writes the record a connection that cannot join is told
//! (a `transit send --raw` reads it and fails naming the mismatch).
//!
//! ```
//! use transit_multifd::incoming::{head, Head, Peeked};
//! use transit_multifd::wire::PAGE_MAGIC;
//!
//! assert!(matches!(head(b""), Head::More(4)));
//! assert!(matches!(head(&PAGE_MAGIC.to_be_bytes()), Head::More(_)));
//! assert!(matches!(head(b"GET / HTTP/1.1"), Head::Done(Peeked::Other(_))));
//! ```

use std::time::Instant;

use transit_channel::{io as chio, Channel};

use crate::wire::{self, ConnectionKind, ErrorCode, Record, SessionHeader, WireError};

pub use transit_channel::prefixed::Head;

/// The most bytes [`head`] asks for.
pub const HEAD_MAX: usize = wire::SESSION_HEADER_LEN;

/// What the first bytes of a connection say.
#[derive(Debug)]
pub enum Peeked {
    /// A main channel (its session header, if it decodes).
    Main(Option<SessionHeader>),
    /// A page channel (its whole init packet is there).
    Page,
    /// Not a transit sender.
    Other(WireError),
}

/// Classify the first bytes received so far: a main channel needs its
/// whole session header, a page channel its whole init packet, anything
/// else is told apart by its first four bytes.
pub fn head(buf: &[u8]) -> Head<Peeked> {
    if buf.len() < 4 {
        return Head::More(4);
    }
    match wire::classify(&buf[..4]) {
        Ok(ConnectionKind::Page) if buf.len() >= wire::INIT_PACKET_LEN => Head::Done(Peeked::Page),
        Ok(ConnectionKind::Page) => Head::More(wire::INIT_PACKET_LEN),
        Ok(ConnectionKind::Main) if buf.len() >= wire::SESSION_HEADER_LEN => Head::Done(
            Peeked::Main(wire::decode_session_header(&buf[..wire::SESSION_HEADER_LEN]).ok()),
        ),
        Ok(ConnectionKind::Main) => Head::More(wire::SESSION_HEADER_LEN),
        Err(e) => Head::Done(Peeked::Other(e)),
    }
}

/// Read a connection's first bytes until [`head`] decides (at most until
/// `deadline`), and put them back in front; see
/// [`transit_channel::prefixed::sniff`] for the errors.
#[allow(clippy::type_complexity)]
pub fn sniff(
    ch: Box<dyn Channel>,
    deadline: Instant,
) -> std::result::Result<(Box<dyn Channel>, Peeked), (Box<dyn Channel>, transit_channel::Error)> {
    transit_channel::prefixed::sniff(ch, head, deadline)
}

/// Tell a connection why it is refused: one error record (code
/// `Refused`), written without waiting on a peer that does not read.
/// Close it gracefully afterwards ([`chio::close_gracefully`]) so the
/// record is not destroyed by a reset.
pub fn refuse(ch: &mut dyn Channel, why: &str) {
    let rec = Record::Error {
        code: ErrorCode::Refused,
        message: why.into(),
    };
    let _ = ch.set_blocking(false);
    let _ = chio::write_all(ch, &rec.to_bytes());
}

/// Connections being told why they are refused at once, at most.
pub const TURN_AWAY_MAX: u64 = 16;

static TURNING_AWAY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tell a connection why it is refused ([`refuse`]: a `transit send
/// --raw` reads it and fails naming the mismatch, a second sender learns
/// the receiver is busy), then close it gracefully for at most `linger`
/// (so the refusal is not destroyed by a reset), on a thread of its own:
/// the caller never waits on a stranger. Beyond [`TURN_AWAY_MAX`] at once
/// (a flood), connections are closed without a word.
pub fn turn_away(mut ch: Box<dyn Channel>, why: &'static str, linger: std::time::Duration) {
    use std::sync::atomic::Ordering;
    if TURNING_AWAY.fetch_add(1, Ordering::AcqRel) >= TURN_AWAY_MAX {
        TURNING_AWAY.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("turn-away".into())
        .spawn(move || {
            refuse(&mut *ch, why);
            let _ = chio::close_gracefully(
                &mut *ch,
                Instant::now() + linger,
                0,
                transit_channel::ReadFlags::empty(),
            );
            TURNING_AWAY.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        TURNING_AWAY.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_header() -> Vec<u8> {
        let mut b = vec![0u8; wire::SESSION_HEADER_LEN];
        b[..4].copy_from_slice(&wire::MAIN_MAGIC.to_be_bytes());
        b
    }

    #[test]
    fn head_asks_for_whole_structures() {
        assert!(matches!(head(b""), Head::More(4)));
        assert!(matches!(head(b"TR"), Head::More(4)));
        let m = main_header();
        assert!(matches!(
            head(&m[..4]),
            Head::More(wire::SESSION_HEADER_LEN)
        ));
        assert!(matches!(
            head(&m[..63]),
            Head::More(wire::SESSION_HEADER_LEN)
        ));
        assert!(matches!(head(&m), Head::Done(Peeked::Main(_))));
        let p = wire::PAGE_MAGIC.to_be_bytes();
        assert!(matches!(head(&p), Head::More(wire::INIT_PACKET_LEN)));
        let mut p = vec![0u8; wire::INIT_PACKET_LEN];
        p[..4].copy_from_slice(&wire::PAGE_MAGIC.to_be_bytes());
        assert!(matches!(head(&p), Head::Done(Peeked::Page)));
        assert!(matches!(
            head(b"GET / HTTP/1.1"),
            Head::Done(Peeked::Other(_))
        ));
    }
}

//! The message header of the RDMA channel protocol (see
//! `docs/wire-protocol.md`, "RDMA channel protocol").
//!
//! Every SEND carries one message: a 16-byte header followed by `length`
//! payload bytes. All integers are big-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | type: 1 DATA, 2 CREDIT, 3 CLOSE |
//! | 1 | 1 | flags: bit 0 `CTRL` = sent on the control window (CREDIT and CLOSE only); other bits refused |
//! | 2 | 2 | control acks: control-window messages received from the peer so far (wrapping) |
//! | 4 | 4 | length: payload bytes after the header |
//! | 8 | 4 | credits: receive buffers re-posted for the peer since the last grant |
//! | 12 | 4 | sequence: message number in this direction, from 0, wrapping |

use std::fmt;

/// Protocol version carried in the connection parameters.
pub const VERSION: u32 = 1;

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 16;

/// Receive buffers each side posts beyond its data credits, for messages
/// sent on the control window.
pub const CTRL_SLOTS: u32 = 2;

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    /// Stream bytes.
    Data = 1,
    /// Credits only (the reverse direction is idle).
    Credit = 2,
    /// End of the stream in this direction (maps to EOF at the peer).
    Close = 3,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub kind: MsgType,
    /// Payload length.
    pub length: u32,
    /// Credits granted to the receiver of this message.
    pub credits: u32,
    /// Sequence number.
    pub seq: u32,
    /// Sent on the control window (uses no data credit).
    pub ctrl: bool,
    /// Control-window messages the sender has received from us so far.
    pub ctrl_acks: u16,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes arrived.
    Short(usize),
    /// Unknown type byte.
    UnknownType(u8),
    /// Unknown flag bits.
    Reserved,
    /// DATA sent on the control window.
    DataOnControlWindow,
    /// The length does not match the bytes that arrived.
    Length {
        /// Length in the header.
        header: u32,
        /// Payload bytes that arrived.
        received: usize,
    },
    /// A DATA message without payload, or a CREDIT/CLOSE with payload.
    BadPayload(MsgType, u32),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short(n) => write!(f, "message of {n} bytes is shorter than a header"),
            HeaderError::UnknownType(t) => write!(f, "unknown message type {t}"),
            HeaderError::Reserved => write!(f, "unknown flag bits in a header"),
            HeaderError::DataOnControlWindow => write!(f, "DATA message on the control window"),
            HeaderError::Length { header, received } => write!(
                f,
                "header says {header} payload bytes but {received} arrived"
            ),
            HeaderError::BadPayload(kind, len) => {
                write!(f, "{kind:?} message with a payload of {len} bytes")
            }
        }
    }
}

impl Header {
    /// Encode into the first [`HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = self.kind as u8;
        out[1] = u8::from(self.ctrl);
        out[2..4].copy_from_slice(&self.ctrl_acks.to_be_bytes());
        out[4..8].copy_from_slice(&self.length.to_be_bytes());
        out[8..12].copy_from_slice(&self.credits.to_be_bytes());
        out[12..16].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Decode a whole received message of `msg_len` bytes whose first
    /// bytes are `bytes`.
    pub fn decode(bytes: &[u8], msg_len: usize) -> Result<Header, HeaderError> {
        if msg_len < HEADER_LEN || bytes.len() < HEADER_LEN {
            return Err(HeaderError::Short(msg_len.min(bytes.len())));
        }
        let kind = match bytes[0] {
            1 => MsgType::Data,
            2 => MsgType::Credit,
            3 => MsgType::Close,
            t => return Err(HeaderError::UnknownType(t)),
        };
        if bytes[1] & !1 != 0 {
            return Err(HeaderError::Reserved);
        }
        let ctrl = bytes[1] & 1 != 0;
        if ctrl && kind == MsgType::Data {
            return Err(HeaderError::DataOnControlWindow);
        }
        let ctrl_acks = u16::from_be_bytes([bytes[2], bytes[3]]);
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (length, credits, seq) = (word(4), word(8), word(12));
        let received = msg_len - HEADER_LEN;
        if length as usize != received {
            return Err(HeaderError::Length {
                header: length,
                received,
            });
        }
        match (kind, length) {
            (MsgType::Data, 0) => return Err(HeaderError::BadPayload(kind, 0)),
            (MsgType::Credit | MsgType::Close, n) if n != 0 => {
                return Err(HeaderError::BadPayload(kind, n))
            }
            _ => {}
        }
        Ok(Header {
            kind,
            length,
            credits,
            seq,
            ctrl,
            ctrl_acks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            kind: MsgType::Data,
            length: 5,
            credits: 7,
            seq: 0xdead_beef,
            ctrl: false,
            ctrl_acks: 0x1234,
        };
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b);
        assert_eq!(b[..4], [1, 0, 0x12, 0x34]);
        assert_eq!(Header::decode(&b, HEADER_LEN + 5), Ok(h));
    }

    #[test]
    fn header_refuses_bad_input() {
        let mut b = [0u8; HEADER_LEN];
        Header {
            kind: MsgType::Credit,
            length: 0,
            credits: 1,
            seq: 0,
            ctrl: true,
            ctrl_acks: 0,
        }
        .encode(&mut b);
        assert_eq!(b[1], 1);
        assert_eq!(Header::decode(&b, 4), Err(HeaderError::Short(4)));
        assert!(matches!(
            Header::decode(&b, HEADER_LEN + 1),
            Err(HeaderError::Length { .. })
        ));
        b[1] = 2;
        assert_eq!(Header::decode(&b, HEADER_LEN), Err(HeaderError::Reserved));
        b[1] = 1;
        b[0] = 1;
        assert_eq!(
            Header::decode(&b, HEADER_LEN + 1),
            Err(HeaderError::DataOnControlWindow)
        );
        b[0] = 9;
        assert_eq!(
            Header::decode(&b, HEADER_LEN),
            Err(HeaderError::UnknownType(9))
        );
    }
}

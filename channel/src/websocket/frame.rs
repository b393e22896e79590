//! The WebSocket frame format (RFC 6455 section 5.2), both directions:
//! opcodes, frame headers (parsed from and written to byte slices), close
//! payloads, and [`PeerClose`]. Pure functions, no I/O; masking itself is
//! in [`mask`], the incoming frame sequence in
//! [`decoder`](super::decoder).
//!
//! ```text
//!  byte 0: FIN RSV1 RSV2 RSV3 opcode(4)
//!  byte 1: MASK length(7)          126: a 16-bit length follows,
//!                                  127: a 64-bit length follows
//!  [2 or 8 bytes of length, big-endian] [4 bytes of mask key if MASK]
//! ```

use super::{mask, status};

/// Longest frame header: 2 bytes, 8 of length, 4 of mask key.
pub(crate) const MAX_HEADER: usize = 14;
/// Largest control frame payload (RFC 6455 section 5.5).
pub(crate) const MAX_CONTROL: usize = 125;

/// The opcodes RFC 6455 defines (the others are reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Continue = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    /// The opcode of the low 4 bits `bits`; `None` for a reserved one.
    pub(crate) fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0 => Opcode::Continue,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes.
    pub(crate) fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// A frame header as it is on the wire, before any rule is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// RSV1..RSV3 as the low 3 bits (nonzero only with an extension).
    pub rsv: u8,
    /// The 4-bit opcode, reserved values included.
    pub opcode: u8,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length (the high bit may be set: the rules refuse that).
    pub len: u64,
}

impl Header {
    /// Parse the header at the start of `bytes`: the header and its size,
    /// or `None` while `bytes` holds only part of it.
    pub(crate) fn parse(bytes: &[u8]) -> Option<(Header, usize)> {
        let &[b0, b1, ..] = bytes else {
            return None;
        };
        let size = header_size(b1);
        let bytes = bytes.get(..size)?;
        let len = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&bytes[2..10]);
                u64::from_be_bytes(be)
            }
            n => u64::from(n),
        };
        let mask = (b1 & 0x80 != 0).then(|| {
            let mut key = [0u8; 4];
            key.copy_from_slice(&bytes[size - 4..]);
            key
        });
        let header = Header {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0x0f,
            mask,
            len,
        };
        Some((header, size))
    }
}

/// The size of a header whose second byte is `b1`.
pub(crate) fn header_size(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Write the header of a frame with `len` payload bytes into `out`, in the
/// shortest length encoding; returns its size. RSV bits are never set.
pub(crate) fn encode_header(
    opcode: Opcode,
    fin: bool,
    mask: Option<[u8; 4]>,
    len: u64,
    out: &mut [u8; MAX_HEADER],
) -> usize {
    out[0] = opcode as u8 | if fin { 0x80 } else { 0 };
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let mut at = 2;
    if len < 126 {
        out[1] = masked | len as u8;
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = masked | 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        at = 4;
    } else {
        out[1] = masked | 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        at = 10;
    }
    if let Some(key) = mask {
        out[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    at
}

/// Append a whole control frame (`op` with `payload`, masked with `key`
/// if given) to `out`.
pub(crate) fn encode_control(out: &mut Vec<u8>, op: Opcode, payload: &[u8], key: Option<[u8; 4]>) {
    debug_assert!(op.is_control() && payload.len() <= MAX_CONTROL);
    let mut head = [0u8; MAX_HEADER];
    let hlen = encode_header(op, true, key, payload.len() as u64, &mut head);
    out.extend_from_slice(&head[..hlen]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = key {
        mask::apply(&mut out[start..], key, 0);
    }
}

/// The payload of a close frame: `code`, then as much of `reason` as fits
/// in a control frame.
pub(crate) fn close_payload(code: u16, reason: &str) -> ([u8; MAX_CONTROL], usize) {
    let mut payload = [0u8; MAX_CONTROL];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    let r = &reason.as_bytes()[..reason.len().min(MAX_CONTROL - 2)];
    payload[2..2 + r.len()].copy_from_slice(r);
    (payload, 2 + r.len())
}

/// The close frame the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClose {
    /// Status code (1005 when the frame carried none).
    pub code: u16,
    /// The reason text (may be empty).
    pub reason: String,
}

impl PeerClose {
    /// Status 1000 (normal), 1001 (going away) or none: a clean end.
    pub fn is_clean(&self) -> bool {
        matches!(
            self.code,
            status::NORMAL | status::GOING_AWAY | status::NO_STATUS
        )
    }
}

/// A few words on a close status, for messages.
pub(crate) fn describe_status(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1007 => "invalid payload data",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "missing extension",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        _ => "application status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_encoding_and_parse_back() {
        let key = Some([1, 2, 3, 4]);
        for (len, size) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
            (u64::MAX >> 1, 10),
        ] {
            for (mask, extra) in [(None, 0), (key, 4)] {
                let mut out = [0u8; MAX_HEADER];
                let n = encode_header(Opcode::Binary, false, mask, len, &mut out);
                assert_eq!(n, size + extra, "len {len}");
                let want = Header {
                    fin: false,
                    rsv: 0,
                    opcode: 2,
                    mask,
                    len,
                };
                assert_eq!(Header::parse(&out[..n]), Some((want, n)));
                // Every shorter prefix is incomplete.
                for cut in 0..n {
                    assert_eq!(Header::parse(&out[..cut]), None, "len {len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn header_bits_are_where_rfc_6455_puts_them() {
        let mut out = [0u8; MAX_HEADER];
        let n = encode_header(Opcode::Ping, true, Some([9, 8, 7, 6]), 3, &mut out);
        assert_eq!(&out[..n], &[0x89, 0x83, 9, 8, 7, 6]);
        let (h, _) = Header::parse(&[0x7f, 0x05]).expect("whole");
        assert_eq!((h.fin, h.rsv, h.opcode, h.len), (false, 0b111, 0xf, 5));
    }

    #[test]
    fn control_frames_are_masked_when_a_key_is_given() {
        let mut out = Vec::new();
        encode_control(&mut out, Opcode::Pong, b"abcd", Some([1, 1, 1, 1]));
        assert_eq!(
            out,
            [
                0x8a,
                0x84,
                1,
                1,
                1,
                1,
                b'a' ^ 1,
                b'b' ^ 1,
                b'c' ^ 1,
                b'd' ^ 1
            ]
        );
        let (payload, len) = close_payload(1001, &"x".repeat(200));
        assert_eq!(len, MAX_CONTROL);
        assert_eq!(&payload[..3], &[0x03, 0xe9, b'x']);
    }

    #[test]
    fn opcodes_round_trip_and_reserved_ones_are_none() {
        for bits in 0..16u8 {
            match Opcode::from_bits(bits) {
                Some(op) => {
                    assert_eq!(op as u8, bits);
                    assert_eq!(op.is_control(), bits >= 8);
                }
                None => assert!(matches!(bits, 3..=7 | 11..=15), "{bits}"),
            }
        }
    }
}

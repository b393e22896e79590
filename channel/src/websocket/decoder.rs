//! The incoming frame sequence as a pure state machine: [`Decoder`] is fed
//! bytes and says what they are, without any I/O (the shape of
//! [`RecordTracker`](crate::tls) in the TLS module: the channel in
//! `channel.rs` owns the buffers and the inner channel and drives it).
//!
//! It checks every rule of RFC 6455 a binary endpoint without extensions
//! needs: reserved bits and opcodes, masking by role (a server requires
//! masked frames, a client refuses them), the 64-bit length's high bit,
//! text refused, continuation frames only inside a fragmented message,
//! control frames whole and at most 125 bytes, close payloads (status code
//! and UTF-8 reason), and the configured frame and message size limits.
//! A violation is a [`FrameError`] carrying the close status to answer
//! with; the decoder then stays failed.
//!
//! # Zero copy
//!
//! The decoder never copies data payload. Frame headers and control
//! frames are consumed from the input (a header split across inputs is
//! kept inside, at most 14 bytes; a control payload at most 125); when a
//! data frame's payload is next, [`Decoder::decode`] stops with
//! [`Event::Data`]`(n)`: the next `n` bytes of the stream are payload and
//! belong to the caller, who moves them wherever it likes (the channel
//! reads them from the socket straight into its caller's buffers) and
//! hands them, in place, to [`Decoder::payload`], which unmasks them and
//! counts them off. After the frame's last payload byte, `decode` goes on
//! with the next header. Empty data frames produce no event.
//!
//! # Limits
//!
//! * Binary data only: a text frame is refused (close status 1003), as no
//!   UTF-8 validation of a byte stream is wanted.
//! * No extensions (permessage-deflate): reserved bits are an error.
//! * Messages are not collected: only their running length is kept, for
//!   the message size limit.
//! * A close frame is reported and decoding may go on; stopping there is
//!   the caller's business.
//!
//! # Example
//!
//! The decoder is crate-private, so this sketch is not compiled as a
//! doctest; the tests at the end of this file run the same steps.
//!
//! ```text
//! let mut dec = Decoder::new(Role::Server, Some(16 << 20), None);
//! let mut input: &[u8] = &wire;            // bytes read from the peer
//! loop {
//!     match dec.decode(&mut input)? {     // consumes headers and control frames
//!         None => break,                   // all of `input` used: read more
//!         Some(Event::Data(n)) => {        // the next n bytes are payload:
//!             let k = n.min(input.len());  // move (some of) them where they
//!             out[..k].copy_from_slice(&input[..k]);   // belong, or read
//!             dec.payload(&mut out[..k]);  // them from the socket there;
//!             input = &input[k..];         // unmasked in place
//!         }
//!         Some(Event::Ping(p)) => answer(p.bytes()),
//!         Some(Event::Pong) => {}
//!         Some(Event::Close(pc)) => return pc,
//!     }
//! }
//! ```

use super::frame::{header_size, Header, Opcode, PeerClose, MAX_CONTROL, MAX_HEADER};
use super::{mask, status, Role};

/// What the bytes fed to [`Decoder::decode`] turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The next `n` bytes of the stream (`n` ≥ 1, none of them consumed)
    /// are payload of a data frame: give them to [`Decoder::payload`]
    /// (in as many pieces as convenient) before decoding on.
    Data(u64),
    /// A ping; the payload is unmasked.
    Ping(ControlPayload),
    /// A pong (its payload means nothing to us).
    Pong,
    /// A valid close frame; a missing status reads as 1005.
    Close(PeerClose),
}

/// The unmasked payload of a control frame (at most 125 bytes).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ControlPayload {
    buf: [u8; MAX_CONTROL],
    len: usize,
}

impl ControlPayload {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ControlPayload")
            .field(&self.bytes())
            .finish()
    }
}

/// A violation of the frame rules. [`FrameError::status`] is the close
/// status to answer with, [`FrameError::reason`] the short text for the
/// close frame, and the `Display` text the message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("websocket frame with unknown opcode {0}")]
    UnknownOpcode(u8),
    #[error("websocket frame with reserved bits set (no extension was negotiated)")]
    ReservedBits,
    #[error("websocket frame length has its most significant bit set")]
    LengthHighBit,
    #[error("unmasked websocket frame from the client (clients must mask every frame)")]
    Unmasked,
    #[error("masked websocket frame from the server (servers must not mask)")]
    Masked,
    #[error("text websocket frame refused: this endpoint accepts binary data only")]
    Text,
    #[error("websocket continuation frame outside a fragmented message")]
    UnexpectedContinuation,
    #[error("new websocket message inside an unfinished fragmented message")]
    ExpectedContinuation,
    #[error("websocket frame of {len} bytes exceeds the limit of {max}")]
    FrameTooBig { len: u64, max: u64 },
    #[error("websocket message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooBig { size: u64, max: u64 },
    #[error(
        "websocket control frame {} (control frames must be whole and at most 125 bytes)",
        if *fin { format!("of {len} bytes") } else { "fragmented".into() }
    )]
    BadControl { len: u64, fin: bool },
    #[error("websocket close frame with a 1-byte payload")]
    CloseTooShort,
    #[error("websocket close frame with invalid status {0}")]
    CloseStatus(u16),
    #[error("websocket close reason is not valid UTF-8")]
    CloseUtf8,
}

impl FrameError {
    /// The close status to send (RFC 6455 section 7.4.1).
    pub(crate) fn status(&self) -> u16 {
        match self {
            FrameError::Text => status::UNSUPPORTED,
            FrameError::FrameTooBig { .. } | FrameError::MessageTooBig { .. } => status::TOO_BIG,
            FrameError::CloseUtf8 => status::INVALID,
            _ => status::PROTOCOL,
        }
    }

    /// The reason text of the close frame sent.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            FrameError::UnknownOpcode(_) => "unknown opcode",
            FrameError::ReservedBits => "reserved bits set",
            FrameError::LengthHighBit => "invalid length",
            FrameError::Unmasked => "unmasked frame",
            FrameError::Masked => "masked frame",
            FrameError::Text => "binary data only",
            FrameError::UnexpectedContinuation => "unexpected continuation",
            FrameError::ExpectedContinuation => "expected continuation",
            FrameError::FrameTooBig { .. } => "frame too big",
            FrameError::MessageTooBig { .. } => "message too big",
            FrameError::BadControl { .. } => "bad control frame",
            FrameError::CloseTooShort => "bad close frame",
            FrameError::CloseStatus(_) => "bad close status",
            FrameError::CloseUtf8 => "invalid UTF-8",
        }
    }
}

/// Where the stream stood when it ended, if that was not between messages
/// ([`Decoder::truncation`]); the `Display` text says what was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Truncated {
    #[error("the connection ended inside a websocket frame header ({got} bytes of it arrived)")]
    Header { got: usize },
    #[error("the connection ended inside a websocket frame ({missing} payload bytes missing)")]
    Payload { missing: u64 },
    #[error("the connection ended inside a websocket {op:?} frame ({missing} of {len} payload bytes missing)")]
    Control {
        op: Opcode,
        missing: usize,
        len: usize,
    },
    #[error(
        "the connection ended inside a fragmented websocket message ({got} bytes of it arrived)"
    )]
    Message { got: u64 },
}

/// Where the decoder is in the frame sequence.
#[derive(Debug, Clone)]
enum State {
    /// Between frames: `head[..got]` holds the start of the next header
    /// (only when it arrived split; a whole one is parsed in place).
    Header { head: [u8; MAX_HEADER], got: usize },
    /// Inside a data frame's payload, `left` bytes to go (at least 1).
    Payload {
        left: u64,
        key: Option<[u8; 4]>,
        /// Payload bytes so far, mod 4: where in the key the next one is.
        phase: usize,
    },
    /// Collecting a control frame's payload into `buf[..got]`.
    Control {
        op: Opcode,
        len: usize,
        got: usize,
        key: Option<[u8; 4]>,
        buf: [u8; MAX_CONTROL],
    },
    /// A rule was broken; every later call reports it again.
    Failed(FrameError),
}

impl State {
    fn header() -> State {
        State::Header {
            head: [0; MAX_HEADER],
            got: 0,
        }
    }
}

/// The incoming frame sequence of one end; see the [module
/// documentation](self).
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    /// Our end: a server requires masked frames, a client refuses them.
    role: Role,
    max_frame_size: Option<u64>,
    max_message_size: Option<u64>,
    state: State,
    /// Inside a fragmented message (a continuation frame comes next).
    in_message: bool,
    /// Payload bytes of the current message so far.
    message_len: u64,
    /// Payload length of the last data frame.
    last_data_len: u64,
}

impl Decoder {
    /// A decoder for the frames `role` receives, with the size limits of
    /// [`WebSocketConfig`](super::WebSocketConfig) (`None`: no limit).
    pub(crate) fn new(
        role: Role,
        max_frame_size: Option<u64>,
        max_message_size: Option<u64>,
    ) -> Decoder {
        Decoder {
            role,
            max_frame_size,
            max_message_size,
            state: State::header(),
            in_message: false,
            message_len: 0,
            last_data_len: 0,
        }
    }

    /// Decode from the front of `input`, advancing it past what was
    /// consumed, up to the first event. `Ok(None)`: all of `input` was
    /// consumed and more is needed. `Some(Event::Data(n))`: `input` stops
    /// where payload starts; every call answers that (with `n` going
    /// down) until [`Decoder::payload`] has counted off the frame's last
    /// payload byte.
    pub(crate) fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Event>, FrameError> {
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Payload { left, .. } => return Ok(Some(Event::Data(*left))),
                State::Control { len, got, buf, .. } => {
                    let take = (*len - *got).min(input.len());
                    buf[*got..*got + take].copy_from_slice(&input[..take]);
                    *got += take;
                    *input = &input[take..];
                    if *got < *len {
                        return Ok(None);
                    }
                    return self.end_control().map(Some);
                }
                State::Header { head, got } => {
                    let Some(header) = take_header(head, got, input) else {
                        return Ok(None);
                    };
                    if let Err(e) = self.start_frame(header) {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                }
            }
        }
    }

    /// `bytes` are the next payload bytes of the current data frame (at
    /// most the `n` of [`Event::Data`]), already where the caller wants
    /// them: unmask them in place and count them off.
    ///
    /// # Panics
    ///
    /// Outside a data frame's payload or beyond its end (a bug in the
    /// caller: it would desynchronize the stream).
    pub(crate) fn payload(&mut self, bytes: &mut [u8]) {
        let State::Payload { left, key, phase } = &mut self.state else {
            panic!("websocket decoder: payload bytes outside a data frame");
        };
        let n = bytes.len() as u64;
        assert!(n <= *left, "websocket decoder: payload beyond the frame");
        if let Some(key) = *key {
            *phase = mask::apply(bytes, key, *phase);
        }
        *left -= n;
        if *left == 0 {
            self.state = State::header();
        }
    }

    /// True between frames (the next bytes are a frame header, or its
    /// rest): the time to read little from a peer that sends large frames.
    pub(crate) fn between_frames(&self) -> bool {
        matches!(self.state, State::Header { .. })
    }

    /// Payload length of the last data frame (0 before the first).
    pub(crate) fn last_data_len(&self) -> u64 {
        self.last_data_len
    }

    /// True if [`Decoder::decode`] given `input` (or the payload hand-off)
    /// gets somewhere without more bytes: a whole header, the rest of a
    /// control frame, payload, or an error to repeat.
    pub(crate) fn ready(&self, input: &[u8]) -> bool {
        match &self.state {
            State::Failed(_) => true,
            State::Payload { .. } => !input.is_empty(),
            State::Control { len, got, .. } => input.len() >= len - got,
            State::Header { head, got } => {
                let have = got + input.len();
                let second = if *got >= 2 {
                    head.get(1)
                } else {
                    input.get(1 - got)
                };
                second.is_some_and(|&b1| have >= header_size(b1))
            }
        }
    }

    /// What an end of the stream here cuts short; `None` between messages
    /// (or once failed).
    pub(crate) fn truncation(&self) -> Option<Truncated> {
        match &self.state {
            State::Header { got: 0, .. } if self.in_message => Some(Truncated::Message {
                got: self.message_len,
            }),
            State::Header { got: 0, .. } | State::Failed(_) => None,
            State::Header { got, .. } => Some(Truncated::Header { got: *got }),
            State::Payload { left, .. } => Some(Truncated::Payload { missing: *left }),
            State::Control { op, len, got, .. } => Some(Truncated::Control {
                op: *op,
                missing: len - got,
                len: *len,
            }),
        }
    }

    /// Check a whole header against the rules (in this order: opcode,
    /// reserved bits, length, masking, then what the opcode allows) and
    /// enter its payload.
    fn start_frame(&mut self, h: Header) -> Result<(), FrameError> {
        let op = Opcode::from_bits(h.opcode).ok_or(FrameError::UnknownOpcode(h.opcode))?;
        if h.rsv != 0 {
            return Err(FrameError::ReservedBits);
        }
        if h.len >> 63 != 0 {
            return Err(FrameError::LengthHighBit);
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(FrameError::Unmasked),
            (Role::Client, true) => return Err(FrameError::Masked),
            _ => {}
        }
        match op {
            Opcode::Text => Err(FrameError::Text),
            Opcode::Binary | Opcode::Continue => {
                let cont = op == Opcode::Continue;
                if cont && !self.in_message {
                    return Err(FrameError::UnexpectedContinuation);
                }
                if !cont && self.in_message {
                    return Err(FrameError::ExpectedContinuation);
                }
                if let Some(max) = self.max_frame_size.filter(|&max| h.len > max) {
                    return Err(FrameError::FrameTooBig { len: h.len, max });
                }
                self.message_len = if cont {
                    self.message_len.saturating_add(h.len)
                } else {
                    h.len
                };
                if let Some(max) = self.max_message_size.filter(|&m| self.message_len > m) {
                    return Err(FrameError::MessageTooBig {
                        size: self.message_len,
                        max,
                    });
                }
                self.in_message = !h.fin;
                self.last_data_len = h.len;
                if h.len > 0 {
                    self.state = State::Payload {
                        left: h.len,
                        key: h.mask,
                        phase: 0,
                    };
                }
                Ok(())
            }
            Opcode::Close | Opcode::Ping | Opcode::Pong => {
                if !h.fin || h.len > MAX_CONTROL as u64 {
                    return Err(FrameError::BadControl {
                        len: h.len,
                        fin: h.fin,
                    });
                }
                self.state = State::Control {
                    op,
                    len: h.len as usize,
                    got: 0,
                    key: h.mask,
                    buf: [0; MAX_CONTROL],
                };
                Ok(())
            }
        }
    }

    /// A control frame's payload is complete: unmask it and say what it
    /// was; the next header follows.
    fn end_control(&mut self) -> Result<Event, FrameError> {
        let State::Control {
            op,
            len,
            key,
            mut buf,
            ..
        } = std::mem::replace(&mut self.state, State::header())
        else {
            unreachable!("end_control outside a control frame");
        };
        if let Some(key) = key {
            mask::apply(&mut buf[..len], key, 0);
        }
        let payload = ControlPayload { buf, len };
        match op {
            Opcode::Ping => Ok(Event::Ping(payload)),
            Opcode::Close => match parse_close(payload.bytes()) {
                Ok(pc) => Ok(Event::Close(pc)),
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    Err(e)
                }
            },
            _ => Ok(Event::Pong),
        }
    }
}

/// Take the next header from `head[..got]` (its start, kept from earlier
/// input) and `input`. A header that is whole in `input` is parsed in
/// place; otherwise bytes move into `head` until it is whole.
fn take_header(head: &mut [u8; MAX_HEADER], got: &mut usize, input: &mut &[u8]) -> Option<Header> {
    if *got == 0 {
        if let Some((header, size)) = Header::parse(input) {
            *input = &input[size..];
            return Some(header);
        }
    }
    loop {
        let need = if *got < 2 { 2 } else { header_size(head[1]) };
        if *got == need {
            *got = 0;
            return Header::parse(&head[..need]).map(|(header, _)| header);
        }
        if input.is_empty() {
            return None;
        }
        let take = (need - *got).min(input.len());
        head[*got..*got + take].copy_from_slice(&input[..take]);
        *got += take;
        *input = &input[take..];
    }
}

/// Check and split a close frame's payload.
fn parse_close(payload: &[u8]) -> Result<PeerClose, FrameError> {
    let (code, reason) = match payload {
        [] => {
            return Ok(PeerClose {
                code: status::NO_STATUS,
                reason: String::new(),
            })
        }
        [_] => return Err(FrameError::CloseTooShort),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !tungstenite::protocol::frame::coding::CloseCode::from(code).is_allowed() {
        return Err(FrameError::CloseStatus(code));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| FrameError::CloseUtf8)?;
    Ok(PeerClose {
        code,
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::frame::{close_payload, encode_control, encode_header};

    const KEY: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

    /// One frame as raw bytes, built without the encoder: `first` is the
    /// whole first byte (FIN, RSV, opcode), so rule breakers can be made.
    fn raw(first: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![first];
        let m = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match key {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    /// A final frame with `opcode`, masked as a client sends it.
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        raw(0x80 | opcode, payload, Some(KEY))
    }

    fn close(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    }

    /// What a decoder made of a stream; adjacent payload runs merged (the
    /// stream has no message boundaries).
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        Data(Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(u16, String),
        Error(FrameError),
    }

    fn push_data(out: &mut Vec<Out>, bytes: &[u8]) {
        match out.last_mut() {
            Some(Out::Data(d)) => d.extend_from_slice(bytes),
            _ => out.push(Out::Data(bytes.to_vec())),
        }
    }

    /// Feed `wire` to `dec` in the pieces `cuts` gives (sizes, repeated
    /// until the end), handing payload over as the channel does: out of the
    /// current piece, at most `n` bytes, in place. Stops at an error.
    fn run(dec: &mut Decoder, wire: &[u8], cuts: &mut dyn FnMut() -> usize) -> Vec<Out> {
        let mut out = Vec::new();
        let mut rest = wire;
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(cuts().clamp(1, rest.len()));
            rest = after;
            let mut input = piece;
            loop {
                match dec.decode(&mut input) {
                    Ok(None) => {
                        assert!(input.is_empty(), "None with input left");
                        break;
                    }
                    Ok(Some(Event::Data(n))) => {
                        assert!(n >= 1);
                        if input.is_empty() {
                            break;
                        }
                        let k = usize::try_from(n).unwrap().min(input.len());
                        let mut bytes = input[..k].to_vec();
                        dec.payload(&mut bytes);
                        push_data(&mut out, &bytes);
                        input = &input[k..];
                    }
                    Ok(Some(Event::Ping(p))) => out.push(Out::Ping(p.bytes().to_vec())),
                    Ok(Some(Event::Pong)) => out.push(Out::Pong),
                    Ok(Some(Event::Close(pc))) => out.push(Out::Close(pc.code, pc.reason)),
                    Err(e) => {
                        // The decoder stays failed.
                        assert_eq!(dec.decode(&mut &b"\x82\x00"[..]), Err(e.clone()));
                        out.push(Out::Error(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    fn server() -> Decoder {
        Decoder::new(Role::Server, None, None)
    }

    fn client() -> Decoder {
        Decoder::new(Role::Client, None, None)
    }

    /// `wire` decoded by a fresh decoder from `new`, whole, byte by byte
    /// and in a few other piece sizes: all must agree; returns the result.
    fn decode_all(new: fn() -> Decoder, wire: &[u8]) -> Vec<Out> {
        let whole = run(&mut new(), wire, &mut || usize::MAX);
        for size in [1, 2, 3, 7, 13, 4096] {
            let got = run(&mut new(), wire, &mut || size);
            assert_eq!(got, whole, "pieces of {size} bytes");
        }
        whole
    }

    #[test]
    fn a_stream_decodes_the_same_byte_by_byte_and_in_one_go() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let mid: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let parts: [&[u8]; 4] = [b"", b"hello", &mid, &big];
        let mut data = Vec::new();
        for p in parts {
            data.extend_from_slice(p);
        }
        for (new, key) in [(server as fn() -> Decoder, Some(KEY)), (client, None)] {
            let mut wire = Vec::new();
            for p in parts {
                wire.extend(raw(0x82, p, key));
            }
            wire.extend(raw(0x89, b"are you there", key));
            wire.extend(raw(0x8a, b"unsolicited", key));
            wire.extend(raw(0x88, &close(1000, b"bye"), key));
            assert_eq!(
                decode_all(new, &wire),
                [
                    Out::Data(data.clone()),
                    Out::Ping(b"are you there".to_vec()),
                    Out::Pong,
                    Out::Close(1000, "bye".into()),
                ]
            );
        }
    }

    #[test]
    fn a_fragmented_message_with_interleaved_control_frames_is_one_stream() {
        let mut wire = raw(0x02, b"frag", Some(KEY)); // not final
        wire.extend(masked(0x9, b"a"));
        wire.extend(raw(0x00, b"ment", Some(KEY)));
        wire.extend(masked(0xa, b""));
        wire.extend(raw(0x00, b"", Some(KEY)));
        wire.extend(masked(0x0, b"ed")); // final continuation
        wire.extend(masked(0x2, b"!")); // a new message
        assert_eq!(
            decode_all(server, &wire),
            [
                Out::Data(b"frag".to_vec()),
                Out::Ping(b"a".to_vec()),
                Out::Data(b"ment".to_vec()),
                Out::Pong,
                Out::Data(b"ed!".to_vec()),
            ]
        );
    }

    #[test]
    fn a_close_without_status_reads_as_1005() {
        assert_eq!(
            decode_all(client, &raw(0x88, b"", None)),
            [Out::Close(status::NO_STATUS, String::new())]
        );
    }

    /// Each broken rule, alone after a valid frame, at both piece sizes;
    /// the error carries the close status to answer with.
    #[test]
    fn each_protocol_error_is_typed_with_its_close_status() {
        let mut long = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        long.extend_from_slice(&KEY);
        /// (decoder, frame breaking a rule, error, close status)
        type Case = (fn() -> Decoder, Vec<u8>, FrameError, u16);
        let mut cases: Vec<Case> = vec![
            (server, masked(0x42, b"x"), FrameError::ReservedBits, 1002),
            (server, masked(0x22, b"x"), FrameError::ReservedBits, 1002),
            (server, masked(0x12, b"x"), FrameError::ReservedBits, 1002),
            // The opcode is checked first, as tungstenite's parser did.
            (
                server,
                masked(0x43, b"x"),
                FrameError::UnknownOpcode(3),
                1002,
            ),
            (server, raw(0x82, b"x", None), FrameError::Unmasked, 1002),
            (client, masked(0x2, b"x"), FrameError::Masked, 1002),
            (server, long, FrameError::LengthHighBit, 1002),
            (server, masked(0x1, b"text"), FrameError::Text, 1003),
            (
                server,
                masked(0x0, b"x"),
                FrameError::UnexpectedContinuation,
                1002,
            ),
            (
                server,
                [raw(0x02, b"", Some(KEY)), masked(0x2, b"b")].concat(),
                FrameError::ExpectedContinuation,
                1002,
            ),
            (
                server,
                masked(0x9, &[0; 126]),
                FrameError::BadControl {
                    len: 126,
                    fin: true,
                },
                1002,
            ),
            (
                server,
                raw(0x09, b"", Some(KEY)),
                FrameError::BadControl { len: 0, fin: false },
                1002,
            ),
            (
                client,
                raw(0x88, &[3], None),
                FrameError::CloseTooShort,
                1002,
            ),
            (
                client,
                raw(0x88, &close(1000, b"\xff"), None),
                FrameError::CloseUtf8,
                1007,
            ),
        ];
        for op in (3..=7).chain(11..=15) {
            cases.push((server, masked(op, b""), FrameError::UnknownOpcode(op), 1002));
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
        ] {
            let wire = raw(0x88, &close(code, b""), None);
            cases.push((client, wire, FrameError::CloseStatus(code), 1002));
        }
        for (new, bad, want, status) in cases {
            let key = if new().role == Role::Server {
                Some(KEY)
            } else {
                None
            };
            let mut wire = raw(0x82, b"ok", key);
            wire.extend(&bad);
            wire.extend(raw(0x82, b"never", key));
            assert_eq!(
                decode_all(new, &wire),
                [Out::Data(b"ok".to_vec()), Out::Error(want.clone())],
                "{want}"
            );
            assert_eq!(want.status(), status, "{want}");
        }
    }

    #[test]
    fn allowed_close_statuses_pass() {
        for code in [1000, 1001, 1003, 1011, 1013, 3000, 3999, 4000, 4999] {
            let wire = raw(0x88, &close(code, "é".as_bytes()), None);
            assert_eq!(decode_all(client, &wire), [Out::Close(code, "é".into())]);
        }
    }

    #[test]
    fn size_limits_count_frames_and_whole_messages() {
        let limited = || Decoder::new(Role::Server, Some(10), Some(15));
        let wire = [masked(0x2, &[1; 10]), masked(0x2, &[2; 11])].concat();
        assert_eq!(
            decode_all(limited, &wire),
            [
                Out::Data(vec![1; 10]),
                Out::Error(FrameError::FrameTooBig { len: 11, max: 10 }),
            ]
        );
        // Fragments of 8: the second pushes the message over 15; a new
        // message starts counting again.
        let wire = [
            masked(0x2, &[1; 10]),
            raw(0x02, &[2; 8], Some(KEY)),
            masked(0x0, &[3; 8]),
        ]
        .concat();
        let e = FrameError::MessageTooBig { size: 16, max: 15 };
        assert_eq!(e.status(), 1009);
        let mut want = vec![1; 10];
        want.extend([2; 8]);
        assert_eq!(decode_all(limited, &wire), [Out::Data(want), Out::Error(e)]);
        // Control frames are not data: 125 bytes pass any data limit.
        let wire = masked(0x9, &[5; 125]);
        assert_eq!(decode_all(limited, &wire), [Out::Ping(vec![5; 125])]);
    }

    /// The hand-off: `decode` stops where payload starts and consumes
    /// none of it; the caller may take it from the input or from anywhere
    /// else (the channel reads it from the socket into its caller's
    /// buffer), in pieces, and decoding goes on after the last byte.
    #[test]
    fn payload_is_handed_to_the_caller_and_decoding_goes_on_after_it() {
        let data: Vec<u8> = (0..10).collect();
        let wire = [masked(0x2, &data), masked(0x9, b"p")].concat();
        let (head, rest) = wire.split_at(6);
        let mut dec = server();

        let mut input = head;
        assert_eq!(dec.decode(&mut input), Ok(Some(Event::Data(10))));
        assert!(input.is_empty());
        // Asking again changes nothing.
        assert_eq!(dec.decode(&mut input), Ok(Some(Event::Data(10))));

        // "Read directly": the masked payload lands in the caller's
        // buffer, in three pieces (the key phase carries over).
        let mut buf = rest[..10].to_vec();
        let (a, b) = buf.split_at_mut(3);
        dec.payload(a);
        assert_eq!(dec.decode(&mut &rest[3..]), Ok(Some(Event::Data(7))));
        let (b1, b2) = b.split_at_mut(2);
        dec.payload(b1);
        dec.payload(b2);
        assert_eq!(buf, data);
        assert!(dec.between_frames());
        assert_eq!(dec.last_data_len(), 10);

        let mut input = &rest[10..];
        assert_eq!(
            dec.decode(&mut input).map(|e| e.map(|e| format!("{e:?}"))),
            Ok(Some(format!("{:?}", Event::Ping(ping(b"p")))))
        );
        assert!(input.is_empty());
    }

    fn ping(bytes: &[u8]) -> ControlPayload {
        let mut buf = [0; MAX_CONTROL];
        buf[..bytes.len()].copy_from_slice(bytes);
        ControlPayload {
            buf,
            len: bytes.len(),
        }
    }

    #[test]
    #[should_panic(expected = "payload beyond the frame")]
    fn payload_beyond_the_frame_is_a_caller_bug() {
        let mut dec = client();
        let mut input = &[0x82, 2][..];
        assert_eq!(dec.decode(&mut input), Ok(Some(Event::Data(2))));
        dec.payload(&mut [0; 3]);
    }

    #[test]
    #[should_panic(expected = "outside a data frame")]
    fn payload_between_frames_is_a_caller_bug() {
        client().payload(&mut [0]);
    }

    /// Cut a stream at every byte: what is missing at each point.
    #[test]
    fn truncation_says_where_the_stream_was_cut() {
        let wire = [
            raw(0x02, b"abc", Some(KEY)), // 0..9: a first fragment
            masked(0x9, b"xy"),           // 9..17: a ping
            masked(0x0, b"de"),           // 17..25: the last fragment
        ]
        .concat();
        let at = |cut: usize| {
            let mut dec = server();
            let out = run(&mut dec, &wire[..cut], &mut || usize::MAX);
            assert!(!out.iter().any(|o| matches!(o, Out::Error(_))), "{out:?}");
            dec.truncation()
        };
        assert_eq!(at(0), None);
        assert_eq!(at(1), Some(Truncated::Header { got: 1 }));
        assert_eq!(at(5), Some(Truncated::Header { got: 5 }));
        assert_eq!(at(6), Some(Truncated::Payload { missing: 3 }));
        assert_eq!(at(8), Some(Truncated::Payload { missing: 1 }));
        assert_eq!(at(9), Some(Truncated::Message { got: 3 }));
        assert_eq!(at(12), Some(Truncated::Header { got: 3 }));
        let ping_cut = Truncated::Control {
            op: Opcode::Ping,
            missing: 1,
            len: 2,
        };
        assert_eq!(at(16), Some(ping_cut.clone()));
        assert_eq!(at(17), Some(Truncated::Message { got: 3 }));
        assert_eq!(at(25), None);
        // The words the channel's errors use.
        assert_eq!(
            ping_cut.to_string(),
            "the connection ended inside a websocket Ping frame (1 of 2 payload bytes missing)"
        );
        assert_eq!(
            Truncated::Payload { missing: 900 }.to_string(),
            "the connection ended inside a websocket frame (900 payload bytes missing)"
        );
    }

    /// `ready`: whether the given input (with what the decoder holds) is
    /// enough for the next step; the channel's readiness uses it.
    #[test]
    fn ready_says_whether_the_input_completes_a_step() {
        let wire = masked(0x2, b"abc"); // 2 + 4 + 3 bytes
        let dec = server();
        assert!(!dec.ready(&wire[..1]));
        assert!(!dec.ready(&wire[..5]));
        assert!(dec.ready(&wire[..6]));

        // Part of the header held inside, the rest given.
        let mut dec = server();
        assert_eq!(dec.decode(&mut &wire[..3]), Ok(None));
        assert!(!dec.ready(&wire[3..5]));
        assert!(dec.ready(&wire[3..6]));
        let mut dec = server();
        assert_eq!(dec.decode(&mut &wire[..1]), Ok(None));
        assert!(!dec.ready(&[]));
        assert!(dec.ready(&wire[1..6]));

        // Payload: any byte is progress.
        let mut dec = server();
        assert_eq!(dec.decode(&mut &wire[..6]), Ok(Some(Event::Data(3))));
        assert!(!dec.ready(&[]));
        assert!(dec.ready(&wire[6..7]));

        // A control frame: all of its payload.
        let ping = masked(0x9, b"xyz");
        let mut dec = server();
        assert_eq!(dec.decode(&mut &ping[..7]), Ok(None));
        assert!(!dec.ready(&ping[7..8]));
        assert!(dec.ready(&ping[7..9]));
    }

    /// A small deterministic generator (xorshift64*), so the randomized
    /// tests below need no dependency and replay the same cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Random byte streams (some starting like real headers) in random
    /// pieces never panic: every call ends in an event, a request for
    /// more, or an error that then stays.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(64) as usize;
            let mut wire = rng.bytes(len);
            if let Some(b) = wire.get_mut(0) {
                // Mostly FIN with a known opcode, sometimes anything.
                if rng.below(4) != 0 {
                    *b = 0x80 | [0, 1, 2, 8, 9, 10][rng.below(6) as usize];
                }
            }
            if let Some(b) = wire.get_mut(1) {
                // Mostly short lengths, so payloads end inside the input.
                if rng.below(4) != 0 {
                    *b = (*b & 0x80) | (rng.below(24) as u8);
                }
            }
            let role = if rng.below(2) == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let limit = (rng.below(2) == 0).then(|| rng.below(32));
            let mut dec = Decoder::new(role, limit, limit);
            let mut cuts = || rng.below(8) as usize + 1;
            let _ = run(&mut dec, &wire, &mut cuts);
            let _ = (dec.truncation(), dec.ready(&wire), dec.between_frames());
        }
    }

    /// Random messages (fragmented at random, pings between fragments,
    /// empty frames, a close at the end) written with the encoder and
    /// read back in random pieces give back the same stream, for both
    /// directions.
    #[test]
    fn encoded_frames_decode_to_the_same_stream() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for round in 0..300 {
            let to_server = round % 2 == 0;
            let key = |rng: &mut Rng| to_server.then(|| (rng.next() as u32).to_ne_bytes());
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for _ in 0..rng.below(5) {
                let fragments = rng.below(4) + 1;
                for f in 0..fragments {
                    let len = match rng.below(10) {
                        0 => 0,
                        1 => 70_000 + rng.below(1000) as usize,
                        2 => 126 + rng.below(1000) as usize,
                        _ => rng.below(126) as usize,
                    };
                    let payload = rng.bytes(len);
                    let op = if f == 0 {
                        Opcode::Binary
                    } else {
                        Opcode::Continue
                    };
                    let k = key(&mut rng);
                    let mut head = [0u8; MAX_HEADER];
                    let n = encode_header(op, f + 1 == fragments, k, len as u64, &mut head);
                    wire.extend_from_slice(&head[..n]);
                    let start = wire.len();
                    wire.extend_from_slice(&payload);
                    if let Some(k) = k {
                        mask::apply(&mut wire[start..], k, 0);
                    }
                    if !payload.is_empty() {
                        push_data(&mut want, &payload);
                    }
                    if rng.below(3) == 0 {
                        let n = rng.below(126) as usize;
                        let p = rng.bytes(n);
                        let k = key(&mut rng);
                        encode_control(&mut wire, Opcode::Ping, &p, k);
                        want.push(Out::Ping(p));
                    }
                }
            }
            let code = [1000, 1001, 1011, 3000, 4999][rng.below(5) as usize];
            let reason = "é".repeat(rng.below(60) as usize);
            let (payload, len) = close_payload(code, &reason);
            let k = key(&mut rng);
            encode_control(&mut wire, Opcode::Close, &payload[..len], k);
            want.push(Out::Close(code, reason));

            let role = if to_server {
                Role::Server
            } else {
                Role::Client
            };
            let mut dec = Decoder::new(role, None, None);
            let mut cuts = || match rng.below(3) {
                0 => rng.below(4) as usize + 1,
                1 => rng.below(200) as usize + 1,
                _ => rng.below(100_000) as usize + 1,
            };
            assert_eq!(run(&mut dec, &wire, &mut cuts), want, "round {round}");
            assert_eq!(dec.truncation(), None, "round {round}");
        }
    }
}

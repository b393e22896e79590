//! The data path of [`WebSocketChannel`]: frames in, frames out.

use std::io::{Cursor, IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::{mask, status, Role, WebSocketConfig};
use crate::address::SocketAddress;
use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, FlushOutcome, ReadFlags,
    Readiness, Shutdown, ShutdownHandle, WatchSource, WriteFlags,
};
use crate::error::{Cause, Error, Result};
use crate::io::wait_blocking;

/// A read at most this large counts as small in
/// [`WebSocketChannel::header_read_limit`].
const SMALL_READ: usize = 4096;

/// Longest frame header: 2 bytes, 8 of length, 4 of mask key.
const MAX_HEADER: usize = 14;
/// Largest control frame payload (RFC 6455 section 5.5).
const MAX_CONTROL: usize = 125;
/// Most caller buffers handed to the inner channel in one call.
const MAX_IOV: usize = 64;

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

/// Where the reader is in the incoming frame sequence.
#[derive(Debug)]
enum ReadState {
    /// Between frames: a header comes next.
    Header,
    /// Inside a data frame with `remaining` payload bytes to go.
    Data {
        remaining: u64,
        mask: Option<[u8; 4]>,
        phase: usize,
    },
    /// Collecting a control frame's payload.
    Control {
        op: Control,
        len: usize,
        got: usize,
        mask: Option<[u8; 4]>,
        buf: [u8; MAX_CONTROL],
    },
}

/// A byte stream in binary WebSocket frames over another channel; see the
/// [module documentation](super).
pub struct WebSocketChannel {
    name: String,
    inner: Box<dyn Channel>,
    role: Role,
    config: WebSocketConfig,
    protocol: Option<String>,

    // Input: rbuf[rstart..rend] holds bytes read but not decoded.
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    rstate: ReadState,
    /// Inside a fragmented message (a continuation frame comes next).
    in_message: bool,
    /// Payload bytes of the current message so far.
    message_len: u64,
    /// Length of the last data frame: when the peer sends frames larger
    /// than the read buffer, a frame header is read on its own (see
    /// [`WebSocketChannel::header_read_limit`]).
    last_frame_len: u64,

    // Output: wbuf[wpos..] is committed but not yet written.
    wbuf: Vec<u8>,
    wpos: usize,
    /// End of a queued pong in `wbuf` while it is not fully written.
    pong_end: Option<usize>,
    keys: mask::KeyPool,

    close_sent: bool,
    peer_close: Option<PeerClose>,
    failed: Option<String>,
    closed: bool,

    readiness: Readiness,
    inner_ready: Readiness,
}

impl std::fmt::Debug for WebSocketChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketChannel")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("close_sent", &self.close_sent)
            .field("peer_close", &self.peer_close)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl WebSocketChannel {
    /// Wrap `inner`, on which the upgrade handshake has already happened
    /// (by us or by someone else), as `role`. `tail` holds bytes already
    /// read from `inner` after the handshake; they are decoded first.
    ///
    /// [`WebSocketChannel::client`] and [`WebSocketChannel::server`] are
    /// the usual way in; this is for streams upgraded elsewhere.
    pub fn from_upgraded(
        inner: Box<dyn Channel>,
        role: Role,
        config: WebSocketConfig,
        tail: &[u8],
    ) -> WebSocketChannel {
        let name = format!("websocket {}", inner.name());
        WebSocketChannel::new(name, inner, role, config, tail, None)
    }

    pub(crate) fn new(
        name: String,
        inner: Box<dyn Channel>,
        role: Role,
        config: WebSocketConfig,
        tail: &[u8],
        protocol: Option<String>,
    ) -> WebSocketChannel {
        let config = config.normalized();
        let mut rbuf = vec![0u8; config.read_buffer_size.max(tail.len())].into_boxed_slice();
        rbuf[..tail.len()].copy_from_slice(tail);
        let wcap = match role {
            Role::Client => config.write_frame_size + config.write_frame_size / 16 + MAX_HEADER,
            Role::Server => 0,
        };
        let inner_ready = inner.watch_source().ready;
        let ch = WebSocketChannel {
            name,
            inner,
            role,
            config,
            protocol,
            rbuf,
            rstart: 0,
            rend: tail.len(),
            rstate: ReadState::Header,
            in_message: false,
            message_len: 0,
            last_frame_len: 0,
            wbuf: Vec::with_capacity(wcap),
            wpos: 0,
            pong_end: None,
            keys: mask::KeyPool::new(),
            close_sent: false,
            peer_close: None,
            failed: None,
            closed: false,
            readiness: Readiness::new(),
            inner_ready,
        };
        ch.update_readiness();
        ch
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The subprotocol agreed in the handshake (`binary`), if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The peer's close frame, once it arrived.
    pub fn peer_close(&self) -> Option<&PeerClose> {
        self.peer_close.as_ref()
    }

    /// True once our close frame is queued ([`Channel::bye`], an answer to
    /// the peer's close, or a protocol failure).
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The channel beneath.
    pub fn inner(&self) -> &dyn Channel {
        &*self.inner
    }

    /// The channel beneath, mutably (writing to it directly corrupts the
    /// frame stream).
    pub fn inner_mut(&mut self) -> &mut dyn Channel {
        &mut *self.inner
    }

    /// Give up the websocket layer and return the channel beneath; bytes
    /// still buffered in either direction are dropped.
    pub fn into_inner(self) -> Box<dyn Channel> {
        self.inner
    }

    /// The typed cause of this channel's failures: the peer's close code
    /// once its close frame arrived.
    fn cause(&self) -> Cause {
        Cause::WebSocket {
            close_code: self.peer_close.as_ref().map(|pc| pc.code),
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        if let Some(msg) = &self.failed {
            return Err(Error::layer(&self.name, msg, self.cause()));
        }
        Ok(())
    }

    /// What a read returns once the peer's close frame arrived.
    fn peer_close_result(&self, pc: &PeerClose) -> Result<usize> {
        if pc.is_clean() {
            Ok(0)
        } else {
            Err(Error::layer(
                &self.name,
                format_args!(
                    "peer closed the websocket with status {} ({}){}",
                    pc.code,
                    describe_status(pc.code),
                    if pc.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", crate::peer_text::escape(&pc.reason))
                    }
                ),
                Cause::WebSocket {
                    close_code: Some(pc.code),
                },
            ))
        }
    }

    /// Fail the channel: queue a close frame with `code` (unless one was
    /// already sent or the peer closed), push it out without blocking, and
    /// return the error. Later I/O repeats it.
    fn fail(&mut self, code: u16, reason: &str, msg: String) -> Error {
        if !self.close_sent && self.peer_close.is_none() {
            self.queue_close(code, reason);
            self.try_flush_nonblocking();
        }
        let msg = format!("{msg} (sent close status {code})");
        self.failed = Some(msg.clone());
        self.update_readiness();
        Error::layer(&self.name, msg, self.cause())
    }

    // ---------------------------------------------------------------
    // Output
    // ---------------------------------------------------------------

    /// Append a control frame to the output queue.
    fn queue_control(&mut self, op: Control, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_CONTROL);
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            self.pong_end = None;
        }
        let key = match self.role {
            // A failing random source leaves the key all zero: still a
            // valid frame, and the next data frame reports the error.
            Role::Client => Some(self.keys.next().unwrap_or([0; 4])),
            Role::Server => None,
        };
        let hdr = FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::Control(op),
            mask: key,
        };
        let mut head = [0u8; MAX_HEADER];
        let hlen = format_header(&hdr, payload.len() as u64, &mut head);
        self.wbuf.extend_from_slice(&head[..hlen]);
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(payload);
        if let Some(key) = key {
            mask::apply(&mut self.wbuf[start..], key, 0);
        }
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        let mut payload = [0u8; MAX_CONTROL];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let r = &reason.as_bytes()[..reason.len().min(MAX_CONTROL - 2)];
        payload[2..2 + r.len()].copy_from_slice(r);
        self.queue_control(Control::Close, &payload[..2 + r.len()]);
        self.close_sent = true;
    }

    /// Write queued output; `WouldBlock` if the inner channel is full.
    fn flush_pending(&mut self) -> Result<()> {
        while self.wpos < self.wbuf.len() {
            let n = self.inner.writev(
                &[IoSlice::new(&self.wbuf[self.wpos..])],
                &[],
                WriteFlags::empty(),
            )?;
            if n == 0 {
                return Err(Error::protocol(
                    &self.name,
                    "the channel beneath accepted no bytes of a websocket frame",
                ));
            }
            self.wpos += n;
            if self.pong_end.is_some_and(|end| self.wpos >= end) {
                self.pong_end = None;
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        self.pong_end = None;
        Ok(())
    }

    /// Write queued output, waiting for the inner channel when it is
    /// non-blocking.
    fn flush_pending_wait(&mut self) -> Result<()> {
        loop {
            match self.flush_pending() {
                Err(Error::WouldBlock) => {
                    wait_blocking(&self.inner.watch_source(), Condition::OUT, None)?;
                }
                other => return other,
            }
        }
    }

    /// One non-blocking attempt to write queued control frames; errors are
    /// left for the next write to find.
    fn try_flush_nonblocking(&mut self) {
        if self.wpos == self.wbuf.len() {
            return;
        }
        let blocking = self.inner.is_blocking();
        if blocking && self.inner.set_blocking(false).is_err() {
            return;
        }
        let _ = self.flush_pending();
        if blocking {
            let _ = self.inner.set_blocking(true);
        }
    }

    /// Payload length of the next frame for a write of `total` bytes: the
    /// configured frame size, or all of `total` when the rest after one
    /// frame would be a small tail (at most 1/16 of a frame), so a write
    /// of a frame and a little more (a multifd packet with its header) is
    /// not followed by a tiny frame of its own.
    fn frame_len(&self, total: usize) -> usize {
        let frame = self.config.write_frame_size;
        if total <= frame + frame / 16 {
            total
        } else {
            frame
        }
    }

    /// Server frame: header and caller's buffers in one inner `writev`.
    fn write_frame_unmasked(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV + 1];
        let mut n = 1;
        let mut len = 0usize;
        let limit = self.frame_len(bufs.iter().map(|b| b.len()).sum());
        for b in bufs {
            if n > MAX_IOV || len == limit {
                break;
            }
            if b.is_empty() {
                continue;
            }
            let take = b.len().min(limit - len);
            iov[n] = IoSlice::new(&b[..take]);
            n += 1;
            len += take;
        }
        let mut head = [0u8; MAX_HEADER];
        let hlen = format_header(&binary_header(None), len as u64, &mut head);
        iov[0] = IoSlice::new(&head[..hlen]);
        let written = self.inner.writev(&iov[..n], &[], WriteFlags::empty())?;
        let total = hlen + len;
        if written < total {
            // Keep the rest of the frame; it goes out before anything else.
            let mut skip = written;
            for s in &iov[..n] {
                if skip >= s.len() {
                    skip -= s.len();
                    continue;
                }
                self.wbuf.extend_from_slice(&s[skip..]);
                skip = 0;
            }
            if self.inner.is_blocking() {
                self.flush_pending_wait()?;
            } else {
                match self.flush_pending() {
                    Ok(()) | Err(Error::WouldBlock) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(len)
    }

    /// Client frame: header and masked payload built in `wbuf`.
    fn write_frame_masked(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let key = self
            .keys
            .next()
            .map_err(|e| Error::os(&self.name, "getrandom for a websocket mask key", e))?;
        let len = self.frame_len(bufs.iter().map(|b| b.len()).sum());
        self.wbuf.clear();
        self.wpos = 0;
        self.pong_end = None;
        let mut head = [0u8; MAX_HEADER];
        let hlen = format_header(&binary_header(Some(key)), len as u64, &mut head);
        self.wbuf.extend_from_slice(&head[..hlen]);
        let mut left = len;
        let mut phase = 0;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = b.len().min(left);
            phase = mask::extend_masked(&mut self.wbuf, &b[..take], key, phase);
            left -= take;
        }
        match self.flush_pending() {
            // The frame is committed; it goes out before anything else.
            Ok(()) | Err(Error::WouldBlock) => Ok(len),
            Err(e) => Err(e),
        }
    }

    // ---------------------------------------------------------------
    // Input
    // ---------------------------------------------------------------

    fn buffered(&self) -> usize {
        self.rend - self.rstart
    }

    /// How many bytes to read from the inner channel when a frame header
    /// is due and `want` payload bytes are asked for.
    ///
    /// While the peer sends frames at least as large as the read buffer
    /// (multifd's 256 KiB frames), filling the whole buffer would pull up
    /// to 64 KiB of payload into it, to be copied out again: a quarter of
    /// the stream copied twice. So then only the longest header is read,
    /// plus the caller's wish if that is small (a packet header); the
    /// payload after it goes straight into the caller's buffers. With
    /// small frames one read still takes in many of them. On a 1 GiB
    /// multifd transfer this cut the receiver's CPU from 0.285 to 0.268
    /// s/GB (median of 10 alternating runs).
    fn header_read_limit(&self, want: usize) -> usize {
        if self.last_frame_len >= self.rbuf.len() as u64 {
            MAX_HEADER + if want <= SMALL_READ { want } else { 0 }
        } else {
            usize::MAX
        }
    }

    /// Read more bytes (at most `limit`) from the inner channel into the
    /// read buffer.
    fn fill(&mut self, limit: usize) -> Result<usize> {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        let end = self.rend.saturating_add(limit).min(self.rbuf.len());
        let n = self.inner.readv(
            &mut [IoSliceMut::new(&mut self.rbuf[self.rend..end])],
            None,
            ReadFlags::empty(),
        )?;
        self.rend += n;
        Ok(n)
    }

    /// The inner channel ended where a frame header was due.
    fn eof_between_frames(&mut self, flags: ReadFlags) -> Result<usize> {
        let partial = self.buffered();
        if partial > 0 {
            return Err(self.vanished(format!(
                "the connection ended inside a websocket frame header ({partial} bytes of it arrived)"
            )));
        }
        if self.in_message {
            return Err(self.vanished(format!(
                "the connection ended inside a fragmented websocket message ({} bytes of it arrived)",
                self.message_len
            )));
        }
        if self.close_sent || flags.contains(ReadFlags::RELAXED_EOF) {
            return Ok(0);
        }
        Err(self.vanished(
            "the peer closed the connection without a websocket close frame (the stream may be truncated)"
                .to_owned(),
        ))
    }

    /// The peer is gone: no close frame can be sent, just fail.
    fn vanished(&mut self, msg: String) -> Error {
        self.failed = Some(msg.clone());
        self.update_readiness();
        Error::layer(&self.name, msg, self.cause())
    }

    /// Decode a frame header from the read buffer, if a whole one is there.
    fn parse_header(&mut self) -> Result<bool> {
        let avail = &self.rbuf[self.rstart..self.rend];
        let mut cur = Cursor::new(avail);
        let parsed = match FrameHeader::parse(&mut cur) {
            Ok(p) => p,
            Err(e) => {
                return Err(self.fail(
                    status::PROTOCOL,
                    "protocol error",
                    format!("invalid websocket frame header: {e}"),
                ))
            }
        };
        let Some((hdr, len)) = parsed else {
            return Ok(false);
        };
        self.rstart += cur.position() as usize;
        self.start_frame(hdr, len)?;
        Ok(true)
    }

    /// Check a frame header against the rules and set up its payload.
    fn start_frame(&mut self, hdr: FrameHeader, len: u64) -> Result<()> {
        if hdr.rsv1 || hdr.rsv2 || hdr.rsv3 {
            return Err(self.fail(
                status::PROTOCOL,
                "reserved bits set",
                "websocket frame with reserved bits set (no extension was negotiated)".into(),
            ));
        }
        if len >> 63 != 0 {
            return Err(self.fail(
                status::PROTOCOL,
                "invalid length",
                "websocket frame length has its most significant bit set".into(),
            ));
        }
        match (self.role, hdr.mask.is_some()) {
            (Role::Server, false) => {
                return Err(self.fail(
                    status::PROTOCOL,
                    "unmasked frame",
                    "unmasked websocket frame from the client (clients must mask every frame)"
                        .into(),
                ))
            }
            (Role::Client, true) => {
                return Err(self.fail(
                    status::PROTOCOL,
                    "masked frame",
                    "masked websocket frame from the server (servers must not mask)".into(),
                ))
            }
            _ => {}
        }
        match hdr.opcode {
            OpCode::Data(Data::Text) => Err(self.fail(
                status::UNSUPPORTED,
                "binary data only",
                "text websocket frame refused: this endpoint accepts binary data only".into(),
            )),
            OpCode::Data(Data::Binary) | OpCode::Data(Data::Continue) => {
                let cont = hdr.opcode == OpCode::Data(Data::Continue);
                if cont && !self.in_message {
                    return Err(self.fail(
                        status::PROTOCOL,
                        "unexpected continuation",
                        "websocket continuation frame outside a fragmented message".into(),
                    ));
                }
                if !cont && self.in_message {
                    return Err(self.fail(
                        status::PROTOCOL,
                        "expected continuation",
                        "new websocket message inside an unfinished fragmented message".into(),
                    ));
                }
                if let Some(max) = self.config.max_frame_size {
                    if len > max {
                        return Err(self.fail(
                            status::TOO_BIG,
                            "frame too big",
                            format!("websocket frame of {len} bytes exceeds the limit of {max}"),
                        ));
                    }
                }
                self.message_len = if cont {
                    self.message_len.saturating_add(len)
                } else {
                    len
                };
                if let Some(max) = self.config.max_message_size {
                    if self.message_len > max {
                        let size = self.message_len;
                        return Err(self.fail(
                            status::TOO_BIG,
                            "message too big",
                            format!(
                                "websocket message of at least {size} bytes exceeds the limit of {max}"
                            ),
                        ));
                    }
                }
                self.in_message = !hdr.is_final;
                self.last_frame_len = len;
                self.rstate = ReadState::Data {
                    remaining: len,
                    mask: hdr.mask,
                    phase: 0,
                };
                Ok(())
            }
            OpCode::Control(op @ (Control::Close | Control::Ping | Control::Pong)) => {
                if !hdr.is_final || len > MAX_CONTROL as u64 {
                    return Err(self.fail(
                        status::PROTOCOL,
                        "bad control frame",
                        format!(
                            "websocket control frame {} (control frames must be whole and at most 125 bytes)",
                            if hdr.is_final { format!("of {len} bytes") } else { "fragmented".into() }
                        ),
                    ));
                }
                self.rstate = ReadState::Control {
                    op,
                    len: len as usize,
                    got: 0,
                    mask: hdr.mask,
                    buf: [0; MAX_CONTROL],
                };
                Ok(())
            }
            OpCode::Data(Data::Reserved(n)) | OpCode::Control(Control::Reserved(n)) => Err(self
                .fail(
                    status::PROTOCOL,
                    "unknown opcode",
                    format!("websocket frame with unknown opcode {n}"),
                )),
        }
    }

    /// Act on a whole control frame. `Some` ends the read with that result.
    fn handle_control(&mut self, op: Control, payload: &[u8]) -> Option<Result<usize>> {
        match op {
            Control::Ping => {
                if !self.close_sent && self.pong_end.is_none() {
                    self.queue_control(Control::Pong, payload);
                    self.pong_end = Some(self.wbuf.len());
                    self.try_flush_nonblocking();
                }
                None
            }
            Control::Pong => None,
            Control::Close => Some(self.handle_close(payload)),
            Control::Reserved(_) => None,
        }
    }

    fn handle_close(&mut self, payload: &[u8]) -> Result<usize> {
        let (code, reason) = match payload.len() {
            0 => (status::NO_STATUS, String::new()),
            1 => {
                return Err(self.fail(
                    status::PROTOCOL,
                    "bad close frame",
                    "websocket close frame with a 1-byte payload".into(),
                ))
            }
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !CloseCode::from(code).is_allowed() {
                    return Err(self.fail(
                        status::PROTOCOL,
                        "bad close status",
                        format!("websocket close frame with invalid status {code}"),
                    ));
                }
                match std::str::from_utf8(&payload[2..]) {
                    Ok(r) => (code, r.to_owned()),
                    Err(_) => {
                        return Err(self.fail(
                            status::INVALID,
                            "invalid UTF-8",
                            "websocket close reason is not valid UTF-8".into(),
                        ))
                    }
                }
            }
        };
        if !self.close_sent {
            // Answer, echoing the status (RFC 6455 section 5.5.1).
            let echo = if code == status::NO_STATUS {
                status::NORMAL
            } else {
                code
            };
            self.queue_close(echo, "");
            self.try_flush_nonblocking();
        }
        let pc = PeerClose { code, reason };
        let result = self.peer_close_result(&pc);
        self.peer_close = Some(pc);
        self.update_readiness();
        result
    }

    /// Copy buffered payload into `bufs`, unmasking; returns bytes copied.
    fn copy_buffered(&mut self, bufs: &mut [IoSliceMut<'_>], limit: usize) -> usize {
        let mut left = limit.min(self.buffered());
        let mut done = 0;
        for b in bufs.iter_mut() {
            if left == 0 {
                break;
            }
            let take = b.len().min(left);
            b[..take].copy_from_slice(&self.rbuf[self.rstart..self.rstart + take]);
            self.rstart += take;
            left -= take;
            done += take;
        }
        done
    }

    /// Read payload straight from the inner channel into at most `limit`
    /// bytes of `bufs`.
    fn read_direct(&mut self, bufs: &mut [IoSliceMut<'_>], limit: usize) -> Result<usize> {
        let mut iov: [IoSliceMut<'_>; MAX_IOV] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut n = 0;
        let mut left = limit;
        for b in bufs.iter_mut() {
            if left == 0 || n == MAX_IOV {
                break;
            }
            if b.is_empty() {
                continue;
            }
            let take = b.len().min(left);
            iov[n] = IoSliceMut::new(&mut b[..take]);
            n += 1;
            left -= take;
        }
        self.inner.readv(&mut iov[..n], None, ReadFlags::empty())
    }

    fn read_inner(&mut self, bufs: &mut [IoSliceMut<'_>], flags: ReadFlags) -> Result<usize> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        if want == 0 {
            return Ok(0);
        }
        loop {
            match &mut self.rstate {
                ReadState::Data { remaining: 0, .. } => {
                    self.rstate = ReadState::Header;
                }
                ReadState::Data {
                    remaining,
                    mask,
                    phase,
                } => {
                    let (rem, key, ph) = (*remaining, *mask, *phase);
                    let limit = usize::try_from(rem).unwrap_or(usize::MAX).min(want);
                    let got = if self.rstart < self.rend {
                        self.copy_buffered(bufs, limit)
                    } else {
                        let got = self.read_direct(bufs, limit)?;
                        if got == 0 {
                            return Err(self.vanished(format!(
                                "the connection ended inside a websocket frame ({rem} payload bytes missing)"
                            )));
                        }
                        got
                    };
                    let mut new_phase = ph;
                    if let Some(key) = key {
                        let mut left = got;
                        for b in bufs.iter_mut() {
                            if left == 0 {
                                break;
                            }
                            let take = b.len().min(left);
                            new_phase = mask::apply(&mut b[..take], key, new_phase);
                            left -= take;
                        }
                    }
                    let rem = rem - got as u64;
                    self.rstate = if rem == 0 {
                        ReadState::Header
                    } else {
                        ReadState::Data {
                            remaining: rem,
                            mask: key,
                            phase: new_phase,
                        }
                    };
                    return Ok(got);
                }
                ReadState::Control {
                    op,
                    len,
                    got,
                    mask,
                    buf,
                } => {
                    if *got < *len {
                        if self.rstart == self.rend {
                            let (op, len, got) = (*op, *len, *got);
                            match self.fill(usize::MAX)? {
                                0 => {
                                    return Err(self.vanished(format!(
                                        "the connection ended inside a websocket {op:?} frame ({} of {len} payload bytes missing)",
                                        len - got
                                    )))
                                }
                                _ => continue,
                            }
                        }
                        let take = (*len - *got).min(self.rend - self.rstart);
                        buf[*got..*got + take]
                            .copy_from_slice(&self.rbuf[self.rstart..self.rstart + take]);
                        self.rstart += take;
                        *got += take;
                        continue;
                    }
                    let (op, len, mut payload) = (*op, *len, *buf);
                    if let Some(key) = *mask {
                        mask::apply(&mut payload[..len], key, 0);
                    }
                    self.rstate = ReadState::Header;
                    if let Some(result) = self.handle_control(op, &payload[..len]) {
                        return result;
                    }
                }
                ReadState::Header => {
                    if self.parse_header()? {
                        continue;
                    }
                    if self.fill(self.header_read_limit(want))? == 0 {
                        return self.eof_between_frames(flags);
                    }
                }
            }
        }
    }

    /// Recompute the readiness the main loop sees.
    fn update_readiness(&self) {
        let mut ready = self.inner_ready.get() & Condition::IN;
        if self.failed.is_some() || self.peer_close.is_some() || self.decodable() {
            ready |= Condition::IN;
        }
        self.readiness.set(ready);
    }

    /// True if the read buffer holds something a read can use without
    /// touching the inner channel.
    fn decodable(&self) -> bool {
        let avail = &self.rbuf[self.rstart..self.rend];
        match &self.rstate {
            ReadState::Data { remaining, .. } => *remaining == 0 || !avail.is_empty(),
            ReadState::Control { len, got, .. } => avail.len() >= len - got,
            ReadState::Header => header_len(avail).is_some_and(|n| avail.len() >= n),
        }
    }
}

/// The length of the frame header starting `avail`, once its first two
/// bytes are there.
fn header_len(avail: &[u8]) -> Option<usize> {
    if avail.len() < 2 {
        return None;
    }
    let ext = match avail[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if avail[1] & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

fn binary_header(mask: Option<[u8; 4]>) -> FrameHeader {
    FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::Data(Data::Binary),
        mask,
    }
}

/// Format `hdr` for a payload of `len` bytes into `out`; returns its size.
fn format_header(hdr: &FrameHeader, len: u64, out: &mut [u8; MAX_HEADER]) -> usize {
    let mut cur = Cursor::new(&mut out[..]);
    // Writing at most 14 bytes into a 14-byte buffer cannot fail.
    let _ = hdr.format(len, &mut cur);
    cur.position() as usize
}

fn describe_status(code: u16) -> &'static str {
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

impl Channel for WebSocketChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn features(&self) -> Features {
        self.inner.features() & Features::SHUTDOWN
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        self.check_usable()?;
        check_read_request(self, fds.is_some(), flags)?;
        if let Some(pc) = &self.peer_close {
            return self.peer_close_result(pc);
        }
        // Pongs and close answers queued earlier.
        self.try_flush_nonblocking();
        let r = self.read_inner(bufs, flags);
        self.update_readiness();
        r
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        self.check_usable()?;
        check_write_request(self, !fds.is_empty(), flags)?;
        if let Some(pc) = &self.peer_close {
            return Err(Error::layer(
                &self.name,
                format_args!(
                    "cannot write: the peer closed the websocket (status {})",
                    pc.code
                ),
                Cause::WebSocket {
                    close_code: Some(pc.code),
                },
            ));
        }
        if self.close_sent {
            return Err(Error::protocol(
                &self.name,
                "cannot write after the websocket close frame was sent (bye)",
            ));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        self.flush_pending()?;
        let r = match self.role {
            Role::Server => self.write_frame_unmasked(bufs),
            Role::Client => self.write_frame_masked(bufs),
        };
        self.update_readiness();
        r
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.inner.set_blocking(blocking)
    }

    fn is_blocking(&self) -> bool {
        self.inner.is_blocking()
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.try_flush_nonblocking();
        self.closed = true;
        self.readiness.set(Condition::NVAL);
        self.inner.close()
    }

    fn watch_source(&self) -> WatchSource {
        let mut ws = self.inner.watch_source();
        ws.ready = self.readiness.clone();
        ws.name = self.name.clone();
        ws
    }

    fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        self.inner.shutdown(how)
    }

    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        self.inner.shutdown_handle()
    }

    /// Send a close frame with status 1000 and push it (and any queued
    /// output) to the inner channel, waiting for room if needed; then `bye`
    /// the inner channel (TLS close_notify). Reads may go on until the
    /// peer's close frame.
    fn bye(&mut self) -> Result<()> {
        self.check_usable()?;
        self.flush_pending_wait()?;
        if !self.close_sent {
            self.queue_close(status::NORMAL, "");
            self.flush_pending_wait()?;
        }
        self.inner.bye()
    }

    fn set_delay(&mut self, enabled: bool) -> Result<()> {
        self.inner.set_delay(enabled)
    }

    fn set_cork(&mut self, enabled: bool) -> Result<()> {
        self.inner.set_cork(enabled)
    }

    /// Push queued frame bytes to the inner channel (waiting for room),
    /// then flush it.
    fn flush(&mut self) -> Result<FlushOutcome> {
        self.check_usable()?;
        self.flush_pending_wait()?;
        self.inner.flush()
    }

    fn local_address(&self) -> Option<SocketAddress> {
        self.inner.local_address()
    }

    fn peer_address(&self) -> Option<SocketAddress> {
        self.inner.peer_address()
    }
}

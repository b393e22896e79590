//! The data path of [`WebSocketChannel`]: a thin driver between the
//! caller, the inner channel and the pure frame code.
//!
//! * Reads: bytes from the inner channel land in a small read buffer and
//!   go through the [`Decoder`]; when it says payload is next, the payload
//!   is copied out of the read buffer if some is there, else read from the
//!   inner channel straight into the caller's buffers, and handed back to
//!   the decoder to be unmasked in place. Pings are answered, a close
//!   frame is echoed, rule violations fail the channel with a close frame.
//! * Writes: one binary frame per `writev`, its header from
//!   [`frame::encode_header`]; a server sends header and the caller's
//!   buffers in one inner `writev`, a client masks into `wbuf` first.
//!   Control frames ([`frame::encode_control`]) queue in `wbuf` too.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use super::decoder::{Decoder, Event, FrameError};
use super::frame::{self, Opcode, PeerClose, MAX_HEADER};
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

/// Most caller buffers handed to the inner channel in one call.
const MAX_IOV: usize = 64;

/// A byte stream in binary WebSocket frames over another channel; see the
/// [module documentation](super).
pub struct WebSocketChannel {
    name: String,
    inner: Box<dyn Channel>,
    role: Role,
    config: WebSocketConfig,
    protocol: Option<String>,

    // Input: rbuf[rstart..rend] holds bytes read from the inner channel
    // that are neither decoded nor handed out yet.
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    decoder: Decoder,

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
        let decoder = Decoder::new(role, config.max_frame_size, config.max_message_size);
        let ch = WebSocketChannel {
            name,
            inner,
            role,
            config,
            protocol,
            rbuf,
            rstart: 0,
            rend: tail.len(),
            decoder,
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
                    frame::describe_status(pc.code),
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

    /// Fail the channel on a broken frame rule: queue a close frame with
    /// its status (unless one was already sent or the peer closed), push
    /// it out without blocking, and return the error. Later I/O repeats it.
    fn fail(&mut self, e: FrameError) -> Error {
        let code = e.status();
        if !self.close_sent && self.peer_close.is_none() {
            self.queue_close(code, e.reason());
            self.try_flush_nonblocking();
        }
        let msg = format!("{e} (sent close status {code})");
        self.failed = Some(msg.clone());
        self.update_readiness();
        Error::layer(&self.name, msg, self.cause())
    }

    /// The peer is gone: no close frame can be sent, just fail.
    fn vanished(&mut self, msg: String) -> Error {
        self.failed = Some(msg.clone());
        self.update_readiness();
        Error::layer(&self.name, msg, self.cause())
    }

    // ---------------------------------------------------------------
    // Output
    // ---------------------------------------------------------------

    /// Append a control frame to the output queue.
    fn queue_control(&mut self, op: Opcode, payload: &[u8]) {
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
        frame::encode_control(&mut self.wbuf, op, payload, key);
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        let (payload, len) = frame::close_payload(code, reason);
        self.queue_control(Opcode::Close, &payload[..len]);
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
        let hlen = frame::encode_header(Opcode::Binary, true, None, len as u64, &mut head);
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
        let hlen = frame::encode_header(Opcode::Binary, true, Some(key), len as u64, &mut head);
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

    fn read_inner(&mut self, bufs: &mut [IoSliceMut<'_>], flags: ReadFlags) -> Result<usize> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        if want == 0 {
            return Ok(0);
        }
        loop {
            let mut input = &self.rbuf[self.rstart..self.rend];
            let decoded = self.decoder.decode(&mut input);
            self.rstart = self.rend - input.len();
            match decoded {
                Ok(Some(Event::Data(left))) => {
                    let limit = usize::try_from(left).unwrap_or(usize::MAX).min(want);
                    return self.read_payload(bufs, limit, flags);
                }
                Ok(Some(Event::Ping(payload))) => self.answer_ping(payload.bytes()),
                Ok(Some(Event::Pong)) => {}
                Ok(Some(Event::Close(pc))) => return self.peer_closed(pc),
                Ok(None) => {
                    let limit = if self.decoder.between_frames() {
                        self.header_read_limit(want)
                    } else {
                        usize::MAX
                    };
                    if self.fill(limit)? == 0 {
                        return self.ended(flags);
                    }
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Give the caller at most `limit` bytes of the current frame's
    /// payload: those waiting in the read buffer, else read from the inner
    /// channel straight into `bufs`. The decoder unmasks them in place.
    fn read_payload(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        limit: usize,
        flags: ReadFlags,
    ) -> Result<usize> {
        let got = if self.rstart < self.rend {
            self.copy_buffered(bufs, limit)
        } else {
            match self.read_direct(bufs, limit)? {
                0 => return self.ended(flags),
                n => n,
            }
        };
        let mut left = got;
        for b in bufs.iter_mut() {
            if left == 0 {
                break;
            }
            let take = b.len().min(left);
            self.decoder.payload(&mut b[..take]);
            left -= take;
        }
        Ok(got)
    }

    /// Copy buffered payload into `bufs`; returns bytes copied.
    fn copy_buffered(&mut self, bufs: &mut [IoSliceMut<'_>], limit: usize) -> usize {
        let end = self.rstart + limit.min(self.rend - self.rstart);
        let done = crate::io::scatter(&self.rbuf[self.rstart..end], bufs);
        self.rstart += done;
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
        if self.decoder.last_data_len() >= self.rbuf.len() as u64 {
            MAX_HEADER + if want <= SMALL_READ { want } else { 0 }
        } else {
            usize::MAX
        }
    }

    /// Read at most `limit` bytes from the inner channel into the read
    /// buffer, which the decoder has emptied (it takes all it is given
    /// unless payload is next, and then nothing is read into the buffer).
    fn fill(&mut self, limit: usize) -> Result<usize> {
        debug_assert_eq!(self.rstart, self.rend);
        let end = limit.min(self.rbuf.len());
        let n = self.inner.readv(
            &mut [IoSliceMut::new(&mut self.rbuf[..end])],
            None,
            ReadFlags::empty(),
        )?;
        self.rstart = 0;
        self.rend = n;
        Ok(n)
    }

    /// The inner channel ended. Inside a frame or a fragmented message
    /// that is always an error; between messages it is one too unless we
    /// sent our close frame first or the read is relaxed.
    fn ended(&mut self, flags: ReadFlags) -> Result<usize> {
        if let Some(cut) = self.decoder.truncation() {
            return Err(self.vanished(cut.to_string()));
        }
        if self.close_sent || flags.contains(ReadFlags::RELAXED_EOF) {
            return Ok(0);
        }
        Err(self.vanished(
            "the peer closed the connection without a websocket close frame (the stream may be truncated)"
                .to_owned(),
        ))
    }

    /// Answer a ping with a pong carrying its payload: one pong waits at a
    /// time, none after our close frame.
    fn answer_ping(&mut self, payload: &[u8]) {
        if !self.close_sent && self.pong_end.is_none() {
            self.queue_control(Opcode::Pong, payload);
            self.pong_end = Some(self.wbuf.len());
            self.try_flush_nonblocking();
        }
    }

    /// The peer's close frame arrived: answer it (echoing its status, RFC
    /// 6455 section 5.5.1) unless ours went out already, and end the
    /// stream.
    fn peer_closed(&mut self, pc: PeerClose) -> Result<usize> {
        if !self.close_sent {
            let echo = if pc.code == status::NO_STATUS {
                status::NORMAL
            } else {
                pc.code
            };
            self.queue_close(echo, "");
            self.try_flush_nonblocking();
        }
        let result = self.peer_close_result(&pc);
        self.peer_close = Some(pc);
        self.update_readiness();
        result
    }

    /// Recompute the readiness the main loop sees: `IN` while the read
    /// buffer holds something a read can use without the inner channel.
    fn update_readiness(&self) {
        let mut ready = self.inner_ready.get() & Condition::IN;
        if self.failed.is_some()
            || self.peer_close.is_some()
            || self.decoder.ready(&self.rbuf[self.rstart..self.rend])
        {
            ready |= Condition::IN;
        }
        self.readiness.set(ready);
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

//! [`WebSocketChannel`]: a byte stream carried in binary WebSocket frames
//! (RFC 6455) over any other channel, client and server.
//!
//! QEMU's `io/channel-websock.c` has only the server side; transit has both
//! ends, so `transit send ws://...` talks to `transit recv ws://...` and to
//! any other WebSocket peer (a browser, Python `websockets`, a proxy).
//! The channel sits on a `Box<dyn Channel>`, so it stacks on a socket for
//! `ws://` and on a TLS channel for `wss://` without special cases.
//!
//! # Setting up
//!
//! [`WebSocketChannel::client`] and [`WebSocketChannel::server`] return a
//! [`WebSocketHandshake`]: the HTTP upgrade as a resumable state machine.
//! Drive it with [`WebSocketHandshake::handshake_blocking`] (waits on the
//! inner channel's fds when it is non-blocking), from a main loop with
//! [`WebSocketHandshake::handshake_task`], or step it yourself with
//! [`WebSocketHandshake::advance`], which answers `WouldBlock` and
//! [`WebSocketHandshake::interest`] says what to wait for.
//!
//! * The client sends `GET PATH` with `Sec-WebSocket-Protocol: binary` and
//!   checks the answer: status 101, `Upgrade`/`Connection`, the accept key,
//!   and that the server chose `binary` or no subprotocol.
//! * The server checks the request path (a wrong path gets `404 Not Found`),
//!   the upgrade headers (a malformed or incomplete request gets
//!   `400 Bad Request`, an oversized one `431`), and `Sec-WebSocket-Protocol`:
//!   absent is fine, a list containing `binary` is answered with `binary`, a
//!   list without it is refused with `400`. Every refusal is answered with a
//!   proper HTTP response (`Connection: close`, a text body giving the
//!   reason) before the handshake fails with an error naming the same reason.
//!
//! The HTTP parsing, key derivation and response building are tungstenite's
//! (sans-I/O helpers of `tungstenite::handshake`); the I/O loop is ours, so
//! bytes that arrive right behind the HTTP header are kept and read as
//! frames, and a refusal can still be written after a parse error.
//!
//! # Data
//!
//! The channel is a byte stream: message and frame boundaries mean nothing.
//!
//! * **Writes**: each `writev` sends one binary frame of up to
//!   [`WebSocketConfig::write_frame_size`] bytes (256 KiB by default; a larger
//!   write moves that much and returns a short count, as a socket does,
//!   except that a write at most 1/16 longer than a frame goes out whole,
//!   so no tiny frame trails it). A
//!   server writes the frame header and the caller's buffers with one
//!   `writev` on the inner channel, without copying; a client masks the
//!   payload into a reused buffer (masking needs a copy). If the inner
//!   channel takes only part of a frame, the rest is kept (at most one
//!   frame) and sent before anything else; [`Channel::flush`](crate::Channel::flush) and
//!   [`Channel::bye`](crate::Channel::bye) push it out.
//! * **Reads** deliver payload bytes across frame and message boundaries.
//!   Payload is read straight from the inner channel into the caller's
//!   buffers and unmasked in place; only frame headers and the bytes that
//!   come with them pass through a small read buffer
//!   ([`WebSocketConfig::read_buffer_size`]). While the peer's frames are
//!   larger than that buffer, a header is read on its own (with the
//!   caller's wish if it is at most 4 KiB), so no payload is buffered and
//!   copied twice; with small frames one read takes in many. Nothing is
//!   buffered per message, so a message of any size streams through.
//!   Masking and unmasking run in AVX-512 or AVX2 where the CPU has them.
//! * **Control frames**: a ping is answered with a pong carrying its payload
//!   (one pong waits at a time, as in QEMU); pongs are ignored. A read that
//!   met only control frames is never end of file (QEMU's quirk): in
//!   non-blocking mode it answers `WouldBlock`, in blocking mode it keeps
//!   reading.
//! * **Close**: [`Channel::bye`](crate::Channel::bye) sends a close frame with status 1000 and
//!   pushes it out; reads then go on until the peer's close. A close frame
//!   from the peer is answered (its status echoed) and ends the stream:
//!   status 1000, 1001 or none is end of file, any other status is an
//!   [`Error::Protocol`](crate::Error::Protocol) that quotes it; [`WebSocketChannel::peer_close`]
//!   tells the status either way. [`Channel::close`](crate::Channel::close) sends no close frame
//!   (so an abort is never mistaken for a clean end): call `bye` first.
//! * **End of file without a close frame** (the peer's TCP connection just
//!   ended) is an error, so truncation is never silent, unless the read
//!   passes [`ReadFlags::RELAXED_EOF`](crate::ReadFlags::RELAXED_EOF) or we sent our close frame first.
//!   A peer vanishing in the middle of a frame is always an error that says
//!   how many payload bytes were missing.
//!
//! Protocol violations fail the channel with a close frame carrying the
//! RFC 6455 status, and an error naming the channel and the reason: a text
//! frame gets 1003 ("binary data only"), an unmasked frame from a client or
//! a masked one from a server 1002 (tungstenite's rule), reserved bits,
//! unknown opcodes, fragmented or oversized control frames and misplaced
//! continuation frames 1002, a frame or
//! message above [`WebSocketConfig::max_frame_size`] /
//! [`WebSocketConfig::max_message_size`] 1009, an invalid close payload
//! 1002 or 1007. Later I/O repeats the error.
//!
//! Readiness: the watch polls the inner channel's fds, and its
//! [`Readiness`](crate::Readiness) has `IN` while decoded bytes wait in the
//! read buffer (a whole frame header or payload), while the stream has
//! ended, and while the inner channel itself reports buffered data (TLS
//! plaintext). No fd passing, no `MSG_PEEK`; shutdown goes to the inner
//! channel.
//!
//! # Why not `tungstenite::WebSocket`
//!
//! tungstenite's `WebSocket` reads each whole message into memory, allocates
//! a buffer per message and copies every written payload twice (into a
//! message, then into its output buffer). For a migration stream that is
//! the hot path, so the data path here streams between the caller's buffers
//! and the inner channel with frame code of its own, and never allocates
//! after setup.
//!
//! # Inside
//!
//! As in the TLS module, the protocol is kept apart from the I/O:
//!
//! * `frame.rs`: the frame format, both ways: opcodes, header parsing and
//!   encoding, control and close frames (pure functions);
//! * `decoder.rs`: the incoming frame sequence as a pure state machine fed
//!   bytes, with every frame rule and size limit; when data payload is
//!   next it says how many bytes, and the channel moves them itself (from
//!   the socket straight into the caller's buffers) and hands them back
//!   to be unmasked in place;
//! * `mask.rs`: masking (SIMD) and mask keys;
//! * `channel.rs`: [`WebSocketChannel`], the driver: buffers, the inner
//!   channel, blocking and non-blocking I/O, answers to pings and closes,
//!   failing with a close frame;
//! * `handshake.rs`: the HTTP upgrade as a resumable state machine.
//!
//! # Example
//!
//! ```
//! use transit_channel::websocket::{WebSocketChannel, WebSocketConfig};
//! use transit_channel::{io, Channel, SocketChannel};
//!
//! let (a, b) = SocketChannel::pair()?;
//! let server = std::thread::spawn(move || -> transit_channel::Result<Vec<u8>> {
//!     let hs = WebSocketChannel::server(Box::new(b), "/migrate", WebSocketConfig::default());
//!     let mut ws = hs.handshake_blocking()?;
//!     let mut buf = vec![0u8; 11];
//!     io::read_all(&mut ws, &mut buf)?;
//!     let mut end = [0u8; 1];
//!     assert!(!io::read_all_eof(&mut ws, &mut end)?); // the client's close frame
//!     ws.bye()?;
//!     Ok(buf)
//! });
//!
//! let hs = WebSocketChannel::client(Box::new(a), "localhost", "/migrate", WebSocketConfig::default())?;
//! let mut ws = hs.handshake_blocking()?;
//! io::write_all(&mut ws, b"hello world")?;
//! ws.bye()?; // close frame, status 1000
//! let mut end = [0u8; 1];
//! assert!(!io::read_all_eof(&mut ws, &mut end)?); // the server's answer
//! assert_eq!(ws.peer_close().map(|c| c.code), Some(1000));
//! assert_eq!(server.join().unwrap()?, b"hello world");
//! # Ok::<(), transit_channel::Error>(())
//! ```

mod channel;
mod decoder;
mod frame;
mod handshake;
mod mask;
mod url;

pub use self::channel::WebSocketChannel;
pub use self::frame::PeerClose;
pub use self::handshake::{HandshakeTask, WebSocketHandshake};
pub use self::url::WebSocketUrl;

use std::time::Duration;

/// Which end of the connection this is: it decides masking (clients mask
/// every frame, servers never do) and who checks what in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends the upgrade request; masks its frames.
    Client,
    /// Answers the upgrade request; its frames are not masked.
    Server,
}

/// The subprotocol transit offers and accepts.
pub const SUBPROTOCOL: &str = "binary";

/// Limits and sizes of a [`WebSocketChannel`].
///
/// The defaults suit bulk streams: 256 KiB frames out (tungstenite over
/// loopback runs at TCP speed with 1 MiB messages, half that with 16 KiB;
/// 256 KiB is as fast, and a client's masking buffer of that size stays in
/// the core's cache while the kernel copies it out),
/// a 64 KiB read buffer for headers, frames up to 16 MiB in.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Largest payload of one outgoing frame; a write moves at most this
    /// much (at least 1). Default 256 KiB.
    pub write_frame_size: usize,
    /// Size of the buffer frame headers are read into (payload goes straight
    /// to the caller). Default 64 KiB, at least 256 bytes.
    pub read_buffer_size: usize,
    /// Largest payload of one incoming data frame; a bigger frame fails the
    /// channel with close status 1009. `None`: no limit. Default 16 MiB.
    pub max_frame_size: Option<u64>,
    /// Largest incoming message (the sum of its fragments); a bigger one
    /// fails the channel with close status 1009. `None`: no limit, the
    /// default: payload is streamed, never held whole, so a long message
    /// costs no memory.
    pub max_message_size: Option<u64>,
    /// Largest HTTP upgrade request or response header. Default 16 KiB.
    pub max_handshake_size: usize,
    /// How long [`WebSocketHandshake::handshake_blocking`] and
    /// [`WebSocketHandshake::handshake_task`] wait for the peer in total.
    /// `None`: no limit. Default 60 s.
    pub handshake_timeout: Option<Duration>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            write_frame_size: 256 << 10,
            read_buffer_size: 64 << 10,
            max_frame_size: Some(16 << 20),
            max_message_size: None,
            max_handshake_size: 16 << 10,
            handshake_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl WebSocketConfig {
    /// The values actually used: sizes clamped to their minimums.
    fn normalized(mut self) -> WebSocketConfig {
        self.write_frame_size = self.write_frame_size.max(1);
        self.read_buffer_size = self.read_buffer_size.max(256);
        self.max_handshake_size = self.max_handshake_size.max(256);
        self
    }
}

/// Close status codes used by this module (RFC 6455 section 7.4.1).
pub(crate) mod status {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data of a type this endpoint does not accept (text).
    pub const UNSUPPORTED: u16 = 1003;
    /// No status code was present (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// Payload that is not consistent with the message type (bad UTF-8).
    pub const INVALID: u16 = 1007;
    /// A message or frame too big to process.
    pub const TOO_BIG: u16 = 1009;
}

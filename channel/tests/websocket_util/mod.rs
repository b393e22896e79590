//! Helpers shared by the `websocket_*` integration tests: connected socket
//! pairs with bounded blocking I/O, raw frame building and parsing for
//! crafting peers that break the rules, and a channel wrapper that answers
//! `WouldBlock` before every byte.

#![allow(dead_code)]

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use socket2::SockRef;
use transit_channel::websocket::{WebSocketChannel, WebSocketConfig};
use transit_channel::{
    Channel, Features, ReadFlags, Result, Shutdown, ShutdownHandle, SocketAddress, SocketChannel,
    WatchSource, WriteFlags,
};

/// How long any blocking call in a test may wait.
pub const BOUND: Duration = Duration::from_secs(20);

/// Make blocking reads and writes on `ch` give up after [`BOUND`].
pub fn bound(ch: &SocketChannel) {
    let s = SockRef::from(ch);
    s.set_read_timeout(Some(BOUND)).expect("SO_RCVTIMEO");
    s.set_write_timeout(Some(BOUND)).expect("SO_SNDTIMEO");
}

/// A connected UNIX socket pair with bounded blocking I/O.
pub fn pair() -> (SocketChannel, SocketChannel) {
    let (a, b) = SocketChannel::pair().expect("socketpair");
    bound(&a);
    bound(&b);
    (a, b)
}

/// A connected TCP pair over 127.0.0.1 with bounded blocking I/O:
/// (client, server).
pub fn tcp_pair() -> (SocketChannel, SocketChannel) {
    let addr = SocketAddress::inet("127.0.0.1", 0);
    let mut listener = SocketChannel::listen_sync(&addr, 4).expect("listen");
    let local = listener.local_address().expect("listener address");
    let client = SocketChannel::connect_sync(&local).expect("connect");
    let server = listener.accept().expect("accept");
    bound(&client);
    bound(&server);
    (client, server)
}

/// A TCP pair where our side is a channel and the peer a raw std stream
/// (for crafting bytes): (channel, raw peer).
pub fn raw_tcp_pair() -> (SocketChannel, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let ch = SocketChannel::connect_sync(&SocketAddress::inet("127.0.0.1", port)).expect("connect");
    let (raw, _) = listener.accept().expect("accept");
    raw.set_read_timeout(Some(BOUND)).expect("timeout");
    raw.set_write_timeout(Some(BOUND)).expect("timeout");
    bound(&ch);
    (ch, raw)
}

/// Client and server websockets over a socket pair, handshakes done.
pub fn ws_pair(config: WebSocketConfig) -> (WebSocketChannel, WebSocketChannel) {
    let (a, b) = pair();
    ws_over(Box::new(a), Box::new(b), config)
}

/// Client and server websockets over the given channels, handshakes done
/// (the server's in a thread).
pub fn ws_over(
    client: Box<dyn Channel>,
    server: Box<dyn Channel>,
    config: WebSocketConfig,
) -> (WebSocketChannel, WebSocketChannel) {
    let cfg = config.clone();
    let srv = std::thread::spawn(move || {
        WebSocketChannel::server(server, "/t", cfg)
            .handshake_blocking()
            .expect("server handshake")
    });
    let c = WebSocketChannel::client(client, "localhost", "/t", config)
        .expect("client")
        .handshake_blocking()
        .expect("client handshake");
    (c, srv.join().expect("server thread"))
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// One raw frame: FIN flag, opcode, payload, optional mask key.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame as read by a raw peer: (fin, opcode, unmasked payload).
pub type RawFrame = (bool, u8, Vec<u8>);

/// Read one frame from a raw peer (bounded by its socket timeout).
pub fn read_frame(s: &mut impl Read) -> std::io::Result<RawFrame> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b)?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
    }
    let key = if h[1] & 0x80 != 0 {
        let mut k = [0u8; 4];
        s.read_exact(&mut k)?;
        Some(k)
    } else {
        None
    };
    let mut p = vec![0u8; len as usize];
    s.read_exact(&mut p)?;
    if let Some(k) = key {
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok((h[0] & 0x80 != 0, h[0] & 0x0f, p))
}

/// The status code of a close frame's payload.
pub fn close_code(payload: &[u8]) -> u16 {
    assert!(
        payload.len() >= 2,
        "close frame without status: {payload:?}"
    );
    u16::from_be_bytes([payload[0], payload[1]])
}

/// A valid upgrade request for `path`.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Read an HTTP header (up to the blank line) plus whatever arrives with
/// it until the peer closes or `want_body` is false.
pub fn read_http_header(s: &mut impl Read) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => got.push(b[0]),
            Err(e) => panic!("reading the HTTP header: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A raw client that did the upgrade on `path` against a server; returns
/// the stream positioned after the 101 header.
pub fn raw_upgraded_client(mut raw: TcpStream, path: &str) -> TcpStream {
    raw.write_all(upgrade_request(path, "").as_bytes())
        .expect("send request");
    let head = read_http_header(&mut raw);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    raw
}

/// Wraps a channel so every read and write first answers `WouldBlock`,
/// then moves at most one byte (the "trickle" of the scripted channel,
/// but over a real peer).
pub struct Trickle<C> {
    pub inner: C,
    read_ready: bool,
    write_ready: bool,
}

impl<C: Channel> Trickle<C> {
    pub fn new(inner: C) -> Trickle<C> {
        Trickle {
            inner,
            read_ready: false,
            write_ready: false,
        }
    }
}

impl<C: Channel> Channel for Trickle<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn set_name(&mut self, name: String) {
        self.inner.set_name(name)
    }
    fn features(&self) -> Features {
        self.inner.features()
    }
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        if !self.read_ready {
            self.read_ready = true;
            return Err(transit_channel::Error::WouldBlock);
        }
        self.read_ready = false;
        let Some(first) = bufs.iter_mut().find(|b| !b.is_empty()) else {
            return Ok(0);
        };
        let mut one = [IoSliceMut::new(&mut first[..1])];
        self.inner.readv(&mut one, fds, flags)
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        if !self.write_ready {
            self.write_ready = true;
            return Err(transit_channel::Error::WouldBlock);
        }
        self.write_ready = false;
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
            return Ok(0);
        };
        self.inner.writev(&[IoSlice::new(&first[..1])], fds, flags)
    }
    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.inner.set_blocking(blocking)
    }
    fn is_blocking(&self) -> bool {
        false
    }
    fn close(&mut self) -> Result<()> {
        self.inner.close()
    }
    fn watch_source(&self) -> WatchSource {
        self.inner.watch_source()
    }
    fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        self.inner.shutdown(how)
    }
    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        self.inner.shutdown_handle()
    }
}

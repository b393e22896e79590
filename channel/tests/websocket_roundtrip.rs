//! WebSocket data transfer between our client and our server: blocking and
//! non-blocking, over a socket pair, TCP and a trickling channel, 64 MiB
//! byte-identical, in both directions.

mod websocket_util;

use std::thread;

use transit_channel::websocket::{Role, WebSocketChannel, WebSocketConfig};
use transit_channel::{io, Channel, MainContext};
use websocket_util::*;

const BIG: usize = 64 << 20;

/// Send `data` with writes of `chunk` bytes, then bye.
fn send_all(ws: &mut WebSocketChannel, data: &[u8], chunk: usize) {
    for c in data.chunks(chunk) {
        io::write_all(ws, c).expect("write");
    }
    ws.bye().expect("bye");
}

/// Read until end of file, with reads of `chunk` bytes.
fn recv_all(ws: &mut WebSocketChannel, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match ws.readv(
            &mut [std::io::IoSliceMut::new(&mut buf)],
            None,
            Default::default(),
        ) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(transit_channel::Error::WouldBlock) => {
                io::wait_blocking(
                    &ws.watch_source(),
                    transit_channel::Condition::IN,
                    Some(BOUND),
                )
                .expect("wait");
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn client_to_server_64_mib_over_socketpair_is_identical() {
    let (mut c, mut s) = ws_pair(WebSocketConfig::default());
    assert_eq!((c.role(), s.role()), (Role::Client, Role::Server));
    assert_eq!(c.protocol(), Some("binary"));
    let data = pattern(BIG, 1);
    let expect = data.clone();
    let reader = thread::spawn(move || {
        let got = recv_all(&mut s, 300_000);
        s.bye().expect("server bye");
        got
    });
    send_all(&mut c, &data, 1 << 20);
    let mut end = [0u8; 1];
    assert!(!io::read_all_eof(&mut c, &mut end).expect("client eof"));
    let got = reader.join().expect("reader");
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "payload differs");
}

#[test]
fn server_to_client_64_mib_over_tcp_is_identical() {
    let (a, b) = tcp_pair();
    let (mut c, mut s) = ws_over(Box::new(a), Box::new(b), WebSocketConfig::default());
    let data = pattern(BIG, 2);
    let expect = data.clone();
    let writer = thread::spawn(move || {
        // Odd-sized writes: frames do not line up with reads.
        send_all(&mut s, &data, 777_777);
        let mut end = [0u8; 1];
        assert!(!io::read_all_eof(&mut s, &mut end).expect("server eof"));
    });
    let got = recv_all(&mut c, 1 << 20);
    c.bye().expect("client bye");
    writer.join().expect("writer");
    assert!(got == expect, "payload differs ({} bytes)", got.len());
}

#[test]
fn non_blocking_both_ends_64_mib_over_tcp_is_identical() {
    let (a, b) = tcp_pair();
    let (mut c, mut s) = ws_over(Box::new(a), Box::new(b), WebSocketConfig::default());
    c.set_blocking(false).expect("nonblock");
    s.set_blocking(false).expect("nonblock");
    assert!(!c.is_blocking());
    let data = pattern(BIG, 3);
    let expect = data.clone();
    let writer = thread::spawn(move || {
        // io::write_all waits on the watch when the channel is full.
        io::write_all(&mut c, &data).expect("write");
        c.bye().expect("bye");
        recv_all(&mut c, 16)
    });
    let got = recv_all(&mut s, 1 << 20);
    s.bye().expect("server bye");
    assert!(writer.join().expect("writer").is_empty());
    assert!(got == expect, "payload differs ({} bytes)", got.len());
}

#[test]
fn small_frames_and_a_vectored_write_arrive_in_order() {
    let cfg = WebSocketConfig {
        write_frame_size: 7,
        ..WebSocketConfig::default()
    };
    let (mut c, mut s) = ws_pair(cfg);
    let parts: [&[u8]; 3] = [b"alpha-", b"", b"beta-gamma-delta"];
    let mut slices: Vec<std::io::IoSlice<'_>> =
        parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
    io::writev_all(&mut c, &mut slices).expect("writev");
    c.bye().expect("bye");
    let got = recv_all(&mut s, 3);
    assert_eq!(got, b"alpha-beta-gamma-delta");
}

#[test]
fn main_loop_reads_a_non_blocking_server() {
    let (a, b) = tcp_pair();
    let (mut c, mut s) = ws_over(Box::new(a), Box::new(b), WebSocketConfig::default());
    s.set_blocking(false).expect("nonblock");
    let data = pattern(4 << 20, 4);
    let expect = data.clone();
    let writer = thread::spawn(move || {
        send_all(&mut c, &data, 100_000);
    });
    let ctx = MainContext::new().expect("context");
    let ws = s.watch_source();
    let got = std::rc::Rc::new(std::cell::RefCell::new((Vec::new(), false)));
    let g = got.clone();
    let mut buf = vec![0u8; 65536];
    ctx.add_watch(&ws, transit_channel::Condition::IN, move |_| loop {
        match s.readv(
            &mut [std::io::IoSliceMut::new(&mut buf)],
            None,
            Default::default(),
        ) {
            Ok(0) => {
                g.borrow_mut().1 = true;
                return transit_channel::ControlFlow::Remove;
            }
            Ok(n) => g.borrow_mut().0.extend_from_slice(&buf[..n]),
            Err(transit_channel::Error::WouldBlock) => {
                return transit_channel::ControlFlow::Continue
            }
            Err(e) => panic!("read: {e}"),
        }
    });
    let start = std::time::Instant::now();
    while !got.borrow().1 {
        assert!(start.elapsed() < BOUND, "main loop did not finish");
        ctx.iteration(true);
    }
    writer.join().expect("writer");
    assert!(got.borrow().0 == expect);
}

#[test]
fn trickle_at_every_byte_through_handshake_and_transfer() {
    let (a, b) = pair();
    let mut a = Trickle::new(a);
    let mut b = Trickle::new(b);
    a.set_blocking(false).expect("nonblock");
    b.set_blocking(false).expect("nonblock");
    let data = pattern(3000, 5);
    let expect = data.clone();
    let srv = thread::spawn(move || {
        let mut s = WebSocketChannel::server(Box::new(b), "/t", WebSocketConfig::default())
            .handshake_blocking()
            .expect("server handshake");
        let got = recv_all(&mut s, 1000);
        s.bye().expect("server bye");
        got
    });
    let mut c = WebSocketChannel::client(Box::new(a), "h", "/t", WebSocketConfig::default())
        .expect("client")
        .handshake_blocking()
        .expect("client handshake");
    io::write_all(&mut c, &data[..1000]).expect("write");
    io::write_all(&mut c, &data[1000..]).expect("write");
    c.bye().expect("bye");
    assert!(recv_all(&mut c, 10).is_empty());
    assert_eq!(c.peer_close().map(|p| p.code), Some(1000));
    assert_eq!(srv.join().expect("server"), expect);
}

#[test]
fn bytes_right_behind_the_101_are_kept() {
    // The server writes a frame immediately; the client's handshake read
    // may pull it in with the HTTP header.
    let (a, b) = pair();
    let srv = thread::spawn(move || {
        let mut s = WebSocketChannel::server(Box::new(b), "/t", WebSocketConfig::default())
            .handshake_blocking()
            .expect("server handshake");
        io::write_all(&mut s, b"early bytes").expect("write");
        s.bye().expect("bye");
        s
    });
    // Send the request, then let the server's frame land right behind
    // the 101 before the client reads anything.
    let mut a = a;
    a.set_blocking(false).expect("nonblock");
    let mut hs = WebSocketChannel::client(Box::new(a), "h", "/t", WebSocketConfig::default())
        .expect("client");
    // Usually the 101 has not arrived yet (WouldBlock); if the server was
    // quick, the handshake completes here, with the frame possibly already
    // buffered behind it. Both paths must keep the early bytes.
    match hs.advance() {
        Ok(()) => {}
        Err(e) => assert!(e.is_would_block(), "advance failed: {e}"),
    }
    let s = srv.join().expect("server");
    let mut c = hs.handshake_blocking().expect("client handshake");
    assert_eq!(recv_all(&mut c, 64), b"early bytes");
    drop(s);
}

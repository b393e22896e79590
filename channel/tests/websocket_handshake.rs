//! The WebSocket upgrade: HTTP answers to bad requests (400, 404, 431),
//! subprotocol negotiation, a client refused by the server, the handshake
//! as a main-loop task, and its timeout.

mod websocket_util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use transit_channel::websocket::{WebSocketChannel, WebSocketConfig};
use transit_channel::{io, Channel, MainContext};
use websocket_util::*;

/// Run our server on a TCP connection, send `request` from a raw client,
/// and return (the HTTP answer with its body, the server's error).
fn refused(request: &[u8]) -> (String, String) {
    let (ch, mut raw) = raw_tcp_pair();
    let srv = thread::spawn(move || {
        WebSocketChannel::server(Box::new(ch), "/migrate", WebSocketConfig::default())
            .handshake_blocking()
            .map(|_| ())
    });
    raw.write_all(request).expect("send");
    let mut answer = String::new();
    // The server answers and then drops the connection: read to the end.
    raw.read_to_string(&mut answer).expect("answer");
    let err = srv
        .join()
        .expect("server")
        .expect_err("handshake must fail");
    (answer, err.to_string())
}

#[test]
fn malformed_request_gets_400_and_names_the_reason() {
    let (answer, err) = refused(b"GARBAGE\x01 nonsense\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(answer.contains("malformed upgrade request"), "{answer}");
    assert!(err.contains("400 Bad Request"), "{err}");
    assert!(err.contains("malformed upgrade request"), "{err}");
    assert!(
        err.contains("ws server /migrate"),
        "error names the channel: {err}"
    );
}

#[test]
fn missing_upgrade_header_gets_400() {
    let req = "GET /migrate HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (answer, err) = refused(req.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(err.contains("invalid upgrade request"), "{err}");
}

#[test]
fn wrong_path_gets_404() {
    let (answer, err) = refused(upgrade_request("/other", "").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
    assert!(err.contains("404 Not Found"), "{err}");
    assert!(err.contains("\"/other\""), "{err}");
    assert!(err.contains("\"/migrate\""), "{err}");
}

#[test]
fn other_subprotocols_only_are_refused() {
    let req = upgrade_request("/migrate", "Sec-WebSocket-Protocol: chat, superchat\r\n");
    let (answer, err) = refused(req.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(err.contains("chat, superchat"), "{err}");
    assert!(err.contains("speaks only \"binary\""), "{err}");
}

#[test]
fn binary_among_offers_is_chosen() {
    let (ch, mut raw) = raw_tcp_pair();
    let srv = thread::spawn(move || {
        WebSocketChannel::server(Box::new(ch), "/migrate", WebSocketConfig::default())
            .handshake_blocking()
            .expect("handshake")
    });
    let req = upgrade_request("/migrate", "Sec-WebSocket-Protocol: chat, binary\r\n");
    raw.write_all(req.as_bytes()).expect("send");
    let head = read_http_header(&mut raw);
    let ws = srv.join().expect("server");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: binary\r\n"),
        "{head}"
    );
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "accept key of the RFC example: {head}"
    );
    assert_eq!(ws.protocol(), Some("binary"));
}

#[test]
fn oversized_request_gets_431() {
    let big = format!("X-Filler: {}\r\n", "a".repeat(20_000));
    let (answer, err) = refused(upgrade_request("/migrate", &big).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(err.contains("exceeds 16384 bytes"), "{err}");
}

#[test]
fn client_refused_by_server_reports_status_and_reason() {
    let (a, b) = pair();
    let srv = thread::spawn(move || {
        WebSocketChannel::server(Box::new(b), "/right", WebSocketConfig::default())
            .handshake_blocking()
            .map(|_| ())
    });
    let err = WebSocketChannel::client(Box::new(a), "h", "/wrong", WebSocketConfig::default())
        .expect("client")
        .handshake_blocking()
        .expect_err("must be refused")
        .to_string();
    assert!(srv.join().expect("server").is_err());
    assert!(err.contains("404 Not Found"), "{err}");
    assert!(err.contains("no websocket endpoint"), "body quoted: {err}");
    assert!(err.contains("ws://h/wrong"), "names the channel: {err}");
}

#[test]
fn client_rejects_a_wrong_accept_key() {
    let (ch, mut raw) = raw_tcp_pair();
    let cl = thread::spawn(move || {
        WebSocketChannel::client(Box::new(ch), "h", "/", WebSocketConfig::default())
            .expect("client")
            .handshake_blocking()
            .map(|_| ())
    });
    let _req = read_http_header(&mut raw);
    raw.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
    )
    .expect("answer");
    let err = cl
        .join()
        .expect("client")
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("Sec-WebSocket-Accept"), "{err}");
}

#[test]
fn a_refusal_body_with_terminal_escapes_is_escaped_in_the_error() {
    let (ch, mut raw) = raw_tcp_pair();
    let cl = thread::spawn(move || {
        WebSocketChannel::client(Box::new(ch), "h", "/", WebSocketConfig::default())
            .expect("client")
            .handshake_blocking()
            .map(|_| ())
    });
    let _req = read_http_header(&mut raw);
    raw.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 16\r\n\r\ngo\x1b[2J away\rnow")
        .expect("answer");
    let err = cl
        .join()
        .expect("client")
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("403"), "{err}");
    assert!(err.contains("go\\x1b[2J away\\rnow"), "{err}");
    assert!(!err.chars().any(|c| c.is_control()), "{err:?}");
}

#[test]
fn peer_closing_during_the_handshake_is_an_error() {
    let (ch, mut raw) = raw_tcp_pair();
    let srv = thread::spawn(move || {
        WebSocketChannel::server(Box::new(ch), "/", WebSocketConfig::default())
            .handshake_blocking()
            .map(|_| ())
    });
    raw.write_all(b"GET / HTTP/1.1\r\nHost:").expect("send");
    drop(raw);
    let err = srv
        .join()
        .expect("server")
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("closed the connection during the websocket handshake"),
        "{err}"
    );
}

#[test]
fn handshake_times_out() {
    let (ch, _raw) = raw_tcp_pair();
    let cfg = WebSocketConfig {
        handshake_timeout: Some(Duration::from_millis(200)),
        ..WebSocketConfig::default()
    };
    let start = Instant::now();
    let err = WebSocketChannel::server(Box::new(ch), "/", cfg)
        .handshake_blocking()
        .expect_err("must time out")
        .to_string();
    assert!(start.elapsed() < BOUND);
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("upgrade request"), "{err}");
}

#[test]
fn handshake_tasks_on_a_main_context_connect_both_ends() {
    let (mut a, mut b) = pair();
    a.set_blocking(false).expect("nonblock");
    b.set_blocking(false).expect("nonblock");
    let ctx = MainContext::new().expect("context");
    type Slot = Rc<RefCell<Option<transit_channel::Result<WebSocketChannel>>>>;
    let (cs, ss): (Slot, Slot) = Default::default();
    let (c2, s2) = (cs.clone(), ss.clone());
    let _st = WebSocketChannel::server(Box::new(b), "/t", WebSocketConfig::default())
        .handshake_task(&ctx, move |r| *s2.borrow_mut() = Some(r));
    let ct = WebSocketChannel::client(Box::new(a), "h", "/t", WebSocketConfig::default())
        .expect("client")
        .handshake_task(&ctx, move |r| *c2.borrow_mut() = Some(r));
    assert!(ct.is_running(), "done never runs inside handshake_task");
    let start = Instant::now();
    while cs.borrow().is_none() || ss.borrow().is_none() {
        assert!(start.elapsed() < BOUND, "handshake tasks did not finish");
        ctx.iteration(true);
    }
    assert!(!ct.is_running());
    let mut c = cs.borrow_mut().take().expect("set").expect("client ok");
    let mut s = ss.borrow_mut().take().expect("set").expect("server ok");
    io::write_all(&mut c, b"over the loop").expect("write");
    let mut buf = [0u8; 13];
    io::read_all(&mut s, &mut buf).expect("read");
    assert_eq!(&buf, b"over the loop");
}

#[test]
fn cancelled_handshake_task_never_calls_done() {
    let (mut a, _b) = pair();
    a.set_blocking(false).expect("nonblock");
    let ctx = MainContext::new().expect("context");
    let called = Rc::new(RefCell::new(false));
    let c = called.clone();
    let task = WebSocketChannel::server(Box::new(a), "/", WebSocketConfig::default())
        .handshake_task(&ctx, move |_| *c.borrow_mut() = true);
    ctx.iteration(false);
    task.cancel();
    assert!(!task.is_running());
    for _ in 0..5 {
        ctx.iteration(false);
    }
    assert!(!*called.borrow());
}

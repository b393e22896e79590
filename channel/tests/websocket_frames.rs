//! WebSocket frame rules against raw peers: control frames are never end
//! of file, pings get pongs, the close handshake carries its status, and
//! each protocol violation (text, oversize, unmasked, masked from a server,
//! a peer vanishing mid-frame) is a clear error with the right close code.

mod websocket_util;

use std::io::{IoSliceMut, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use transit_channel::websocket::{Role, WebSocketChannel, WebSocketConfig};
use transit_channel::{io, Channel, Error, ReadFlags};
use websocket_util::*;

const KEY: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

/// Our server, upgraded by a raw client: (server channel, raw client).
fn server_with_raw_client(config: WebSocketConfig) -> (WebSocketChannel, TcpStream) {
    let (ch, raw) = raw_tcp_pair();
    let srv = thread::spawn(move || {
        WebSocketChannel::server(Box::new(ch), "/", config)
            .handshake_blocking()
            .expect("server handshake")
    });
    let raw = raw_upgraded_client(raw, "/");
    (srv.join().expect("server"), raw)
}

/// Our client on a raw server that already "upgraded" (no HTTP).
fn client_with_raw_server() -> (WebSocketChannel, TcpStream) {
    let (ch, raw) = raw_tcp_pair();
    let ws = WebSocketChannel::from_upgraded(
        Box::new(ch),
        Role::Client,
        WebSocketConfig::default(),
        &[],
    );
    (ws, raw)
}

fn read_some(ws: &mut WebSocketChannel, n: usize) -> transit_channel::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let got = ws.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())?;
    buf.truncate(got);
    Ok(buf)
}

#[test]
fn control_frames_alone_are_not_eof_in_non_blocking_mode() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    s.set_blocking(false).expect("nonblock");
    raw.write_all(&frame(true, 0x9, b"p1", Some(KEY)))
        .expect("ping");
    raw.write_all(&frame(true, 0xA, b"unsolicited", Some(KEY)))
        .expect("pong");
    // Give the frames time to arrive; the read must not say EOF.
    thread::sleep(Duration::from_millis(50));
    let r = read_some(&mut s, 100);
    assert!(matches!(r, Err(Error::WouldBlock)), "{r:?}");
    raw.write_all(&frame(true, 0x2, b"data", Some(KEY)))
        .expect("data");
    let got = io::read_all(&mut s, &mut [0u8; 4]).map(|_| ());
    assert!(got.is_ok(), "{got:?}");
}

#[test]
fn control_frames_alone_are_not_eof_in_blocking_mode() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    let writer = thread::spawn(move || {
        raw.write_all(&frame(true, 0x9, b"", Some(KEY)))
            .expect("ping");
        thread::sleep(Duration::from_millis(50));
        raw.write_all(&frame(true, 0x2, b"x", Some(KEY)))
            .expect("data");
        raw
    });
    // Blocking read: keeps reading past the ping and returns the data.
    assert_eq!(read_some(&mut s, 10).expect("read"), b"x");
    writer.join().expect("writer");
}

#[test]
fn ping_is_answered_with_a_pong_carrying_its_payload() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    raw.write_all(&frame(true, 0x9, b"are you there", Some(KEY)))
        .expect("ping");
    raw.write_all(&frame(true, 0x2, b"!", Some(KEY)))
        .expect("data");
    assert_eq!(read_some(&mut s, 10).expect("read"), b"!");
    let (fin, op, payload) = read_frame(&mut raw).expect("pong");
    assert!(fin);
    assert_eq!(op, 0xA);
    assert_eq!(payload, b"are you there");
}

#[test]
fn client_answers_pings_with_masked_pongs() {
    let (mut c, mut raw) = client_with_raw_server();
    raw.write_all(&frame(true, 0x9, b"hi", None)).expect("ping");
    raw.write_all(&frame(true, 0x2, b"z", None)).expect("data");
    assert_eq!(read_some(&mut c, 10).expect("read"), b"z");
    // read_frame unmasks; check the mask bit on the wire first.
    let mut head = [0u8; 2];
    std::io::Read::read_exact(&mut raw, &mut head).expect("pong header");
    assert_eq!(head[0], 0x8A);
    assert_eq!(head[1], 0x80 | 2, "client frames are masked");
}

#[test]
fn close_handshake_is_eof_with_the_status() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    raw.write_all(&frame(true, 0x2, b"last", Some(KEY)))
        .expect("data");
    raw.write_all(&frame(true, 0x8, &payload, Some(KEY)))
        .expect("close");
    let mut buf = [0u8; 4];
    assert!(io::read_all_eof(&mut s, &mut buf).expect("data"));
    assert_eq!(&buf, b"last");
    assert_eq!(read_some(&mut s, 10).expect("eof"), b"");
    let pc = s.peer_close().expect("peer close").clone();
    assert_eq!((pc.code, pc.reason.as_str()), (1000, "done"));
    // Our answer echoes the status.
    let (_, op, answer) = read_frame(&mut raw).expect("close answer");
    assert_eq!(op, 0x8);
    assert_eq!(close_code(&answer), 1000);
    // Writing after the peer closed is an error, not a hang.
    assert!(io::write_all(&mut s, b"more").is_err());
}

#[test]
fn abnormal_close_status_is_an_error_quoting_it() {
    let (mut c, mut raw) = client_with_raw_server();
    let mut payload = 1011u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"disk full");
    raw.write_all(&frame(true, 0x8, &payload, None))
        .expect("close");
    let e = read_some(&mut c, 10).expect_err("must fail");
    // The close code is typed, for callers; the text is for people.
    assert_eq!(
        e.cause(),
        Some(&transit_channel::Cause::WebSocket {
            close_code: Some(1011)
        }),
        "{e:?}"
    );
    let err = e.to_string();
    assert!(err.contains("status 1011"), "{err}");
    assert!(err.contains("disk full"), "{err}");
    assert_eq!(c.peer_close().map(|p| p.code), Some(1011));
}

#[test]
fn a_close_reason_with_terminal_escapes_is_escaped_in_the_error() {
    let (mut c, mut raw) = client_with_raw_server();
    let mut payload = 1011u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"disk\x1b[2J\rfull");
    raw.write_all(&frame(true, 0x8, &payload, None))
        .expect("close");
    let err = read_some(&mut c, 10).expect_err("must fail").to_string();
    assert!(err.contains("disk\\x1b[2J\\rfull"), "{err}");
    assert!(!err.chars().any(|ch| ch.is_control()), "{err:?}");
}

#[test]
fn bye_sends_close_1000_and_reads_continue_until_the_answer() {
    let (mut c, mut raw) = client_with_raw_server();
    c.bye().expect("bye");
    let (_, op, payload) = read_frame(&mut raw).expect("close");
    assert_eq!((op, close_code(&payload)), (0x8, 1000));
    // The peer still sends data before answering.
    raw.write_all(&frame(true, 0x2, b"tail", None))
        .expect("data");
    raw.write_all(&frame(true, 0x8, &1000u16.to_be_bytes(), None))
        .expect("answer");
    assert_eq!(read_some(&mut c, 10).expect("data"), b"tail");
    assert_eq!(read_some(&mut c, 10).expect("eof"), b"");
    assert!(io::write_all(&mut c, b"x").is_err(), "no writes after bye");
}

#[test]
fn text_frame_is_refused_with_close_1003() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    raw.write_all(&frame(true, 0x1, b"hello", Some(KEY)))
        .expect("text");
    let err = read_some(&mut s, 10).expect_err("must fail").to_string();
    assert!(err.contains("text websocket frame refused"), "{err}");
    assert!(err.contains("1003"), "{err}");
    let (_, op, payload) = read_frame(&mut raw).expect("close");
    assert_eq!((op, close_code(&payload)), (0x8, 1003));
    // Later I/O repeats the error.
    assert!(read_some(&mut s, 10).is_err());
}

#[test]
fn oversize_frame_is_refused_with_close_1009() {
    let cfg = WebSocketConfig {
        max_frame_size: Some(1000),
        ..WebSocketConfig::default()
    };
    let (mut s, mut raw) = server_with_raw_client(cfg);
    raw.write_all(&frame(true, 0x2, &[7u8; 1001], Some(KEY)))
        .expect("big");
    let err = read_some(&mut s, 10).expect_err("must fail").to_string();
    assert!(
        err.contains("1001 bytes exceeds the limit of 1000"),
        "{err}"
    );
    let (_, op, payload) = read_frame(&mut raw).expect("close");
    assert_eq!((op, close_code(&payload)), (0x8, 1009));
}

#[test]
fn oversize_fragmented_message_is_refused_with_close_1009() {
    let cfg = WebSocketConfig {
        max_message_size: Some(10),
        ..WebSocketConfig::default()
    };
    let (mut s, mut raw) = server_with_raw_client(cfg);
    raw.write_all(&frame(false, 0x2, b"123456", Some(KEY)))
        .expect("first");
    raw.write_all(&frame(true, 0x0, b"789012", Some(KEY)))
        .expect("cont");
    let mut buf = [0u8; 6];
    io::read_all(&mut s, &mut buf).expect("first fragment is fine");
    let err = read_some(&mut s, 10).expect_err("must fail").to_string();
    assert!(err.contains("exceeds the limit of 10"), "{err}");
    let (_, op, payload) = read_frame(&mut raw).expect("close");
    assert_eq!((op, close_code(&payload)), (0x8, 1009));
}

#[test]
fn fragmented_message_with_interleaved_ping_reads_as_one_stream() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    raw.write_all(&frame(false, 0x2, b"frag", Some(KEY)))
        .expect("1");
    raw.write_all(&frame(true, 0x9, b"", Some(KEY)))
        .expect("ping");
    raw.write_all(&frame(false, 0x0, b"ment", Some(KEY)))
        .expect("2");
    raw.write_all(&frame(true, 0x0, b"ed", Some(KEY)))
        .expect("3");
    let mut buf = [0u8; 10];
    io::read_all(&mut s, &mut buf).expect("read");
    assert_eq!(&buf, b"fragmented");
}

#[test]
fn unmasked_client_frame_is_refused_with_close_1002() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    raw.write_all(&frame(true, 0x2, b"naked", None))
        .expect("unmasked");
    let err = read_some(&mut s, 10).expect_err("must fail").to_string();
    assert!(
        err.contains("unmasked websocket frame from the client"),
        "{err}"
    );
    let (_, op, payload) = read_frame(&mut raw).expect("close");
    assert_eq!((op, close_code(&payload)), (0x8, 1002));
}

#[test]
fn masked_server_frame_is_refused_with_close_1002() {
    let (mut c, mut raw) = client_with_raw_server();
    raw.write_all(&frame(true, 0x2, b"masked", Some(KEY)))
        .expect("masked");
    let err = read_some(&mut c, 10).expect_err("must fail").to_string();
    assert!(
        err.contains("masked websocket frame from the server"),
        "{err}"
    );
    let (_, op, payload) = read_frame(&mut raw).expect("close");
    assert_eq!((op, close_code(&payload)), (0x8, 1002));
}

#[test]
fn peer_vanishing_mid_frame_is_a_clear_error() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    let f = frame(true, 0x2, &[1u8; 1000], Some(KEY));
    raw.write_all(&f[..8 + 100]).expect("partial frame");
    drop(raw);
    let mut buf = vec![0u8; 1000];
    let err = io::read_all(&mut s, &mut buf)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("ended inside a websocket frame"), "{err}");
    assert!(err.contains("900 payload bytes missing"), "{err}");
}

#[test]
fn peer_vanishing_mid_header_is_a_clear_error() {
    let (mut c, mut raw) = client_with_raw_server();
    raw.write_all(&[0x82, 126, 0x01]).expect("partial header");
    drop(raw);
    let err = read_some(&mut c, 10).expect_err("must fail").to_string();
    assert!(err.contains("inside a websocket frame header"), "{err}");
}

#[test]
fn eof_without_close_frame_is_an_error_unless_relaxed() {
    let (mut c, raw) = client_with_raw_server();
    drop(raw);
    let err = read_some(&mut c, 10).expect_err("must fail").to_string();
    assert!(err.contains("without a websocket close frame"), "{err}");

    let (mut c, raw) = client_with_raw_server();
    drop(raw);
    let mut buf = [0u8; 4];
    let n = c
        .readv(
            &mut [IoSliceMut::new(&mut buf)],
            None,
            ReadFlags::RELAXED_EOF,
        )
        .expect("relaxed eof");
    assert_eq!(n, 0);
}

#[test]
fn readiness_is_set_while_decoded_bytes_wait() {
    let (mut s, mut raw) = server_with_raw_client(WebSocketConfig::default());
    raw.write_all(&frame(true, 0x2, b"0123456789", Some(KEY)))
        .expect("data");
    assert_eq!(read_some(&mut s, 4).expect("read"), b"0123");
    // The rest sits in our read buffer: the socket may be drained.
    let ws = s.watch_source();
    assert!(ws.ready.get().contains(transit_channel::Condition::IN));
    assert_eq!(read_some(&mut s, 10).expect("read"), b"456789");
    assert!(!ws.ready.get().contains(transit_channel::Condition::IN));
}

#[test]
fn fds_and_peek_are_unsupported() {
    let (mut c, _raw) = client_with_raw_server();
    let mut buf = [0u8; 4];
    let mut fds = Vec::new();
    let e = c
        .readv(
            &mut [IoSliceMut::new(&mut buf)],
            Some(&mut fds),
            ReadFlags::empty(),
        )
        .expect_err("fds");
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let e = c
        .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::MSG_PEEK)
        .expect_err("peek");
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

/// Frames larger than the read buffer: a frame header is read on its own
/// (plus a small wish such as a packet header), so the payload after it
/// goes straight into the caller's buffer instead of being buffered and
/// copied. Small frames are still read many to one call. Either way every
/// byte arrives in order.
#[test]
fn large_frames_are_read_without_buffering_their_payload() {
    use transit_channel::scripted::ReadStep;
    use transit_channel::ScriptedChannel;

    let config = WebSocketConfig::default();
    let rbuf = config.read_buffer_size;
    let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let small: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000]).collect();
    let mut wire = frame(true, 0x2, &a, Some(KEY));
    wire.extend(frame(true, 0x2, &b, Some(KEY)));
    for s in &small {
        wire.extend(frame(true, 0x2, s, Some(KEY)));
    }
    let inner = ScriptedChannel::new().read(ReadStep::Data(wire));
    let log = inner.handle();
    let mut ws = WebSocketChannel::from_upgraded(Box::new(inner), Role::Server, config, &[]);

    // The first header: nothing is known about the peer, so a full buffer.
    let mut got_a = vec![0u8; a.len()];
    io::read_all(&mut ws, &mut got_a).expect("frame a");
    assert_eq!(got_a, a);
    assert_eq!(log.read_calls()[0].requested, rbuf);

    // The second header with a 32-byte wish: header and wish only.
    let calls = log.read_calls().len();
    let mut head = [0u8; 32];
    io::read_all(&mut ws, &mut head).expect("start of frame b");
    assert_eq!(log.read_calls()[calls].requested, 14 + 32);
    let mut rest = vec![0u8; b.len() - 32];
    io::read_all(&mut ws, &mut rest).expect("rest of frame b");
    assert_eq!((&head[..], &rest[..]), (&b[..32], &b[32..]));

    // The first small frame's header comes with a large wish: the header
    // alone. After that frame the peer is known to send small frames, so
    // one read takes in many of them.
    let calls = log.read_calls().len();
    let mut tail = vec![0u8; 50 * 1000];
    io::read_all(&mut ws, &mut tail).expect("small frames");
    assert_eq!(tail, small.concat());
    let reads = &log.read_calls()[calls..];
    assert_eq!(reads[0].requested, 14);
    assert!(reads.iter().any(|r| r.requested == rbuf), "{reads:?}");
    assert!(
        reads.len() < 10,
        "{} reads for 50 small frames",
        reads.len()
    );
}

//! RDMA channel teardown over the verbs model: a clean close is EOF at the
//! peer after all data, a peer that vanishes is an error (not EOF), bye is
//! a half close, and shutdown wakes a blocked reader.

use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use transit_channel::rdma::model::{pair, ModelConfig};
use transit_channel::rdma::{RdmaChannel, RdmaConfig};
use transit_channel::{io, Channel, Error, ReadFlags, Shutdown, WriteFlags};

const LIMIT: Duration = Duration::from_secs(30);

fn small() -> RdmaConfig {
    RdmaConfig {
        ring_depth: 4,
        slot_size: 256,
        send_depth: 4,
        ..RdmaConfig::default()
    }
}

fn read1(ch: &mut RdmaChannel, buf: &mut [u8]) -> Result<usize, Error> {
    ch.readv(&mut [IoSliceMut::new(buf)], None, ReadFlags::empty())
}

fn os_kind(e: &Error) -> Option<ErrorKind> {
    match e {
        Error::Os { source, .. } => Some(source.kind()),
        _ => None,
    }
}

#[test]
fn close_delivers_all_data_then_eof() {
    let (mut a, mut b, _w) = pair("close", &ModelConfig::default(), &small()).unwrap();
    io::write_all(&mut a, &[5u8; 900]).unwrap();
    let writer = thread::spawn(move || a.close());
    let mut got = vec![0u8; 900];
    io::read_all(&mut b, &mut got).unwrap();
    assert!(got.iter().all(|&x| x == 5));
    assert_eq!(read1(&mut b, &mut [0u8; 16]).unwrap(), 0, "EOF after close");
    assert_eq!(read1(&mut b, &mut [0u8; 16]).unwrap(), 0, "EOF stays");
    writer.join().unwrap().unwrap();
}

#[test]
fn dropping_a_channel_closes_it_cleanly() {
    let (mut a, mut b, _w) = pair("drop", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    io::write_all(&mut a, b"last words").unwrap();
    drop(a);
    let mut got = [0u8; 10];
    io::read_all(&mut b, &mut got).unwrap();
    assert_eq!(&got, b"last words");
    assert!(!io::read_all_eof(&mut b, &mut [0u8; 1]).unwrap());
}

#[test]
fn vanished_peer_is_an_error_after_the_data_that_arrived() {
    let (mut a, mut b, w) = pair("vanish", &ModelConfig::default(), &small()).unwrap();
    io::write_all(&mut a, b"partial").unwrap();
    // Let the wire deliver it, then the connection dies without CLOSE.
    let mut got = [0u8; 7];
    io::read_all(&mut b, &mut got).unwrap();
    io::write_all(&mut a, b"more").unwrap();
    w.kill();
    // Data that reached B before the failure is still readable ...
    let mut rest = Vec::new();
    let err = loop {
        let mut buf = [0u8; 16];
        match read1(&mut b, &mut buf) {
            Ok(0) => panic!("a vanished peer must not look like EOF"),
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(rest.is_empty() || rest == b"more", "{rest:?}");
    // ... then an error that says what happened, not EOF.
    assert_eq!(os_kind(&err), Some(ErrorKind::ConnectionReset), "{err}");
    assert!(err.to_string().contains("without closing"), "{err}");
    assert!(
        err.to_string().contains("vanish-b"),
        "names the channel: {err}"
    );
    // Writes fail too.
    let werr = a
        .writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty())
        .unwrap_err();
    assert_eq!(os_kind(&werr), Some(ErrorKind::ConnectionReset), "{werr}");
}

#[test]
fn vanished_peer_wakes_a_blocked_reader_with_an_error() {
    let (_a, mut b, w) = pair("wake", &ModelConfig::default(), &small()).unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let r = read1(&mut b, &mut [0u8; 8]);
        tx.send(()).unwrap();
        r
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "reader is blocked"
    );
    w.kill();
    rx.recv_timeout(LIMIT).expect("reader woke");
    let err = reader.join().unwrap().unwrap_err();
    assert_eq!(os_kind(&err), Some(ErrorKind::ConnectionReset), "{err}");
}

#[test]
fn peer_disconnect_mid_transfer_fails_the_blocked_writer() {
    let (mut a, _b, w) = pair("midway", &ModelConfig::default(), &small()).unwrap();
    let (tx, rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        // Far more than 4 slots: blocks for credits the reader never returns.
        let r = io::write_all(&mut a, &vec![1u8; 1 << 20]);
        tx.send(()).unwrap();
        r
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "writer is blocked"
    );
    w.kill();
    rx.recv_timeout(LIMIT).expect("writer woke");
    let err = writer.join().unwrap().unwrap_err();
    assert_eq!(os_kind(&err), Some(ErrorKind::ConnectionReset), "{err}");
}

#[test]
fn writing_to_a_closed_peer_fails_with_broken_pipe() {
    let (mut a, mut b, _w) = pair("epipe", &ModelConfig::default(), &small()).unwrap();
    b.close().unwrap();
    let mut last = None;
    for _ in 0..1000 {
        match a.writev(&[IoSlice::new(&[0u8; 100])], &[], WriteFlags::empty()) {
            Ok(_) => thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let err = last.expect("writes to a closed peer fail");
    assert_eq!(os_kind(&err), Some(ErrorKind::BrokenPipe), "{err}");
    // Reading sees the peer's CLOSE as EOF, not an error.
    assert_eq!(read1(&mut a, &mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn bye_is_a_half_close() {
    let (mut a, mut b, _w) = pair("bye", &ModelConfig::default(), &small()).unwrap();
    io::write_all(&mut a, b"request").unwrap();
    a.bye().unwrap();
    // No writes after bye ...
    let err = a
        .writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty())
        .unwrap_err();
    assert_eq!(os_kind(&err), Some(ErrorKind::BrokenPipe), "{err}");
    // ... the peer reads the data, then EOF, and may still answer.
    let mut req = [0u8; 7];
    io::read_all(&mut b, &mut req).unwrap();
    assert_eq!(&req, b"request");
    assert_eq!(read1(&mut b, &mut [0u8; 4]).unwrap(), 0);
    let answer = vec![9u8; 5000]; // more than the ring: credits must flow after bye
    let writer = thread::spawn(move || {
        io::write_all(&mut b, &answer).unwrap();
        b.close().unwrap();
    });
    let mut got = vec![0u8; 5000];
    io::read_all(&mut a, &mut got).unwrap();
    assert!(got.iter().all(|&x| x == 9));
    assert_eq!(read1(&mut a, &mut [0u8; 4]).unwrap(), 0);
    writer.join().unwrap();
}

#[test]
fn shutdown_read_wakes_a_blocked_reader_with_eof() {
    let (_a, mut b, _w) = pair("shut", &ModelConfig::default(), &small()).unwrap();
    let handle = b.shutdown_handle().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let r = read1(&mut b, &mut [0u8; 8]);
        tx.send(()).unwrap();
        r
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "reader is blocked"
    );
    handle.shutdown(Shutdown::Read).unwrap();
    rx.recv_timeout(LIMIT).expect("reader woke");
    assert_eq!(reader.join().unwrap().unwrap(), 0);
}

#[test]
fn shutdown_write_ends_the_stream_for_the_peer() {
    let (mut a, mut b, _w) = pair("shutw", &ModelConfig::default(), &small()).unwrap();
    io::write_all(&mut a, b"abc").unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    let mut got = [0u8; 3];
    io::read_all(&mut b, &mut got).unwrap();
    assert_eq!(&got, b"abc");
    assert_eq!(read1(&mut b, &mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn io_after_close_is_closed() {
    let (mut a, _b, _w) = pair("closed", &ModelConfig::default(), &small()).unwrap();
    a.close().unwrap();
    a.close().unwrap();
    assert!(matches!(
        read1(&mut a, &mut [0u8; 1]),
        Err(Error::Closed { .. })
    ));
    let err = a
        .writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty())
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

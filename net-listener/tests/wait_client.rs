//! Synchronous accepts with `wait_client`: the timeout, a client that
//! arrives while waiting, and several clients accepted in one pass.

mod common;

use std::io::{self, IoSliceMut, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{connect, BOUND};
use transit_channel::socket::SocketChannel;
use transit_channel::{Channel, Error, ReadFlags, SocketAddress};
use transit_net_listener::NetListener;

fn loopback_listener(name: &str) -> (NetListener, SocketAddr) {
    let mut l = NetListener::with_name(name);
    l.open_sync(
        &SocketAddress::Inet {
            host: "127.0.0.1".into(),
            port: 0,
        },
        16,
    )
    .expect("open");
    let port = l.port().expect("port");
    (l, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

fn first_byte(ch: &mut SocketChannel) -> u8 {
    ch.set_blocking(true).expect("blocking");
    let mut b = [0u8; 1];
    let n = ch
        .readv(&mut [IoSliceMut::new(&mut b)], None, ReadFlags::empty())
        .expect("read");
    assert_eq!(n, 1);
    b[0]
}

#[test]
fn times_out_with_an_error_naming_the_listener() {
    let (mut l, _addr) = loopback_listener("lonely");
    let err = l
        .wait_client(Some(Duration::from_millis(50)))
        .expect_err("nobody connects");
    match &err {
        Error::Os {
            channel, source, ..
        } => {
            assert_eq!(channel, "lonely");
            assert_eq!(source.kind(), io::ErrorKind::TimedOut);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(l.is_connected(), "a timeout leaves the listener usable");
}

#[test]
fn returns_the_client_that_connects_while_waiting() {
    let (mut l, addr) = loopback_listener("waiter");
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut c = connect(addr);
        c.write_all(&[42]).expect("write");
        c
    });
    let mut accepted = l.wait_client(Some(BOUND)).expect("a client");
    assert_eq!(first_byte(&mut accepted), 42);
    let c = client.join().expect("client thread");
    assert_eq!(
        accepted.peer_address(),
        Some(SocketAddress::Inet {
            host: "127.0.0.1".into(),
            port: c.local_addr().expect("client addr").port()
        })
    );
}

#[test]
fn clients_accepted_in_the_same_pass_are_kept_for_the_next_call() {
    let (mut l, addr) = loopback_listener("batch");
    let mut clients = Vec::new();
    for tag in 1..=3u8 {
        let mut c = connect(addr);
        c.write_all(&[tag]).expect("write");
        clients.push(c);
    }
    // Let the handshakes complete so one accept pass sees all three.
    std::thread::sleep(Duration::from_millis(50));
    let mut tags = Vec::new();
    let mut first = l.wait_client(Some(BOUND)).expect("first");
    tags.push(first_byte(&mut first));
    for _ in 0..2 {
        // Queued clients come back at once, even with a zero timeout.
        let mut c = l
            .wait_client(Some(Duration::ZERO))
            .expect("a queued client, not a dropped one");
        tags.push(first_byte(&mut c));
    }
    tags.sort_unstable();
    assert_eq!(tags, [1, 2, 3]);
}

#[test]
fn accepted_clients_are_blocking_and_named_after_the_listener() {
    let (mut l, addr) = loopback_listener("namer");
    let _c = connect(addr);
    let accepted = l.wait_client(Some(BOUND)).expect("client");
    assert!(accepted.is_blocking(), "clients start blocking, as in QEMU");
    assert!(accepted.name().starts_with("namer"), "{}", accepted.name());
}

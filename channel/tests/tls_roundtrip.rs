//! TLS round trips: 64 MiB byte-identical in both directions, blocking over
//! a UNIX socket pair and non-blocking over TCP loopback; credentials read
//! from directories in QEMU's layout; the watch is ready while decrypted
//! plaintext is buffered even when the socket is drained.

mod tls_util;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tls_util::{pattern, run_on, run_pair, tcp_pair, Setup};
use transit_channel::io::{read_all, read_all_eof, wait_blocking, write_all};
use transit_channel::main_loop::{ControlFlow, MainContext};
use transit_channel::tls::TlsChannel;
use transit_channel::{Channel, Condition};

const BIG: usize = 64 << 20;

/// Each side sends `BIG` bytes while the other receives them, then both say
/// bye; returns what each side received.
fn exchange(nonblocking: bool, tcp: bool) {
    let setup = Setup::new("roundtrip");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let up = pattern(BIG, 1);
    let down = pattern(BIG, 2);
    let (up2, down2) = (up.clone(), down.clone());
    let (a, b): (Box<dyn Channel>, Box<dyn Channel>) = if tcp {
        let (a, b) = tcp_pair();
        (Box::new(a), Box::new(b))
    } else {
        let (a, b) = transit_channel::SocketChannel::pair().expect("pair");
        (Box::new(a), Box::new(b))
    };
    let (got_down, got_up) = run_on(
        a,
        b,
        move |ch| {
            let mut tls = TlsChannel::client(ch, cc, "localhost").expect("client");
            tls.set_blocking(!nonblocking).expect("mode");
            tls.handshake_blocking().expect("client handshake");
            // Write on a second thread? No: one channel, one thread; send
            // first, then receive (the server does the reverse).
            write_all(&mut tls, &up2).expect("client write");
            let mut got = vec![0u8; BIG];
            read_all(&mut tls, &mut got).expect("client read");
            tls.bye()
                .or_else(|e| {
                    if e.is_would_block() {
                        wait_blocking(&tls.watch_source(), Condition::OUT, None)?;
                        tls.bye()
                    } else {
                        Err(e)
                    }
                })
                .expect("client bye");
            assert!(!read_all_eof(&mut tls, &mut [0u8; 1]).expect("client eof"));
            got
        },
        move |ch| {
            let mut tls = TlsChannel::server(ch, sc, None).expect("server");
            tls.set_blocking(!nonblocking).expect("mode");
            tls.handshake_blocking().expect("server handshake");
            let mut got = vec![0u8; BIG];
            read_all(&mut tls, &mut got).expect("server read");
            write_all(&mut tls, &down2).expect("server write");
            loop {
                match tls.bye() {
                    Ok(()) => break,
                    Err(e) if e.is_would_block() => {
                        wait_blocking(&tls.watch_source(), Condition::OUT, None).expect("wait");
                    }
                    Err(e) => panic!("server bye: {e}"),
                }
            }
            assert!(!read_all_eof(&mut tls, &mut [0u8; 1]).expect("server eof"));
            got
        },
    );
    assert!(got_up == up, "client -> server data differs");
    assert!(got_down == down, "server -> client data differs");
}

#[test]
fn blocking_64mib_both_ways_over_unix_pair() {
    exchange(false, false);
}

#[test]
fn nonblocking_64mib_both_ways_over_tcp() {
    exchange(true, true);
}

#[test]
fn blocking_64mib_both_ways_over_tcp() {
    exchange(false, true);
}

#[test]
fn negotiates_tls13_with_aes_gcm_and_reports_peer_identity() {
    let setup = Setup::new("negotiated");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (client, server) = run_pair(
        move |ch| {
            let mut tls = TlsChannel::client(ch, cc, "localhost").expect("client");
            tls.handshake_blocking().expect("handshake");
            (tls.negotiated(), tls.peer_identity())
        },
        move |ch| {
            let mut tls = TlsChannel::server(ch, sc, None).expect("server");
            tls.handshake_blocking().expect("handshake");
            (tls.negotiated(), tls.peer_identity())
        },
    );
    let (version, suite) = client.0.expect("negotiated");
    assert_eq!(version, "TLSv1_3");
    assert!(suite.contains("AES_128_GCM"), "{suite}");
    assert_eq!(client.1.as_deref(), Some("CN=localhost"));
    assert_eq!(server.1.as_deref(), Some("CN=client,O=Transit"));
}

#[test]
fn server_name_may_be_an_ip_address() {
    let setup = Setup::new("ip-name");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (c, s) = run_pair(
        move |ch| {
            let mut tls = TlsChannel::client(ch, cc, "127.0.0.1").expect("client");
            tls.handshake_blocking().map_err(|e| e.to_string())
        },
        move |ch| {
            let mut tls = TlsChannel::server(ch, sc, None).expect("server");
            tls.handshake_blocking().map_err(|e| e.to_string())
        },
    );
    assert_eq!(c, Ok(()));
    assert_eq!(s, Ok(()));
}

#[test]
fn watch_fires_while_plaintext_is_buffered_and_the_socket_is_drained() {
    let setup = Setup::new("readiness");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (a, b) = transit_channel::SocketChannel::pair().expect("pair");
    let payload = pattern(40_000, 3); // three records
    let sent = payload.clone();
    let server = std::thread::spawn(move || {
        let mut tls = TlsChannel::server(Box::new(b), sc, None).expect("server");
        tls.handshake_blocking().expect("handshake");
        write_all(&mut tls, &sent).expect("write");
        tls.bye().expect("bye");
        // Keep the socket open until the client is done.
        let _ = read_all_eof(&mut tls, &mut [0u8; 1]);
    });
    let mut tls = TlsChannel::client(Box::new(a), cc, "localhost").expect("client");
    tls.handshake_blocking().expect("handshake");
    // Let every record arrive in the socket, then take one byte: the
    // channel pulls all ciphertext into its buffer.
    std::thread::sleep(Duration::from_millis(200));
    let mut first = [0u8; 1];
    read_all(&mut tls, &mut first).expect("first byte");
    assert_eq!(first[0], payload[0]);

    let inner_ws = tls.inner().watch_source();
    let socket_ready =
        wait_blocking(&inner_ws, Condition::IN, Some(Duration::ZERO)).expect("poll socket");
    assert!(
        !socket_ready.contains(Condition::IN),
        "the socket should be drained, got {socket_ready:?}"
    );

    let ctx = MainContext::new().expect("context");
    let fired = Rc::new(Cell::new(Condition::empty()));
    let f = fired.clone();
    let id = ctx.add_watch(&tls.watch_source(), Condition::IN, move |c| {
        f.set(c);
        ControlFlow::Remove
    });
    for _ in 0..10 {
        if !fired.get().is_empty() {
            break;
        }
        ctx.iteration(false);
    }
    assert!(fired.get().contains(Condition::IN), "watch did not fire");
    assert!(!ctx.contains(id));

    let mut rest = vec![0u8; payload.len() - 1];
    read_all(&mut tls, &mut rest).expect("rest");
    assert!(rest == payload[1..]);
    assert!(!read_all_eof(&mut tls, &mut [0u8; 1]).expect("eof"));
    drop(tls);
    server.join().expect("server thread");
}

/// `handshake_until` against a peer that never answers gives up at its
/// deadline with a typed timeout (no thread watches it), the channel back
/// in blocking mode; with a real server in time it succeeds.
#[test]
fn a_handshake_with_a_deadline_times_out_on_a_silent_peer() {
    let setup = Setup::new("deadline");
    let (a, _silent) = transit_channel::SocketChannel::pair().expect("pair");
    let mut tls =
        TlsChannel::client(Box::new(a), setup.client_creds(), "localhost").expect("client");
    let start = std::time::Instant::now();
    let e = tls
        .handshake_until(start + Duration::from_millis(300))
        .expect_err("a silent peer");
    assert!(e.is_timed_out(), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(tls.is_blocking());
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (a, b) = transit_channel::SocketChannel::pair().expect("pair");
    let (c, s) = run_on(
        Box::new(a),
        Box::new(b),
        move |ch| {
            let mut t = TlsChannel::client(ch, cc, "localhost").expect("client");
            t.handshake_until(std::time::Instant::now() + Duration::from_secs(20))
                .map_err(|e| e.to_string())
        },
        move |ch| {
            let mut t = TlsChannel::server(ch, sc, None).expect("server");
            t.handshake_until(std::time::Instant::now() + Duration::from_secs(20))
                .map_err(|e| e.to_string())
        },
    );
    assert_eq!((c, s), (Ok(()), Ok(())));
}

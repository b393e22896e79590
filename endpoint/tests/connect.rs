//! The connect stack bounds every handshake by its deadline and says which
//! layer ran out of time.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use transit_endpoint::{connect, Endpoint, OpenFailure, TlsOpts, TransportOpts};

#[test]
fn a_tls_handshake_with_a_silent_server_times_out_at_its_deadline() {
    // A server that accepts (the kernel does) and never answers.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let ep = Endpoint::parse(&format!("tcp:127.0.0.1:{port}")).unwrap();
    let pki = transit_channel::tls::generate::TestPki::new().unwrap();
    let mut opts = TransportOpts::new(Duration::from_millis(400));
    opts.tls = Some(TlsOpts {
        creds: pki.loopback_creds().unwrap().0,
        hostname: Some("localhost".into()),
        authz: None,
        relaxed_eof: false,
    });
    let start = Instant::now();
    let Err(e) = connect::open(&ep, &opts, 0, 1, "main channel") else {
        panic!("it connected");
    };
    let took = start.elapsed();
    assert_eq!(e.kind, OpenFailure::Layer, "{e}");
    assert!(
        e.message
            .starts_with("main channel: TLS handshake: timed out after 0.4 s"),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(server);
}

#[test]
fn a_cancel_ends_a_handshake_in_progress() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let ep = Endpoint::parse(&format!("ws://127.0.0.1:{port}/m")).unwrap();
    let opts = TransportOpts::new(Duration::from_secs(30));
    let cancel = opts.cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        cancel.cancel();
    });
    let start = Instant::now();
    let Err(e) = connect::open(&ep, &opts, 0, 1, "main channel") else {
        panic!("it connected");
    };
    assert_eq!(e.kind, OpenFailure::Cancelled, "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    drop(server);
}

#[test]
fn a_session_opens_all_its_channels_or_says_the_most_telling_failure() {
    // The kernel accepts on a listening socket's backlog: all open.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let ep = Endpoint::parse(&format!("tcp:127.0.0.1:{port}")).unwrap();
    let opts = TransportOpts::new(Duration::from_secs(5));
    let chans = connect::open_session(&ep, &opts, 3).unwrap();
    assert_eq!(chans.len(), 4);
    assert_eq!(connect::channel_name(0), "main channel");
    assert_eq!(connect::channel_name(3), "page channel 2");
    drop((chans, server));
    // Nobody listens: every open fails, the error says so and that
    // trying again will not help.
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = gone.local_addr().unwrap().port();
    drop(gone);
    let ep = Endpoint::parse(&format!("tcp:127.0.0.1:{port}")).unwrap();
    let Err(e) = connect::open_session(&ep, &opts, 2) else {
        panic!("nobody listens, yet it opened");
    };
    assert!(e.opened.is_empty());
    assert!(e.error.refused, "{:?}", e.error);
    assert!(e.error.message.starts_with("main channel: "), "{}", e.error);
    // A websocket endpoint can connect again; an fd or a command cannot.
    assert!(connect::reopener(&Endpoint::parse("ws://127.0.0.1:1/m").unwrap(), &opts, 3).is_some());
    assert!(connect::reopener(&Endpoint::parse("exec:cat").unwrap(), &opts, 3).is_none());
    assert!(connect::reopener(&Endpoint::parse("fd:3").unwrap(), &opts, 3).is_none());
}

/// When some channels of a session fail, the opened ones are not each
/// read for a refusal one after the other (only TLS can refuse after a
/// handshake that looked fine): 4 websocket upgrades accepted and 4
/// answered 404 end at once, not after 0.5 s per opened channel.
#[test]
fn a_failed_session_open_does_not_wait_on_each_opened_channel() {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let mut keep = Vec::new();
        for (i, s) in l.incoming().take(8).enumerate() {
            let mut s = s.unwrap();
            if i % 2 == 0 {
                let ch =
                    transit_channel::SocketChannel::from_fd(std::os::fd::OwnedFd::from(s)).unwrap();
                let ws = transit_channel::WebSocketChannel::server(
                    Box::new(ch),
                    "/x",
                    Default::default(),
                )
                .handshake_blocking()
                .unwrap();
                keep.push(ws);
            } else {
                let mut b = [0u8; 1];
                let mut req = Vec::new();
                while !req.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).unwrap() == 0 {
                        break;
                    }
                    req.push(b[0]);
                }
                s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
            }
        }
        let _ = done.recv_timeout(Duration::from_secs(30));
        drop(keep);
    });
    let ep = Endpoint::parse(&format!("ws://127.0.0.1:{port}/x")).unwrap();
    let opts = TransportOpts::new(Duration::from_secs(5));
    let t = Instant::now();
    let Err(e) = connect::open_session(&ep, &opts, 7) else {
        panic!("half the upgrades are refused, yet it opened");
    };
    let took = t.elapsed();
    assert_eq!(e.opened.len(), 4);
    assert_eq!(e.error.kind, OpenFailure::Layer, "{}", e.error);
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    done_tx.send(()).unwrap();
    server.join().unwrap();
}

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

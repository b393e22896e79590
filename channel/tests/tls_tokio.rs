//! tokio interop (feature `tokio`): a tokio-rustls client against a transit
//! TLS server, a transit TLS client against a tokio-rustls acceptor (over
//! [`AsyncChannel`] on a transit socket), and a transit [`TlsChannel`] used
//! through [`AsyncChannel`] from tokio; all with the same credential
//! directories, byte-identical data both ways, close_notify at the end.
//!
//! Run with `cargo test -p transit-channel --features tokio --test tls_tokio`.

mod tls_util;

use std::time::Duration;

use tls_util::{pattern, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transit_channel::io::{read_all, read_all_eof, write_all};
use transit_channel::tls::tokio::{acceptor, connector, server_name, AsyncChannel};
use transit_channel::tls::{Authz, TlsChannel};
use transit_channel::{Channel, SocketChannel};

const LEN: usize = 4 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Run `fut` on a fresh runtime with a timeout.
fn run_bounded<F: std::future::Future>(fut: F) -> F::Output {
    runtime().block_on(async {
        tokio::time::timeout(tls_util::BOUND, fut)
            .await
            .expect("tokio side timed out")
    })
}

#[test]
fn tokio_client_talks_to_transit_server() {
    let setup = Setup::new("tokio-client");
    let mut listener =
        SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse().expect("addr"), 1).expect("listen");
    let addr = listener.local_address().expect("bound").to_string();
    let port = addr.rsplit(':').next().expect("port").to_owned();
    let (up, down) = (pattern(LEN, 41), pattern(LEN, 42));
    let sc = setup.server_creds();
    let (up2, down2) = (up.clone(), down.clone());
    let authz = Authz::new(["CN=client,O=Transit"]).expect("authz");
    let server = std::thread::spawn(move || {
        let ch = listener.accept().expect("accept");
        let mut tls = TlsChannel::server(Box::new(ch), sc, Some(&authz)).expect("server");
        tls.handshake_blocking().expect("handshake");
        let mut got = vec![0u8; LEN];
        read_all(&mut tls, &mut got).expect("read");
        write_all(&mut tls, &down2).expect("write");
        tls.bye().expect("bye");
        // The tokio client's shutdown sends close_notify: a clean end.
        let clean = !read_all_eof(&mut tls, &mut [0u8; 1]).expect("eof");
        (got == up2, clean)
    });
    let cc = setup.client_creds();
    let got = run_bounded(async move {
        let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("connect");
        let mut tls = connector(&cc)
            .expect("connector")
            .connect(server_name("localhost").expect("name"), tcp)
            .await
            .expect("tokio handshake");
        tls.write_all(&up).await.expect("write");
        // tokio-rustls may hold the last records until flushed.
        tls.flush().await.expect("flush");
        let mut got = vec![0u8; LEN];
        tls.read_exact(&mut got).await.expect("read");
        // The server said bye: end of file.
        let mut more = [0u8; 1];
        assert_eq!(tls.read(&mut more).await.expect("eof"), 0);
        tls.shutdown().await.expect("close_notify");
        got
    });
    let (up_ok, clean) = server.join().expect("server thread");
    assert!(up_ok, "tokio -> transit data differs");
    assert!(clean, "transit server did not see close_notify");
    assert!(got == down, "transit -> tokio data differs");
}

#[test]
fn transit_client_talks_to_tokio_acceptor_over_async_channel() {
    let setup = Setup::new("tokio-server");
    let mut listener =
        SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse().expect("addr"), 1).expect("listen");
    let addr = listener.local_address().expect("bound");
    let (up, down) = (pattern(LEN, 51), pattern(LEN, 52));
    let cc = setup.client_creds();
    let (up2, down2) = (up.clone(), down.clone());
    let client = std::thread::spawn(move || {
        let ch = SocketChannel::connect_sync(&addr).expect("connect");
        let mut tls = TlsChannel::client(Box::new(ch), cc, "127.0.0.1").expect("client");
        tls.handshake_blocking().expect("handshake");
        write_all(&mut tls, &up2).expect("write");
        let mut got = vec![0u8; LEN];
        read_all(&mut tls, &mut got).expect("read");
        tls.bye().expect("bye");
        let clean = !read_all_eof(&mut tls, &mut [0u8; 1]).expect("eof");
        (got == down2, clean)
    });
    let sc = setup.server_creds();
    let got = run_bounded(async move {
        let ch = listener.accept().expect("accept");
        let io = AsyncChannel::new(ch).expect("async channel");
        let mut tls = acceptor(&sc, None)
            .expect("acceptor")
            .accept(io)
            .await
            .expect("tokio handshake");
        let mut got = vec![0u8; LEN];
        tls.read_exact(&mut got).await.expect("read");
        tls.write_all(&down).await.expect("write");
        tls.flush().await.expect("flush");
        let mut more = [0u8; 1];
        assert_eq!(tls.read(&mut more).await.expect("eof"), 0);
        tls.shutdown().await.expect("close_notify");
        got
    });
    let (down_ok, clean) = client.join().expect("client thread");
    assert!(got == up, "transit -> tokio data differs");
    assert!(down_ok, "tokio -> transit data differs");
    assert!(clean, "transit client did not see close_notify");
}

#[test]
fn transit_tls_channel_through_async_channel_talks_to_tokio_acceptor() {
    let setup = Setup::new("tokio-both");
    let (up, down) = (pattern(LEN, 61), pattern(LEN, 62));
    let (up1, down1) = (up.clone(), down.clone());
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let got = run_bounded(async move {
        let (up, down) = (up1, down1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accept = acceptor(&sc, None).expect("acceptor");
        let down2 = down.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = accept.accept(tcp).await.expect("tokio handshake");
            let mut got = vec![0u8; LEN];
            tls.read_exact(&mut got).await.expect("read");
            tls.write_all(&down2).await.expect("write");
            tls.flush().await.expect("flush");
            tls.shutdown().await.expect("close_notify");
            got
        });
        let ch =
            SocketChannel::connect_sync(&format!("tcp:127.0.0.1:{port}").parse().expect("addr"));
        // connect_sync blocks; the listener's backlog takes the connection.
        let ch = ch.expect("connect");
        let tls = TlsChannel::client(Box::new(ch), cc, "localhost").expect("client");
        let mut io = AsyncChannel::new(tls).expect("async channel");
        // The handshake runs on the first write, driven by readiness.
        io.write_all(&up).await.expect("write");
        let mut got = vec![0u8; LEN];
        io.read_exact(&mut got).await.expect("read");
        let mut more = [0u8; 1];
        assert_eq!(io.read(&mut more).await.expect("eof"), 0);
        io.shutdown().await.expect("bye");
        assert!(io.get_ref().is_handshake_complete());
        let server_got = tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("server in time")
            .expect("server task");
        (server_got, got)
    });
    assert!(got.0 == up, "transit -> tokio data differs");
    assert!(got.1 == down, "tokio -> transit data differs");
}

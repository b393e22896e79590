//! wss: our websocket client and server over TLS over TCP (the TLS
//! channel is just another `Box<dyn Channel>` beneath), 16 MiB
//! byte-identical with a clean close at both layers.

mod tls_util;
mod websocket_util;

use std::thread;

use transit_channel::tls::TlsChannel;
use transit_channel::websocket::{WebSocketChannel, WebSocketConfig};
use transit_channel::{io, Channel};

#[test]
fn wss_round_trip_16_mib_is_identical() {
    let setup = tls_util::Setup::new("wss");
    let (c, s) = websocket_util::tcp_pair();
    let server_creds = setup.server_creds();
    let srv = thread::spawn(move || {
        let mut tls = TlsChannel::server(Box::new(s), server_creds, None).expect("tls server");
        tls.handshake_blocking().expect("tls server handshake");
        let mut ws = WebSocketChannel::server(Box::new(tls), "/wss", WebSocketConfig::default())
            .handshake_blocking()
            .expect("ws server handshake");
        let mut got = vec![0u8; 16 << 20];
        io::read_all(&mut ws, &mut got).expect("read");
        let mut end = [0u8; 1];
        assert!(!io::read_all_eof(&mut ws, &mut end).expect("eof"));
        ws.bye().expect("server bye");
        got
    });
    let mut tls =
        TlsChannel::client(Box::new(c), setup.client_creds(), "localhost").expect("tls client");
    tls.handshake_blocking().expect("tls client handshake");
    let mut ws = WebSocketChannel::client(
        Box::new(tls),
        "localhost",
        "/wss",
        WebSocketConfig::default(),
    )
    .expect("client")
    .handshake_blocking()
    .expect("ws client handshake");
    let data = websocket_util::pattern(16 << 20, 9);
    io::write_all(&mut ws, &data).expect("write");
    ws.bye().expect("bye");
    let mut end = [0u8; 1];
    assert!(!io::read_all_eof(&mut ws, &mut end).expect("close answer"));
    assert_eq!(ws.peer_close().map(|p| p.code), Some(1000));
    let got = srv.join().expect("server");
    assert!(got == data, "payload differs");
}

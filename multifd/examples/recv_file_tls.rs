//! Receive one session from `send_file_tls` into a file, over TLS.
//!
//! ```text
//! cargo run -p transit-multifd --example recv_file_tls -- 127.0.0.1:4444 CREDS_DIR OUT
//! ```
//!
//! CREDS_DIR holds `ca-cert.pem`, `server-cert.pem` and `server-key.pem`
//! (QEMU's layout); the client must present a certificate of the same CA.
//! Port 0 picks a free port; the address is printed as `listening on ...`.
//! Connections are taken in any order: the receiver tells the main channel
//! from the page channels by their first bytes. OUT appears only when the
//! whole image arrived and was verified (written to a temporary file,
//! `fsync`ed and renamed); a failed session leaves nothing behind.

use std::io::Write;
use std::sync::mpsc;

use transit_channel::tls::{Endpoint, TlsChannel, TlsCreds};
use transit_channel::{Channel, SocketAddress, SocketChannel};
use transit_multifd::{Destination, Receiver, RecvConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, creds, out] = &args[..] else {
        return Err("usage: recv_file_tls HOST:PORT CREDS_DIR OUT".into());
    };
    let addr: SocketAddress = format!("tcp:{addr}").parse()?;
    let creds = TlsCreds::from_dir(creds, Endpoint::Server)?;
    let mut listener = SocketChannel::listen_sync(&addr, 16)?;
    let local = listener.local_address().ok_or("no local address")?;
    println!("listening on {local}");
    std::io::stdout().flush()?;

    let dest = Destination::File {
        path: out.into(),
        mode: None,
    };
    // Each connection's TLS handshake runs on a thread of its own, so a
    // sender that sets up its channels in any order is never held up by
    // the receiver: `accept_channel` blocks until the channel's first
    // bytes (the session header, or a page channel's hello) arrive.
    let (tx, handshaken) = mpsc::channel::<Box<dyn Channel>>();
    std::thread::spawn(move || {
        while let Ok(tcp) = listener.accept() {
            let (tx, creds) = (tx.clone(), creds.clone());
            std::thread::spawn(move || {
                let Ok(mut tls) = TlsChannel::server(Box::new(tcp), creds, None) else {
                    return;
                };
                if tls.handshake_blocking().is_ok() {
                    let _ = tx.send(Box::new(tls));
                }
            });
        }
    });
    let mut rx = Receiver::new(RecvConfig::default(), dest);
    // Until the main channel and all the page channels it announced are in.
    while !rx.is_ready() {
        rx.accept_channel(handshaken.recv()?)?;
    }
    let outcome = rx.run()?;
    println!(
        "received {} bytes of data ({} zero pages) into {out}, verified",
        outcome.stats.bytes, outcome.stats.zero_pages
    );
    Ok(())
}

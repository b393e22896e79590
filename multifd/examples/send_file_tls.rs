//! Send a file to `recv_file_tls` over TLS with 4 page channels.
//!
//! ```text
//! cargo run -p transit-multifd --example send_file_tls -- 127.0.0.1:4444 CREDS_DIR FILE
//! ```
//!
//! CREDS_DIR is in QEMU's `tls-creds-x509` layout (`ca-cert.pem`,
//! `client-cert.pem`, `client-key.pem`). The session is one main channel
//! plus 4 page channels, each its own TCP connection and TLS session; the
//! file is mapped (holes are sent as ranges, never read), and `finish`
//! returns once the receiver verified the digest and put the file in place.

use std::path::Path;

use transit_channel::tls::{Endpoint, TlsChannel, TlsCreds};
use transit_channel::{Channel, SocketAddress, SocketChannel};
use transit_multifd::{Payload, SendConfig, Sender, SourceImage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, creds, file] = &args[..] else {
        return Err("usage: send_file_tls HOST:PORT CREDS_DIR FILE".into());
    };
    let addr: SocketAddress = format!("tcp:{addr}").parse()?;
    let host = match &addr {
        SocketAddress::Inet { host, .. } => host.clone(),
        _ => unreachable!("a tcp: address"),
    };
    let creds = TlsCreds::from_dir(creds, Endpoint::Client)?;

    // Main channel first, then the page channels: connect, then TLS.
    let mut channels = Vec::new();
    for _ in 0..1 + 4 {
        let tcp = SocketChannel::connect_sync(&addr)?;
        let mut tls = TlsChannel::client(Box::new(tcp), creds.clone(), &host)?;
        tls.handshake_blocking()?;
        channels.push(Box::new(tls) as Box<dyn Channel>);
    }
    let main = channels.remove(0);

    let image = SourceImage::map_file(Path::new(file))?;
    let mut tx = Sender::new(SendConfig::default(), Payload::Image(image), main, channels)?;
    tx.send_all()?;
    let stats = tx.finish()?;
    println!(
        "sent {} bytes of data ({} zero pages) in {:.3} s, verified",
        stats.bytes, stats.zero_pages, stats.seconds
    );
    Ok(())
}

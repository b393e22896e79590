//! A tokio program talking TLS through a transit channel (feature `tokio`).
//!
//! ```text
//! cargo run -p transit-channel --features tokio --example tokio_tls
//! ```
//!
//! The client is a transit `TlsChannel` over a `SocketChannel`, driven by
//! tokio through `AsyncChannel` (tokio's `AsyncRead`/`AsyncWrite` over any
//! channel); the server is plain tokio-rustls, built by `acceptor` from the
//! same kind of credentials (here a throw-away CA made in process). The
//! server answers in upper case.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transit_channel::tls::generate::TestPki;
use transit_channel::tls::tokio::{acceptor, AsyncChannel};
use transit_channel::tls::TlsChannel;
use transit_channel::{SocketAddress, SocketChannel};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pki = TestPki::new()?;
    let (client_creds, server_creds) = pki.loopback_creds()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let acceptor = acceptor(&server_creds, None)?;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf.to_ascii_uppercase()).await?;
        tls.shutdown().await?; // close_notify
        Ok::<_, std::io::Error>(())
    });

    // The transit side: connect (a blocking call, short on loopback), put
    // TLS on it, and hand it to tokio.
    let tcp = SocketChannel::connect_sync(&SocketAddress::inet("127.0.0.1", port))?;
    let tls = TlsChannel::client(Box::new(tcp), client_creds, "localhost")?;
    let mut ch = AsyncChannel::new(tls)?;
    ch.write_all(b"hello").await?;
    let mut answer = Vec::new();
    ch.read_to_end(&mut answer).await?;
    server.await??;
    println!("the server answered {:?}", String::from_utf8_lossy(&answer));
    if answer != b"HELLO" {
        return Err("unexpected answer".into());
    }
    Ok(())
}

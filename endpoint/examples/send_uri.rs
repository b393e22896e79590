//! Send a file to any endpoint URI with N page channels: the connect
//! stack of `transit-endpoint` opens each channel (connect, TLS, the
//! websocket upgrade), `transit-multifd` sends the session.
//!
//! ```text
//! cargo run -p transit-endpoint --example send_uri -- URI FILE CHANNELS [CREDS_DIR]
//! cargo run -p transit-endpoint --example send_uri -- ws://127.0.0.1:8080/m disk.img 4
//! ```
//!
//! URI is anything `transit send` takes (`tcp:`, `unix:`, `vsock:`,
//! `ws://`, `wss://`, `exec:`...); CREDS_DIR (QEMU's `tls-creds-x509`
//! layout) adds TLS, and `wss://` needs it. The file is mapped (holes go
//! as ranges, never read); `finish` returns once the receiver verified the
//! digest and put the file in place.

use std::path::Path;
use std::time::Duration;

use transit_endpoint::connect::{self, tls_from_args};
use transit_endpoint::{Endpoint, TransportOpts};
use transit_multifd::{Payload, SendConfig, Sender, SourceImage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (uri, file, channels, creds) = match &args[..] {
        [u, f, n] => (u, f, n, None),
        [u, f, n, c] => (u, f, n, Some(Path::new(c))),
        _ => return Err("usage: send_uri URI FILE CHANNELS [CREDS_DIR]".into()),
    };
    let ep = Endpoint::parse(uri)?;
    let n: u32 = channels.parse()?;
    let mut opts = TransportOpts::new(Duration::from_secs(30));
    opts.tls = tls_from_args(
        creds,
        transit_channel::tls::Endpoint::Client,
        None,
        &[],
        false,
    )?;

    // The main channel and n page channels, connected and layered in
    // parallel, each under its own deadline; on failure, the most telling
    // error of all.
    let mut chans = connect::open_session(&ep, &opts, n).map_err(|e| e.error)?;
    let main = chans.remove(0);

    let image = SourceImage::map_file(Path::new(file))?;
    let mut tx = Sender::new(SendConfig::default(), Payload::Image(image), main, chans)?;
    tx.send_all()?;
    let stats = tx.finish()?;
    println!(
        "sent {} bytes of data ({} zero pages) over {n} channels in {:.3} s, verified",
        stats.bytes, stats.zero_pages, stats.seconds
    );
    Ok(())
}

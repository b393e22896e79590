//! Receive one session at any endpoint URI into a file: `transit-endpoint`
//! listens and hands over each connection layered (TLS, websocket) and
//! classified by `transit-multifd`'s decider; the receiver chooses its
//! destination from the session header.
//!
//! ```text
//! cargo run -p transit-endpoint --example recv_uri -- URI OUT [CREDS_DIR]
//! cargo run -p transit-endpoint --example recv_uri -- ws://127.0.0.1:0/m out.img
//! ```
//!
//! Port 0 picks a free port; the address is printed as `listening on
//! ...`. A listener's connections are admitted on a main loop (TLS and the
//! websocket upgrade without a thread each, every connection under its own
//! deadline); the session runs on a thread. OUT appears only once the
//! image is verified; a stream is refused (this example takes images).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use transit_channel::{ControlFlow, MainContext};
use transit_endpoint::accept::{self, AcceptConfig, Acceptor, Incoming};
use transit_endpoint::connect::tls_from_args;
use transit_endpoint::{Endpoint, TransportOpts};
use transit_multifd::incoming::{self, Peeked};
use transit_multifd::wire::Layout;
use transit_multifd::{Destination, Error, Receiver, RecvConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (uri, out, creds) = match &args[..] {
        [u, o] => (u, o, None),
        [u, o, c] => (u, o, Some(Path::new(c))),
        _ => return Err("usage: recv_uri URI OUT [CREDS_DIR]".into()),
    };
    let ep = Endpoint::parse(uri)?;
    let mut opts = TransportOpts::new(Duration::from_secs(30));
    opts.tls = tls_from_args(
        creds,
        transit_channel::tls::Endpoint::Server,
        None,
        &[],
        false,
    )?;
    let source = accept::listen(&ep)?;
    for u in source.local_uris(&ep) {
        println!("listening on {u}");
    }
    std::io::stdout().flush()?;

    let ctx = MainContext::new()?;
    let (tx, conns) = mpsc::channel::<Incoming<Peeked>>();
    let tx = Mutex::new(tx);
    let acceptor = Acceptor::start(
        &ctx,
        source,
        AcceptConfig::new(ep, opts),
        incoming::head,
        move |inc| {
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(inc);
        },
    )?;

    let out = PathBuf::from(out);
    let session = std::thread::spawn(move || -> Result<u64, String> {
        let dest = Destination::Decide(Box::new(move |h| match h.layout {
            Layout::Image { .. } => Ok(Destination::File {
                path: out,
                mode: None,
            }),
            Layout::Stream => Err(Error::Config("this receiver takes images".into())),
        }));
        let mut rx = Receiver::new(RecvConfig::default(), dest);
        // Until the main channel and all the page channels it announced
        // are in, in whatever order they come. (`transit_multifd::serve`
        // has a receiver's whole policy: strangers told why, time limits,
        // a second sender told the receiver is busy, lost channels
        // rejoining; `transit recv` uses it.)
        while !rx.is_ready() {
            match conns.recv().map_err(|e| e.to_string())? {
                Incoming::Conn(a) => {
                    if let Err(e) = rx.accept_channel(a.ch) {
                        eprintln!("rejected a connection from {}: {e}", a.peer);
                    }
                }
                Incoming::Fatal(why) => return Err(why),
            }
        }
        let outcome = rx.run().map_err(|e| e.to_string())?;
        Ok(outcome.stats.bytes)
    });
    // The main loop admits connections until the session is done.
    ctx.timeout_add(Duration::from_millis(20), || ControlFlow::Continue);
    while !session.is_finished() {
        ctx.iteration(true);
    }
    acceptor.close();
    let bytes = session.join().map_err(|_| "the session panicked")??;
    println!("received {bytes} bytes of data, verified");
    Ok(())
}

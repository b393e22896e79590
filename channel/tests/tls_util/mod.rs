//! Helpers shared by the `tls_*` integration tests: generated credentials
//! in QEMU's directory layout under unique temp dirs, two-sided runs with
//! bounded waits, test data.

#![allow(dead_code)]

use std::path::PathBuf;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use transit_channel::tls::generate::{Identity, IssueParams, TestPki};
use transit_channel::tls::{Endpoint, TlsCreds};
use transit_channel::{Channel, SocketChannel};

/// How long any one side of a test may take.
pub const BOUND: Duration = Duration::from_secs(60);

#[path = "../common/temp_dir.rs"]
mod temp_dir;
#[allow(unused_imports)]
pub use temp_dir::TempDir;

/// A CA with a server (localhost, 127.0.0.1, ::1) and a client
/// (`CN=client,O=Transit`) identity, written as a client dir and a server
/// dir in QEMU's layout.
pub struct Setup {
    pub pki: TestPki,
    pub server_id: Identity,
    pub client_id: Identity,
    pub root: TempDir,
}

impl Setup {
    pub fn new(tag: &str) -> Setup {
        let pki = TestPki::new().expect("CA");
        let server_id = pki
            .issue(&IssueParams::server(&["localhost", "127.0.0.1", "::1"]))
            .expect("server cert");
        let mut client = IssueParams::client("client");
        client.subject_extra = vec![("O".to_owned(), "Transit".to_owned())];
        client.alt_names = vec!["client.example".to_owned()];
        let client_id = pki.issue(&client).expect("client cert");
        let root = TempDir::new(tag);
        let s = Setup {
            pki,
            server_id,
            client_id,
            root,
        };
        s.write("server", &s.pki, Endpoint::Server, Some(&s.server_id), None);
        s.write("client", &s.pki, Endpoint::Client, Some(&s.client_id), None);
        s
    }

    /// Write a credentials dir `name` under the root.
    pub fn write(
        &self,
        name: &str,
        pki: &TestPki,
        endpoint: Endpoint,
        id: Option<&Identity>,
        revoked: Option<&[&Identity]>,
    ) -> PathBuf {
        let dir = self.root.join(name);
        pki.write_dir(&dir, endpoint, id, revoked)
            .expect("write creds dir");
        dir
    }

    pub fn server_creds(&self) -> Arc<TlsCreds> {
        TlsCreds::from_dir(self.root.join("server"), Endpoint::Server).expect("server creds")
    }

    pub fn client_creds(&self) -> Arc<TlsCreds> {
        TlsCreds::from_dir(self.root.join("client"), Endpoint::Client).expect("client creds")
    }
}

/// Run `f` on a thread; panic if it does not finish within [`BOUND`].
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(BOUND) {
        Ok(v) => v,
        Err(e) => panic!("{what} did not finish within {BOUND:?}: {e}"),
    }
}

/// Run `client` and `server` on two threads over a connected UNIX socket
/// pair (client gets the first end); both bounded.
pub fn run_pair<C, S, RC, RS>(client: C, server: S) -> (RC, RS)
where
    C: FnOnce(Box<dyn Channel>) -> RC + Send + 'static,
    S: FnOnce(Box<dyn Channel>) -> RS + Send + 'static,
    RC: Send + 'static,
    RS: Send + 'static,
{
    let (a, b) = SocketChannel::pair().expect("socketpair");
    run_on(Box::new(a), Box::new(b), client, server)
}

/// Run `client` on `a` and `server` on `b`, each on its own bounded thread.
pub fn run_on<C, S, RC, RS>(
    a: Box<dyn Channel>,
    b: Box<dyn Channel>,
    client: C,
    server: S,
) -> (RC, RS)
where
    C: FnOnce(Box<dyn Channel>) -> RC + Send + 'static,
    S: FnOnce(Box<dyn Channel>) -> RS + Send + 'static,
    RC: Send + 'static,
    RS: Send + 'static,
{
    let (stx, srx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tls-server".to_owned())
        .spawn(move || {
            let _ = stx.send(server(b));
        })
        .expect("spawn server");
    let c = bounded("tls-client", move || client(a));
    let s = srx
        .recv_timeout(BOUND)
        .unwrap_or_else(|e| panic!("server side did not finish within {BOUND:?}: {e}"));
    (c, s)
}

/// `len` bytes of a pattern that depends on `seed` (no long repeats).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A TCP loopback pair: (connected client, accepted server).
pub fn tcp_pair() -> (SocketChannel, SocketChannel) {
    let mut listener =
        SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse().expect("addr"), 1).expect("listen");
    let addr = listener.local_address().expect("bound address");
    let client = SocketChannel::connect_sync(&addr).expect("connect");
    let server = listener.accept().expect("accept");
    (client, server)
}

//! Interop with OpenSSL's command line tool: a transit client against
//! `openssl s_server -Verify` (TLS 1.3 and TLS 1.2) and `openssl s_client`
//! with a client certificate against a transit server, byte-identical data
//! both ways, over UNIX sockets in a temp dir. The `openssl` binary must be
//! installed: without it these tests fail (they do not skip).

mod tls_util;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::{IoSlice, IoSliceMut};

use tls_util::{bounded, pattern, Setup};
use transit_channel::io::{read_all, wait_blocking, write_all};
use transit_channel::tls::TlsChannel;
use transit_channel::{Channel, Condition, ReadFlags, SocketChannel, WriteFlags};

const LEN: usize = 1 << 20;

/// A child process that is killed and reaped when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Wait for exit within the bound; panic (killing it) otherwise.
    fn wait_bounded(&mut self, what: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + tls_util::BOUND;
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => panic!("{what} did not exit within {:?}", tls_util::BOUND),
                Err(e) => panic!("wait for {what}: {e}"),
            }
        }
    }
}

/// A short unique socket path in the temp dir, removed on drop: OpenSSL
/// 3.0 refuses `-unix` paths longer than about 32 bytes.
struct ShortPath(std::path::PathBuf);

impl ShortPath {
    fn new() -> ShortPath {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ShortPath(std::env::temp_dir().join(format!("tso{}-{n}", std::process::id())))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ShortPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Run `openssl args`; stdin from a file, or a pipe when `stdin` is `None`.
fn openssl(args: &[&str], stdin: Option<&Path>, stdout: &Path, stderr: &Path) -> ChildGuard {
    let stdin = match stdin {
        Some(p) => Stdio::from(File::open(p).expect("stdin file")),
        None => Stdio::piped(),
    };
    let child = Command::new("openssl")
        .args(args)
        .stdin(stdin)
        .stdout(File::create(stdout).expect("stdout file"))
        .stderr(File::create(stderr).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` (install OpenSSL's command line tool): {e}")
        });
    ChildGuard(child)
}

/// Wait until `child` has created `p`; fail early if it exits first.
fn wait_for_path(child: &mut ChildGuard, p: &Path, stderr: &Path) {
    let deadline = Instant::now() + tls_util::BOUND;
    while !p.exists() {
        if let Ok(Some(status)) = child.0.try_wait() {
            let err = std::fs::read_to_string(stderr).unwrap_or_default();
            panic!(
                "openssl exited ({status}) before creating {}: {err}",
                p.display()
            );
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Send `up` and receive `down_len` bytes at the same time on one
/// non-blocking channel (a peer that writes while we write would otherwise
/// deadlock with us).
fn duplex(tls: &mut TlsChannel, up: &[u8], down_len: usize) -> Vec<u8> {
    tls.set_blocking(false).expect("nonblocking");
    let mut got = vec![0u8; down_len];
    let (mut sent, mut recvd) = (0, 0);
    while sent < up.len() || recvd < down_len {
        let mut progress = false;
        if sent < up.len() {
            match tls.writev(&[IoSlice::new(&up[sent..])], &[], WriteFlags::empty()) {
                Ok(n) => {
                    sent += n;
                    progress = true;
                }
                Err(e) if e.is_would_block() => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        if recvd < down_len {
            match tls.readv(
                &mut [IoSliceMut::new(&mut got[recvd..])],
                None,
                ReadFlags::empty(),
            ) {
                Ok(0) => panic!("early end of file after {recvd} bytes"),
                Ok(n) => {
                    recvd += n;
                    progress = true;
                }
                Err(e) if e.is_would_block() => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        if !progress {
            let mut cond = Condition::empty();
            if sent < up.len() {
                cond |= Condition::OUT;
            }
            if recvd < down_len {
                cond |= Condition::IN;
            }
            wait_blocking(&tls.watch_source(), cond, Some(tls_util::BOUND)).expect("wait");
        }
    }
    got
}

fn transit_client_to_s_server(extra: &[&str]) {
    let setup = Setup::new("openssl-server");
    let sdir = setup.root.join("server");
    let sock = ShortPath::new();
    let sock = sock.path();
    let (up, down) = (pattern(LEN, 21), pattern(LEN, 22));
    let down_expected = down.clone();
    let up_out = setup.root.join("up.out");
    let err = setup.root.join("s_server.err");
    let path = |f: &str| sdir.join(f).display().to_string();
    let sock_s = sock.display().to_string();
    let (cert, key, ca) = (
        path("server-cert.pem"),
        path("server-key.pem"),
        path("ca-cert.pem"),
    );
    let mut args = vec![
        "s_server",
        "-quiet",
        "-naccept",
        "1",
        "-unix",
        &sock_s,
        "-cert",
        &cert,
        "-key",
        &key,
        "-CAfile",
        &ca,
        "-Verify",
        "1",
        "-verify_return_error",
    ];
    args.extend_from_slice(extra);
    // s_server ends the session once its stdin ends, maybe before it has
    // read all we send: feed it through a pipe held open until we are done.
    let mut server = openssl(&args, None, &up_out, &err);
    let mut stdin = server.0.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&down).expect("feed s_server");
        stdin
    });
    wait_for_path(&mut server, sock, &err);

    let cc = setup.client_creds();
    let addr = format!("unix:{}", sock.display());
    let up2 = up.clone();
    let got = bounded("transit client", move || {
        let ch = SocketChannel::connect_sync(&addr.parse().expect("addr")).expect("connect");
        let mut tls = TlsChannel::client(Box::new(ch), cc, "localhost").expect("client");
        tls.handshake_blocking().expect("handshake with s_server");
        // s_server sends its stdin while we send: move both at once.
        let got = duplex(&mut tls, &up2, LEN);
        tls.set_blocking(true).expect("blocking");
        tls.bye().expect("bye");
        // Stay open until s_server has taken everything and closed.
        let mut rest = [0u8; 64];
        if let Ok(n) = tls.readv(
            &mut [IoSliceMut::new(&mut rest)],
            None,
            ReadFlags::RELAXED_EOF,
        ) {
            assert_eq!(n, 0, "data after the expected end");
        }
        tls.close().expect("close");
        got
    });
    drop(feeder.join().expect("feeder thread"));
    let status = server.wait_bounded("openssl s_server");
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(got == down_expected, "s_server -> transit data differs");
    let received = std::fs::read(&up_out).expect("s_server output");
    assert_eq!(received.len(), up.len(), "s_server stderr: {stderr}");
    assert!(received == up, "transit -> s_server data differs");
    assert!(status.success(), "s_server failed: {status}: {stderr}");
}

#[test]
fn transit_client_talks_to_openssl_s_server_tls13() {
    transit_client_to_s_server(&[]);
}

#[test]
fn transit_client_talks_to_openssl_s_server_tls12() {
    transit_client_to_s_server(&["-tls1_2"]);
}

#[test]
fn openssl_s_client_with_certificate_talks_to_transit_server() {
    let setup = Setup::new("openssl-client");
    let cdir = setup.root.join("client");
    let sock = ShortPath::new();
    let sock = sock.path();
    let (up, down) = (pattern(LEN, 31), pattern(LEN, 32));
    let up_file = setup.root.join("up.bin");
    std::fs::write(&up_file, &up).expect("write up");
    let down_out = setup.root.join("down.out");
    let err = setup.root.join("s_client.err");

    let mut listener = SocketChannel::listen_sync(
        &format!("unix:{}", sock.display()).parse().expect("addr"),
        1,
    )
    .expect("listen");
    let sc = setup.server_creds();
    let down2 = down.clone();
    let server = std::thread::spawn(move || {
        let ch = listener.accept().expect("accept");
        let mut tls = TlsChannel::server(Box::new(ch), sc, None).expect("server");
        tls.handshake_blocking().expect("handshake with s_client");
        let identity = tls.peer_identity();
        let mut got = vec![0u8; LEN];
        read_all(&mut tls, &mut got).expect("read");
        write_all(&mut tls, &down2).expect("write");
        tls.bye().expect("bye");
        (got, identity, tls)
    });

    let path = |f: &str| cdir.join(f).display().to_string();
    let sock_s = sock.display().to_string();
    let (cert, key, ca) = (
        path("client-cert.pem"),
        path("client-key.pem"),
        path("ca-cert.pem"),
    );
    let mut client = openssl(
        &[
            "s_client",
            "-quiet",
            "-unix",
            &sock_s,
            "-cert",
            &cert,
            "-key",
            &key,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ],
        Some(&up_file),
        &down_out,
        &err,
    );
    let (got, identity, tls) = bounded("transit server", move || {
        server.join().expect("server thread")
    });
    let status = client.wait_bounded("openssl s_client");
    drop(tls);
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(got == up, "s_client -> transit data differs ({stderr})");
    assert_eq!(identity.as_deref(), Some("CN=client,O=Transit"));
    let received = std::fs::read(&down_out).expect("s_client output");
    assert_eq!(received.len(), down.len(), "s_client stderr: {stderr}");
    assert!(received == down, "transit -> s_client data differs");
    assert!(status.success(), "s_client failed: {status}: {stderr}");
}

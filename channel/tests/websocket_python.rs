//! Interop with Python's `websockets` (Debian package python3-websockets):
//! a Python server receiving from our client, and a Python client sending
//! to our server, byte-identical. The scripts are in `tests/ws_py/`.
//!
//! The interpreter is `$TRANSIT_PYTHON` if set, else the first of `python3`
//! and `/usr/bin/python3` (where Debian installs the package) that can
//! import `websockets`. Without one the tests FAIL: the tool is part of the
//! test environment (`.ci/run` installs it).

mod websocket_util;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use transit_channel::websocket::{WebSocketChannel, WebSocketConfig, WebSocketUrl};
use transit_channel::{io, Channel, SocketAddress, SocketChannel};
use websocket_util::*;

fn python() -> String {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("TRANSIT_PYTHON") {
        candidates.push(p);
    }
    candidates.push("python3".into());
    candidates.push("/usr/bin/python3".into());
    for c in &candidates {
        let ok = Command::new(c)
            .args(["-c", "import websockets"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return c.clone();
        }
    }
    panic!(
        "no Python with the websockets module (tried {candidates:?}); \
         install python3-websockets or set TRANSIT_PYTHON"
    );
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ws_py")
        .join(name)
}

fn temp_file(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "transit-ws-py-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Wait for `child` at most [`BOUND`], killing it on timeout.
fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn python_server_receives_our_client_byte_identical() {
    let out = temp_file("server-out");
    let mut child = Command::new(python())
        .arg(script("server.py"))
        .arg("/transit")
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("port line");
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad port line {line:?}"));

    let url = WebSocketUrl::parse(&format!("ws://127.0.0.1:{port}/transit")).expect("url");
    let sock =
        SocketChannel::connect_sync(&SocketAddress::inet("127.0.0.1", url.port)).expect("connect");
    bound(&sock);
    let mut ws = WebSocketChannel::client(
        Box::new(sock),
        &url.host_header(),
        &url.path,
        WebSocketConfig::default(),
    )
    .expect("client")
    .handshake_blocking()
    .expect("handshake with python");
    assert_eq!(ws.protocol(), Some("binary"));
    let data = pattern(8 << 20 | 12345, 7);
    for c in data.chunks(3 << 20) {
        io::write_all(&mut ws, c).expect("write");
    }
    ws.bye().expect("bye");
    let mut end = [0u8; 1];
    assert!(!io::read_all_eof(&mut ws, &mut end).expect("close answer"));
    assert_eq!(ws.peer_close().map(|p| p.code), Some(1000));
    ws.close().expect("close");

    let status = wait_bounded(&mut child);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("result line");
    let got = std::fs::read(&out).expect("python output");
    let _ = std::fs::remove_file(&out);
    assert!(status.success(), "python server failed: {rest}");
    assert_eq!(rest.trim(), format!("ok {} 1000 binary", data.len()));
    assert!(got == data, "python received different bytes");
}

#[test]
fn python_client_sends_to_our_server_byte_identical() {
    let input = temp_file("client-in");
    let data = pattern(8 << 20 | 4321, 8);
    std::fs::write(&input, &data).expect("write input");

    let addr = SocketAddress::inet("127.0.0.1", 0);
    let mut listener = SocketChannel::listen_sync(&addr, 4).expect("listen");
    let port = listener
        .local_address()
        .and_then(|a| a.port())
        .expect("port");
    let mut child = Command::new(python())
        .arg(script("client.py"))
        .arg(format!("ws://127.0.0.1:{port}/transit"))
        .arg(&input)
        .arg((1 << 20).to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python client");
    let sock = listener.accept().expect("accept");
    bound(&sock);
    let mut ws = WebSocketChannel::server(Box::new(sock), "/transit", WebSocketConfig::default())
        .handshake_blocking()
        .expect("handshake with python");
    assert_eq!(ws.protocol(), Some("binary"));
    let mut got = vec![0u8; data.len()];
    io::read_all(&mut ws, &mut got).expect("read");
    let mut end = [0u8; 1];
    assert!(!io::read_all_eof(&mut ws, &mut end).expect("eof at close"));
    let pc = ws.peer_close().expect("peer close").clone();
    assert_eq!((pc.code, pc.reason.as_str()), (1000, "done"));
    ws.close().expect("close");

    let status = wait_bounded(&mut child);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("output");
    let _ = std::fs::remove_file(&input);
    assert!(status.success(), "python client failed: {out}");
    assert_eq!(out.trim(), format!("ok {} binary", data.len()));
    assert!(got == data, "we received different bytes");
}

//! Interop of the CLI with other implementations, byte-identical both
//! ways: `openssl s_server` / `openssl s_client` with `--raw --tls-creds`
//! (client certificates on), and Python's `websockets` (Debian's
//! python3-websockets) with `ws://... --raw`. The tools must be installed
//! (`.ci/run` installs them): a missing tool fails the test.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use transit_tests::pki::{self, Fault};
use transit_tests::{random_bytes, require_tool, run, start_recv, transit, Running, Scratch};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A port that was free a moment ago (for tools that cannot bind port 0
/// and report it).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn transit_send_raw_tls_reaches_openssl_s_server() {
    let openssl = require_tool("openssl");
    let dir = Scratch::new("ossl-srv");
    let d = pki::write(dir.path(), Fault::None);
    let data = random_bytes((1 << 20) + 99, 51);
    let src = dir.join("src");
    std::fs::write(&src, &data).unwrap();
    let port = free_port();
    let mut c = Command::new(openssl);
    c.args([
        "s_server",
        "-quiet",
        "-naccept",
        "1",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-cert",
        s(&d.server.join("server-cert.pem")),
        "-key",
        s(&d.server.join("server-key.pem")),
        "-CAfile",
        s(&d.server.join("ca-cert.pem")),
        "-Verify",
        "1",
        "-verify_return_error",
    ]);
    // Keep its stdin open (an empty pipe): it must not end the connection
    // before the data arrived.
    c.stdin(Stdio::piped());
    let mut server = Running::spawn(c);
    let _stdin_keep = server.child.stdin.take();
    // Retry while s_server is not listening yet (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let send = run(transit(&[
            "send",
            &format!("tcp:127.0.0.1:{port}"),
            "--raw",
            "--input",
            s(&src),
            "--tls-creds",
            s(&d.client),
        ]));
        if send.code() == Some(0) {
            break;
        }
        assert!(
            send.stderr.contains("Connection refused") && std::time::Instant::now() < deadline,
            "send: {}",
            send.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = server.wait_within(Duration::from_secs(30));
    assert!(
        got.stdout == data,
        "s_server got {} bytes of {}; stderr: {}",
        got.stdout.len(),
        data.len(),
        got.stderr
    );
}

#[test]
fn openssl_s_client_reaches_transit_recv_raw_tls() {
    let openssl = require_tool("openssl");
    let dir = Scratch::new("ossl-cli");
    let d = pki::write(dir.path(), Fault::None);
    let data = random_bytes((1 << 20) + 7, 52);
    let out = dir.join("out");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--raw", "--tls-creds", s(&d.server), "--output", s(&out)],
    );
    let mut c = Command::new(openssl);
    c.args([
        "s_client",
        "-connect",
        addr.trim_start_matches("tcp:"),
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
        "-nocommands",
        "-cert",
        s(&d.client.join("client-cert.pem")),
        "-key",
        s(&d.client.join("client-key.pem")),
        "-CAfile",
        s(&d.client.join("ca-cert.pem")),
    ]);
    c.stdin(Stdio::piped());
    let mut client = Running::spawn(c);
    {
        let mut stdin = client.child.stdin.take().expect("stdin");
        stdin.write_all(&data).unwrap();
    } // EOF: s_client sends close_notify and closes
    let cl = client.wait_within(Duration::from_secs(30));
    assert_eq!(cl.code(), Some(0), "s_client: {}", cl.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

/// A Python interpreter that has the `websockets` module (Debian's
/// python3-websockets lives in the system interpreter).
fn python_with_websockets() -> String {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import websockets"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p.to_owned();
        }
    }
    panic!("no python3 with the websockets module (install python3-websockets; .ci/run does)");
}

const PY_SERVER: &str = r#"
import asyncio, sys, websockets
async def main():
    out = open(sys.argv[1], "wb")
    done = asyncio.get_running_loop().create_future()
    async def handler(ws, path=None):
        async for msg in ws:
            out.write(msg)
        out.close()
        if not done.done():
            done.set_result(True)
    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=["binary"], max_size=None) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.wait_for(done, 60)
asyncio.run(main())
"#;

const PY_CLIENT: &str = r#"
import asyncio, sys, websockets
async def main():
    data = open(sys.argv[2], "rb").read()
    async with websockets.connect(sys.argv[1], subprotocols=["binary"], max_size=None) as ws:
        for i in range(0, len(data), 100000):
            await ws.send(data[i:i + 100000])
asyncio.run(main())
"#;

#[test]
fn transit_send_ws_raw_reaches_a_python_websockets_server() {
    let py = python_with_websockets();
    let dir = Scratch::new("py-srv");
    let data = random_bytes((2 << 20) + 3, 53);
    let src = dir.join("src");
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out");
    let mut c = Command::new(py);
    c.args(["-c", PY_SERVER, s(&out)]);
    let server = Running::spawn(c);
    let port = server
        .wait_stdout(|l| l.parse::<u16>().is_ok(), Duration::from_secs(30))
        .expect("the python server's port");
    let send = run(transit(&[
        "send",
        &format!("ws://127.0.0.1:{port}/anything"),
        "--raw",
        "--input",
        s(&src),
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let srv = server.wait_within(Duration::from_secs(30));
    assert_eq!(srv.code(), Some(0), "python: {}", srv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn a_python_websockets_client_reaches_transit_recv_ws_raw() {
    let py = python_with_websockets();
    let dir = Scratch::new("py-cli");
    let data = random_bytes((2 << 20) + 11, 54);
    let src = dir.join("src");
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out");
    let (recv, url) = start_recv("ws://127.0.0.1:0/in", &["--raw", "--output", s(&out)]);
    let mut c = Command::new(py);
    c.args(["-c", PY_CLIENT, &url, s(&src)]);
    let cl = run(c);
    assert_eq!(cl.code(), Some(0), "python: {}", cl.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

//! Strangers at a receiver's door (issue 14, items 8, 9 and 11): slow,
//! broken, hostile or merely idle connections neither delay nor end a
//! receiver, nor cost it a thread each; its real sender still gets
//! through.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use transit_tests::pki::{self, Fault};
use transit_tests::{error_lines, require_tool, run, start_recv, transit, Running, Scratch};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn host_port(addr: &str) -> String {
    let a = addr.trim_start_matches("tcp:");
    let a = a.trim_start_matches("ws://");
    a.split('/').next().unwrap_or(a).to_owned()
}

/// Send a real 1 MiB image over 2 channels; returns (rc, stderr, seconds).
fn real_sender(addr: &str, extra: &[&str]) -> (Option<i32>, String, f64) {
    let mut args = vec![
        "send",
        addr,
        "--ram",
        "1M",
        "--channels",
        "2",
        "--timeout",
        "20",
    ];
    args.extend_from_slice(extra);
    let t = Instant::now();
    let r = run(transit(&args));
    (r.code(), r.stderr, t.elapsed().as_secs_f64())
}

fn rejected_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("warning: rejected a connection from "))
        .collect()
}

/// Close with a reset (SO_LINGER 0).
fn reset(sock: TcpStream) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(sock);
}

/// Item 8: three connections that sent one byte each and then nothing
/// used to hold the receiver's classification for the whole handshake
/// timeout each, one after the other; the real sender timed out.
#[test]
fn one_byte_strangers_do_not_delay_a_real_sender() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--json", "--timeout", "10"]);
    let hp = host_port(&addr);
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&hp).unwrap();
        c.write_all(b"T").unwrap();
        slow.push(c);
    }
    // The receiver has seen them before the sender comes.
    std::thread::sleep(Duration::from_millis(300));
    let (rc, err, secs) = real_sender(&addr, &[]);
    assert_eq!(rc, Some(0), "send: {err}");
    assert!(secs < 8.0, "the sender took {secs:.1} s: {err}");
    recv.finish().assert_verified("recv", 2);
    drop(slow);
}

/// Item 8, with TLS: strangers that stall in the middle of their TLS
/// handshake or after it do not delay the real sender.
#[test]
fn slow_tls_strangers_do_not_delay_a_real_sender() {
    let dir = Scratch::new("strangers-tls-slow");
    let d = pki::write(dir.path(), Fault::None);
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--json", "--timeout", "10", "--tls-creds", s(&d.server)],
    );
    let hp = host_port(&addr);
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&hp).unwrap();
        // The first byte of a TLS record, then nothing.
        c.write_all(&[0x16]).unwrap();
        slow.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rc, err, secs) = real_sender(&addr, &["--tls-creds", s(&d.client)]);
    assert_eq!(rc, Some(0), "send: {err}");
    assert!(secs < 8.0, "the sender took {secs:.1} s: {err}");
    recv.finish().assert_verified("recv", 2);
    drop(slow);
}

/// Item 9: a health check, a reset, an HTTP request and `openssl
/// s_client` without a certificate each used to end a TLS receiver before
/// its sender arrived. Now each is logged (peer and reason) and dropped.
#[test]
fn stray_connections_do_not_end_a_tls_receiver() {
    let openssl = require_tool("openssl");
    let dir = Scratch::new("strangers-tls");
    let d = pki::write(dir.path(), Fault::None);
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--json", "--timeout", "20", "--tls-creds", s(&d.server)],
    );
    let hp = host_port(&addr);
    // A health check: connect, close.
    drop(TcpStream::connect(&hp).unwrap());
    // A reset.
    reset(TcpStream::connect(&hp).unwrap());
    // An HTTP request: the receiver answers (a TLS alert) and closes.
    let mut http = TcpStream::connect(&hp).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = http.read_to_end(&mut rest);
    // openssl s_client without a client certificate.
    let mut cmd = std::process::Command::new(openssl);
    cmd.args(["s_client", "-connect", &hp, "-CAfile"])
        .arg(d.client.join("ca-cert.pem"))
        .stdin(Stdio::null());
    // It reads our alert and gives up (bounded).
    let ossl = Running::spawn(cmd).wait_within(Duration::from_secs(20));
    assert_ne!(ossl.code(), None, "openssl s_client: {}", ossl.stderr);
    let (rc, err, _) = real_sender(&addr, &["--tls-creds", s(&d.client)]);
    assert_eq!(rc, Some(0), "send: {err}");
    let recv = recv.finish();
    recv.assert_verified("recv", 2);
    assert!(error_lines(&recv.stderr).is_empty(), "{}", recv.stderr);
    // One line per stranger (a reset may come before the receiver took
    // the connection: then there is nothing to say).
    let lines = rejected_lines(&recv.stderr);
    assert!(lines.len() >= 3, "{}", recv.stderr);
    assert!(
        lines.iter().any(|l| l.contains("presented no certificate")),
        "{lines:?}"
    );
}

/// Item 9 for websockets: a wrong path (the peer still reads the HTTP
/// refusal) and an empty connection used to end the receiver.
#[test]
fn stray_connections_do_not_end_a_websocket_receiver() {
    let (recv, url) = start_recv("ws://127.0.0.1:0/right", &["--json", "--timeout", "20"]);
    drop(TcpStream::connect(host_port(&url)).unwrap());
    let wrong = url.replace("/right", "/wrong");
    let (rc, err, _) = real_sender(&wrong, &[]);
    assert_eq!(rc, Some(1), "send: {err}");
    assert!(err.contains("404"), "{err}");
    let seen = recv.wait_stderr(
        |l| l.contains("rejected a connection") && l.contains("/wrong"),
        Duration::from_secs(20),
    );
    assert!(seen.is_some(), "no rejection of the wrong path");
    let (rc, err, _) = real_sender(&url, &[]);
    assert_eq!(rc, Some(0), "send: {err}");
    let recv = recv.finish();
    recv.assert_verified("recv", 2);
    assert!(error_lines(&recv.stderr).is_empty(), "{}", recv.stderr);
}

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

/// Item 11: 300 idle connections to a TLS receiver used to hold two
/// threads and one fd each for the whole handshake timeout. Now at most
/// 64 are pending (the oldest go, logged), on no thread of their own, and
/// the real sender still gets through.
#[test]
fn idle_tls_connections_cost_no_threads_and_are_bounded() {
    let dir = Scratch::new("strangers-idle");
    let d = pki::write(dir.path(), Fault::None);
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--json", "--timeout", "20", "--tls-creds", s(&d.server)],
    );
    let hp = host_port(&addr);
    let task = format!("/proc/{}/task", recv.pid());
    let fd = format!("/proc/{}/fd", recv.pid());
    let (threads0, fds0) = (count_dir(&task), count_dir(&fd));
    let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(&hp).unwrap()).collect();
    // Until the receiver has taken them all (bounded).
    let seen = recv.wait_stderr(
        |l| l.contains("dropped a connection") && l.contains("oldest goes"),
        Duration::from_secs(10),
    );
    assert!(seen.is_some(), "no pending connection was pushed out");
    std::thread::sleep(Duration::from_millis(500));
    let (threads, fds) = (count_dir(&task), count_dir(&fd));
    assert!(
        threads <= threads0 + 4,
        "threads: {threads0} before, {threads} with 300 idle connections"
    );
    assert!(
        fds <= fds0 + 64 * 2 + 8,
        "fds: {fds0} before, {fds} with 300 idle connections"
    );
    let (rc, err, _) = real_sender(&addr, &["--tls-creds", s(&d.client)]);
    assert_eq!(rc, Some(0), "send: {err}");
    recv.finish().assert_verified("recv", 2);
    drop(idle);
}

/// Item 9 with `--raw`: the first connection whose TLS handshake succeeds
/// is the stream; a health check and an HTTP request before it are logged
/// and do not end the receiver.
#[test]
fn stray_connections_do_not_end_a_raw_tls_receiver() {
    let dir = Scratch::new("strangers-raw-tls");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.bin");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &[
            "--raw",
            "--timeout",
            "20",
            "--tls-creds",
            s(&d.server),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let hp = host_port(&addr);
    drop(TcpStream::connect(&hp).unwrap());
    let mut http = TcpStream::connect(&hp).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = http.read_to_end(&mut rest);
    let send = run(transit(&[
        "send",
        &addr,
        "--raw",
        "--ram",
        "1M",
        "--tls-creds",
        s(&d.client),
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 1 << 20);
    assert!(!rejected_lines(&recv.stderr).is_empty(), "{}", recv.stderr);
}

//! `--raw`: plain bytes on one connection, byte-identical with socat on
//! the other end (socat must be installed; `.ci/run` installs it).

use std::time::{Duration, Instant};

use transit_tests::{random_bytes, require_tool, run, start_recv, transit, Running, Scratch};

#[test]
fn socat_sends_to_transit_recv_raw() {
    let socat = require_tool("socat");
    let dir = Scratch::new("raw-in");
    let src = dir.join("src.bin");
    let data = random_bytes((3 << 20) + 777, 21);
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out.bin");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--raw", "--output", out.to_str().unwrap()],
    );
    let target = addr.trim_start_matches("tcp:");
    let mut c = std::process::Command::new(socat);
    c.args([
        "-u",
        &format!("FILE:{}", src.display()),
        &format!("TCP:{target}"),
    ]);
    let s = run(c);
    assert_eq!(s.code(), Some(0), "socat: {}", s.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn transit_send_raw_reaches_socat() {
    let socat = require_tool("socat");
    let dir = Scratch::new("raw-out");
    let sock = dir.join("s.sock");
    let out = dir.join("out.bin");
    let mut c = std::process::Command::new(socat);
    c.args([
        "-u",
        &format!("UNIX-LISTEN:{}", sock.display()),
        &format!("CREATE:{}", out.display()),
    ]);
    let listener = Running::spawn(c);
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "socat did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let send = run(transit(&[
        "send",
        &format!("unix:{}", sock.display()),
        "--raw",
        "--ram",
        "2M",
        "--zero-ratio",
        "0.5",
        "--seed",
        "4",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let l = listener.finish();
    assert_eq!(l.code(), Some(0), "socat: {}", l.stderr);
    assert!(std::fs::read(&out).unwrap() == transit_tests::image_bytes(2 << 20, 0.5, 4));
}

#[test]
fn raw_send_and_recv_talk_to_each_other() {
    let data = random_bytes(1_234_567, 8);
    let dir = Scratch::new("raw-raw");
    let src = dir.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--raw", "--output", "-", "--json"]);
    let send = run(transit(&[
        "send",
        &addr,
        "--raw",
        "--input",
        src.to_str().unwrap(),
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0));
    assert!(recv.stdout == data);
    let line = recv
        .stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("JSON on stderr");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["mode"], "raw");
    assert_eq!(v["bytes"], data.len());
}

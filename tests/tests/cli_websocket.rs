//! `ws://` and `wss://` on the command line: framed multifd sessions (each
//! page channel its own websocket connection) and `--raw`, both ways.

use transit_tests::pki::{self, Fault};
use transit_tests::{error_lines, image_bytes, random_bytes, run, start_recv, transit, Scratch};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn ws_framed_four_channels_round_trip() {
    let dir = Scratch::new("ws-4");
    let out = dir.join("out.img");
    let (recv, url) = start_recv("ws://127.0.0.1:0/migrate", &["--output", s(&out), "--json"]);
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/migrate"),
        "{url}"
    );
    let send = run(transit(&[
        "send",
        &url,
        "--ram",
        "8M",
        "--zero-ratio",
        "0.4",
        "--seed",
        "31",
        "--channels",
        "4",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    recv.finish().assert_verified("recv", 4);
    assert!(std::fs::read(&out).unwrap() == image_bytes(8 << 20, 0.4, 31));
}

#[test]
fn wss_framed_four_channels_round_trip() {
    let dir = Scratch::new("wss-4");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.img");
    let (recv, url) = start_recv(
        "wss://127.0.0.1:0/m",
        &["--tls-creds", s(&d.server), "--output", s(&out)],
    );
    assert!(url.starts_with("wss://"), "{url}");
    let send = run(transit(&[
        "send",
        &url,
        "--ram",
        "8M",
        "--seed",
        "32",
        "--channels",
        "4",
        "--tls-creds",
        s(&d.client),
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == image_bytes(8 << 20, 0.5, 32));
}

#[test]
fn ws_raw_round_trip() {
    let dir = Scratch::new("ws-raw");
    let src = dir.join("src.bin");
    let data = random_bytes((3 << 20) + 17, 33);
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out.bin");
    let (recv, url) = start_recv("ws://127.0.0.1:0/raw", &["--raw", "--output", s(&out)]);
    let send = run(transit(&["send", &url, "--raw", "--input", s(&src)]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn wss_raw_round_trip() {
    let dir = Scratch::new("wss-raw");
    let d = pki::write(dir.path(), Fault::None);
    let data = random_bytes(1_000_003, 34);
    let src = dir.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out.bin");
    let (recv, url) = start_recv(
        "wss://127.0.0.1:0/raw",
        &["--raw", "--tls-creds", s(&d.server), "--output", s(&out)],
    );
    let send = run(transit(&[
        "send",
        &url,
        "--raw",
        "--input",
        s(&src),
        "--tls-creds",
        s(&d.client),
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn a_wrong_websocket_path_fails_the_sender_and_is_logged() {
    let (recv, url) = start_recv("ws://127.0.0.1:0/right", &["--timeout", "4"]);
    let wrong = url.replace("/right", "/wrong");
    let send = run(transit(&["send", &wrong, "--ram", "1M", "--timeout", "20"]));
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
    let se = error_lines(&send.stderr);
    assert_eq!(se.len(), 1, "{}", send.stderr);
    assert!(se[0].contains("404"), "{}", se[0]);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    // The receiver logs the refusal and keeps waiting (until --timeout).
    let re = error_lines(&recv.stderr);
    assert_eq!(re.len(), 1, "{}", recv.stderr);
    assert!(re[0].contains("no sender arrived"), "{}", re[0]);
    let refusal = recv
        .stderr
        .lines()
        .find(|l| l.contains("warning: rejected a connection from tcp:127.0.0.1:"))
        .unwrap_or_else(|| panic!("recv logged no refusal: {}", recv.stderr));
    assert!(refusal.contains("/wrong"), "{refusal}");
}

#[test]
fn wss_without_credentials_is_a_usage_error() {
    let r = run(transit(&["send", "wss://127.0.0.1:1/x", "--ram", "1M"]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--tls-creds"), "{}", r.stderr);
}

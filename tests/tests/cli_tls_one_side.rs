//! TLS on one side only: each end says that the likely cause is
//! `--tls-creds` on one side only, instead of "1 of 8 bytes missing" or
//! "InvalidContentType".

use std::time::Duration;

use transit_tests::pki::{self, Fault};
use transit_tests::{error_lines, run, start_recv, transit, Scratch};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_plain_sender_to_a_tls_receiver_names_tls_on_one_side() {
    let dir = Scratch::new("tls-one-side-a");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &[
            "--tls-creds",
            s(&d.server),
            "--output",
            s(&out),
            "--timeout",
            "10",
        ],
    );
    let send = run(transit(&["send", &addr, "--ram", "1M", "--channels", "1"]));
    let recv = recv.wait_within(Duration::from_secs(60));
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
    let e = error_lines(&send.stderr);
    assert_eq!(e.len(), 1, "{}", send.stderr);
    assert!(e[0].contains("--tls-creds"), "send: {}", e[0]);
    assert!(e[0].contains("answered with a TLS alert"), "send: {}", e[0]);
    assert!(!e[0].contains("bytes missing"), "send: {}", e[0]);
    assert!(recv.stderr.contains("--tls-creds"), "recv: {}", recv.stderr);
    assert!(
        recv.stderr.contains("the client does not speak TLS"),
        "recv: {}",
        recv.stderr
    );
}

#[test]
fn a_tls_sender_to_a_plain_receiver_names_tls_on_one_side() {
    let dir = Scratch::new("tls-one-side-b");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.img");
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", s(&out), "--timeout", "10"]);
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "1M",
        "--channels",
        "1",
        "--tls-creds",
        s(&d.client),
    ]));
    let recv = recv.wait_within(Duration::from_secs(60));
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
    let e = error_lines(&send.stderr);
    assert_eq!(e.len(), 1, "{}", send.stderr);
    assert!(e[0].contains("--tls-creds"), "send: {}", e[0]);
    assert!(e[0].contains("TLS on one side only"), "send: {}", e[0]);
    assert!(recv.stderr.contains("--tls-creds"), "recv: {}", recv.stderr);
    assert!(
        recv.stderr
            .contains("the peer uses TLS and this side does not"),
        "recv: {}",
        recv.stderr
    );
}

//! TLS on the command line: `--tls-creds` directories in QEMU's layout
//! (written by `TestPki::write_dir`), multifd with one TLS session per
//! channel, `--raw`, close_notify required at the end, and each refusal a
//! clear one-line error on both ends.

use std::time::Duration;

use transit_channel::tls::generate::TestPki;
use transit_channel::tls::TlsChannel;
use transit_channel::{io as chio, Channel, SocketAddress, SocketChannel};
use transit_tests::pki::{self, Fault};
use transit_tests::{error_lines, image_bytes, random_bytes, run, start_recv, transit, Scratch};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn tls_framed_four_channels_round_trip() {
    let dir = Scratch::new("tls-4");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--tls-creds", s(&d.server), "--output", s(&out), "--json"],
    );
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "8M",
        "--zero-ratio",
        "0.3",
        "--seed",
        "11",
        "--channels",
        "4",
        "--tls-creds",
        s(&d.client),
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    recv.finish().assert_verified("recv", 4);
    assert!(std::fs::read(&out).unwrap() == image_bytes(8 << 20, 0.3, 11));
}

#[test]
fn tls_raw_over_unix_round_trip() {
    let dir = Scratch::new("tls-raw");
    let d = pki::write(dir.path(), Fault::None);
    let src = dir.join("src.bin");
    let data = random_bytes((2 << 20) + 333, 5);
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out.bin");
    let sock = dir.join("s.sock");
    let uri = format!("unix:{}", sock.display());
    let (recv, _) = start_recv(
        &uri,
        &["--raw", "--tls-creds", s(&d.server), "--output", s(&out)],
    );
    let send = run(transit(&[
        "send",
        &uri,
        "--raw",
        "--input",
        s(&src),
        "--tls-creds",
        s(&d.client),
        "--tls-hostname",
        "localhost",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn tls_over_unix_without_a_host_name_is_a_usage_error() {
    let dir = Scratch::new("tls-nohost");
    let d = pki::write(dir.path(), Fault::None);
    let r = run(transit(&[
        "send",
        &format!("unix:{}", dir.join("none.sock").display()),
        "--ram",
        "1M",
        "--tls-creds",
        s(&d.client),
    ]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--tls-hostname"), "{}", r.stderr);
}

/// A TLS client that sends `data` and then closes without close_notify.
fn truncating_client(addr: &str, dir: &std::path::Path, data: &[u8]) {
    let creds =
        transit_channel::tls::TlsCreds::from_dir(dir, transit_channel::tls::Endpoint::Client)
            .expect("client creds");
    let a: SocketAddress = addr.parse().expect("address");
    let sock = SocketChannel::connect_sync(&a).expect("connect");
    let mut tls = TlsChannel::client(Box::new(sock), creds, "localhost").expect("tls");
    tls.handshake_blocking().expect("handshake");
    chio::write_all(&mut tls, data).expect("write");
    tls.close().expect("close"); // no bye: no close_notify
}

#[test]
fn a_truncated_tls_stream_fails_the_receiver() {
    let dir = Scratch::new("tls-trunc");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.bin");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--raw", "--tls-creds", s(&d.server), "--output", s(&out)],
    );
    truncating_client(&addr, &d.client, &random_bytes(100_000, 3));
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    let errs = error_lines(&recv.stderr);
    assert_eq!(errs.len(), 1, "{}", recv.stderr);
    assert!(errs[0].contains("close_notify"), "{}", errs[0]);
    assert!(
        !out.exists(),
        "a truncated stream must not become the output"
    );
}

#[test]
fn relaxed_eof_accepts_a_peer_without_close_notify() {
    let dir = Scratch::new("tls-relaxed");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.bin");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &[
            "--raw",
            "--tls-creds",
            s(&d.server),
            "--tls-relaxed-eof",
            "--output",
            s(&out),
        ],
    );
    let data = random_bytes(100_000, 4);
    truncating_client(&addr, &d.client, &data);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

/// Run a framed TLS transfer that must be refused; returns the sender's
/// error line and the receiver's line about the refused connection. The
/// receiver logs the refusal and keeps waiting for its sender (a stranger
/// must not end it), until its --timeout.
fn refused(fault: Fault, send_extra: &[&str], recv_extra: &[&str]) -> (String, String) {
    let dir = Scratch::new("tls-refuse");
    let d = pki::write(dir.path(), fault);
    let mut rargs = vec!["--tls-creds", s(&d.server), "--timeout", "4"];
    rargs.extend_from_slice(recv_extra);
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &rargs);
    let mut sargs = vec![
        "send",
        &addr,
        "--ram",
        "1M",
        "--channels",
        "2",
        "--timeout",
        "20",
        "--tls-creds",
        s(&d.client),
    ];
    sargs.extend_from_slice(send_extra);
    let send = run(transit(&sargs));
    let recv = recv.wait_within(Duration::from_secs(60));
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    let se = error_lines(&send.stderr);
    let re = error_lines(&recv.stderr);
    assert_eq!(se.len(), 1, "send: {}", send.stderr);
    assert_eq!(re.len(), 1, "recv: {}", recv.stderr);
    assert!(re[0].contains("no sender arrived"), "recv: {}", recv.stderr);
    let refusal = recv
        .stderr
        .lines()
        .find(|l| l.starts_with("transit: warning: rejected a connection from tcp:127.0.0.1:"))
        .unwrap_or_else(|| panic!("recv logged no refusal: {}", recv.stderr));
    (se[0].to_owned(), refusal.to_owned())
}

#[test]
fn a_server_signed_by_another_ca_is_refused_on_both_ends() {
    let (se, re) = refused(Fault::WrongCa, &[], &[]);
    assert!(se.contains("not signed by a CA we trust"), "{se}");
    assert!(re.contains("refused our certificate"), "{re}");
}

#[test]
fn an_expired_server_certificate_is_refused_on_both_ends() {
    let (se, re) = refused(Fault::ExpiredServer, &[], &[]);
    assert!(se.contains("expired"), "{se}");
    assert!(re.contains("expired"), "{re}");
}

#[test]
fn a_wrong_host_name_is_refused_on_both_ends() {
    let (se, re) = refused(Fault::None, &["--tls-hostname", "other.example"], &[]);
    assert!(se.contains("does not match the host name"), "{se}");
    assert!(se.contains("other.example"), "{se}");
    assert!(re.contains("refused our certificate"), "{re}");
}

#[test]
fn a_client_without_a_certificate_is_refused_on_both_ends() {
    let (se, re) = refused(Fault::NoClientCert, &[], &[]);
    assert!(re.contains("presented no certificate"), "{re}");
    assert!(se.contains("certificate"), "{se}");
}

#[test]
fn an_authz_deny_is_refused_on_both_ends() {
    let (se, re) = refused(Fault::None, &[], &["--tls-authz", "CN=somebody-else"]);
    assert!(re.contains("not in the authz allow-list"), "{re}");
    assert!(re.contains("CN=transit-client"), "{re}");
    assert!(se.contains("refused"), "{se}");
}

#[test]
fn a_revoked_client_certificate_is_refused_on_both_ends() {
    let (se, re) = refused(Fault::RevokedClient, &[], &[]);
    assert!(re.contains("revoked"), "{re}");
    assert!(se.contains("revoked"), "{se}");
}

#[test]
fn a_revoked_server_certificate_is_refused_on_both_ends() {
    let (se, re) = refused(Fault::RevokedServer, &[], &[]);
    assert!(se.contains("revoked"), "{se}");
    assert!(re.contains("revoked"), "{re}");
}

#[test]
fn generated_loopback_credentials_work_in_process() {
    // The bench's in-process credentials: a sanity check of the fixture.
    let pki = TestPki::new().unwrap();
    assert!(pki.loopback_creds().is_ok());
}

//! Broken credential files are blamed on the right file with a sentence:
//! an unparsable revocation list is a `ca-crl.pem` problem (not a CA
//! certificate one), and an X.509 v1 certificate is a certificate problem
//! that says "v1" (not a key problem with a Debug dump).

use std::process::Command;

use transit_channel::tls::generate::{IssueParams, TestPki};
use transit_channel::tls::{Endpoint, LoadOptions, PemSource, TlsCreds};

/// A PEM CRL block whose DER is not a CRL ("not a crl at all").
const BAD_CRL: &[u8] =
    b"-----BEGIN X509 CRL-----\nbm90IGEgY3JsIGF0IGFsbA==\n-----END X509 CRL-----\n";

fn load(endpoint: Endpoint, pem: &PemSource<'_>) -> String {
    match TlsCreds::from_pem("test", endpoint, pem, &LoadOptions::default()) {
        Ok(_) => panic!("{endpoint:?}: broken credentials were accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_unparsable_crl_is_blamed_on_the_crl() {
    let pki = TestPki::new().expect("pki");
    let server = pki
        .issue(&IssueParams::server(&["localhost"]))
        .expect("server cert");
    for (endpoint, id) in [(Endpoint::Server, Some(&server)), (Endpoint::Client, None)] {
        let pem = PemSource {
            ca_cert: pki.ca_cert_pem().as_bytes(),
            ca_crl: Some(BAD_CRL),
            cert: id.map(|i| i.cert_pem.as_bytes()),
            key: id.map(|i| i.key_pem.as_bytes()),
        };
        let err = load(endpoint, &pem);
        assert!(
            err.contains("certificate revocation list (ca-crl.pem)"),
            "{endpoint:?}: {err}"
        );
        assert!(err.contains("not a valid X.509 CRL"), "{endpoint:?}: {err}");
        assert!(!err.contains("CA certificate"), "{endpoint:?}: {err}");
    }
}

#[test]
fn an_x509_v1_client_certificate_says_so() {
    let Some(dir) = tempdir() else { return };
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "openssl {args:?}");
    };
    // `openssl x509 -req` without extensions makes a v1 certificate.
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "k.pem",
        "-subj",
        "/CN=v1-client",
        "-out",
        "r.csr",
    ]);
    run(&[
        "x509", "-req", "-in", "r.csr", "-signkey", "k.pem", "-days", "2", "-out", "c.pem",
    ]);
    let cert = std::fs::read(dir.join("c.pem")).expect("c.pem");
    let key = std::fs::read(dir.join("k.pem")).expect("k.pem");
    let _ = std::fs::remove_dir_all(&dir);
    let pki = TestPki::new().expect("pki");
    let pem = PemSource {
        ca_cert: pki.ca_cert_pem().as_bytes(),
        ca_crl: None,
        cert: Some(&cert),
        key: Some(&key),
    };
    let err = load(Endpoint::Client, &pem);
    assert!(
        err.contains("client certificate (client-cert.pem)"),
        "{err}"
    );
    assert!(err.contains("X.509 v1"), "{err}");
    assert!(!err.contains("private key"), "{err}");
    assert!(!err.contains("OtherError"), "{err}");
}

/// A fresh directory for openssl's files, or `None` (skipped, loudly)
/// without openssl.
fn tempdir() -> Option<std::path::PathBuf> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("transit-v1-cert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    Some(dir)
}

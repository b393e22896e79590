//! Refused TLS sessions: each check fails with an error that names the
//! reason, on both ends (the end that checks, and the end that learns it
//! from the alert); credential files that are missing or broken are named.

mod tls_util;

use std::sync::Arc;

use tls_util::{run_pair, Setup};
use transit_channel::io::{read_all, write_all};
use transit_channel::tls::generate::{IssueParams, TestPki, Validity};
use transit_channel::tls::{Authz, Endpoint, TlsChannel, TlsCreds};
use transit_channel::Error;

/// Run a session in which something must be refused; return the client's
/// and the server's error messages. The client writes and reads after its
/// handshake, since with TLS 1.3 it learns of the server's refusal then.
fn refused(
    client: Arc<TlsCreds>,
    server: Arc<TlsCreds>,
    hostname: &'static str,
    authz: Option<Authz>,
) -> (String, String) {
    let (c, s) = refused_errors(client, server, hostname, authz);
    (c.to_string(), s.to_string())
}

/// [`refused`], with the errors themselves.
fn refused_errors(
    client: Arc<TlsCreds>,
    server: Arc<TlsCreds>,
    hostname: &'static str,
    authz: Option<Authz>,
) -> (Error, Error) {
    let (c, s) = run_pair(
        move |ch| -> Result<(), Error> {
            let mut tls = TlsChannel::client(ch, client, hostname)?;
            tls.handshake_blocking()?;
            write_all(&mut tls, b"hello")?;
            read_all(&mut tls, &mut [0u8; 1])
        },
        move |ch| -> Result<(), Error> {
            let mut tls = TlsChannel::server(ch, server, authz.as_ref())?;
            tls.handshake_blocking()?;
            read_all(&mut tls, &mut [0u8; 5])?;
            write_all(&mut tls, b"!")
        },
    );
    let c = c.expect_err("the client should fail");
    let s = s.expect_err("the server should fail");
    (c, s)
}

/// Server credentials whose certificate another CA signed (the server
/// still trusts ours), in `setup.root/name`.
fn server_of_another_ca(setup: &Setup, name: &str) -> Arc<TlsCreds> {
    let other = TestPki::with_name("other CA").expect("CA");
    let id = other
        .issue(&IssueParams::server(&["localhost"]))
        .expect("cert");
    let dir = setup.root.join(name);
    setup
        .pki
        .write_dir(&dir, Endpoint::Server, None, None)
        .expect("ca");
    std::fs::write(dir.join("server-cert.pem"), &id.cert_pem).expect("cert");
    std::fs::write(dir.join("server-key.pem"), &id.key_pem).expect("key");
    TlsCreds::from_dir(&dir, Endpoint::Server).expect("creds")
}

fn assert_has(msg: &str, needle: &str) {
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
}

#[test]
fn server_cert_from_another_ca_is_refused() {
    let setup = Setup::new("wrong-ca");
    // The server presents a certificate of another CA (but trusts ours).
    let server = server_of_another_ca(&setup, "server-other");
    let (c, s) = refused(setup.client_creds(), server, "localhost", None);
    assert_has(&c, "server's certificate is not signed by a CA we trust");
    assert_has(&s, "client refused our certificate");
    assert_has(&s, "unknown CA");
}

#[test]
fn expired_server_cert_is_refused() {
    let setup = Setup::new("expired");
    let id = setup
        .pki
        .issue(&IssueParams {
            validity: Validity::Expired,
            ..IssueParams::server(&["localhost"])
        })
        .expect("cert");
    let dir = setup.write(
        "server-expired",
        &setup.pki,
        Endpoint::Server,
        Some(&id),
        None,
    );
    let server = TlsCreds::from_dir(dir, Endpoint::Server).expect("creds");
    let (c, s) = refused(setup.client_creds(), server, "localhost", None);
    assert_has(&c, "server's certificate has expired");
    assert_has(
        &s,
        "client refused our certificate: it has expired or is not valid yet",
    );
}

#[test]
fn not_yet_valid_client_cert_is_refused() {
    let setup = Setup::new("not-yet");
    let id = setup
        .pki
        .issue(&IssueParams {
            validity: Validity::NotYetValid,
            ..IssueParams::client("client")
        })
        .expect("cert");
    let dir = setup.write(
        "client-future",
        &setup.pki,
        Endpoint::Client,
        Some(&id),
        None,
    );
    let client = TlsCreds::from_dir(dir, Endpoint::Client).expect("creds");
    let (c, s) = refused(client, setup.server_creds(), "localhost", None);
    assert_has(&s, "client's certificate is not valid yet");
    assert_has(
        &c,
        "server refused our certificate: it has expired or is not valid yet",
    );
}

#[test]
fn expired_client_cert_is_refused() {
    let setup = Setup::new("expired-client");
    let id = setup
        .pki
        .issue(&IssueParams {
            validity: Validity::Expired,
            ..IssueParams::client("client")
        })
        .expect("cert");
    let dir = setup.write("client-old", &setup.pki, Endpoint::Client, Some(&id), None);
    let client = TlsCreds::from_dir(dir, Endpoint::Client).expect("creds");
    let (c, s) = refused(client, setup.server_creds(), "localhost", None);
    assert_has(&s, "client's certificate has expired");
    assert_has(&c, "server refused our certificate: it has expired");
}

#[test]
fn wrong_hostname_is_refused() {
    let setup = Setup::new("hostname");
    let (c, s) = refused(
        setup.client_creds(),
        setup.server_creds(),
        "db.example",
        None,
    );
    assert_has(&c, "does not match the host name \"db.example\"");
    assert_has(&c, "localhost");
    assert_has(&s, "client refused our certificate");
}

#[test]
fn client_without_certificate_is_refused() {
    let setup = Setup::new("no-client-cert");
    let dir = setup.write("client-bare", &setup.pki, Endpoint::Client, None, None);
    let client = TlsCreds::from_dir(dir, Endpoint::Client).expect("creds without a cert");
    let (c, s) = refused(client, setup.server_creds(), "localhost", None);
    assert_has(
        &s,
        "client presented no certificate, but this server requires one",
    );
    assert_has(&c, "requires a client certificate and we have none");
}

#[test]
fn authz_deny_names_the_identity_on_the_server_and_access_denied_on_the_client() {
    let setup = Setup::new("authz-deny");
    let authz = Authz::new(["CN=someone-else", "DNS:other.example"]).expect("authz");
    let (c, s) = refused(
        setup.client_creds(),
        setup.server_creds(),
        "localhost",
        Some(authz),
    );
    assert_has(&s, "\"CN=client,O=Transit\"");
    assert_has(&s, "not in the authz allow-list");
    assert_has(&c, "access denied");
}

#[test]
fn authz_allows_a_listed_dn_or_san() {
    for entry in [
        "CN=client,O=Transit",
        "O=Transit, CN=client",
        "DNS:client.example",
    ] {
        let setup = Setup::new("authz-allow");
        let authz = Authz::new([entry]).expect("authz");
        let (cc, sc) = (setup.client_creds(), setup.server_creds());
        let (c, s) = run_pair(
            move |ch| -> Result<(), Error> {
                let mut tls = TlsChannel::client(ch, cc, "localhost")?;
                tls.handshake_blocking()?;
                write_all(&mut tls, b"hi")
            },
            move |ch| -> Result<Vec<u8>, Error> {
                let mut tls = TlsChannel::server(ch, sc, Some(&authz))?;
                tls.handshake_blocking()?;
                let mut buf = vec![0u8; 2];
                read_all(&mut tls, &mut buf)?;
                Ok(buf)
            },
        );
        c.unwrap_or_else(|e| panic!("{entry}: client: {e}"));
        assert_eq!(s.unwrap_or_else(|e| panic!("{entry}: server: {e}")), b"hi");
    }
}

#[test]
fn revoked_client_cert_is_refused() {
    let setup = Setup::new("revoked");
    // The server's directory carries a CRL (signed by the CA) that revokes
    // the client's certificate.
    let dir = setup.write(
        "server-crl",
        &setup.pki,
        Endpoint::Server,
        Some(&setup.server_id),
        Some(&[&setup.client_id]),
    );
    let server = TlsCreds::from_dir(dir, Endpoint::Server).expect("creds");
    let (c, s) = refused(setup.client_creds(), server, "localhost", None);
    assert_has(&s, "client's certificate has been revoked");
    assert_has(&c, "server refused our certificate: it has been revoked");
}

#[test]
fn revoked_server_cert_is_refused() {
    let setup = Setup::new("revoked-server");
    let dir = setup.write(
        "client-crl",
        &setup.pki,
        Endpoint::Client,
        Some(&setup.client_id),
        Some(&[&setup.server_id]),
    );
    let client = TlsCreds::from_dir(dir, Endpoint::Client).expect("creds");
    let (c, s) = refused(client, setup.server_creds(), "localhost", None);
    assert_has(&c, "server's certificate has been revoked");
    assert_has(&s, "client refused our certificate: it has been revoked");
}

#[test]
fn a_crl_that_revokes_someone_else_lets_the_peer_in() {
    let setup = Setup::new("crl-other");
    let other = setup
        .pki
        .issue(&IssueParams::client("other"))
        .expect("cert");
    let dir = setup.write(
        "server-crl-other",
        &setup.pki,
        Endpoint::Server,
        Some(&setup.server_id),
        Some(&[&other]),
    );
    let server = TlsCreds::from_dir(dir, Endpoint::Server).expect("creds");
    let cc = setup.client_creds();
    let (c, s) = run_pair(
        move |ch| -> Result<(), Error> {
            let mut tls = TlsChannel::client(ch, cc, "localhost")?;
            tls.handshake_blocking()
        },
        move |ch| -> Result<(), Error> {
            let mut tls = TlsChannel::server(ch, server, None)?;
            tls.handshake_blocking()
        },
    );
    c.expect("client");
    s.expect("server");
}

#[test]
fn missing_ca_cert_is_named() {
    let setup = Setup::new("missing-ca");
    let dir = setup.root.join("empty");
    std::fs::create_dir_all(&dir).expect("dir");
    let err = TlsCreds::from_dir(&dir, Endpoint::Client).expect_err("no ca-cert.pem");
    let msg = err.to_string();
    assert_has(&msg, &dir.join("ca-cert.pem").display().to_string());
    assert_has(&msg, "CA certificate");
    assert!(matches!(err, Error::Os { .. }), "{err:?}");
}

#[test]
fn missing_server_key_is_named() {
    let setup = Setup::new("missing-key");
    let dir = setup.root.join("server");
    std::fs::remove_file(dir.join("server-key.pem")).expect("remove");
    let msg = TlsCreds::from_dir(&dir, Endpoint::Server)
        .expect_err("no server key")
        .to_string();
    assert_has(&msg, &dir.join("server-key.pem").display().to_string());
}

#[test]
fn garbage_certificate_file_is_named() {
    let setup = Setup::new("garbage");
    let dir = setup.root.join("client");
    std::fs::write(dir.join("client-cert.pem"), b"not a certificate\n").expect("write");
    let msg = TlsCreds::from_dir(&dir, Endpoint::Client)
        .expect_err("bad cert")
        .to_string();
    assert_has(&msg, "client-cert.pem");
    assert_has(&msg, "no CERTIFICATE block");
}

#[test]
fn server_creds_cannot_make_a_client() {
    let setup = Setup::new("wrong-endpoint");
    let (a, _b) = transit_channel::SocketChannel::pair().expect("pair");
    let err = TlsChannel::client(Box::new(a), setup.server_creds(), "localhost")
        .expect_err("server creds for a client");
    assert_has(&err.to_string(), "loaded for the server endpoint");
}

/// The errors carry their typed cause: the end that checked has the rustls
/// error it decided on; the end that learnt it from the alert has
/// `AlertReceived` and says it was refused; callers decide from these, not
/// from the text.
#[test]
fn refusals_carry_typed_causes() {
    use transit_channel::Cause;
    let setup = Setup::new("typed-causes");
    let server = server_of_another_ca(&setup, "server-other-typed");
    let (c, s) = refused_errors(setup.client_creds(), server, "localhost", None);
    assert!(
        matches!(
            c.cause(),
            Some(Cause::Tls(rustls::Error::InvalidCertificate(_)))
        ),
        "{c:?}"
    );
    assert!(!c.is_peer_refusal(), "{c:?}");
    assert!(c.is_tls_or_websocket());
    assert!(s.is_peer_refusal(), "{s:?}");
    assert!(!s.is_peer_gone(), "{s:?}");
}

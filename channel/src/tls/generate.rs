//! Credentials generated in process with rcgen: a throw-away CA that issues
//! server and client certificates (current, expired or not yet valid) and
//! revocation lists, written in QEMU's directory layout or loaded straight
//! into [`TlsCreds`]. For tests, benchmarks and `transit bench`; never for
//! production keys (they live in memory and on disk unencrypted).
//!
//! ```
//! use transit_channel::tls::generate::{IssueParams, TestPki, Validity};
//! use transit_channel::tls::{Endpoint, TlsCreds};
//!
//! let pki = TestPki::new()?;
//! let server = pki.issue(&IssueParams::server(&["localhost", "127.0.0.1"]))?;
//! let expired = pki.issue(&IssueParams { validity: Validity::Expired, ..IssueParams::client("old") })?;
//! let dir = std::env::temp_dir().join(format!("transit-doc-pki-{}", std::process::id()));
//! pki.write_dir(&dir, Endpoint::Server, Some(&server), Some(&[&expired]))?;
//! let creds = TlsCreds::from_dir(&dir, Endpoint::Server)?;
//! assert_eq!(creds.endpoint(), Endpoint::Server);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};

use super::creds::{Endpoint, LoadOptions, PemSource, TlsCreds};
use crate::error::{Error, Result};

/// When an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 2020 to 4096.
    Current,
    /// From 2000 to 2001.
    Expired,
    /// From 4000 to 4096.
    NotYetValid,
}

/// What to put in an issued certificate.
#[derive(Debug, Clone)]
pub struct IssueParams {
    /// The subject's common name (`CN=...`).
    pub common_name: String,
    /// More subject attributes after the CN, most specific first (for
    /// example `("O", "Example")`); types `O`, `OU`, `C`, `ST`, `L`.
    pub subject_extra: Vec<(String, String)>,
    /// subjectAltName entries: DNS names or IP addresses.
    pub alt_names: Vec<String>,
    /// subjectAltName e-mail entries.
    pub emails: Vec<String>,
    /// Validity period.
    pub validity: Validity,
    /// Server (`true`) or client (`false`) extended key usage.
    pub server: bool,
}

impl IssueParams {
    /// A server certificate for `names` (DNS names or IP addresses); the CN
    /// is the first name.
    pub fn server(names: &[&str]) -> IssueParams {
        IssueParams {
            common_name: names.first().copied().unwrap_or("server").to_owned(),
            subject_extra: Vec::new(),
            alt_names: names.iter().map(|s| (*s).to_owned()).collect(),
            emails: Vec::new(),
            validity: Validity::Current,
            server: true,
        }
    }

    /// A client certificate with `CN=common_name` and no alternative names.
    pub fn client(common_name: &str) -> IssueParams {
        IssueParams {
            common_name: common_name.to_owned(),
            subject_extra: Vec::new(),
            alt_names: Vec::new(),
            emails: Vec::new(),
            validity: Validity::Current,
            server: false,
        }
    }
}

/// An issued certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate (`*-cert.pem`).
    pub cert_pem: String,
    /// The private key, PKCS#8 (`*-key.pem`).
    pub key_pem: String,
    serial: u64,
}

/// A throw-away certificate authority (see the [module
/// documentation](self)).
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    next_serial: AtomicU64,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

fn gen_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Os {
        channel: "tls generate".to_owned(),
        op: what.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

impl TestPki {
    /// A new CA named `CN=transit test CA` with a fresh ECDSA P-256 key.
    pub fn new() -> Result<TestPki> {
        TestPki::with_name("transit test CA")
    }

    /// A new CA with `CN=common_name`.
    pub fn with_name(common_name: &str) -> Result<TestPki> {
        let key = KeyPair::generate().map_err(|e| gen_error("generate a CA key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(4096, 1, 1);
        params.serial_number = Some(SerialNumber::from(1u64));
        let cert = params
            .self_signed(&key)
            .map_err(|e| gen_error("self-sign the CA certificate", e))?;
        Ok(TestPki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            next_serial: AtomicU64::new(2),
        })
    }

    /// The CA certificate (`ca-cert.pem`).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issue a certificate signed by this CA.
    pub fn issue(&self, p: &IssueParams) -> Result<Identity> {
        let key = KeyPair::generate().map_err(|e| gen_error("generate a key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // Encoded most general first (C, O, ..., CN), so that the printed
        // form (RFC 4514, most specific first) reads CN=...,O=...,C=...
        for (ty, value) in p.subject_extra.iter().rev() {
            let ty = match ty.to_ascii_uppercase().as_str() {
                "O" => DnType::OrganizationName,
                "OU" => DnType::OrganizationalUnitName,
                "C" => DnType::CountryName,
                "ST" => DnType::StateOrProvinceName,
                "L" => DnType::LocalityName,
                _ => {
                    return Err(gen_error(
                        "build a subject",
                        format!("unknown DN type {ty}"),
                    ))
                }
            };
            params.distinguished_name.push(ty, value.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, p.common_name.as_str());
        for name in &p.alt_names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|e| gen_error("build a DNS name", e))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        for mail in &p.emails {
            params.subject_alt_names.push(SanType::Rfc822Name(
                mail.clone()
                    .try_into()
                    .map_err(|e| gen_error("build an e-mail name", e))?,
            ));
        }
        let (from, to) = match p.validity {
            Validity::Current => (2020, 4096),
            Validity::Expired => (2000, 2001),
            Validity::NotYetValid => (4000, 4096),
        };
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if p.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| gen_error("sign a certificate", e))?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A revocation list (`ca-crl.pem`) signed by this CA that revokes
    /// `revoked` (possibly none).
    pub fn crl(&self, revoked: &[&Identity]) -> Result<String> {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(4096, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|id| RevokedCertParams {
                    serial_number: SerialNumber::from(id.serial),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .and_then(|crl| crl.pem())
            .map_err(|e| gen_error("sign a revocation list", e))
    }

    /// Write `dir` in QEMU's layout for `endpoint`: `ca-cert.pem`, the
    /// identity as `server-*.pem` or `client-*.pem` (if given), and
    /// `ca-crl.pem` revoking `revoked` (if given). Creates `dir`.
    pub fn write_dir(
        &self,
        dir: &Path,
        endpoint: Endpoint,
        identity: Option<&Identity>,
        revoked: Option<&[&Identity]>,
    ) -> Result<()> {
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| Error::Os {
                channel: "tls generate".to_owned(),
                op: format!("write {}", dir.join(name).display()),
                source: e,
            })
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::Os {
            channel: "tls generate".to_owned(),
            op: format!("create {}", dir.display()),
            source: e,
        })?;
        write("ca-cert.pem", &self.ca_pem)?;
        if let Some(id) = identity {
            let prefix = endpoint.as_str();
            write(&format!("{prefix}-cert.pem"), &id.cert_pem)?;
            write(&format!("{prefix}-key.pem"), &id.key_pem)?;
        }
        if let Some(revoked) = revoked {
            write("ca-crl.pem", &self.crl(revoked)?)?;
        }
        Ok(())
    }

    /// Credentials for `endpoint` from `identity`, in memory.
    pub fn creds(&self, endpoint: Endpoint, identity: Option<&Identity>) -> Result<Arc<TlsCreds>> {
        TlsCreds::from_pem(
            "generated in process",
            endpoint,
            &PemSource {
                ca_cert: self.ca_pem.as_bytes(),
                ca_crl: None,
                cert: identity.map(|i| i.cert_pem.as_bytes()),
                key: identity.map(|i| i.key_pem.as_bytes()),
            },
            &LoadOptions::default(),
        )
    }

    /// Client and server credentials for loopback: the server's certificate
    /// names `localhost`, `127.0.0.1` and `::1`; the client's is
    /// `CN=transit-client`. Returns `(client, server)`.
    pub fn loopback_creds(&self) -> Result<(Arc<TlsCreds>, Arc<TlsCreds>)> {
        let server = self.issue(&IssueParams::server(&["localhost", "127.0.0.1", "::1"]))?;
        let client = self.issue(&IssueParams::client("transit-client"))?;
        Ok((
            self.creds(Endpoint::Client, Some(&client))?,
            self.creds(Endpoint::Server, Some(&server))?,
        ))
    }
}

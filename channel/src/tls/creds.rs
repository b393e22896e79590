//! [`TlsCreds`]: x509 credentials from a directory in QEMU's layout (or from
//! PEM bytes), turned into rustls client and server configurations.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};

use super::authz::{Authz, AuthzVerifier};
use crate::error::{Error, Result};

/// Which end of a connection credentials serve (QEMU's `endpoint`
/// property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The end that connects: reads `client-cert.pem` + `client-key.pem`
    /// (both optional) and checks the server's name.
    Client,
    /// The end that listens: reads `server-cert.pem` + `server-key.pem` and
    /// (with peer verification) requires a client certificate.
    Server,
}

impl Endpoint {
    /// `"client"` or `"server"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Client => "client",
            Endpoint::Server => "server",
        }
    }

    /// The other end.
    pub fn peer(self) -> Endpoint {
        match self {
            Endpoint::Client => Endpoint::Server,
            Endpoint::Server => Endpoint::Client,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How credentials are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Verify the peer (QEMU's `verify-peer`, default true): the server
    /// requires a client certificate signed by the CA, the client checks
    /// the server's certificate and name. Turning it off on a client
    /// accepts *any* server certificate (handshake signatures are still
    /// checked); on a server it stops asking for client certificates, and
    /// [`Authz`] cannot be used.
    pub verify_peer: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { verify_peer: true }
    }
}

/// Credentials as PEM bytes, for [`TlsCreds::from_pem`] (generated in
/// memory, or read by the caller from elsewhere).
#[derive(Debug, Clone, Copy)]
pub struct PemSource<'a> {
    /// The trusted CA certificate(s) (`ca-cert.pem`).
    pub ca_cert: &'a [u8],
    /// Revocation lists (`ca-crl.pem`), if any.
    pub ca_crl: Option<&'a [u8]>,
    /// This end's certificate chain, leaf first (`server-cert.pem` or
    /// `client-cert.pem`). Required for a server.
    pub cert: Option<&'a [u8]>,
    /// This end's private key (`server-key.pem` or `client-key.pem`).
    pub key: Option<&'a [u8]>,
}

/// x509 credentials for one endpoint (QEMU's `tls-creds-x509` object),
/// shared by every [`TlsChannel`](super::TlsChannel) that uses them.
///
/// See the [module documentation](super) for the directory layout and the
/// checks.
pub struct TlsCreds {
    endpoint: Endpoint,
    origin: String,
    dir: Option<PathBuf>,
    verify_peer: bool,
    provider: Arc<CryptoProvider>,
    client: Option<Arc<ClientConfig>>,
    server: Option<ServerParts>,
}

/// What a server needs to build a configuration per authz list.
struct ServerParts {
    cert: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCreds")
            .field("origin", &self.origin)
            .field("endpoint", &self.endpoint)
            .field("verify_peer", &self.verify_peer)
            .finish_non_exhaustive()
    }
}

/// One file of the directory: its name and what it holds, for messages.
struct FileSpec {
    name: &'static str,
    what: &'static str,
}

const CA_CERT: FileSpec = FileSpec {
    name: "ca-cert.pem",
    what: "CA certificate",
};
const CA_CRL: FileSpec = FileSpec {
    name: "ca-crl.pem",
    what: "certificate revocation list",
};
const SERVER_CERT: FileSpec = FileSpec {
    name: "server-cert.pem",
    what: "server certificate",
};
const SERVER_KEY: FileSpec = FileSpec {
    name: "server-key.pem",
    what: "server private key",
};
const CLIENT_CERT: FileSpec = FileSpec {
    name: "client-cert.pem",
    what: "client certificate",
};
const CLIENT_KEY: FileSpec = FileSpec {
    name: "client-key.pem",
    what: "client private key",
};

/// Builds the error messages of one load.
struct Loader<'a> {
    origin: &'a str,
    dir: Option<&'a Path>,
}

impl Loader<'_> {
    fn place(&self, spec: &FileSpec) -> String {
        match self.dir {
            Some(dir) => format!("{} {}", spec.what, dir.join(spec.name).display()),
            None => format!("{} ({})", spec.what, spec.name),
        }
    }

    fn invalid(&self, spec: &FileSpec, why: impl fmt::Display) -> Error {
        Error::Os {
            channel: self.origin.to_owned(),
            op: format!("load {}", self.place(spec)),
            source: io::Error::new(io::ErrorKind::InvalidData, why.to_string()),
        }
    }

    /// Read `spec` from the directory; `None` if it is optional and absent.
    fn read(&self, spec: &FileSpec, optional: bool) -> Result<Option<Vec<u8>>> {
        let Some(dir) = self.dir else {
            return Ok(None);
        };
        let path = dir.join(spec.name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Os {
                channel: self.origin.to_owned(),
                op: format!("read {} {}", spec.what, path.display()),
                source: e,
            }),
        }
    }

    fn certs(&self, spec: &FileSpec, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(spec, format!("bad PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.invalid(spec, "no CERTIFICATE block found"));
        }
        Ok(certs)
    }

    fn key(&self, spec: &FileSpec, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            self.invalid(
                spec,
                format!("no usable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1 PEM expected): {e}"),
            )
        })
    }

    fn crls(&self, pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>> {
        let crls = CertificateRevocationListDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(&CA_CRL, format!("bad PEM: {e}")))?;
        if crls.is_empty() {
            return Err(self.invalid(&CA_CRL, "no X509 CRL block found"));
        }
        for (i, crl) in crls.iter().enumerate() {
            use x509_parser::prelude::FromDer;
            use x509_parser::revocation_list::CertificateRevocationList;
            if let Err(e) = CertificateRevocationList::from_der(crl.as_ref()) {
                return Err(self.invalid(
                    &CA_CRL,
                    format!("block {} is not a valid X.509 CRL: {e}", i + 1),
                ));
            }
        }
        Ok(crls)
    }

    fn identity(
        &self,
        provider: &CryptoProvider,
        cert_spec: &FileSpec,
        key_spec: &FileSpec,
        cert: &[u8],
        key: &[u8],
    ) -> Result<Arc<CertifiedKey>> {
        let chain = self.certs(cert_spec, cert)?;
        self.check_version(cert_spec, &chain[0])?;
        let key = self.key(key_spec, key)?;
        // The three checks of CertifiedKey::from_der one by one, so that
        // each failure names the file at fault.
        let key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| self.invalid(key_spec, format!("not a usable private key: {e}")))?;
        let certified = CertifiedKey::new(chain, key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(Arc::new(certified))
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(self.invalid(
                key_spec,
                format!(
                    "does not match {} (the key is not the certificate's)",
                    self.place(cert_spec)
                ),
            )),
            Err(e) => Err(self.invalid(
                cert_spec,
                format!(
                    "not a usable certificate: {}",
                    super::diag::describe_load(&e)
                ),
            )),
        }
    }

    /// Refuse a certificate that is not X.509 v3 with a message that says
    /// so (TLS validation here, as in every current stack, needs the v3
    /// extensions: subjectAltName, key usage).
    fn check_version(&self, spec: &FileSpec, der: &CertificateDer<'_>) -> Result<()> {
        use x509_parser::prelude::{FromDer, X509Certificate, X509Version};
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| self.invalid(spec, format!("not a valid X.509 certificate: {e}")))?;
        if cert.version() != X509Version::V3 {
            return Err(self.invalid(
                spec,
                format!(
                    "is an X.509 v{} certificate; only v3 is supported (reissue it with \
                     extensions: subjectAltName, and extendedKeyUsage for TLS)",
                    cert.version().0 + 1
                ),
            ));
        }
        Ok(())
    }

    /// The error of a verifier builder, blamed on the file at fault.
    fn verifier(&self, e: rustls::client::VerifierBuilderError) -> Error {
        use rustls::client::VerifierBuilderError as V;
        match e {
            V::NoRootAnchors => self.invalid(&CA_CERT, "no usable CA certificate"),
            V::InvalidCrl(e) => self.invalid(&CA_CRL, super::diag::crl(&e)),
            other => self.invalid(&CA_CERT, other),
        }
    }
}

impl TlsCreds {
    /// Load the credentials of `endpoint` from `dir` (QEMU's layout; see the
    /// [module documentation](super)), with peer verification on.
    ///
    /// A missing or unreadable file is an [`Error::Os`] naming it; a file
    /// without the expected PEM block, or a key that does not match its
    /// certificate, is an [`Error::Os`] of kind `InvalidData` naming it.
    pub fn from_dir(dir: impl AsRef<Path>, endpoint: Endpoint) -> Result<Arc<TlsCreds>> {
        TlsCreds::from_dir_with(dir, endpoint, &LoadOptions::default())
    }

    /// [`from_dir`](Self::from_dir) with options.
    pub fn from_dir_with(
        dir: impl AsRef<Path>,
        endpoint: Endpoint,
        options: &LoadOptions,
    ) -> Result<Arc<TlsCreds>> {
        let dir = dir.as_ref();
        let origin = format!("tls-creds {}", dir.display());
        let loader = Loader {
            origin: &origin,
            dir: Some(dir),
        };
        let ca = loader.read(&CA_CERT, false)?.unwrap_or_default();
        let crl = loader.read(&CA_CRL, true)?;
        let (cert_spec, key_spec) = match endpoint {
            Endpoint::Client => (&CLIENT_CERT, &CLIENT_KEY),
            Endpoint::Server => (&SERVER_CERT, &SERVER_KEY),
        };
        let optional = endpoint == Endpoint::Client;
        let cert = loader.read(cert_spec, optional)?;
        let key = loader.read(key_spec, optional)?;
        let pem = PemSource {
            ca_cert: &ca,
            ca_crl: crl.as_deref(),
            cert: cert.as_deref(),
            key: key.as_deref(),
        };
        let mut creds = TlsCreds::build(&loader, endpoint, &pem, options)?;
        creds.dir = Some(dir.to_owned());
        Ok(Arc::new(creds))
    }

    /// Credentials of `endpoint` from PEM bytes; `origin` names them in
    /// messages (for example `"generated credentials"`).
    pub fn from_pem(
        origin: &str,
        endpoint: Endpoint,
        pem: &PemSource<'_>,
        options: &LoadOptions,
    ) -> Result<Arc<TlsCreds>> {
        let origin = format!("tls-creds {origin}");
        let loader = Loader {
            origin: &origin,
            dir: None,
        };
        Ok(Arc::new(TlsCreds::build(&loader, endpoint, pem, options)?))
    }

    fn build(
        loader: &Loader<'_>,
        endpoint: Endpoint,
        pem: &PemSource<'_>,
        options: &LoadOptions,
    ) -> Result<TlsCreds> {
        let provider = super::crypto_provider();
        let mut roots = RootCertStore::empty();
        for cert in loader.certs(&CA_CERT, pem.ca_cert)? {
            roots.add(cert).map_err(|e| {
                loader.invalid(&CA_CERT, format!("not a usable CA certificate: {e}"))
            })?;
        }
        let roots = Arc::new(roots);
        let crls = match pem.ca_crl {
            Some(bytes) => loader.crls(bytes)?,
            None => Vec::new(),
        };
        let (cert_spec, key_spec) = match endpoint {
            Endpoint::Client => (&CLIENT_CERT, &CLIENT_KEY),
            Endpoint::Server => (&SERVER_CERT, &SERVER_KEY),
        };
        let identity =
            match (pem.cert, pem.key) {
                (Some(cert), Some(key)) => {
                    Some(loader.identity(&provider, cert_spec, key_spec, cert, key)?)
                }
                (Some(_), None) => {
                    return Err(loader
                        .invalid(key_spec, format!("missing ({} is present)", cert_spec.name)))
                }
                (None, Some(_)) => {
                    return Err(loader
                        .invalid(cert_spec, format!("missing ({} is present)", key_spec.name)))
                }
                (None, None) => None,
            };
        let bad_config = |e: rustls::Error| Error::Os {
            channel: loader.origin.to_owned(),
            op: "build the TLS configuration".to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        };
        let mut creds = TlsCreds {
            endpoint,
            origin: loader.origin.to_owned(),
            dir: None,
            verify_peer: options.verify_peer,
            provider: Arc::clone(&provider),
            client: None,
            server: None,
        };
        match endpoint {
            Endpoint::Client => {
                let verifier: Arc<dyn ServerCertVerifier> = if options.verify_peer {
                    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                        .with_crls(crls)
                        .allow_unknown_revocation_status()
                        .build()
                        .map_err(|e| loader.verifier(e))?
                } else {
                    Arc::new(AnyServerCert(Arc::clone(&provider)))
                };
                let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                    .map_err(bad_config)?
                    .dangerous()
                    .with_custom_certificate_verifier(verifier);
                let config = match identity {
                    Some(id) => {
                        builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(id)))
                    }
                    None => builder.with_no_client_auth(),
                };
                creds.client = Some(Arc::new(config));
            }
            Endpoint::Server => {
                let Some(cert) = identity else {
                    return Err(loader
                        .invalid(cert_spec, "missing: a server needs a certificate and a key"));
                };
                let verifier = if options.verify_peer {
                    Some(
                        WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                            .with_crls(crls)
                            .allow_unknown_revocation_status()
                            .build()
                            .map_err(|e| loader.verifier(e))?,
                    )
                } else {
                    None
                };
                let config =
                    server_config(&provider, &cert, verifier.clone()).map_err(bad_config)?;
                creds.server = Some(ServerParts {
                    cert,
                    verifier,
                    config,
                });
            }
        }
        Ok(creds)
    }

    /// The endpoint these credentials serve.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The directory they were loaded from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// True if the peer is verified (see [`LoadOptions::verify_peer`]).
    pub fn verify_peer(&self) -> bool {
        self.verify_peer
    }

    /// How the credentials are named in messages (`tls-creds DIR`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn wrong_endpoint(&self, wanted: Endpoint) -> Error {
        Error::Os {
            channel: self.origin.clone(),
            op: format!("use as {wanted} credentials"),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "they were loaded for the {} endpoint (a {wanted} needs {wanted}-cert.pem and {wanted}-key.pem)",
                    self.endpoint
                ),
            ),
        }
    }

    /// The rustls client configuration (for a tokio-rustls `TlsConnector`
    /// or another rustls driver). Fails for server credentials.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        self.client
            .clone()
            .ok_or_else(|| self.wrong_endpoint(Endpoint::Client))
    }

    /// The rustls server configuration, with `authz` applied to client
    /// identities if given. Fails for client credentials, and for an authz
    /// list without peer verification.
    pub fn server_config(&self, authz: Option<&Authz>) -> Result<Arc<ServerConfig>> {
        self.server_config_with(authz).map(|(c, _)| c)
    }

    /// The server configuration and, with authz, the verifier that records
    /// why a client was denied.
    pub(crate) fn server_config_with(
        &self,
        authz: Option<&Authz>,
    ) -> Result<(Arc<ServerConfig>, Option<Arc<AuthzVerifier>>)> {
        let parts = self
            .server
            .as_ref()
            .ok_or_else(|| self.wrong_endpoint(Endpoint::Server))?;
        let Some(authz) = authz else {
            return Ok((Arc::clone(&parts.config), None));
        };
        let Some(inner) = parts.verifier.clone() else {
            return Err(Error::Os {
                channel: self.origin.clone(),
                op: "apply the authz list".to_owned(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an authz list needs peer verification (verify_peer) to know who the client is",
                ),
            });
        };
        let verifier = Arc::new(AuthzVerifier::new(inner, authz.clone()));
        let dyn_verifier: Arc<dyn ClientCertVerifier> = verifier.clone();
        let config =
            server_config(&self.provider, &parts.cert, Some(dyn_verifier)).map_err(|e| {
                Error::Os {
                    channel: self.origin.clone(),
                    op: "build the TLS configuration".to_owned(),
                    source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                }
            })?;
        Ok((config, Some(verifier)))
    }
}

/// A server configuration: our cipher order decides, client certificates
/// as `verifier` says (none when `None`), no session tickets.
fn server_config(
    provider: &Arc<CryptoProvider>,
    cert: &Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> std::result::Result<Arc<ServerConfig>, rustls::Error> {
    let verifier = verifier.unwrap_or_else(|| Arc::new(NoClientAuth));
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(cert))));
    config.ignore_client_order = true;
    // No session tickets: transit does not resume sessions, and a TLS 1.3
    // ticket sent after the handshake would be a write to a client that
    // may already have closed (a handshake that "fails" after succeeding).
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client's verifier without peer verification: any certificate is
/// accepted, handshake signatures are still checked against it.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

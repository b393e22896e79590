//! [`Authz`]: which client identities a TLS server lets in (QEMU's
//! `authz-list` checked against the client certificate's DN), and the
//! rustls verifier that applies it during the handshake.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::{Error, Result};

/// An allow-list of client identities for a TLS server.
///
/// Each entry is one of:
///
/// * a **subject DN** in transit's normal form: `TYPE=value` pairs joined
///   by `,` (and `+` inside a multi-valued RDN), most specific first, the
///   way RFC 4514, `openssl x509 -nameopt RFC2253` and GnuTLS print it, for
///   example `CN=client,O=Example,C=GB`. Attribute types are the usual short
///   names, compared without regard to case (`CN`, `C`, `L`, `ST`, `O`,
///   `OU`, `DC`, `STREET`, `UID`, `emailAddress`; unknown types by dotted
///   OID); values are compared exactly; a `,`, `+`, `=`, `\` or `"` inside
///   a value is written with a backslash before it; spaces around
///   separators are ignored. The whole DN must match: `CN=client` does not
///   match `CN=client,O=Example`. The reverse order (as the certificate
///   encodes it and `openssl -nameopt compat` prints it, `C=GB, O=Example,
///   CN=client`) is accepted too. [`Authz::peer_identity`] prints a
///   certificate's DN in this form.
/// * `DNS:name` (a subjectAltName DNS entry, without regard to case),
/// * `IP:address` (a subjectAltName IP entry, IPv4 or IPv6),
/// * `email:address` (a subjectAltName e-mail entry).
///
/// A client is let in if any entry matches its certificate; otherwise the
/// handshake fails with "access denied" on both ends, naming the client's
/// identity on the server.
///
/// ```
/// use transit_channel::tls::Authz;
///
/// let authz = Authz::new(["CN=client,O=Example", "DNS:worker-1.example", "IP:10.0.0.7"])?;
/// assert_eq!(authz.len(), 3);
/// assert!(Authz::new(["nonsense"]).is_err());
/// # Ok::<(), transit_channel::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authz {
    entries: Vec<Identity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    /// (type, value) pairs in the order written.
    Dn(Vec<(String, String)>),
    Dns(String),
    Ip(IpAddr),
    Email(String),
}

impl Authz {
    /// An allow-list from identity strings (see the type documentation).
    /// An entry that is neither a DN nor a `DNS:`/`IP:`/`email:` name is an
    /// [`Error::Address`] quoting it.
    pub fn new<I, S>(identities: I) -> Result<Authz>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries = identities
            .into_iter()
            .map(|s| parse_identity(s.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Authz { entries })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the list is empty (nobody is let in).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The subject DN of a DER certificate in the normal form the list uses
    /// (`CN=client,O=Example`), or a message saying why it cannot be read.
    pub fn peer_identity(cert_der: &[u8]) -> std::result::Result<String, String> {
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| format!("cannot parse the certificate: {e}"))?;
        Ok(format_dn(&cert_dn(&cert)))
    }

    /// Whether the certificate `cert_der` is allowed; `Err` carries a
    /// message naming the identity that was refused.
    pub(crate) fn check(&self, cert_der: &[u8]) -> std::result::Result<(), String> {
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| format!("cannot parse the client certificate for authz: {e}"))?;
        let dn = cert_dn(&cert);
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            sans.extend(ext.value.general_names.iter().cloned());
        }
        let allowed = self.entries.iter().any(|entry| match entry {
            Identity::Dn(want) => dn_matches(want, &dn),
            Identity::Dns(want) => sans
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(want))),
            Identity::Ip(want) => sans.iter().any(|n| match n {
                GeneralName::IPAddress(bytes) => ip_from_bytes(bytes) == Some(*want),
                _ => false,
            }),
            Identity::Email(want) => sans
                .iter()
                .any(|n| matches!(n, GeneralName::RFC822Name(e) if e == want)),
        });
        if allowed {
            return Ok(());
        }
        let mut who = format!("\"{}\"", format_dn(&dn));
        let names: Vec<String> = sans.iter().filter_map(describe_san).collect();
        if !names.is_empty() {
            who.push_str(&format!(" (subjectAltName {})", names.join(", ")));
        }
        Err(format!(
            "the client's identity {who} is not in the authz allow-list ({} entr{})",
            self.entries.len(),
            if self.entries.len() == 1 { "y" } else { "ies" }
        ))
    }
}

impl fmt::Display for Authz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match e {
                Identity::Dn(pairs) => f.write_str(&format_dn(pairs))?,
                Identity::Dns(d) => write!(f, "DNS:{d}")?,
                Identity::Ip(ip) => write!(f, "IP:{ip}")?,
                Identity::Email(m) => write!(f, "email:{m}")?,
            }
        }
        Ok(())
    }
}

fn bad_identity(input: &str, why: &str) -> Error {
    Error::Address {
        input: input.to_owned(),
        expected: format!(
            "a TLS client identity: a subject DN such as CN=client,O=Example, or DNS:name, IP:address or email:address ({why})"
        ),
    }
}

fn parse_identity(input: &str) -> Result<Identity> {
    let s = input.trim();
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("dns:") {
        let name = rest.trim();
        if name.is_empty() {
            return Err(bad_identity(input, "empty DNS name"));
        }
        return Ok(Identity::Dns(name.to_owned()));
    }
    if lower.starts_with("ip:") {
        let addr = s[3..].trim().trim_start_matches('[').trim_end_matches(']');
        return addr
            .parse()
            .map(Identity::Ip)
            .map_err(|_| bad_identity(input, "not an IP address"));
    }
    if lower.starts_with("email:") {
        let mail = s[6..].trim();
        if mail.is_empty() {
            return Err(bad_identity(input, "empty e-mail address"));
        }
        return Ok(Identity::Email(mail.to_owned()));
    }
    let pairs = parse_dn(s).ok_or_else(|| bad_identity(input, "not a DN"))?;
    Ok(Identity::Dn(pairs))
}

/// Split a DN string into (type, value) pairs; `None` if malformed.
fn parse_dn(s: &str) -> Option<Vec<(String, String)>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                cur.push(chars.next()?);
            }
            ',' | '+' | ';' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut pairs = Vec::new();
    for part in parts {
        let (ty, value) = split_unescaped_eq(&part)?;
        let ty = canonical_type(ty.trim());
        if ty.is_empty() {
            return None;
        }
        pairs.push((ty, unescape(value.trim())));
    }
    Some(pairs)
}

fn split_unescaped_eq(s: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '=' if !escaped => return Some((&s[..i], &s[i + 1..])),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '+' | '=' | '\\' | '"' | ';' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The canonical spelling of an attribute type.
fn canonical_type(ty: &str) -> String {
    const KNOWN: &[&str] = &["CN", "C", "L", "ST", "O", "OU", "DC", "STREET", "UID"];
    if let Some(k) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(ty)) {
        return (*k).to_owned();
    }
    match ty.to_ascii_lowercase().as_str() {
        "e" | "email" | "emailaddress" => "emailAddress".to_owned(),
        "s" => "ST".to_owned(),
        "commonname" => "CN".to_owned(),
        "organizationname" => "O".to_owned(),
        "organizationalunitname" => "OU".to_owned(),
        "countryname" => "C".to_owned(),
        "localityname" => "L".to_owned(),
        "stateorprovincename" => "ST".to_owned(),
        "domaincomponent" => "DC".to_owned(),
        "userid" => "UID".to_owned(),
        _ => ty.to_owned(),
    }
}

/// The subject DN of `cert` as (type, value) pairs, most specific first.
fn cert_dn(cert: &X509Certificate<'_>) -> Vec<(String, String)> {
    let registry = x509_parser::objects::oid_registry();
    let mut pairs = Vec::new();
    for rdn in cert
        .subject()
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        for attr in rdn.iter() {
            let oid = attr.attr_type();
            let ty = match x509_parser::objects::oid2abbrev(oid, registry) {
                Ok(name) => canonical_type(name),
                Err(_) => oid.to_id_string(),
            };
            let value = match attr.as_str() {
                Ok(v) => v.to_owned(),
                Err(_) => {
                    let hex: String = attr.as_slice().iter().map(|b| format!("{b:02x}")).collect();
                    format!("#{hex}")
                }
            };
            pairs.push((ty, value));
        }
    }
    pairs
}

fn format_dn(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(t, v)| format!("{t}={}", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn pair_eq(a: &(String, String), b: &(String, String)) -> bool {
    a.0.eq_ignore_ascii_case(&b.0) && a.1 == b.1
}

fn dn_matches(want: &[(String, String)], dn: &[(String, String)]) -> bool {
    want.len() == dn.len()
        && (want.iter().zip(dn).all(|(a, b)| pair_eq(a, b))
            || want.iter().zip(dn.iter().rev()).all(|(a, b)| pair_eq(a, b)))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn describe_san(n: &GeneralName<'_>) -> Option<String> {
    match n {
        GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
        GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| format!("IP:{ip}")),
        GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
        _ => None,
    }
}

/// A client verifier that runs the CA checks, then the allow-list; it keeps
/// the reason of a denial so the server's error can name the identity.
#[derive(Debug)]
pub(crate) struct AuthzVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    authz: Authz,
    denied: Mutex<Option<String>>,
}

impl AuthzVerifier {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>, authz: Authz) -> AuthzVerifier {
        AuthzVerifier {
            inner,
            authz,
            denied: Mutex::new(None),
        }
    }

    /// Why the last client was denied, if it was.
    pub(crate) fn denial(&self) -> Option<String> {
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for AuthzVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match self.authz.check(end_entity) {
            Ok(()) => Ok(verified),
            Err(why) => {
                *self.denied.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_entries_normalise_type_case_spaces_and_escapes() {
        let a = Authz::new(["cn = client , o=Ex\\,ample"]).unwrap();
        assert_eq!(a.to_string(), "CN=client,O=Ex\\,ample");
    }

    #[test]
    fn dn_matches_either_order_but_only_whole() {
        let dn = vec![
            ("CN".to_owned(), "client".to_owned()),
            ("O".to_owned(), "Example".to_owned()),
        ];
        let want = parse_dn("O=Example, CN=client").unwrap();
        assert!(dn_matches(&want, &dn));
        let part = parse_dn("CN=client").unwrap();
        assert!(!dn_matches(&part, &dn));
    }

    #[test]
    fn san_entries_parse() {
        let a = Authz::new(["DNS:Host.Example", "IP:[::1]", "email:a@b"]).unwrap();
        assert_eq!(a.to_string(), "DNS:host.example; IP:::1; email:a@b");
        assert!(Authz::new(["IP:not-an-ip"]).is_err());
        assert!(Authz::new(["just words"]).is_err());
    }
}

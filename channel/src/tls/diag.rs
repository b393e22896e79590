//! Turning rustls errors into sentences that say which check failed.

use rustls::{AlertDescription, CertRevocationListError, CertificateError, Error as TlsError};

use super::creds::Endpoint;

/// Describe `err`, seen by `local` (our endpoint). `denial` is the authz
/// verifier's reason when it refused the client.
pub(crate) fn describe(err: &TlsError, local: Endpoint, denial: Option<&str>) -> String {
    let peer = local.peer();
    match err {
        TlsError::InvalidCertificate(e) => certificate(e, peer, denial),
        TlsError::NoCertificatesPresented => match local {
            Endpoint::Server => {
                "the client presented no certificate, but this server requires one \
                 (mutual TLS: give the client client-cert.pem and client-key.pem)"
                    .to_owned()
            }
            Endpoint::Client => "the server presented no certificate".to_owned(),
        },
        TlsError::AlertReceived(alert) => received_alert(*alert, peer),
        TlsError::InvalidCertRevocationList(e) => {
            format!(
                "the certificate revocation list (ca-crl.pem) is unusable: {}",
                crl(e)
            )
        }
        TlsError::PeerIncompatible(e) => {
            format!("the {peer} is incompatible (no common TLS version, cipher suite or key exchange): {e:?}")
        }
        TlsError::PeerMisbehaved(e) => format!("the {peer} broke the TLS protocol: {e:?}"),
        TlsError::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => format!(
            "the {peer} does not speak TLS (what it sent is not a TLS record): \
             TLS on one side only? give --tls-creds to both ends or neither"
        ),
        TlsError::InvalidMessage(e) => format!("the {peer} sent an invalid TLS message: {e:?}"),
        TlsError::DecryptError => {
            format!("a TLS record from the {peer} failed to decrypt (corrupted or forged data)")
        }
        other => format!("TLS error: {other}"),
    }
}

fn certificate(e: &CertificateError, peer: Endpoint, denial: Option<&str>) -> String {
    use CertificateError as C;
    match e {
        C::UnknownIssuer => format!(
            "the {peer}'s certificate is not signed by a CA we trust (ca-cert.pem): unknown issuer"
        ),
        C::Expired => format!("the {peer}'s certificate has expired"),
        C::ExpiredContext { time, not_after } => format!(
            "the {peer}'s certificate has expired (valid until {} s after the epoch, now is {})",
            not_after.as_secs(),
            time.as_secs()
        ),
        C::NotValidYet => format!("the {peer}'s certificate is not valid yet"),
        C::NotValidYetContext { time, not_before } => format!(
            "the {peer}'s certificate is not valid yet (valid from {} s after the epoch, now is {})",
            not_before.as_secs(),
            time.as_secs()
        ),
        C::Revoked => format!(
            "the {peer}'s certificate has been revoked (it is listed in ca-crl.pem)"
        ),
        C::NotValidForName => format!(
            "the {peer}'s certificate does not match the host name we connected to"
        ),
        C::NotValidForNameContext { expected, presented } => format!(
            "the {peer}'s certificate does not match the host name \"{}\" (it names {})",
            server_name(expected),
            if presented.is_empty() {
                "nothing in its subjectAltName".to_owned()
            } else {
                presented
                    .iter()
                    .map(|p| presented_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        C::ApplicationVerificationFailure => denial.map_or_else(
            || format!("the {peer}'s identity is not in the authz allow-list"),
            str::to_owned,
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "the {peer}'s certificate is not allowed for TLS {peer} use (extended key usage)"
        ),
        C::BadEncoding => format!("the {peer}'s certificate is not valid DER"),
        C::UnknownRevocationStatus => format!(
            "the revocation status of the {peer}'s certificate is unknown (ca-crl.pem)"
        ),
        other => format!("the {peer}'s certificate was refused: {other}"),
    }
}

fn server_name(name: &rustls_pki_types::ServerName<'_>) -> String {
    match name {
        rustls_pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
        rustls_pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// rustls prints presented names as `DnsName("x")` / `IpAddress(x)`.
fn presented_name(p: &str) -> String {
    if let Some(inner) = p
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
    {
        return format!("DNS:{inner}");
    }
    if let Some(inner) = p
        .strip_prefix("IpAddress(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return match inner.parse::<std::net::IpAddr>() {
            Ok(ip) => format!("IP:{ip}"),
            Err(_) => format!("IP:{inner}"),
        };
    }
    p.to_owned()
}

fn received_alert(alert: AlertDescription, peer: Endpoint) -> String {
    use AlertDescription as A;
    let why = match alert {
        A::BadCertificate => {
            "it is not a valid certificate (bad certificate; a host name mismatch looks like this)"
        }
        A::CertificateExpired => "it has expired or is not valid yet",
        A::UnknownCA => "it is not signed by a CA the peer trusts (unknown CA)",
        A::CertificateRevoked => "it has been revoked",
        A::AccessDenied => "our identity is not in its authz allow-list (access denied)",
        A::CertificateRequired => {
            "it requires a client certificate and we have none (client-cert.pem and client-key.pem)"
        }
        A::CertificateUnknown | A::UnsupportedCertificate => "it could not accept our certificate",
        A::HandshakeFailure => {
            return format!(
                "the {peer} refused the handshake: no common TLS version or cipher suite"
            )
        }
        A::ProtocolVersion => {
            return format!("the {peer} refused the handshake: no common TLS protocol version")
        }
        A::DecryptError => {
            return format!("the {peer} could not verify our handshake (decrypt error)")
        }
        other => return format!("the {peer} ended the TLS session with alert {other:?}"),
    };
    format!("the {peer} refused our certificate: {why}")
}

/// Why a revocation list (`ca-crl.pem`) cannot be used.
pub(crate) fn crl(e: &CertRevocationListError) -> String {
    use CertRevocationListError as C;
    match e {
        C::ParseError => "not a valid X.509 CRL (its DER does not parse)".to_owned(),
        C::UnsupportedCrlVersion => "not an X.509 v2 CRL (only v2 is supported)".to_owned(),
        C::BadSignature => "its signature does not verify against its issuer".to_owned(),
        C::IssuerInvalidForCrl => {
            "its issuer may not sign CRLs (the CA lacks the cRLSign key usage)".to_owned()
        }
        C::UnsupportedCriticalExtension => "it has an unsupported critical extension".to_owned(),
        C::UnsupportedDeltaCrl => "delta CRLs are not supported".to_owned(),
        C::UnsupportedIndirectCrl => "indirect CRLs are not supported".to_owned(),
        C::InvalidCrlNumber => "its CRL number is invalid".to_owned(),
        C::InvalidRevokedCertSerialNumber => {
            "a revoked certificate's serial number is invalid".to_owned()
        }
        C::UnsupportedRevocationReason => "a revocation reason is not supported".to_owned(),
        C::Other(_) => "not a valid X.509 CRL".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A rustls error met while loading credentials, as a sentence.
pub(crate) fn describe_load(e: &TlsError) -> String {
    match e {
        TlsError::InvalidCertificate(CertificateError::BadEncoding) => "not valid DER".to_owned(),
        TlsError::InvalidCertificate(c) => format!("{c}"),
        TlsError::InvalidCertRevocationList(c) => crl(c),
        other => other.to_string(),
    }
}

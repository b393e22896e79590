//! TLS over any channel: [`TlsChannel`] drives rustls 0.23 sans-I/O over a
//! `Box<dyn Channel>` (socket, command pipes, websocket, ...), blocking or
//! not, with x509 credentials from a directory in QEMU's layout
//! ([`TlsCreds`]), mutual TLS, a host-name check, an allow-list of peer
//! identities ([`Authz`]) and a clean close_notify ending ([`Channel::bye`](crate::Channel::bye)).
//!
//! # Credentials ([`TlsCreds`])
//!
//! A directory as QEMU's `tls-creds-x509` object reads it:
//!
//! | file | needed by |
//! |---|---|
//! | `ca-cert.pem` | both ends: the CA(s) that sign the peer's certificate |
//! | `ca-crl.pem` | optional, both ends: revoked certificates |
//! | `server-cert.pem` + `server-key.pem` | the server (the cert file may hold a chain) |
//! | `client-cert.pem` + `client-key.pem` | the client (optional: without them the client has no certificate, and a verifying server refuses it) |
//!
//! Peer verification is on by default: the server *requires* a client
//! certificate signed by the CA (mutual TLS), the client requires the
//! server's certificate to be signed by the CA and to name the host it
//! dialled (a DNS name or an IP address in the certificate's
//! subjectAltName; the common name is not looked at, as in every modern TLS
//! stack). Expired, not-yet-valid and revoked certificates are refused at
//! both ends.
//!
//! # Errors
//!
//! A refused handshake is an [`Error::Protocol`](crate::Error::Protocol)
//! whose message names the channel, the peer and the check that failed, in
//! words: "the server's certificate has expired", "the client's certificate
//! is not signed by a CA we trust (ca-cert.pem)", "the server's certificate
//! does not match the host name ...", "the client presented no certificate,
//! but this server requires one", "the client's identity ... is not in the
//! authz allow-list", "the ... certificate has been revoked (ca-crl.pem)".
//! The other end learns the reason from the TLS alert ("the server refused
//! our certificate: it has expired or is not yet valid", ...). With TLS 1.3
//! a client learns that the *server* refused its certificate only after its
//! own handshake finished, so that error may surface on the client's first
//! read or write instead of in the handshake.
//!
//! Missing or unreadable credential files are an
//! [`Error::Os`](crate::Error::Os) naming the file.
//!
//! # Termination
//!
//! [`Channel::bye`](crate::Channel::bye) sends close_notify and flushes it. A peer that closes the
//! connection without close_notify makes a read fail with an
//! [`Error::Protocol`](crate::Error::Protocol) saying the stream may have
//! been truncated, unless the read passes
//! [`ReadFlags::RELAXED_EOF`](crate::ReadFlags::RELAXED_EOF), the channel
//! was made relaxed ([`TlsChannel::set_relaxed_eof`]) or this side shut the
//! channel down for reading. A peer that stops in the middle of a TLS record
//! is always an error.
//!
//! # Speed
//!
//! Records are batched: a `writev` hands up to [`WRITE_BATCH`] bytes of
//! plaintext to rustls, which seals them into 16 KiB records, and all of
//! them leave in one vectored write of the inner channel; reads pull up to
//! [`READ_BUFFER`] bytes of ciphertext per call of the inner channel. AES-GCM
//! suites come first (AES-128 before AES-256) when the CPU has AES
//! instructions, ChaCha20-Poly1305 first when it does not. Each channel is
//! its own session, so parallel channels encrypt in parallel.
//!
//! # Limits
//!
//! * X.509 only (no PSK, no anonymous credentials).
//! * A non-blocking `writev` that answers `WouldBlock` may already have
//!   taken (and encrypted) the data: call it again with the same bytes, as
//!   [`crate::io::write_all`] does (the rule of OpenSSL's `SSL_write` and
//!   GnuTLS' `gnutls_record_send`).
//! * No file descriptor passing, zero-copy or `MSG_PEEK` through TLS.
//!
//! # Example
//!
//! ```
//! use transit_channel::tls::{generate::TestPki, TlsChannel};
//! use transit_channel::{io, Channel, SocketChannel};
//!
//! // Credentials made in memory (the same as loading two directories with
//! // TlsCreds::from_dir(dir, Endpoint::Client / Endpoint::Server)).
//! let pki = TestPki::new()?;
//! let (client_creds, server_creds) = pki.loopback_creds()?;
//!
//! let (a, b) = SocketChannel::pair()?;
//! let server = std::thread::spawn(move || -> transit_channel::Result<Vec<u8>> {
//!     let mut tls = TlsChannel::server(Box::new(b), server_creds, None)?;
//!     tls.handshake_blocking()?;
//!     let mut buf = vec![0u8; 5];
//!     io::read_all(&mut tls, &mut buf)?;
//!     // The client said bye: the next read is a clean end of file.
//!     assert!(!io::read_all_eof(&mut tls, &mut [0u8; 1])?);
//!     Ok(buf)
//! });
//!
//! let mut tls = TlsChannel::client(Box::new(a), client_creds, "localhost")?;
//! tls.handshake_blocking()?;
//! io::write_all(&mut tls, b"hello")?;
//! tls.bye()?;
//! assert_eq!(server.join().expect("server thread")?, b"hello");
//! # Ok::<(), transit_channel::Error>(())
//! ```

mod authz;
mod channel;
mod creds;
mod diag;
#[cfg(feature = "testing")]
pub mod generate;
mod handshake;
mod record;
#[cfg(feature = "tokio")]
pub mod tokio;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use authz::Authz;
pub use channel::TlsChannel;
pub use creds::{Endpoint, LoadOptions, PemSource, TlsCreds};
pub use handshake::TlsHandshake;

/// Plaintext bytes one `writev` hands to rustls at most (1 MiB): that many
/// bytes of records leave in one vectored write of the inner channel.
pub const WRITE_BATCH: usize = 1 << 20;

/// Ciphertext bytes one read of the inner channel asks for at most (1 MiB).
pub const READ_BUFFER: usize = 1 << 20;

/// True if the CPU has AES and carry-less multiply instructions, so AES-GCM
/// beats ChaCha20-Poly1305.
fn has_hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The crypto provider transit uses: ring, with the cipher suites ordered
/// for speed on this CPU (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 with
/// AES instructions; ChaCha20-Poly1305 first without).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let aes = has_hardware_aes();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_rank(suite.suite(), aes));
    Arc::new(provider)
}

/// Sort key of a cipher suite: TLS 1.3 before TLS 1.2, then by speed.
fn suite_rank(suite: rustls::CipherSuite, aes: bool) -> (u8, u8) {
    use rustls::CipherSuite as S;
    let tls12 = u8::from(!matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS13_AES_256_GCM_SHA384
            | S::TLS13_CHACHA20_POLY1305_SHA256
    ));
    let name = format!("{suite:?}");
    let speed = if name.contains("AES_128_GCM") {
        0
    } else if name.contains("AES_256_GCM") {
        1
    } else {
        2
    };
    let speed = match (aes, speed) {
        (true, s) => s,
        (false, 2) => 0,
        (false, s) => s + 1,
    };
    (tls12, speed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_first_with_hardware_aes() {
        let provider = crypto_provider();
        let names: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        if has_hardware_aes() {
            assert_eq!(names[0], "TLS13_AES_128_GCM_SHA256");
            assert_eq!(names[1], "TLS13_AES_256_GCM_SHA384");
            assert_eq!(names[2], "TLS13_CHACHA20_POLY1305_SHA256");
        } else {
            assert_eq!(names[0], "TLS13_CHACHA20_POLY1305_SHA256");
        }
        assert!(names[3].starts_with("TLS_ECDHE"), "{names:?}");
    }
}

//! [`TlsChannel`]: rustls over any inner channel, driven sans-I/O.
//!
//! Reads pull up to [`READ_BUFFER`] bytes of ciphertext from the inner
//! channel into our own buffer and feed rustls from memory; writes hand up
//! to [`WRITE_BATCH`] bytes of plaintext to rustls and push the sealed
//! records out in as few vectored writes as the inner channel allows.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, Connection, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName};

use super::authz::{Authz, AuthzVerifier};
use super::creds::{Endpoint, TlsCreds};
use super::diag;
use super::record::RecordTracker;
use super::{READ_BUFFER, WRITE_BATCH};
use crate::address::SocketAddress;
use crate::channel::{
    Channel, Condition, Features, FlushOutcome, ReadFlags, Readiness, Shutdown, ShutdownChannel,
    ShutdownHandle, WatchSource, WriteFlags,
};
use crate::error::{Cause, Error, Result};
use crate::io::wait_blocking;

/// Shutdown direction bits recorded by [`TlsShutdown`].
const SHUT_READ: u8 = 1;
const SHUT_WRITE: u8 = 2;

/// A TLS session over an inner channel; see the [module
/// documentation](super).
pub struct TlsChannel {
    pub(super) inner: Box<dyn Channel>,
    conn: Connection,
    endpoint: Endpoint,
    name: String,
    /// The peer for messages: `server localhost (127.0.0.1:4444)`.
    peer: String,
    authz: Option<Arc<AuthzVerifier>>,
    /// Our readiness: the inner one plus `IN` while plaintext is buffered.
    ready: Readiness,
    inner_ready: Readiness,
    shut: Arc<AtomicU8>,
    relaxed_eof: bool,
    /// Ciphertext read from the inner channel, not yet given to rustls:
    /// `raw[raw_start..raw_end]`. Allocated on the first read.
    raw: Vec<u8>,
    raw_start: usize,
    raw_end: usize,
    tracker: RecordTracker,
    inner_eof: bool,
    /// Decrypted bytes rustls holds for us.
    plaintext: usize,
    /// close_notify arrived.
    peer_closed: bool,
    /// Plaintext a non-blocking write took although it answered
    /// `WouldBlock` (its records are still queued); the retry reports it.
    pending_accepted: usize,
    /// The session is broken: every later call fails with this.
    failed: Option<(String, Cause)>,
    pub(super) handshake_done: bool,
    bye_sent: bool,
    closed: bool,
}

impl std::fmt::Debug for TlsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsChannel")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("peer", &self.peer)
            .field("handshake_done", &self.handshake_done)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Records the shutdown direction, then shuts the inner channel down.
struct TlsShutdown {
    inner: ShutdownHandle,
    shut: Arc<AtomicU8>,
}

impl ShutdownChannel for TlsShutdown {
    fn shutdown(&self, how: Shutdown) -> Result<()> {
        let bits = match how {
            Shutdown::Read => SHUT_READ,
            Shutdown::Write => SHUT_WRITE,
            Shutdown::Both => SHUT_READ | SHUT_WRITE,
        };
        self.shut.fetch_or(bits, Ordering::AcqRel);
        self.inner.shutdown(how)
    }
}

/// `std::io::Write` over the inner channel for rustls' `write_tls`,
/// keeping the channel's own error (which names it) aside.
struct Sink<'a> {
    ch: &'a mut dyn Channel,
    err: Option<Error>,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.ch.writev(bufs, &[], WriteFlags::empty()) {
            Ok(n) => Ok(n),
            Err(Error::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => {
                self.err = Some(e);
                Err(io::Error::other("inner channel write failed"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What [`TlsChannel::drain`] found.
struct Drained {
    bytes: usize,
    /// close_notify arrived and every plaintext byte was read.
    eof: bool,
}

fn describe_addr(a: Option<SocketAddress>) -> Option<String> {
    a.map(|a| a.to_string())
}

impl TlsChannel {
    /// A client session over `inner`, checking that the server's
    /// certificate names `hostname` (a DNS name or an IP address; IPv6 may
    /// be in brackets). The handshake has not run yet: call
    /// [`handshake_blocking`](Self::handshake_blocking),
    /// [`handshake_task`](Self::handshake_task) or
    /// [`handshake_async`](Self::handshake_async) (or just start reading or
    /// writing).
    #[doc(alias = "qio_channel_tls_new_client")]
    pub fn client(
        inner: Box<dyn Channel>,
        creds: Arc<TlsCreds>,
        hostname: &str,
    ) -> Result<TlsChannel> {
        let config = creds.client_config()?;
        let host = hostname.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| Error::Address {
            input: hostname.to_owned(),
            expected: "a DNS name or an IP address for the TLS server name check".to_owned(),
        })?;
        let name = format!("tls:{}", inner.name());
        let conn = ClientConnection::new(config, server_name).map_err(|e| {
            Error::protocol(&name, format!("cannot start a TLS client session: {e}"))
        })?;
        let peer = match describe_addr(inner.peer_address()) {
            Some(addr) if addr != host => format!("{host} ({addr})"),
            _ => host.to_owned(),
        };
        Ok(TlsChannel::wrap(
            inner,
            Connection::Client(conn),
            Endpoint::Client,
            name,
            peer,
            None,
        ))
    }

    /// A server session over `inner`. With `authz`, only clients whose
    /// certificate matches an entry are let in (needs peer verification).
    #[doc(alias = "qio_channel_tls_new_server")]
    pub fn server(
        inner: Box<dyn Channel>,
        creds: Arc<TlsCreds>,
        authz: Option<&Authz>,
    ) -> Result<TlsChannel> {
        let (config, verifier) = creds.server_config_with(authz)?;
        let name = format!("tls:{}", inner.name());
        let conn = ServerConnection::new(config).map_err(|e| {
            Error::protocol(&name, format!("cannot start a TLS server session: {e}"))
        })?;
        let peer = describe_addr(inner.peer_address()).unwrap_or_else(|| inner.name().to_owned());
        Ok(TlsChannel::wrap(
            inner,
            Connection::Server(conn),
            Endpoint::Server,
            name,
            peer,
            verifier,
        ))
    }

    fn wrap(
        inner: Box<dyn Channel>,
        mut conn: Connection,
        endpoint: Endpoint,
        name: String,
        peer: String,
        authz: Option<Arc<AuthzVerifier>>,
    ) -> TlsChannel {
        // Let one writev seal WRITE_BATCH bytes before records must leave.
        conn.set_buffer_limit(Some(WRITE_BATCH + (WRITE_BATCH >> 4)));
        let inner_ready = inner.watch_source().ready;
        let ready = Readiness::new();
        ready.set(inner_ready.get());
        TlsChannel {
            inner,
            conn,
            endpoint,
            name,
            peer,
            authz,
            ready,
            inner_ready,
            shut: Arc::new(AtomicU8::new(0)),
            relaxed_eof: false,
            raw: Vec::new(),
            raw_start: 0,
            raw_end: 0,
            tracker: RecordTracker::default(),
            inner_eof: false,
            plaintext: 0,
            peer_closed: false,
            pending_accepted: 0,
            failed: None,
            handshake_done: false,
            bye_sent: false,
            closed: false,
        }
    }

    /// Which end of the session this is.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// True once the handshake has completed.
    pub fn is_handshake_complete(&self) -> bool {
        self.handshake_done
    }

    /// Treat a peer that closes without close_notify as a clean end of file
    /// on every read (QEMU's `multifd-clean-tls-termination=off`), as if
    /// each read passed [`ReadFlags::RELAXED_EOF`]. A peer that stops in the
    /// middle of a record is still an error.
    pub fn set_relaxed_eof(&mut self, relaxed: bool) {
        self.relaxed_eof = relaxed;
    }

    /// The peer's certificate (leaf), once the handshake has completed.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.conn.peer_certificates().and_then(|c| c.first())
    }

    /// The peer's subject DN in [`Authz`]'s normal form (`CN=client,O=...`),
    /// once the handshake has completed and if the peer sent a certificate.
    pub fn peer_identity(&self) -> Option<String> {
        self.peer_certificate()
            .and_then(|c| Authz::peer_identity(c.as_ref()).ok())
    }

    /// The negotiated protocol version and cipher suite, for example
    /// `("TLSv1_3", "TLS13_AES_128_GCM_SHA256")`.
    pub fn negotiated(&self) -> Option<(String, String)> {
        let version = self.conn.protocol_version()?;
        let suite = self.conn.negotiated_cipher_suite()?;
        Some((format!("{version:?}"), format!("{:?}", suite.suite())))
    }

    /// The channel below TLS.
    pub fn inner(&self) -> &dyn Channel {
        &*self.inner
    }

    fn peer_role(&self) -> &'static str {
        self.endpoint.peer().as_str()
    }

    /// Record a TLS failure in `stage` and return its error; the alert
    /// rustls queued for the peer goes out if the inner channel takes it
    /// without blocking.
    pub(super) fn tls_failed(&mut self, stage: &str, e: &rustls::Error) -> Error {
        let denial = self.authz.as_ref().and_then(|a| a.denial());
        let why = diag::describe(e, self.endpoint, denial.as_deref());
        let message = format!(
            "TLS {stage} with the {} {} failed: {why}",
            self.peer_role(),
            self.peer
        );
        self.failed = Some((message.clone(), Cause::Tls(e.clone())));
        self.send_alert_best_effort();
        self.update_ready();
        Error::layer(&self.name, message, Cause::Tls(e.clone()))
    }

    /// A protocol error about the peer that does not break the session
    /// state for later calls.
    fn peer_error(&self, what: impl std::fmt::Display) -> Error {
        Error::protocol(
            &self.name,
            format!("{} {}: {what}", self.peer_role(), self.peer),
        )
    }

    fn send_alert_best_effort(&mut self) {
        for _ in 0..4 {
            if !self.conn.wants_write() {
                return;
            }
            if self.write_tls_once().is_err() {
                return;
            }
        }
    }

    pub(super) fn check_usable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        if let Some((m, cause)) = &self.failed {
            return Err(Error::layer(&self.name, m, cause.clone()));
        }
        Ok(())
    }

    pub(super) fn update_ready(&self) {
        let mut r = self.inner_ready.get();
        let eof_due = self.inner_eof && self.raw_start == self.raw_end;
        if self.plaintext > 0 || self.peer_closed || eof_due || self.failed.is_some() {
            r |= Condition::IN;
        }
        self.ready.set(r);
    }

    /// One write of queued records to the inner channel.
    pub(super) fn write_tls_once(&mut self) -> Result<usize> {
        let mut sink = Sink {
            ch: &mut *self.inner,
            err: None,
        };
        match self.conn.write_tls(&mut sink) {
            Ok(0) if self.conn.wants_write() => Err(Error::os(
                &self.name,
                "write TLS records",
                io::Error::new(io::ErrorKind::WriteZero, "the inner channel took no bytes"),
            )),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Error::WouldBlock),
            Err(e) => Err(sink
                .err
                .take()
                .unwrap_or_else(|| Error::os(&self.name, "write TLS records", e))),
        }
    }

    /// Write every queued record, waiting for the inner channel when it
    /// would block.
    fn flush_all(&mut self) -> Result<()> {
        while self.conn.wants_write() {
            match self.write_tls_once() {
                Ok(_) => {}
                Err(Error::WouldBlock) => {
                    wait_blocking(&self.inner.watch_source(), Condition::OUT, None)?;
                }
                Err(e) => return Err(self.write_failed(e)),
            }
        }
        Ok(())
    }

    /// Write queued records until done (`true`) or the inner channel would
    /// block (`false`).
    fn flush_some(&mut self) -> Result<bool> {
        while self.conn.wants_write() {
            match self.write_tls_once() {
                Ok(_) => {}
                Err(Error::WouldBlock) => return Ok(false),
                Err(e) => return Err(self.write_failed(e)),
            }
        }
        Ok(true)
    }

    /// A write to the inner channel failed: if the peer told us why (an
    /// alert is waiting), report that instead.
    fn write_failed(&mut self, e: Error) -> Error {
        match self.poll_incoming() {
            Err(tls) if self.failed.is_some() => tls,
            _ => e,
        }
    }

    /// Read once from the inner channel into the raw buffer. `Ok(0)` is end
    /// of file.
    pub(super) fn fill_raw(&mut self) -> Result<usize> {
        if self.raw.is_empty() {
            self.raw = vec![0; READ_BUFFER];
        }
        if self.raw_start == self.raw_end {
            self.raw_start = 0;
            self.raw_end = 0;
        } else if self.raw_end == self.raw.len() {
            self.raw.copy_within(self.raw_start..self.raw_end, 0);
            self.raw_end -= self.raw_start;
            self.raw_start = 0;
        }
        let end = self.raw_end;
        let n = self.inner.readv(
            &mut [IoSliceMut::new(&mut self.raw[end..])],
            None,
            ReadFlags::empty(),
        )?;
        if n == 0 {
            self.inner_eof = true;
        } else {
            self.tracker.feed(&self.raw[end..end + n]);
            self.raw_end += n;
        }
        Ok(n)
    }

    pub(super) fn conn_ref(&self) -> &Connection {
        &self.conn
    }

    pub(super) fn inner_eof_seen(&self) -> bool {
        self.inner_eof
    }

    pub(super) fn raw_pending(&self) -> bool {
        self.raw_start < self.raw_end
    }

    /// Feed raw bytes to rustls and process them until the raw buffer is
    /// empty or rustls holds plaintext for us. True if anything moved.
    pub(super) fn pump(&mut self, stage: &str) -> Result<bool> {
        let mut progress = false;
        while self.raw_start < self.raw_end && self.plaintext == 0 {
            let mut src = &self.raw[self.raw_start..self.raw_end];
            let n = match self.conn.read_tls(&mut src) {
                Ok(n) => n,
                Err(_) => break,
            };
            self.raw_start += n;
            match self.conn.process_new_packets() {
                Ok(state) => {
                    self.plaintext = state.plaintext_bytes_to_read();
                    self.peer_closed |= state.peer_has_closed();
                }
                Err(e) => return Err(self.tls_failed(stage, &e)),
            }
            if n == 0 {
                break;
            }
            progress = true;
        }
        if self.raw_start == self.raw_end {
            self.raw_start = 0;
            self.raw_end = 0;
        }
        Ok(progress)
    }

    /// Take in whatever the peer already sent, without blocking: a peer's
    /// refusal (TLS 1.3 reports a rejected client certificate after the
    /// client finished its handshake) then fails the next write with the
    /// peer's reason instead of a broken pipe.
    fn poll_incoming(&mut self) -> Result<()> {
        if self.inner_eof || self.raw_end == self.raw.len() && !self.raw.is_empty() {
            return Ok(());
        }
        if self.plaintext > 0 || self.peer_closed {
            return Ok(());
        }
        let ready = wait_blocking(
            &self.inner.watch_source(),
            Condition::IN,
            Some(Duration::ZERO),
        )?;
        if ready.is_empty() {
            return Ok(());
        }
        if self.inner.is_blocking() && !ready.contains(Condition::IN) {
            // ERR/HUP only: the write will report it.
            return Ok(());
        }
        match self.fill_raw() {
            Ok(_) | Err(Error::WouldBlock) => {}
            Err(_) => return Ok(()),
        }
        self.pump("session")?;
        self.update_ready();
        Ok(())
    }

    /// Copy buffered plaintext into `bufs`, starting `skip` bytes in.
    fn drain(&mut self, bufs: &mut [IoSliceMut<'_>], mut skip: usize) -> Drained {
        let mut bytes = 0;
        for buf in bufs.iter_mut() {
            if skip >= buf.len() {
                skip -= buf.len();
                continue;
            }
            let mut at = skip;
            skip = 0;
            while at < buf.len() {
                if self.plaintext == 0 && !self.peer_closed {
                    return Drained { bytes, eof: false };
                }
                match self.conn.reader().read(&mut buf[at..]) {
                    Ok(0) => {
                        return Drained {
                            bytes,
                            eof: self.peer_closed,
                        }
                    }
                    Ok(n) => {
                        self.plaintext = self.plaintext.saturating_sub(n);
                        bytes += n;
                        at += n;
                    }
                    Err(_) => {
                        self.plaintext = 0;
                        return Drained { bytes, eof: false };
                    }
                }
            }
        }
        Drained { bytes, eof: false }
    }

    /// The inner channel reached end of file with nothing left to decrypt.
    fn eof_result(&mut self, flags: ReadFlags) -> Result<usize> {
        if let Some(missing) = self.tracker.missing() {
            let message = format!(
                "TLS read from the {} {} failed: the {} closed the connection in the middle of a TLS record ({missing} bytes missing): the data was truncated",
                self.peer_role(),
                self.peer,
                self.peer_role()
            );
            self.failed = Some((message.clone(), Cause::TlsTruncated));
            return Err(Error::layer(&self.name, message, Cause::TlsTruncated));
        }
        let relaxed = flags.contains(ReadFlags::RELAXED_EOF)
            || self.relaxed_eof
            || self.shut.load(Ordering::Acquire) & SHUT_READ != 0;
        if relaxed {
            return Ok(0);
        }
        Err(self.peer_error(
            "closed the connection without a TLS close_notify: the data may have been truncated \
             (a peer that finished says bye; pass RELAXED_EOF to accept this)",
        ))
    }

    /// Complete the handshake before the first byte of data.
    fn ensure_handshake(&mut self) -> Result<()> {
        if self.handshake_done {
            return Ok(());
        }
        if self.inner.is_blocking() {
            return self.handshake_blocking();
        }
        match self.handshake_step()? {
            super::handshake::Step::Done => Ok(()),
            super::handshake::Step::Want(_) => Err(Error::WouldBlock),
        }
    }

    fn read_inner(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        flags: ReadFlags,
        total: usize,
    ) -> Result<usize> {
        let mut got = 0;
        loop {
            let d = self.drain(bufs, got);
            got += d.bytes;
            if got == total || d.eof {
                return Ok(got);
            }
            if self.raw_pending() && self.pump("read")? {
                continue;
            }
            if got > 0 {
                return Ok(got);
            }
            if self.inner_eof {
                return self.eof_result(flags);
            }
            self.fill_raw()?;
        }
    }
}

impl Channel for TlsChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn features(&self) -> Features {
        self.inner.features() & Features::SHUTDOWN
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        if fds.is_some() {
            return Err(Error::unsupported(&self.name, "fd passing"));
        }
        if flags.contains(ReadFlags::MSG_PEEK) {
            return Err(Error::unsupported(&self.name, "MSG_PEEK"));
        }
        self.check_usable()?;
        if self.shut.load(Ordering::Acquire) & SHUT_READ != 0 {
            return Ok(0);
        }
        self.ensure_handshake()?;
        let total = bufs.iter().fold(0usize, |a, b| a.saturating_add(b.len()));
        if total == 0 {
            return Ok(0);
        }
        let r = self.read_inner(bufs, flags, total);
        self.update_ready();
        r
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        if !fds.is_empty() {
            return Err(Error::unsupported(&self.name, "fd passing"));
        }
        if flags.contains(WriteFlags::ZERO_COPY) {
            return Err(Error::unsupported(&self.name, "zero-copy write"));
        }
        self.check_usable()?;
        if self.bye_sent {
            return Err(Error::protocol(
                &self.name,
                "write after bye: close_notify was already sent",
            ));
        }
        if self.shut.load(Ordering::Acquire) & SHUT_WRITE != 0 {
            return Err(Error::os(
                &self.name,
                "write",
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the channel was shut down for writing",
                ),
            ));
        }
        self.ensure_handshake()?;
        let total = bufs.iter().fold(0usize, |a, b| a.saturating_add(b.len()));
        if total == 0 {
            return Ok(0);
        }
        self.poll_incoming()?;
        if self.inner.is_blocking() {
            self.flush_all()?;
            let n = self
                .conn
                .writer()
                .write_vectored(bufs)
                .map_err(|e| Error::os(&self.name, "encrypt", e))?;
            self.flush_all()?;
            return Ok(n);
        }
        if !self.flush_some()? {
            return Err(Error::WouldBlock);
        }
        if self.pending_accepted > 0 {
            let n = std::mem::take(&mut self.pending_accepted);
            return Ok(n.min(total));
        }
        let n = self
            .conn
            .writer()
            .write_vectored(bufs)
            .map_err(|e| Error::os(&self.name, "encrypt", e))?;
        if self.flush_some()? {
            Ok(n)
        } else {
            self.pending_accepted = n;
            Err(Error::WouldBlock)
        }
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.inner.set_blocking(blocking)
    }

    fn is_blocking(&self) -> bool {
        self.inner.is_blocking()
    }

    /// Close the inner channel without saying bye.
    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.inner.close()
    }

    fn watch_source(&self) -> WatchSource {
        let inner = self.inner.watch_source();
        WatchSource {
            fds: inner.fds,
            ready: self.ready.clone(),
            name: self.name.clone(),
        }
    }

    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        let inner = self.inner.shutdown_handle()?;
        Ok(Arc::new(TlsShutdown {
            inner,
            shut: Arc::clone(&self.shut),
        }))
    }

    /// Send close_notify and flush it, then say bye on the inner channel.
    /// A non-blocking channel may answer `WouldBlock`: call again.
    #[doc(alias = "qio_channel_tls_bye")]
    fn bye(&mut self) -> Result<()> {
        self.check_usable()?;
        if !self.handshake_done {
            return Err(Error::protocol(
                &self.name,
                "cannot end the TLS session with bye: the handshake has not completed",
            ));
        }
        if !self.bye_sent {
            self.conn.send_close_notify();
            self.bye_sent = true;
        }
        if self.inner.is_blocking() {
            self.flush_all()?;
        } else if !self.flush_some()? {
            return Err(Error::WouldBlock);
        }
        self.inner.bye()
    }

    fn set_delay(&mut self, enabled: bool) -> Result<()> {
        self.inner.set_delay(enabled)
    }

    fn set_cork(&mut self, enabled: bool) -> Result<()> {
        self.inner.set_cork(enabled)
    }

    fn flush(&mut self) -> Result<FlushOutcome> {
        Ok(FlushOutcome::Nothing)
    }

    fn local_address(&self) -> Option<SocketAddress> {
        self.inner.local_address()
    }

    fn peer_address(&self) -> Option<SocketAddress> {
        self.inner.peer_address()
    }
}

//! How a TLS stream ends: bye then a clean end of file; a peer that closes
//! without close_notify (an error by default, end of file with the relaxed
//! flag or option); a peer that stops in the middle of a record (always an
//! error); a read after a read shutdown.

mod tls_util;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tls_util::{run_on, run_pair, Setup};
use transit_channel::io::{read_all, read_all_eof, write_all};
use transit_channel::tls::TlsChannel;
use transit_channel::{
    Channel, Error, Features, ReadFlags, Result, Shutdown, SocketChannel, WatchSource, WriteFlags,
};

/// Result of the server reading 5 bytes and then once more.
fn server_after_five(
    setup: &Setup,
    client_ends: impl FnOnce(&mut TlsChannel) + Send + 'static,
    relaxed_option: bool,
    flags: ReadFlags,
) -> Result<usize> {
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (_, s) = run_pair(
        move |ch| {
            let mut tls = TlsChannel::client(ch, cc, "localhost").expect("client");
            tls.handshake_blocking().expect("handshake");
            write_all(&mut tls, b"hello").expect("write");
            client_ends(&mut tls);
        },
        move |ch| {
            let mut tls = TlsChannel::server(ch, sc, None).expect("server");
            tls.set_relaxed_eof(relaxed_option);
            tls.handshake_blocking().expect("handshake");
            let mut buf = [0u8; 5];
            read_all(&mut tls, &mut buf).expect("read");
            assert_eq!(&buf, b"hello");
            let mut more = [0u8; 8];
            tls.readv(&mut [IoSliceMut::new(&mut more)], None, flags)
        },
    );
    s
}

#[test]
fn bye_then_eof_is_clean() {
    let setup = Setup::new("bye");
    let r = server_after_five(&setup, |t| t.bye().expect("bye"), false, ReadFlags::empty());
    assert_eq!(r.expect("clean eof"), 0);
}

#[test]
fn write_after_bye_is_an_error() {
    let setup = Setup::new("write-after-bye");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (c, _) = run_pair(
        move |ch| {
            let mut tls = TlsChannel::client(ch, cc, "localhost").expect("client");
            tls.handshake_blocking().expect("handshake");
            tls.bye().expect("bye");
            write_all(&mut tls, b"late").map_err(|e| e.to_string())
        },
        move |ch| {
            let mut tls = TlsChannel::server(ch, sc, None).expect("server");
            tls.handshake_blocking().expect("handshake");
            read_all_eof(&mut tls, &mut [0u8; 1]).expect("eof")
        },
    );
    let msg = c.expect_err("write after bye");
    assert!(msg.contains("write after bye"), "{msg}");
}

#[test]
fn close_without_close_notify_is_a_truncation_error() {
    let setup = Setup::new("truncation");
    let r = server_after_five(
        &setup,
        |t| t.close().expect("close"),
        false,
        ReadFlags::empty(),
    );
    let err = r.expect_err("missing close_notify");
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("without a TLS close_notify"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn close_without_close_notify_is_eof_with_relaxed_flag() {
    let setup = Setup::new("relaxed-flag");
    let r = server_after_five(
        &setup,
        |t| t.close().expect("close"),
        false,
        ReadFlags::RELAXED_EOF,
    );
    assert_eq!(r.expect("relaxed eof"), 0);
}

#[test]
fn close_without_close_notify_is_eof_with_relaxed_option() {
    let setup = Setup::new("relaxed-option");
    let r = server_after_five(
        &setup,
        |t| t.close().expect("close"),
        true,
        ReadFlags::empty(),
    );
    assert_eq!(r.expect("relaxed eof"), 0);
}

#[test]
fn read_after_read_shutdown_is_eof() {
    let setup = Setup::new("shutdown-read");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    // The client's data must be written before the server shuts its read
    // side down (a write after that fails with EPIPE on the socket).
    let (written_tx, written_rx) = std::sync::mpsc::channel::<()>();
    let (_, s) = run_pair(
        move |ch| {
            let mut tls = TlsChannel::client(ch, cc, "localhost").expect("client");
            tls.handshake_blocking().expect("handshake");
            write_all(&mut tls, b"data that will not be read").expect("write");
            let _ = written_tx.send(());
            // Wait for the server to finish before closing.
            let _ = read_all_eof(&mut tls, &mut [0u8; 1]);
        },
        move |ch| {
            let mut tls = TlsChannel::server(ch, sc, None).expect("server");
            tls.handshake_blocking().expect("handshake");
            written_rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the client wrote its data");
            let handle = tls.shutdown_handle().expect("handle");
            handle.shutdown(Shutdown::Read).expect("shutdown");
            let n = tls.readv(
                &mut [IoSliceMut::new(&mut [0u8; 4])],
                None,
                ReadFlags::empty(),
            );
            tls.bye().expect("bye");
            n
        },
    );
    assert_eq!(s.expect("eof after shutdown"), 0);
}

/// A socket whose writes, once armed, pass `budget` more bytes and then
/// silently drop the rest and shut the socket down for writing: a peer
/// that dies in the middle of a record.
struct CutChannel {
    inner: SocketChannel,
    armed: Arc<AtomicBool>,
    budget: Arc<AtomicUsize>,
}

impl Channel for CutChannel {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn set_name(&mut self, name: String) {
        self.inner.set_name(name)
    }
    fn features(&self) -> Features {
        self.inner.features()
    }
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        self.inner.readv(bufs, fds, flags)
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        if !self.armed.load(Ordering::SeqCst) {
            return self.inner.writev(bufs, fds, flags);
        }
        let budget = self.budget.load(Ordering::SeqCst);
        if budget == 0 {
            return Ok(offered);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).expect("data");
        let take = first.len().min(budget);
        let n = self
            .inner
            .writev(&[IoSlice::new(&first[..take])], fds, flags)?;
        self.budget.fetch_sub(n, Ordering::SeqCst);
        if self.budget.load(Ordering::SeqCst) == 0 {
            self.inner.shutdown(Shutdown::Write)?;
        }
        Ok(n)
    }
    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.inner.set_blocking(blocking)
    }
    fn is_blocking(&self) -> bool {
        self.inner.is_blocking()
    }
    fn close(&mut self) -> Result<()> {
        self.inner.close()
    }
    fn watch_source(&self) -> WatchSource {
        self.inner.watch_source()
    }
}

fn mid_record(flags: ReadFlags) -> String {
    let setup = Setup::new("mid-record");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (a, b) = SocketChannel::pair().expect("pair");
    let armed = Arc::new(AtomicBool::new(false));
    let cut = CutChannel {
        inner: a,
        armed: armed.clone(),
        // Header and some of the body of a ~1 KiB record.
        budget: Arc::new(AtomicUsize::new(100)),
    };
    let (_, s) = run_on(
        Box::new(cut),
        Box::new(b),
        move |ch| {
            let mut tls = TlsChannel::client(ch, cc, "localhost").expect("client");
            tls.handshake_blocking().expect("handshake");
            armed.store(true, Ordering::SeqCst);
            write_all(&mut tls, &[7u8; 1000]).expect("write");
            // Stay open: the cut is the only end the server sees.
            std::thread::sleep(std::time::Duration::from_millis(300));
        },
        move |ch| {
            let mut tls = TlsChannel::server(ch, sc, None).expect("server");
            tls.handshake_blocking().expect("handshake");
            let mut buf = [0u8; 1000];
            tls.readv(&mut [IoSliceMut::new(&mut buf)], None, flags)
        },
    );
    let err = s.expect_err("a cut record must fail");
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn peer_that_stops_mid_record_is_an_error() {
    let msg = mid_record(ReadFlags::empty());
    assert!(msg.contains("in the middle of a TLS record"), "{msg}");
}

#[test]
fn peer_that_stops_mid_record_is_an_error_even_when_relaxed() {
    let msg = mid_record(ReadFlags::RELAXED_EOF);
    assert!(msg.contains("in the middle of a TLS record"), "{msg}");
}

//! Machinery shared by the sender and the receiver: first-error-wins
//! failure state, the abort handle, and channel I/O with deadlines and
//! `IOV_MAX`-sized vectored loops.

use std::io::IoSliceMut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use transit_channel::{io as chio, Channel, Condition, Shutdown, ShutdownHandle};

use crate::error::{Ctx, Error, Result, Stage};
use crate::wire::{self, Record, RECORD_HEADER_LEN};

/// Most iovecs one `readv`/`writev` call takes (Linux `IOV_MAX`).
pub(crate) const IOV_MAX: usize = 1024;

/// How long a side waits for the peer's error record after a channel
/// failed under it.
pub(crate) const REASON_WAIT: Duration = Duration::from_secs(1);

/// Lock a mutex, ignoring poisoning: every critical section in this crate
/// leaves its state consistent, and a panicking thread is reported by its
/// join.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Something waiting on a condition variable that must wake on failure.
pub(crate) trait Wake: Send + Sync {
    /// Lock the waiter's mutex and notify every waiter.
    fn wake(&self);
}

/// Failure state of one session: the first error, and the channels to
/// shut down so every blocked thread wakes.
#[derive(Default)]
pub(crate) struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<Error>>,
    pages: Mutex<Vec<ShutdownHandle>>,
    main: Mutex<Option<ShutdownHandle>>,
    wakers: Mutex<Vec<Arc<dyn Wake>>>,
}

impl Failure {
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn add_page_handle(&self, h: ShutdownHandle) {
        lock(&self.pages).push(h);
        if self.is_failed() {
            self.shutdown_pages();
        }
    }

    pub fn set_main_handle(&self, h: ShutdownHandle) {
        *lock(&self.main) = Some(h);
    }

    pub fn add_waker(&self, w: Arc<dyn Wake>) {
        lock(&self.wakers).push(w);
    }

    /// Record `e` if it is the first error (or a peer's explanation that
    /// replaces a channel error); shut down every page channel and wake
    /// every waiter. The read side of the main channel is shut down now
    /// with `wake_main`, else after [`REASON_WAIT`] so an error record the
    /// peer is sending can still be read. Returns true if `e` was kept.
    pub fn fail(&self, e: Error, wake_main: bool) -> bool {
        let first = {
            let mut g = lock(&self.first);
            // The peer's explanation beats the symptom we saw (a channel
            // that closed because the peer gave up).
            let replace = matches!(
                (&*g, &e),
                (None, _) | (Some(Error::Channel { .. }), Error::Remote { .. })
            );
            if replace {
                *g = Some(e);
            }
            replace
        };
        self.failed.store(true, Ordering::Release);
        self.shutdown_pages();
        let main = lock(&self.main).clone();
        if let Some(h) = main {
            if wake_main {
                let _ = h.shutdown(Shutdown::Read);
            } else {
                // Give the peer's error record time to arrive on the main
                // channel, then wake whoever waits on it.
                let _ = std::thread::Builder::new()
                    .name("multifd-wake".into())
                    .spawn(move || {
                        std::thread::sleep(REASON_WAIT);
                        let _ = h.shutdown(Shutdown::Read);
                    });
            }
        }
        let wakers: Vec<Arc<dyn Wake>> = lock(&self.wakers).clone();
        for w in wakers {
            w.wake();
        }
        first
    }

    fn shutdown_pages(&self) {
        for h in lock(&self.pages).iter() {
            let _ = h.shutdown(Shutdown::Both);
        }
    }

    /// Shut the main channel down completely.
    pub fn shutdown_main(&self) {
        if let Some(h) = lock(&self.main).as_ref() {
            let _ = h.shutdown(Shutdown::Both);
        }
    }

    /// Take the first error (a generic one if the failure flag was set
    /// without an error, which cannot happen through `fail`).
    pub fn take_error(&self) -> Error {
        lock(&self.first)
            .take()
            .unwrap_or_else(|| Error::Aborted("session failed".into()))
    }

    /// The stage of the first error, and whether it was a channel error
    /// (one the peer may have caused, so its reason may be on the way).
    pub fn first_stage(&self) -> Option<(Stage, bool)> {
        lock(&self.first).as_ref().map(|e| {
            (
                e.stage().unwrap_or(Stage::End),
                matches!(e, Error::Channel { .. }),
            )
        })
    }

    /// Peek at the first error's message.
    pub fn describe(&self) -> Option<(wire::ErrorCode, String)> {
        match lock(&self.first).as_ref() {
            // The peer told us; no need to echo it back.
            Some(Error::Remote { .. }) | None => None,
            Some(e) => Some((e.code(), e.to_string())),
        }
    }
}

/// Stops a running session from any thread (a signal handler's callback,
/// a timer, a UI): every channel is shut down so blocked threads wake, the
/// peer is told why when the main channel still works, and the session's
/// calls return [`Error::Aborted`].
#[derive(Clone)]
pub struct AbortHandle {
    pub(crate) failure: Arc<Failure>,
}

impl std::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortHandle")
            .field("failed", &self.failure.is_failed())
            .finish()
    }
}

impl AbortHandle {
    /// Abort the session with `reason` (ignored if it already failed).
    pub fn abort(&self, reason: &str) {
        self.failure.fail(Error::Aborted(reason.to_owned()), true);
    }

    /// True once the session failed or was aborted.
    pub fn is_aborted(&self) -> bool {
        self.failure.is_failed()
    }
}

/// A deadline from an optional timeout.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Wait until `ch` is readable or `deadline` passes (no deadline: no wait,
/// the blocking read itself waits).
pub(crate) fn wait_readable(
    ch: &(impl Channel + ?Sized),
    deadline: Option<Instant>,
    ctx: &Ctx,
    stage: Stage,
    timeout: Option<Duration>,
) -> Result<()> {
    let Some(d) = deadline else { return Ok(()) };
    let left = d.saturating_duration_since(Instant::now());
    let ready = chio::wait_blocking(&ch.watch_source(), Condition::IN, Some(left))
        .map_err(|e| ctx.io(stage, e))?;
    if ready.is_empty() {
        return Err(ctx.timeout(stage, timeout.map_or(0.0, |t| t.as_secs_f64())));
    }
    Ok(())
}

/// Read exactly `buf.len()` bytes, giving up at `deadline`. `Ok(false)` on
/// a clean end of file before the first byte.
pub(crate) fn read_exact_deadline(
    ch: &mut (impl Channel + ?Sized),
    buf: &mut [u8],
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    ctx: &Ctx,
    stage: Stage,
) -> Result<bool> {
    match deadline {
        None => chio::read_all_eof(ch, buf).map_err(|e| ctx.io(stage, e)),
        Some(d) => chio::read_all_eof_until(ch, buf, d).map_err(|e| {
            if e.is_timed_out() {
                ctx.timeout(stage, timeout.map_or(0.0, |t| t.as_secs_f64()))
            } else {
                ctx.io(stage, e)
            }
        }),
    }
}

/// Fill every buffer, at most [`IOV_MAX`] per call.
pub(crate) fn readv_all(
    ch: &mut (impl Channel + ?Sized),
    iov: &mut [IoSliceMut<'_>],
) -> transit_channel::Result<()> {
    for part in iov.chunks_mut(IOV_MAX) {
        chio::readv_all(ch, part)?;
    }
    Ok(())
}

/// Write one record on the main channel.
pub(crate) fn write_record(
    ch: &mut (impl Channel + ?Sized),
    rec: &Record,
    ctx: &Ctx,
    stage: Stage,
) -> Result<()> {
    let bytes = rec.to_bytes();
    chio::write_all(ch, &bytes).map_err(|e| ctx.io(stage, e))
}

/// Read one record from the main channel (waiting at most until
/// `deadline` when given). `Ok(None)` on a clean end of file.
pub(crate) fn read_record(
    ch: &mut (impl Channel + ?Sized),
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    ctx: &Ctx,
    stage: Stage,
) -> Result<Option<Record>> {
    let mut hdr = [0u8; RECORD_HEADER_LEN];
    // A TLS peer answers a plain one with an alert (7 bytes, then it
    // closes): say so rather than "1 of 8 bytes missing".
    let tls = |hdr: &[u8]| wire::WireError::tls_record(hdr).map(|e| ctx.proto(stage, e));
    match read_exact_deadline(ch, &mut hdr, deadline, timeout, ctx, stage) {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(e) => return Err(tls(&hdr).unwrap_or(e)),
    }
    if let Some(e) = tls(&hdr) {
        return Err(e);
    }
    let h = wire::decode_record_header(&hdr).map_err(|e| ctx.proto(stage, e))?;
    // Most records are small; a Have record (delta) may be megabytes.
    let mut small = [0u8; 8 + wire::MAX_ERROR_MESSAGE];
    let mut large = Vec::new();
    let body: &mut [u8] = if h.len as usize <= small.len() {
        &mut small[..h.len as usize]
    } else {
        large.resize(h.len as usize, 0);
        &mut large
    };
    if !read_exact_deadline(ch, body, deadline, timeout, ctx, stage)? {
        return Err(ctx.io(
            stage,
            transit_channel::Error::UnexpectedEof {
                channel: ch.name().to_owned(),
                op: "read record body",
                expected: body.len(),
                missing: body.len(),
            },
        ));
    }
    wire::decode_record_body(&h, body)
        .map(Some)
        .map_err(|e| ctx.proto(stage, e))
}

/// Best effort: tell the peer why the session failed.
pub(crate) fn send_error_record(ch: &mut (impl Channel + ?Sized), failure: &Failure) {
    if let Some((code, message)) = failure.describe() {
        let rec = Record::Error { code, message };
        let _ = chio::write_all(ch, &rec.to_bytes());
    }
}

/// The peer label of a channel for errors: its name as set by the
/// transport.
pub(crate) fn peer_of(ch: &(impl Channel + ?Sized)) -> String {
    ch.name().to_owned()
}

/// Runs of contiguous pages, `(offset, len)`, merged from page offsets in
/// packet order: each run travels as one iovec (sender and memory
/// receiver) or one `pwrite` (file receiver).
pub(crate) fn runs<'a>(offsets: &'a [u64], session: &'a wire::SessionHeader) -> Runs<'a> {
    Runs {
        offsets: offsets.iter(),
        session,
        pending: None,
    }
}

/// The iterator of [`runs`].
pub(crate) struct Runs<'a> {
    offsets: std::slice::Iter<'a, u64>,
    session: &'a wire::SessionHeader,
    pending: Option<(u64, usize)>,
}

impl Iterator for Runs<'_> {
    type Item = (u64, usize);

    fn next(&mut self) -> Option<(u64, usize)> {
        for &o in self.offsets.by_ref() {
            let len = self.session.page_len(o);
            match self.pending {
                Some((start, l)) if start + l as u64 == o => self.pending = Some((start, l + len)),
                Some(run) => {
                    self.pending = Some((o, len));
                    return Some(run);
                }
                None => self.pending = Some((o, len)),
            }
        }
        self.pending.take()
    }
}

/// Reuse the allocation of a vector for another element type of the same
/// size and alignment (an `IoSlice` of another lifetime): the vector is
/// emptied and collected in place, so no allocation happens per packet.
pub(crate) fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector was emptied"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::runs;
    use crate::wire::{Compression, Layout, SessionHeader, VERSION};

    #[test]
    fn runs_merge_contiguous_pages_and_cut_the_last_short_page() {
        // 10 pages of 4096 bytes, the last one 100 bytes.
        let s = SessionHeader {
            version: VERSION,
            uuid: [0; 16],
            page_size: 4096,
            channels: 1,
            layout: Layout::Image {
                size: 9 * 4096 + 100,
            },
            compression: Compression::None,
            verify: true,
            packet_payload: 1 << 19,
            data_bytes: 0,
        };
        let p = |i: u64| i * 4096;
        let offs = [p(0), p(1), p(2), p(5), p(7), p(8), p(9), p(3)];
        let got: Vec<_> = runs(&offs, &s).collect();
        assert_eq!(
            got,
            vec![
                (p(0), 3 * 4096),
                (p(5), 4096),
                (p(7), 2 * 4096 + 100),
                (p(3), 4096)
            ]
        );
        assert_eq!(runs(&[], &s).count(), 0);
        assert_eq!(runs(&[p(4)], &s).collect::<Vec<_>>(), vec![(p(4), 4096)]);
    }
}

//! The RDMA transport: a byte-stream [`Channel`] over a reliable-connected
//! queue pair, with credit-based flow control and zero-copy writes from
//! registered memory.
//!
//! # Use
//!
//! * [`RdmaChannel::connect`] / [`RdmaListener::listen`] +
//!   [`RdmaListener::accept`] set a connection up over rdma_cm
//!   (`rdma:HOST:PORT`, see [`parse_address`]). They need the cargo feature
//!   `rdma` and an RDMA device; without a device they fail at once with an
//!   error that says no RDMA device was found, without the feature with
//!   [`Error::Unsupported`].
//! * [`model::pair`] gives two channels connected through an in-process
//!   model of the verbs (always built): the protocol runs unchanged on it.
//! * [`RdmaChannel::register_memory`] registers memory once for the life
//!   of the returned borrow, [`Channel::register_region`] (unsafe) for the
//!   life of the channel, which is how multifd registers its image through
//!   a `Box<dyn Channel>`; [`WriteFlags::ZERO_COPY`] writes from inside a
//!   registered region go to the NIC without a copy. [`Channel::flush`]
//!   waits for them.
//!
//! The channel works blocking and non-blocking like every other; a watch
//! ([`Channel::watch_source`]) polls two eventfds that mirror whether a
//! read or a write can make progress. While a channel is watched, a small
//! progress thread services the completion channel and keeps those fds
//! current; a channel that is never watched has no thread, and its blocking
//! calls sleep on the completion channel themselves.
//!
//! # Protocol
//!
//! Each side registers one buffer arena: `ring_depth` receive slots, all
//! posted as RECVs before connecting, and `send_depth` send slots, each
//! `slot_size` bytes ([`RdmaConfig`]). Every message is one SEND into one
//! receive slot, with a 16-byte header (type, length, credits, sequence):
//!
//! * **Credits**: a side may send DATA only into a slot the peer has
//!   posted for it; it starts with the peer's `ring_depth` data credits
//!   and gets more back as the peer's reader consumes data and re-posts
//!   slots. Credits ride on every message; when the reverse direction is
//!   idle an explicit CREDIT message carries them (when half the ring is
//!   owed, or the peer has none left).
//! * **Control window**: each side posts two receive buffers beyond its
//!   data credits. CREDIT and CLOSE travel there (CREDIT may keep one
//!   unacknowledged, CLOSE may use the second), so returning credits never
//!   costs data credits; every header acknowledges the control messages
//!   received, and when the window is busy a CREDIT/CLOSE may use a data
//!   credit instead. Neither side can deadlock or livelock the other, even
//!   with a ring of one slot per direction.
//! * **Many messages in flight**: up to `send_depth` SENDs (bounded by the
//!   device's send queue) and `ring_depth` unread messages per direction,
//!   unlike QEMU's one outstanding control message.
//! * **Chunking and framing**: writes are cut into messages of at most one
//!   slot; small slices are coalesced into one message.
//! * **Zero copy**: from registered memory a SEND gathers the header from
//!   the send slot and the payload straight from the caller's region (two
//!   scatter/gather elements). We chose SEND over RDMA WRITE with immediate:
//!   credits, ordering and slot accounting stay the same for both paths, the
//!   peer needs no advertised buffer and gets no remote key to our memory,
//!   and the copy that matters (the sender's, from the image) is gone; the
//!   receiver copies out of its ring once either way unless its own
//!   destination were registered.
//! * **Ordering**: sequence numbers are checked; a gap, an unknown type, a
//!   bad length or a credit overrun is a protocol error.
//! * **Teardown**: [`Channel::bye`] (and `close`, and shutting the write
//!   side) sends CLOSE after the data; the peer reads the data and then
//!   EOF. Flushed work requests without a CLOSE first mean the peer
//!   vanished: the reader gets the data that did arrive, then an
//!   [`Error::Os`] (`ConnectionReset`) that says so.
//!
//! The byte layout is in `docs/wire-protocol.md`, "RDMA channel protocol".
//!
//! # What is proven where
//!
//! Proven on the model (the tests in `channel/tests/rdma_*.rs`, default
//! build): framing, chunking, coalescing, credit accounting and
//! exhaustion, the control window, bounded send queues, out-of-order
//! completions across queues, zero-copy gathers from registered memory,
//! clean close as EOF, a vanished peer as an error, shutdown, blocking and
//! non-blocking use and main-loop watches. Proven here with the `rdma`
//! feature on a machine without RDMA: the no-device error and the address
//! grammar. Needs hardware (not run in CI): the rdma_cm connection setup
//! (address and route resolution, connect/accept, private-data exchange),
//! real completion-channel events, memory registration limits (locked
//! memory), RNR and retry behaviour of a real NIC, disconnect events from
//! the connection manager, and throughput.
//!
//! # Example
//!
//! ```
//! use std::io::IoSlice;
//! use transit_channel::rdma::{model, RdmaConfig};
//! use transit_channel::{io, Channel, WriteFlags};
//!
//! let (mut tx, mut rx, _wire) =
//!     model::pair("demo", &model::ModelConfig::default(), &RdmaConfig::default())?;
//! let image = vec![7u8; 256 * 1024];
//! let region = tx.register_memory(&image)?;
//! tx.writev(&[IoSlice::new(&image[..100_000])], &[], WriteFlags::ZERO_COPY)?;
//! tx.flush()?;
//! let mut got = vec![0u8; 100_000];
//! io::read_all(&mut rx, &mut got)?;
//! assert!(got.iter().all(|&b| b == 7));
//! drop(region);
//! # Ok::<(), transit_channel::Error>(())
//! ```

mod engine;
#[cfg(feature = "rdma")]
mod hw;
pub mod model;
mod verbs;
mod wire;

use std::io::{self, IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::address::SocketAddress;
use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, FlushOutcome, ReadFlags,
    Readiness, Shutdown, ShutdownChannel, ShutdownHandle, WatchFds, WatchSource, WriteFlags,
};
use crate::error::{Error, Result};
use engine::Engine;

pub use engine::EngineStats as RdmaStats;
pub use wire::{HEADER_LEN, VERSION};

/// Sizes and timeouts of an RDMA channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaConfig {
    /// Receive slots posted for DATA per connection: the peer's credits
    /// (1-4096; two more are posted for the control window).
    pub ring_depth: u32,
    /// Bytes per slot, the 16-byte header included: the largest message
    /// (64-16777216). The smaller of the two sides' sizes is used.
    pub slot_size: u32,
    /// Send slots: the most SENDs in flight (1-4096; the device's send
    /// queue may lower it).
    pub send_depth: u32,
    /// Address and route resolution and connection establishment, each.
    pub connect_timeout: Duration,
    /// How long `close`, `flush` and releasing a region wait for the peer.
    pub close_timeout: Duration,
}

impl Default for RdmaConfig {
    fn default() -> RdmaConfig {
        RdmaConfig {
            ring_depth: 32,
            slot_size: 64 * 1024,
            send_depth: 32,
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl RdmaConfig {
    fn validate(&self, name: &str) -> Result<()> {
        let bad = |what: String| {
            Err(Error::protocol(
                name,
                format!("invalid RDMA configuration: {what}"),
            ))
        };
        if !(1..=4096).contains(&self.ring_depth) {
            return bad(format!("ring_depth {} is not in 1-4096", self.ring_depth));
        }
        if !(64..=16 << 20).contains(&self.slot_size) {
            return bad(format!(
                "slot_size {} is not in 64-16777216",
                self.slot_size
            ));
        }
        if !(1..=4096).contains(&self.send_depth) {
            return bad(format!("send_depth {} is not in 1-4096", self.send_depth));
        }
        Ok(())
    }
}

/// Parse `rdma:HOST:PORT` (HOST a name, an IPv4 address or a bracketed
/// IPv6 address, as for `tcp:`) into the [`SocketAddress::Inet`] that
/// rdma_cm resolves.
///
/// ```
/// use transit_channel::rdma::{format_address, parse_address};
/// use transit_channel::SocketAddress;
///
/// let a = parse_address("rdma:[fe80::1]:4444")?;
/// assert_eq!(a, SocketAddress::inet("fe80::1", 4444));
/// assert_eq!(format_address(&a), "rdma:[fe80::1]:4444");
/// assert!(parse_address("rdma:host").unwrap_err().to_string().contains("port"));
/// # Ok::<(), transit_channel::Error>(())
/// ```
pub fn parse_address(input: &str) -> Result<SocketAddress> {
    let Some(rest) = input.strip_prefix("rdma:") else {
        return Err(Error::Address {
            input: input.to_owned(),
            expected: "rdma:HOST:PORT".into(),
        });
    };
    match format!("tcp:{rest}").parse::<SocketAddress>() {
        Ok(a @ SocketAddress::Inet { .. }) => Ok(a),
        Ok(_) => Err(Error::Address {
            input: input.to_owned(),
            expected: "rdma:HOST:PORT".into(),
        }),
        Err(Error::Address { expected, .. }) => Err(Error::Address {
            input: input.to_owned(),
            expected: expected.replace("tcp:", "rdma:"),
        }),
        Err(e) => Err(e),
    }
}

/// Print an address in the `rdma:HOST:PORT` form [`parse_address`] reads
/// (other kinds of address print as themselves).
pub fn format_address(addr: &SocketAddress) -> String {
    let s = addr.to_string();
    match (addr, s.strip_prefix("tcp:")) {
        (SocketAddress::Inet { .. }, Some(rest)) => format!("rdma:{rest}"),
        _ => s,
    }
}

/// The readiness mirror used while a channel is watched.
struct Notify {
    /// Readable (count > 0) while a read can make progress.
    in_fd: OwnedFd,
    /// Writable (count < MAX - 1) while a write can make progress.
    out_fd: OwnedFd,
    /// Stops the progress thread.
    stop: OwnedFd,
    /// What the fds show now: (in, out).
    shown: Mutex<(bool, bool)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

const EVENTFD_FULL: u64 = u64::MAX - 1;

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn efd_write(fd: RawFd, v: u64) {
    // SAFETY: 8 bytes from a live u64 to an eventfd; EAGAIN is harmless.
    unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
}

fn efd_drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: 8 bytes into a live u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

impl Notify {
    fn new() -> io::Result<Notify> {
        Ok(Notify {
            in_fd: eventfd()?,
            out_fd: eventfd()?,
            stop: eventfd()?,
            shown: Mutex::new((false, true)),
            thread: Mutex::new(None),
        })
    }

    fn show(&self, readable: bool, writable: bool) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if shown.0 != readable {
            if readable {
                efd_write(self.in_fd.as_raw_fd(), 1);
            } else {
                efd_drain(self.in_fd.as_raw_fd());
            }
            shown.0 = readable;
        }
        if shown.1 != writable {
            if writable {
                efd_drain(self.out_fd.as_raw_fd());
            } else {
                efd_write(self.out_fd.as_raw_fd(), EVENTFD_FULL);
            }
            shown.1 = writable;
        }
    }
}

/// State shared by a channel, its shutdown handles, its registered regions
/// and its progress thread.
struct Shared {
    engine: Mutex<Engine>,
    comp_fd: RawFd,
    /// Kicks a thread sleeping in the channel (shutdown).
    wake: OwnedFd,
    shut_read: AtomicBool,
    shut_write: AtomicBool,
    notify: OnceLock<Notify>,
    close_timeout: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After an operation: keep the readiness mirror current (and the
    /// completion channel armed for the progress thread) when watched.
    fn finish(&self, eng: &mut Engine) {
        if let Some(n) = self.notify.get() {
            if !eng.is_disconnected() {
                let mut rounds = 0;
                while eng.prepare_sleep() && rounds < 64 {
                    rounds += 1;
                }
            }
            self.show(n, eng);
        }
    }

    fn show(&self, n: &Notify, eng: &Engine) {
        let r = eng.readable() || self.shut_read.load(Ordering::Acquire) || eng.is_disconnected();
        let w = eng.writable() || self.shut_write.load(Ordering::Acquire) || eng.is_disconnected();
        n.show(r, w);
    }

    /// Sleep until `cond` may be possible, the wake fd is kicked or
    /// `timeout` passes. The caller armed the completion queue.
    fn sleep(&self, name: &str, cond: Condition, timeout: Option<Duration>) -> Result<()> {
        let mut pfds = [
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.comp_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut timeout = timeout;
        if let Some(n) = self.notify.get() {
            if cond.contains(Condition::IN) {
                pfds[1].fd = n.in_fd.as_raw_fd();
            } else if cond.contains(Condition::OUT) {
                pfds[1] = libc::pollfd {
                    fd: n.out_fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
            } else {
                // Waiting for completions the progress thread consumes:
                // look again in short steps.
                pfds[1].fd = -1;
                let step = Duration::from_millis(5);
                timeout = Some(timeout.map_or(step, |t| t.min(step)));
            }
        }
        let ms = timeout.map_or(-1, |t| {
            libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: `pfds` is a valid array of two pollfds; poll writes only
        // their `revents`.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::os(name, "poll the completion channel", e));
            }
        }
        if pfds[0].revents != 0 {
            efd_drain(self.wake.as_raw_fd());
        }
        Ok(())
    }

    /// Drive the engine until `pred` holds or `deadline` passes.
    fn wait_until(
        &self,
        deadline: Instant,
        what: &str,
        mut pred: impl FnMut(&mut Engine) -> Result<bool>,
    ) -> Result<()> {
        loop {
            let mut eng = self.lock();
            eng.service();
            let done = pred(&mut eng);
            if !matches!(done, Ok(false)) || eng.is_disconnected() {
                self.finish(&mut eng);
                return done.map(|_| ());
            }
            let now = Instant::now();
            if now >= deadline {
                let name = eng.name().to_owned();
                self.finish(&mut eng);
                return Err(Error::os(
                    &name,
                    what,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the RDMA peer did not respond within {:?}",
                            self.close_timeout
                        ),
                    ),
                ));
            }
            if eng.prepare_sleep() {
                continue;
            }
            let name = eng.name().to_owned();
            self.finish(&mut eng);
            drop(eng);
            self.sleep(&name, Condition::empty(), Some(deadline - now))?;
        }
    }

    fn kick(&self) {
        efd_write(self.wake.as_raw_fd(), 1);
        if let Some(n) = self.notify.get() {
            // Reads see EOF / writes fail now: show it to watchers.
            let mut shown = n.shown.lock().unwrap_or_else(|e| e.into_inner());
            if self.shut_read.load(Ordering::Acquire) && !shown.0 {
                efd_write(n.in_fd.as_raw_fd(), 1);
                shown.0 = true;
            }
            if self.shut_write.load(Ordering::Acquire) && !shown.1 {
                efd_drain(n.out_fd.as_raw_fd());
                shown.1 = true;
            }
        }
    }

    fn stop_progress(&self) {
        if let Some(n) = self.notify.get() {
            efd_write(n.stop.as_raw_fd(), 1);
            let t = n.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(t) = t {
                let _ = t.join();
            }
        }
    }
}

/// The progress thread of a watched channel.
fn progress_loop(shared: Arc<Shared>, stop: RawFd) {
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: shared.comp_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: a valid array of two pollfds; the fds stay open while the
        // thread runs (the channel joins it before releasing them).
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfds[0].revents != 0 {
            return;
        }
        let mut eng = shared.lock();
        if eng.is_disconnected() {
            return;
        }
        eng.service();
        shared.finish(&mut eng);
    }
}

/// An RDMA connection as a [`Channel`]. See the [module documentation](self).
pub struct RdmaChannel {
    shared: Arc<Shared>,
    name: String,
    blocking: bool,
    closed: bool,
    local: Option<SocketAddress>,
    peer: Option<SocketAddress>,
    /// Regions registered with [`Channel::register_region`]: released by
    /// `close`, after the connection is torn down.
    owned_regions: Vec<u64>,
}

impl std::fmt::Debug for RdmaChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaChannel")
            .field("name", &self.name)
            .field("blocking", &self.blocking)
            .field("closed", &self.closed)
            .finish()
    }
}

impl RdmaChannel {
    fn from_engine(
        engine: Engine,
        cfg: &RdmaConfig,
        local: Option<SocketAddress>,
        peer: Option<SocketAddress>,
    ) -> Result<RdmaChannel> {
        let name = engine.name().to_owned();
        let wake = eventfd().map_err(|e| Error::os(&name, "create the wake eventfd", e))?;
        let comp_fd = engine.completion_fd();
        Ok(RdmaChannel {
            shared: Arc::new(Shared {
                engine: Mutex::new(engine),
                comp_fd,
                wake,
                shut_read: AtomicBool::new(false),
                shut_write: AtomicBool::new(false),
                notify: OnceLock::new(),
                close_timeout: cfg.close_timeout,
            }),
            name,
            blocking: true,
            closed: false,
            local,
            peer,
            owned_regions: Vec::new(),
        })
    }

    /// Connect to `addr` (`rdma:HOST:PORT` parsed by [`parse_address`], or
    /// any [`SocketAddress::Inet`]) with the default [`RdmaConfig`].
    ///
    /// Blocks for address and route resolution and connection setup
    /// (each bounded by `connect_timeout`): run it on a worker thread to
    /// keep a main loop responsive. Fails at once if no RDMA device exists.
    pub fn connect(addr: &SocketAddress) -> Result<RdmaChannel> {
        RdmaChannel::connect_with(addr, &RdmaConfig::default())
    }

    /// [`connect`](Self::connect) with a configuration.
    pub fn connect_with(addr: &SocketAddress, cfg: &RdmaConfig) -> Result<RdmaChannel> {
        #[cfg(feature = "rdma")]
        {
            hw::connect(addr, cfg)
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = cfg;
            Err(not_built(addr))
        }
    }

    /// Register `mem` with this channel's device so that
    /// [`WriteFlags::ZERO_COPY`] writes of bytes inside it are sent without
    /// a copy (other writes, and zero-copy writes from elsewhere, copy as
    /// usual). Register a large region once, not every buffer: registration
    /// pins memory and is slow.
    ///
    /// The region borrows `mem`, so it cannot change or go away while
    /// registered. Dropping the region waits (up to `close_timeout`) for the
    /// SENDs that still gather from it; if they do not complete, the
    /// connection is torn down so the device no longer reads the memory.
    pub fn register_memory<'a>(&self, mem: &'a [u8]) -> Result<RegisteredRegion<'a>> {
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        let mut eng = self.shared.lock();
        // SAFETY: the returned region borrows `mem` for 'a, and its Drop
        // calls `unregister` after the SENDs using it completed or the
        // connection was torn down.
        let id = unsafe { eng.register(mem) }?;
        Ok(RegisteredRegion {
            shared: Arc::clone(&self.shared),
            id,
            len: mem.len(),
            _mem: PhantomData,
        })
    }

    /// Protocol counters (messages, zero-copy sends, credit stalls, ...).
    pub fn stats(&self) -> RdmaStats {
        self.shared.lock().stats()
    }

    /// Run `f` on the engine; in blocking mode sleep and retry while it
    /// would block.
    fn op<T>(
        &mut self,
        cond: Condition,
        mut f: impl FnMut(&mut Engine, &Shared) -> Result<T>,
    ) -> Result<T> {
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        loop {
            let mut eng = self.shared.lock();
            eng.service();
            if self.shared.shut_write.load(Ordering::Acquire) && !eng.close_sent() {
                let _ = eng.try_close();
            }
            let r = f(&mut eng, &self.shared);
            if !matches!(r, Err(Error::WouldBlock)) || !self.blocking {
                self.shared.finish(&mut eng);
                return r;
            }
            if eng.prepare_sleep() {
                continue;
            }
            self.shared.finish(&mut eng);
            drop(eng);
            self.shared.sleep(&self.name, cond, None)?;
        }
    }

    fn ensure_watched(&self) -> io::Result<&Notify> {
        if let Some(n) = self.shared.notify.get() {
            return Ok(n);
        }
        let n = Notify::new()?;
        let stop = n.stop.as_raw_fd();
        if self.shared.notify.set(n).is_ok() {
            {
                let mut eng = self.shared.lock();
                self.shared.finish(&mut eng);
            }
            let shared = Arc::clone(&self.shared);
            let t = std::thread::Builder::new()
                .name(format!("{}-progress", self.name))
                .spawn(move || progress_loop(shared, stop))?;
            if let Some(n) = self.shared.notify.get() {
                *n.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            }
        }
        self.shared
            .notify
            .get()
            .ok_or_else(|| io::Error::other("readiness mirror missing"))
    }
}

#[cfg(not(feature = "rdma"))]
fn not_built(addr: &SocketAddress) -> Error {
    Error::unsupported(
        &format_address(addr),
        "RDMA (transit was built without the `rdma` cargo feature)",
    )
}

impl Channel for RdmaChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.shared.lock().set_name(name.clone());
        self.name = name;
    }

    fn features(&self) -> Features {
        Features::SHUTDOWN | Features::WRITE_ZERO_COPY
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        check_read_request(self, fds.is_some(), flags)?;
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        self.op(Condition::IN, |eng, shared| {
            eng.read(bufs, shared.shut_read.load(Ordering::Acquire))
        })
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        check_write_request(self, !fds.is_empty(), flags)?;
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        let zc = flags.contains(WriteFlags::ZERO_COPY);
        self.op(Condition::OUT, |eng, shared| {
            if shared.shut_write.load(Ordering::Acquire) {
                return Err(Error::os(
                    eng.name(),
                    "write",
                    io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the channel was shut down for writing",
                    ),
                ));
            }
            eng.write(bufs, zc)
        })
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.blocking = blocking;
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        self.blocking
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let deadline = Instant::now() + self.shared.close_timeout;
        // End the stream, then let every posted SEND complete, so the peer
        // gets all data and then EOF.
        let ended = self.shared.wait_until(deadline, "close", |eng| {
            if eng.failure().is_some() {
                return Ok(true);
            }
            Ok(eng.try_close()? && eng.outstanding() == 0)
        });
        self.shared.stop_progress();
        {
            let mut eng = self.shared.lock();
            let peer_gone = eng.failure().is_some();
            eng.disconnect();
            // Torn down: no SEND gathers from the channel's regions any more.
            for id in self.owned_regions.drain(..) {
                eng.unregister(id);
            }
            if let Some(n) = self.shared.notify.get() {
                self.shared.show(n, &eng);
            }
            // A peer that is gone has nothing left to hear.
            if peer_gone {
                return Ok(());
            }
        }
        ended
    }

    fn watch_source(&self) -> WatchSource {
        if self.closed {
            return WatchSource {
                fds: WatchFds::None,
                ready: Readiness::always(Condition::HUP | Condition::NVAL),
                name: self.name.clone(),
            };
        }
        match self.ensure_watched() {
            Ok(n) => WatchSource {
                fds: WatchFds::Pair {
                    read: n.in_fd.as_raw_fd(),
                    write: n.out_fd.as_raw_fd(),
                },
                ready: Readiness::new(),
                name: self.name.clone(),
            },
            // No fds for the mirror: report ready so callers try the I/O
            // (which works, or reports the error).
            Err(_) => WatchSource {
                fds: WatchFds::None,
                ready: Readiness::always(Condition::IN | Condition::OUT | Condition::ERR),
                name: self.name.clone(),
            },
        }
    }

    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        Ok(Arc::new(RdmaShutdown {
            shared: Arc::downgrade(&self.shared),
        }))
    }

    fn bye(&mut self) -> Result<()> {
        self.op(Condition::OUT, |eng, _| match eng.try_close()? {
            true => Ok(()),
            false => Err(Error::WouldBlock),
        })
    }

    fn flush(&mut self) -> Result<FlushOutcome> {
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        let deadline = Instant::now() + self.shared.close_timeout;
        self.shared.wait_until(deadline, "flush", |eng| {
            // SENDs that completed count even if the connection failed
            // since; SENDs that were flushed or failed do not.
            if eng.failed_sends() > 0 {
                return Err(eng.error("flush"));
            }
            if eng.outstanding() == 0 {
                return Ok(true);
            }
            if eng.failure().is_some() {
                return Err(eng.error("flush"));
            }
            Ok(false)
        })?;
        Ok(self.shared.lock().take_flush_outcome())
    }

    /// Register `region` for the channel's life, like
    /// [`register_memory`](RdmaChannel::register_memory) but without a
    /// borrow: released when the channel is closed (or dropped), after the
    /// connection is torn down so the device no longer reads it.
    unsafe fn register_region(&mut self, region: &[u8]) -> Result<()> {
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        let mut eng = self.shared.lock();
        // SAFETY: the caller keeps the memory allocated until this channel
        // is closed or dropped, and changes it only while no zero-copy
        // write from it is pending; `close` (which `drop` runs) tears the
        // connection down, so no SEND gathers from it any more, before it
        // unregisters the region.
        let id = unsafe { eng.register(region) }?;
        self.owned_regions.push(id);
        Ok(())
    }

    fn local_address(&self) -> Option<SocketAddress> {
        self.local.clone()
    }

    fn peer_address(&self) -> Option<SocketAddress> {
        self.peer.clone()
    }
}

impl Drop for RdmaChannel {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The [`ShutdownChannel`] of an RDMA channel: flags plus a kick, never
/// blocking on the engine.
struct RdmaShutdown {
    shared: Weak<Shared>,
}

impl ShutdownChannel for RdmaShutdown {
    fn shutdown(&self, how: Shutdown) -> Result<()> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            shared.shut_read.store(true, Ordering::Release);
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            shared.shut_write.store(true, Ordering::Release);
        }
        shared.kick();
        // Send CLOSE now if nobody holds the engine; otherwise the holder
        // does it on its way out of the current call.
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            if let Ok(mut eng) = shared.engine.try_lock() {
                if !eng.is_disconnected() && !eng.close_sent() {
                    let _ = eng.try_close();
                }
            }
        }
        Ok(())
    }
}

/// Memory registered with an RDMA channel's device for zero-copy writes;
/// see [`RdmaChannel::register_memory`]. Deregistered on drop.
pub struct RegisteredRegion<'a> {
    shared: Arc<Shared>,
    id: u64,
    len: usize,
    _mem: PhantomData<&'a [u8]>,
}

impl RegisteredRegion<'_> {
    /// Bytes registered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for RegisteredRegion<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredRegion")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for RegisteredRegion<'_> {
    fn drop(&mut self) {
        let id = self.id;
        let deadline = Instant::now() + self.shared.close_timeout;
        let _ = self
            .shared
            .wait_until(deadline, "release a registered region", |eng| {
                Ok(eng.region_inflight(id) == 0)
            });
        // Tears the connection down first if SENDs still use the memory.
        self.shared.lock().unregister(id);
    }
}

/// Accepts RDMA connections (rdma_cm listen). Needs the `rdma` feature.
pub struct RdmaListener {
    name: String,
    cfg: RdmaConfig,
    #[cfg(feature = "rdma")]
    inner: hw::Listener,
}

impl std::fmt::Debug for RdmaListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaListener")
            .field("name", &self.name)
            .finish()
    }
}

impl RdmaListener {
    /// Listen on `addr` (port 0 picks a free port) with the default
    /// [`RdmaConfig`]. Fails at once if no RDMA device exists.
    pub fn listen(addr: &SocketAddress) -> Result<RdmaListener> {
        RdmaListener::listen_with(addr, &RdmaConfig::default())
    }

    /// [`listen`](Self::listen) with the configuration every accepted
    /// channel uses.
    pub fn listen_with(addr: &SocketAddress, cfg: &RdmaConfig) -> Result<RdmaListener> {
        let name = format_address(addr);
        cfg.validate(&name)?;
        #[cfg(feature = "rdma")]
        {
            let inner = hw::Listener::listen(&name, addr)?;
            Ok(RdmaListener {
                name,
                cfg: cfg.clone(),
                inner,
            })
        }
        #[cfg(not(feature = "rdma"))]
        {
            Err(not_built(addr))
        }
    }

    /// The listener's name (`rdma:HOST:PORT` as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (with the real port after port 0).
    pub fn local_address(&self) -> Option<SocketAddress> {
        #[cfg(feature = "rdma")]
        {
            self.inner.local_address()
        }
        #[cfg(not(feature = "rdma"))]
        {
            None
        }
    }

    /// Wait for the next connection and set it up (blocking).
    pub fn accept(&mut self) -> Result<RdmaChannel> {
        #[cfg(feature = "rdma")]
        {
            self.inner.accept(&self.name, &self.cfg)
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = &self.cfg;
            Err(Error::unsupported(
                &self.name,
                "RDMA (built without the `rdma` cargo feature)",
            ))
        }
    }
}

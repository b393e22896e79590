//! Helpers shared by the multifd integration tests: channel pairs, bounded
//! waits, a corrupting channel wrapper and a hand-driven "raw" sender.

#![allow(dead_code)]

use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use transit_channel::{
    io as chio, Channel, Features, FlushOutcome, ReadFlags, Result as ChResult, ShutdownHandle,
    SocketAddress, SocketChannel, WatchSource, WriteFlags,
};
use transit_multifd::image::{Content, ImageSpec};
use transit_multifd::wire::{self, InitPacket, Layout, Record, SessionHeader};
use transit_multifd::Compression;

/// Boxed channels.
pub type Chans = Vec<Box<dyn Channel>>;

/// `n` connected UNIX socket pairs: (sender ends, receiver ends).
pub fn unix_pairs(n: usize) -> (Chans, Chans) {
    let (mut a, mut b): (Chans, Chans) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (x, y) = SocketChannel::pair().expect("socketpair");
        a.push(Box::new(x));
        b.push(Box::new(y));
    }
    (a, b)
}

/// `n` TCP connections over 127.0.0.1 (port 0): (client ends, server ends).
pub fn tcp_pairs(n: usize) -> (Chans, Chans) {
    let addr: SocketAddress = "tcp:127.0.0.1:0".parse().expect("address");
    let mut listener = SocketChannel::listen_sync(&addr, 64).expect("listen");
    let bound = listener.local_address().expect("bound address");
    let (mut a, mut b): (Chans, Chans) = (Vec::new(), Vec::new());
    for _ in 0..n {
        a.push(Box::new(
            SocketChannel::connect_sync(&bound).expect("connect"),
        ));
        b.push(Box::new(listener.accept().expect("accept")));
    }
    (a, b)
}

/// Run `f` on a thread and wait at most `secs` for it; a test that would
/// hang fails instead.
pub fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s (or the worker panicked)"),
    }
}

/// An image spec with 4 KiB pages.
pub fn spec(size: u64, zero_ratio: f64, seed: u64) -> ImageSpec {
    ImageSpec {
        size,
        page_size: 4096,
        zero_ratio,
        seed,
        content: Content::Random,
    }
}

/// A channel wrapper that flips one bit of the byte at written stream
/// position `corrupt_at`, and/or sleeps before every read, and/or lets
/// `read_left` bytes be read and then does what `then` says, and/or ends
/// its transport late: `bye` sleeps `late_bye`, then writes a few bytes
/// (as a websocket close frame or a TLS close_notify would).
pub struct Tamper {
    pub inner: Box<dyn Channel>,
    pub corrupt_at: Option<u64>,
    pub pos: u64,
    pub read_delay: Option<Duration>,
    pub read_left: Option<usize>,
    pub then: Option<Then>,
    pub late_bye: Option<Duration>,
}

/// What a [`Tamper`] with `read_left` does once those bytes were read.
pub enum Then {
    /// Wait until the gate opens, then fail as a reset connection
    /// (`reached` says it got there).
    Cut {
        gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
        reached: std::sync::Arc<std::sync::atomic::AtomicBool>,
    },
    /// Pause once this long, then go on.
    Pause(Option<Duration>),
}

impl Tamper {
    fn plain(inner: Box<dyn Channel>) -> Tamper {
        Tamper {
            inner,
            corrupt_at: None,
            pos: 0,
            read_delay: None,
            read_left: None,
            then: None,
            late_bye: None,
        }
    }

    /// Flip a bit at `at`.
    pub fn corrupt(inner: Box<dyn Channel>, at: u64) -> Box<dyn Channel> {
        Box::new(Tamper {
            corrupt_at: Some(at),
            ..Tamper::plain(inner)
        })
    }

    /// Sleep `d` before every read.
    pub fn slow(inner: Box<dyn Channel>, d: Duration) -> Box<dyn Channel> {
        Box::new(Tamper {
            read_delay: Some(d),
            ..Tamper::plain(inner)
        })
    }

    /// `bye` sleeps `d`, then writes 8 bytes.
    pub fn late_bye(inner: Box<dyn Channel>, d: Duration) -> Box<dyn Channel> {
        Box::new(Tamper {
            late_bye: Some(d),
            ..Tamper::plain(inner)
        })
    }

    /// Let `left` bytes be read, then do what `then` says.
    pub fn reads_until(inner: Box<dyn Channel>, left: usize, then: Then) -> Box<dyn Channel> {
        Box::new(Tamper {
            read_left: Some(left),
            then: Some(then),
            ..Tamper::plain(inner)
        })
    }
}

impl Channel for Tamper {
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
    ) -> ChResult<usize> {
        if let Some(d) = self.read_delay {
            std::thread::sleep(d);
        }
        let Some(left) = self.read_left else {
            return self.inner.readv(bufs, fds, flags);
        };
        if left == 0 {
            match &mut self.then {
                Some(Then::Cut { gate, reached }) => {
                    reached.store(true, std::sync::atomic::Ordering::SeqCst);
                    let (m, cv) = &**gate;
                    let mut open = m.lock().unwrap();
                    while !*open {
                        open = cv.wait(open).unwrap();
                    }
                    return Err(transit_channel::Error::os(
                        self.inner.name(),
                        "readv",
                        std::io::Error::from_raw_os_error(libc::ECONNRESET),
                    ));
                }
                Some(Then::Pause(p)) => {
                    if let Some(d) = p.take() {
                        std::thread::sleep(d);
                    }
                }
                None => {}
            }
            return self.inner.readv(bufs, fds, flags);
        }
        // Read at most `left` bytes (through a bounce buffer, so the
        // caller's iovecs are filled in order).
        let want: usize = bufs.iter().map(|b| b.len()).sum::<usize>().min(left);
        let mut tmp = vec![0u8; want];
        let n = self
            .inner
            .readv(&mut [IoSliceMut::new(&mut tmp)], fds, flags)?;
        let mut at = 0;
        for b in bufs.iter_mut() {
            if at == n {
                break;
            }
            let k = b.len().min(n - at);
            b[..k].copy_from_slice(&tmp[at..at + k]);
            at += k;
        }
        self.read_left = Some(left - n);
        Ok(n)
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> ChResult<usize> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let at = self.corrupt_at.unwrap_or(u64::MAX);
        if at < self.pos || at >= self.pos + len {
            let n = self.inner.writev(bufs, fds, flags)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let mut v: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        v[(at - self.pos) as usize] ^= 0x40;
        let n = self.inner.writev(&[IoSlice::new(&v)], fds, flags)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn set_blocking(&mut self, blocking: bool) -> ChResult<()> {
        self.inner.set_blocking(blocking)
    }
    fn is_blocking(&self) -> bool {
        self.inner.is_blocking()
    }
    fn close(&mut self) -> ChResult<()> {
        self.inner.close()
    }
    fn watch_source(&self) -> WatchSource {
        self.inner.watch_source()
    }
    fn shutdown_handle(&self) -> ChResult<ShutdownHandle> {
        self.inner.shutdown_handle()
    }
    fn seek(&mut self, pos: SeekFrom) -> ChResult<u64> {
        self.inner.seek(pos)
    }
    fn flush(&mut self) -> ChResult<FlushOutcome> {
        self.inner.flush()
    }
    fn bye(&mut self) -> ChResult<()> {
        if let Some(d) = self.late_bye {
            std::thread::sleep(d);
            chio::write_all(&mut *self.inner, b"goodbye!")?;
        }
        self.inner.bye()
    }
}

/// A session header for crafted streams.
pub fn header(channels: u32, size: u64) -> SessionHeader {
    SessionHeader {
        version: wire::VERSION,
        uuid: [0x11; 16],
        page_size: 4096,
        channels,
        layout: Layout::Image { size },
        compression: Compression::None,
        verify: true,
        packet_payload: 512 * 1024,
        data_bytes: size.next_multiple_of(4096),
    }
}

/// The init packet of channel `id` for `h`.
pub fn init(h: &SessionHeader, id: u32) -> [u8; wire::INIT_PACKET_LEN] {
    InitPacket {
        version: wire::VERSION,
        uuid: h.uuid,
        channel_id: id,
        rejoin: false,
    }
    .encode()
}

/// A hand-driven sender: writes the handshake on raw channels and reads
/// the accept record, so a test can then write crafted packets.
pub fn raw_handshake(main: &mut dyn Channel, pages: &mut [Box<dyn Channel>], h: &SessionHeader) {
    chio::write_all(main, &h.encode()).expect("write header");
    for (i, ch) in pages.iter_mut().enumerate() {
        chio::write_all(ch, &init(h, i as u32)).expect("write init");
    }
    let rec = read_record(main).expect("accept record");
    assert!(
        matches!(rec, Record::Accept { channels, .. } if channels == h.channels),
        "{rec:?}"
    );
}

/// Read one record from a raw channel (`None` at end of file or error).
pub fn read_record(ch: &mut dyn Channel) -> Option<Record> {
    let mut hdr = [0u8; wire::RECORD_HEADER_LEN];
    chio::read_all(ch, &mut hdr).ok()?;
    let h = wire::decode_record_header(&hdr).ok()?;
    let mut body = vec![0u8; h.len as usize];
    chio::read_all(ch, &mut body).ok()?;
    wire::decode_record_body(&h, &body).ok()
}

use transit_multifd::{
    Destination, Payload, Receiver, RecvConfig, RecvOutcome, Result as MfResult, SendConfig,
    Sender, SourceImage, Stats,
};

/// Run a receiver on `chans` (accepted in the given order) on a thread.
pub fn spawn_receiver(
    chans: Chans,
    config: RecvConfig,
    dest: Destination,
) -> std::thread::JoinHandle<MfResult<RecvOutcome>> {
    run_receiver(Receiver::new(config, dest), chans)
}

/// Run `rx` on a thread: accept `chans` (in their order), then the
/// session.
pub fn run_receiver(
    mut rx: Receiver,
    chans: Chans,
) -> std::thread::JoinHandle<MfResult<RecvOutcome>> {
    std::thread::spawn(move || {
        for ch in chans {
            rx.accept_channel(ch)?;
        }
        rx.run()
    })
}

/// Send `source` with one full pass over `send` (main first) to a receiver
/// on `recv` (accepted in reverse order: page channels before main).
pub fn image_roundtrip(
    send: Chans,
    mut recv: Chans,
    source: SourceImage,
    config: SendConfig,
) -> (MfResult<Stats>, MfResult<RecvOutcome>) {
    recv.reverse();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: true },
    );
    let mut send = send;
    let main = send.remove(0);
    let sent = (|| {
        let mut tx = Sender::new(config, Payload::Image(source), main, send)?;
        tx.send_all()?;
        tx.finish()
    })();
    let got = rx.join().expect("receiver thread");
    (sent, got)
}

use transit_multifd::wire::{PacketFlags, PacketHeader, StreamEntry};

/// A SYNC or END packet.
pub fn control(flags: PacketFlags, packet_num: u64, epoch: u32) -> Vec<u8> {
    let mut b = vec![0u8; wire::PACKET_HEADER_LEN];
    PacketHeader {
        flags,
        packet_num,
        normal: 0,
        zero: 0,
        payload_len: 0,
        epoch,
    }
    .encode_into(&mut b);
    b
}

/// An image data packet: `normal` pages (filled with `fill`), then
/// `zero` pages, for a session with `page_size` pages (full pages only).
pub fn image_packet(
    packet_num: u64,
    epoch: u32,
    normal: &[u64],
    zero: &[u64],
    page_size: u32,
    fill: u8,
) -> Vec<u8> {
    let payload = normal.len() * page_size as usize;
    let mut b = vec![0u8; wire::PACKET_HEADER_LEN];
    PacketHeader {
        flags: PacketFlags::DATA,
        packet_num,
        normal: normal.len() as u32,
        zero: zero.len() as u32,
        payload_len: payload as u32,
        epoch,
    }
    .encode_into(&mut b);
    for o in normal.iter().chain(zero) {
        b.extend_from_slice(&o.to_be_bytes());
    }
    b.resize(b.len() + payload, fill);
    b
}

/// A stream chunk of `len` bytes at `offset`: zeros without payload when
/// `zero`, else `len` bytes of `fill`.
pub fn stream_chunk(
    packet_num: u64,
    epoch: u32,
    offset: u64,
    len: u32,
    zero: bool,
    fill: u8,
) -> Vec<u8> {
    let payload = if zero { 0 } else { len };
    let mut b = vec![0u8; wire::PACKET_HEADER_LEN + wire::STREAM_ENTRY_LEN];
    PacketHeader {
        flags: PacketFlags::DATA,
        packet_num,
        normal: u32::from(!zero),
        zero: u32::from(zero),
        payload_len: payload,
        epoch,
    }
    .encode_into(&mut b);
    StreamEntry { offset, len, zero }.encode_into(&mut b[wire::PACKET_HEADER_LEN..]);
    b.resize(b.len() + payload as usize, fill);
    b
}

/// A stream session header for crafted streams (`chunk`-byte chunks).
pub fn stream_header(channels: u32, chunk: u32) -> SessionHeader {
    SessionHeader {
        layout: Layout::Stream,
        packet_payload: chunk,
        ..header(channels, 0)
    }
}

/// A writer destination the test reads back after the receiver is done.
#[derive(Clone, Default)]
pub struct SharedSink(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

/// A receiver of a stream on `recv` (default config) into a
/// [`SharedSink`], and that sink to read back.
#[allow(dead_code)]
pub fn spawn_stream_receiver(
    recv: Chans,
) -> (std::thread::JoinHandle<MfResult<RecvOutcome>>, SharedSink) {
    let sink = SharedSink::default();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Writer(Box::new(sink.clone())),
    );
    (rx, sink)
}

/// `len` bytes of a fixed pattern with no runs (a stream's test content).
#[allow(dead_code)]
pub fn pattern(len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

impl std::io::Write for SharedSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reconnect function for the lost-channel tests: it makes a socket
/// pair, offers one end to the receiver's `rejoin` handle (on a thread, as
/// a listener would) and returns the other, counting them in `made`. The
/// n-th new connection breaks after `plan[n]` bytes (`None`: it does not).
pub fn socketpair_reconnect(
    rejoin: transit_multifd::Rejoin,
    window: Duration,
    plan: Vec<Option<u64>>,
    made: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> transit_multifd::Reconnect {
    let plan = std::sync::Arc::new(std::sync::Mutex::new(plan));
    transit_multifd::Reconnect::new(
        window,
        std::sync::Arc::new(move |_id: u32| {
            let (a, b) = SocketChannel::pair()?;
            let r = rejoin.clone();
            std::thread::spawn(move || {
                let _ = r.offer(Box::new(b));
            });
            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = {
                let mut p = plan.lock().unwrap();
                if p.is_empty() {
                    None
                } else {
                    p.remove(0)
                }
            };
            Ok(match next {
                None => Box::new(a) as Box<dyn Channel>,
                Some(n) => Box::new(transit_channel::fault::FailAfter::new(Box::new(a), n)),
            })
        }),
    )
}

/// A receiver configuration that takes rejoins for up to 10 s.
pub fn rejoining_config() -> RecvConfig {
    RecvConfig {
        reconnect_wait: Some(Duration::from_secs(10)),
        ..RecvConfig::default()
    }
}

//! Loopback benchmark (feature `bench`): both ends of a multifd session in
//! one process, over every transport available, for each channel count;
//! one [`Row`] of figures per run. `transit bench` is this module and a
//! table (or one JSON object) of its rows.
//!
//! Transports ([`Transport`]): `tcp` (127.0.0.1), `unix` (a socket in the
//! temp dir), `buffer` (page channels are in-process
//! [`MemPipe`]s: one memcpy, no kernel; the main channel, which carries a
//! few records, is a UNIX socket pair) and `null` (page channels discard
//! what they are given and a minimal peer on the main channel accepts the
//! session and echoes the sender's totals as the verdict: the sender's
//! framework alone: batching, zero-page scan, digest, packet building);
//! `tls`, `ws` and `wss` (loopback TCP with the layers of
//! `transit_endpoint::connect`; TLS credentials generated in process by
//! `TestPki::loopback_creds`, no files; every handshake of both ends in
//! parallel); and `exec` (`exec:` running a `transit` executable as
//! `transit recv stdio:`, the N+1 runs joined as `transit_endpoint::join`
//! describes: the one row whose receiver is another process; CPU% counts
//! the sender only).
//!
//! `file` is tcp between two files: the image is written once (not timed)
//! to a file in tmpfs (`/dev/shm`), sent from that file (mapped, holes
//! found with `SEEK_DATA`) and received into a new file there, which is
//! removed after each run.
//!
//! The image is generated once, by [`Bench::prepare`], and is not timed.
//! `seconds` is the window a user waits for, once the connections are
//! open: the handshake, the receiver's destination set-up, the data, the
//! verification and putting the output in place, until the verdict; CPU%
//! is this process's CPU time (both ends) over the same window, 100% = one
//! core.
//!
//! Limits: the image is never freed (every run's sender borrows it as
//! static memory), so a program prepares one bench, not many; the `tls`
//! and `wss` rows need the throw-away credentials of transit-channel's
//! `testing` feature, which this feature turns on; `exec` runs
//! [`BenchConfig::exec_program`] (by default this process's executable,
//! which must then be `transit`).
//!
//! ```no_run
//! use transit_transfer::bench::{Bench, BenchConfig, Transport};
//!
//! let config = BenchConfig {
//!     size: 64 << 20,
//!     zero_ratio: 0.5,
//!     channels: vec![1, 4],
//!     transports: vec![Transport::Tcp, Transport::Null],
//!     packet_size: 512 << 10,
//!     exec_program: None,
//! };
//! let bench = Bench::prepare(config)?;
//! let rows = bench.run(|row| eprintln!("{} x{}: {} s", row.transport, row.channels, row.seconds))?;
//! assert_eq!(rows.len(), 4);
//! # Ok::<(), transit_transfer::bench::BenchError>(())
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use transit_channel::tls::generate::TestPki;
use transit_channel::{Channel, MemPipe, NullChannel, SocketAddress, SocketChannel};
use transit_endpoint::connect::{self as transport, OpenError};
use transit_endpoint::{Endpoint, TlsOpts, TransportOpts};
use transit_multifd::wire;
use transit_multifd::{
    Content, Destination, ImageSpec, Payload, Receiver, RecvConfig, SendConfig, Sender,
    SourceImage, Stats,
};

use crate::report::CpuClock;

/// The names of every transport, in table order (as [`Transport::ALL`]).
pub const TRANSPORTS: [&str; 9] = [
    "tcp", "file", "unix", "buffer", "null", "tls", "ws", "wss", "exec",
];

/// What the channels of a run are (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Loopback TCP.
    Tcp,
    /// Loopback TCP from a file into a file.
    File,
    /// A UNIX socket.
    Unix,
    /// In-process pipes.
    Buffer,
    /// Page channels that discard; a minimal peer.
    Null,
    /// TCP and TLS.
    Tls,
    /// TCP and a websocket.
    Ws,
    /// TCP, TLS and a websocket.
    Wss,
    /// `exec:`: `transit recv stdio:` in other processes.
    Exec,
}

impl Transport {
    /// Every transport, in table order.
    pub const ALL: [Transport; 9] = [
        Transport::Tcp,
        Transport::File,
        Transport::Unix,
        Transport::Buffer,
        Transport::Null,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
        Transport::Exec,
    ];

    /// Its name (one of [`TRANSPORTS`]).
    pub fn name(self) -> &'static str {
        TRANSPORTS[self as usize]
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A name that is not one of [`TRANSPORTS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0}")]
pub struct UnknownTransport(pub String);

impl std::str::FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Transport, UnknownTransport> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTransport(s.to_owned()))
    }
}

/// What to run: every transport with every channel count, in order.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Image size, bytes (more than 0).
    pub size: u64,
    /// Share of zero pages in the image, 0 to 1.
    pub zero_ratio: f64,
    /// Page channel counts (1 to [`wire::MAX_CHANNELS`] each).
    pub channels: Vec<u32>,
    /// Transports, in the order to run them.
    pub transports: Vec<Transport>,
    /// Payload bytes per page packet (4 KiB to
    /// [`wire::MAX_PACKET_PAYLOAD`]; rounded down to whole 4 KiB).
    pub packet_size: u64,
    /// The `transit` executable the `exec` rows run as `recv stdio:`
    /// (`None`: this process's executable).
    pub exec_program: Option<PathBuf>,
}

/// A [`BenchConfig`] the bench cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The image size is 0.
    #[error("the image size must be more than 0")]
    EmptyImage,
    /// No channel count.
    #[error("no channel count")]
    NoChannels,
    /// A channel count out of range.
    #[error("{0} channels: expected 1 to {max}", max = wire::MAX_CHANNELS)]
    Channels(u32),
    /// A packet size out of range.
    #[error("a packet size of {0} bytes: expected 4 KiB to {max} bytes", max = wire::MAX_PACKET_PAYLOAD)]
    PacketSize(u64),
}

impl BenchConfig {
    /// Check the sizes and counts (first the image size, then the channel
    /// counts, then the packet size).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.size == 0 {
            return Err(ConfigError::EmptyImage);
        }
        if self.channels.is_empty() {
            return Err(ConfigError::NoChannels);
        }
        if let Some(&n) = self
            .channels
            .iter()
            .find(|&&n| n == 0 || n > wire::MAX_CHANNELS)
        {
            return Err(ConfigError::Channels(n));
        }
        self.packet_payload().map(|_| ())
    }

    /// The payload bytes of a page packet: the packet size in whole 4 KiB.
    pub fn packet_payload(&self) -> Result<u32, ConfigError> {
        match self.packet_size {
            p if (4096..=u64::from(wire::MAX_PACKET_PAYLOAD)).contains(&p) => {
                Ok((p as u32 / 4096) * 4096)
            }
            p => Err(ConfigError::PacketSize(p)),
        }
    }
}

/// One run's figures (one table row, one JSON object of `rows`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Transport.
    pub transport: Transport,
    /// Page channels.
    pub channels: u32,
    /// Image size.
    pub image_bytes: u64,
    /// Payload bytes moved (non-zero pages).
    pub data_bytes: u64,
    /// Zero pages.
    pub zero_pages: u64,
    /// Seconds of the window a user waits for, once connected (handshake,
    /// destination set-up, data, verdict, output in place).
    pub seconds: f64,
    /// `image_bytes / seconds`, bytes per second (was `image_rate_gbps`).
    pub image_bytes_per_second: f64,
    /// `data_bytes / seconds`, bytes per second (was `data_rate_gbps`).
    pub data_bytes_per_second: f64,
    /// CPU time / wall time x 100.
    pub cpu_percent: f64,
}

/// Why the bench stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image could not be generated.
    #[error("generate the image: {0}")]
    Generate(#[source] io::Error),
    /// The `file` rows' source file could not be written.
    #[error("write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A run failed.
    #[error("bench {transport} with {channels} channels: {source}")]
    Run {
        /// Its transport.
        transport: Transport,
        /// Its page channels.
        channels: u32,
        /// Why.
        source: RunError,
    },
}

/// Why one run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A system call (`what` says which, or on what).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A channel's listen, connect or accept, or the credentials.
    #[error(transparent)]
    Channel(#[from] transit_channel::Error),
    /// A channel's connection or layers (TLS, websocket, command).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The websocket URI (the endpoint grammar's message).
    #[error("{0}")]
    Endpoint(String),
    /// The session failed (either end).
    #[error(transparent)]
    Session(#[from] transit_multifd::Error),
    /// An `exec:` command failed (its reaper's message).
    #[error("{0}")]
    Command(String),
    /// The loopback listener has no TCP address.
    #[error("the listener has no address")]
    NoAddress,
    /// A thread of the run panicked (which one).
    #[error("{0}")]
    Panicked(&'static str),
}

/// A prepared bench: the image generated (and written to a file for the
/// `file` rows), ready to run. Dropping it removes the files.
#[derive(Debug)]
pub struct Bench {
    config: BenchConfig,
    packet_payload: u32,
    image: &'static SourceImage,
    files: Option<BenchFiles>,
}

impl Bench {
    /// Check `config`, generate the image and, for `file` rows, write it
    /// to a file (none of this is timed).
    pub fn prepare(config: BenchConfig) -> Result<Bench, BenchError> {
        config.check()?;
        let packet_payload = config.packet_payload()?;
        let spec = ImageSpec {
            size: config.size,
            page_size: wire::DEFAULT_PAGE_SIZE,
            zero_ratio: config.zero_ratio,
            seed: 1,
            content: Content::Random,
        };
        let image = SourceImage::generate(&spec).map_err(BenchError::Generate)?;
        // Every run borrows the same pages; the image lives until the
        // process exits.
        let image: &'static SourceImage = Box::leak(Box::new(image));
        let files = if config.transports.contains(&Transport::File) {
            Some(BenchFiles::write(image.as_slice())?)
        } else {
            None
        };
        Ok(Bench {
            config,
            packet_payload,
            image,
            files,
        })
    }

    /// The payload bytes of a page packet.
    pub fn packet_payload(&self) -> u32 {
        self.packet_payload
    }

    /// Run every transport with every channel count, in order, calling
    /// `each` with a row as soon as its run is over; the rows, or the
    /// first failure (which ends the bench).
    pub fn run(&self, mut each: impl FnMut(&Row)) -> Result<Vec<Row>, BenchError> {
        let config = SendConfig {
            packet_payload: self.packet_payload,
            ..SendConfig::default()
        };
        let mut rows = Vec::new();
        for &t in &self.config.transports {
            for &n in &self.config.channels {
                let row = self
                    .run_one(t, n, &config)
                    .map_err(|source| BenchError::Run {
                        transport: t,
                        channels: n,
                        source,
                    })?;
                each(&row);
                rows.push(row);
            }
        }
        Ok(rows)
    }

    fn run_one(&self, transport: Transport, n: u32, config: &SendConfig) -> Result<Row, RunError> {
        let image = self.image.as_slice();
        let files = self.files.as_ref();
        let file = match (transport, files) {
            (Transport::File, Some(f)) => Some((f.source.clone(), f.output.clone())),
            _ => None,
        };
        let source = match &file {
            Some((src, _)) => SourceImage::map_file(src).map_err(|source| RunError::Io {
                what: format!("map {}", src.display()),
                source,
            })?,
            None => SourceImage::from_static(image),
        };
        let dest = move || match &file {
            Some((_, out)) => Destination::File {
                path: out.clone(),
                mode: None,
            },
            None => Destination::Memory { prefault: false },
        };
        let channels_of = match transport {
            Transport::File => Transport::Tcp,
            t => t,
        };
        let (main, pages, recv) = make_channels(channels_of, n, &self.config.exec_program)?;
        let receiver = match recv {
            None => None,
            Some(conns) => Some(
                std::thread::Builder::new()
                    .name("bench-recv".into())
                    .spawn(move || -> Result<Stats, RunError> {
                        let mut rx = Receiver::new(
                            RecvConfig {
                                handshake_timeout: Some(Duration::from_secs(30)),
                                ..RecvConfig::default()
                            },
                            dest(),
                        );
                        for c in conns {
                            rx.accept_channel(c)?;
                        }
                        Ok(rx.run()?.stats)
                    })
                    .map_err(|source| io_error("spawn the receiver", source))?,
            ),
        };
        // The window starts before the handshake: the receiver's
        // destination set-up and putting the output in place are in it.
        let clock = CpuClock::start();
        let sent = (|| {
            let mut tx = Sender::new(config.clone(), Payload::Image(source), main, pages)?;
            tx.send_all()?;
            tx.finish()
        })();
        let (cpu, window) = clock.stop();
        let received = receiver.map(|h| {
            h.join()
                .unwrap_or(Err(RunError::Panicked("the receiver panicked")))
        });
        if transport == Transport::Exec {
            transit_endpoint::exec::wait_commands().map_err(RunError::Command)?;
        }
        let stats = sent?;
        if let Some(r) = received {
            r?;
        }
        if let (Transport::File, Some(f)) = (transport, files) {
            let _ = std::fs::remove_file(&f.output);
        }
        let secs = window.max(1e-9);
        Ok(Row {
            transport,
            channels: n,
            image_bytes: image.len() as u64,
            data_bytes: stats.bytes,
            zero_pages: stats.zero_pages,
            seconds: window,
            image_bytes_per_second: image.len() as f64 / secs,
            data_bytes_per_second: stats.bytes as f64 / secs,
            cpu_percent: cpu.percent,
        })
    }
}

fn io_error(what: impl Into<String>, source: io::Error) -> RunError {
    RunError::Io {
        what: what.into(),
        source,
    }
}

type Chans = Vec<Box<dyn Channel>>;
/// Sender main, sender pages, receiver connections (none for `null` and
/// `exec`).
type Sides = (Box<dyn Channel>, Chans, Option<Chans>);

/// Sender side (main, pages) and receiver side (main first, then pages)
/// of one transport (`file` is `tcp`).
fn make_channels(
    transport: Transport,
    n: u32,
    exec_program: &Option<PathBuf>,
) -> Result<Sides, RunError> {
    let mut send: Chans = Vec::new();
    let mut recv: Chans = Vec::new();
    match transport {
        Transport::Tcp | Transport::File | Transport::Unix => {
            let (addr, _dir) = if transport == Transport::Unix {
                let dir = std::env::temp_dir().join(format!(
                    "transit-bench-{}-{}",
                    std::process::id(),
                    n
                ));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| io_error(dir.display().to_string(), e))?;
                (SocketAddress::unix(dir.join("s")), Some(TempDir(dir)))
            } else {
                (SocketAddress::inet("127.0.0.1", 0), None)
            };
            let mut listener = SocketChannel::listen_sync(&addr, 300)?;
            let local = listener.local_address().ok_or(RunError::NoAddress)?;
            for _ in 0..=n {
                let mut c = SocketChannel::connect_sync(&local)?;
                let mut a = listener.accept()?;
                let _ = c.set_delay(false);
                let _ = a.set_delay(false);
                send.push(Box::new(c));
                recv.push(Box::new(a));
            }
            let _ = listener.close();
        }
        Transport::Buffer => {
            let (c, a) = SocketChannel::pair()?;
            send.push(Box::new(c));
            recv.push(Box::new(a));
            for _ in 0..n {
                let (c, a) = MemPipe::pair();
                send.push(Box::new(c));
                recv.push(Box::new(a));
            }
        }
        Transport::Tls | Transport::Ws | Transport::Wss => return layered(transport, n),
        Transport::Exec => {
            let exe = match exec_program {
                Some(p) => p.clone(),
                None => std::env::current_exe().map_err(|e| io_error("find this executable", e))?,
            };
            // The far end's summary would interleave with the table; its
            // failures reach the sender as channel errors and exit status.
            let cmd = format!(
                "{} recv stdio: --timeout 30 2>/dev/null",
                shell_quote(&exe.to_string_lossy())
            );
            let ep = Endpoint::Exec(cmd);
            let mut opts = TransportOpts::new(Duration::from_secs(30));
            opts.join = Some(
                transit_endpoint::join::JoinTag::new().map_err(|e| io_error("a join token", e))?,
            );
            let mut chans = transport::open_session(&ep, &opts, n).map_err(|e| e.error)?;
            let main = chans.remove(0);
            return Ok((main, chans, None));
        }
        Transport::Null => {
            let (c, mut a) = SocketChannel::pair()?;
            send.push(Box::new(c));
            for _ in 0..n {
                send.push(Box::new(NullChannel::new()));
            }
            let main = send.remove(0);
            let peer = std::thread::Builder::new()
                .name("null-peer".into())
                .spawn(move || transit_multifd::null_peer(&mut a))
                .map_err(|e| io_error("spawn the null peer", e))?;
            drop(peer); // It ends with the session; errors show on the sender.
            return Ok((main, send, None));
        }
    }
    let main = send.remove(0);
    Ok((main, send, Some(recv)))
}

/// Quote a path for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// N+1 loopback TCP connections with TLS (in-process credentials), a
/// websocket, or both; every handshake of both ends in parallel.
fn layered(transport: Transport, n: u32) -> Result<Sides, RunError> {
    let mut listener = SocketChannel::listen_sync(&SocketAddress::inet("127.0.0.1", 0), 300)?;
    let local = listener.local_address().ok_or(RunError::NoAddress)?;
    let SocketAddress::Inet { port, .. } = local.clone() else {
        return Err(RunError::NoAddress);
    };
    let (tls, ws) = match transport {
        Transport::Tls => (true, false),
        Transport::Ws => (false, true),
        _ => (true, true),
    };
    let ep = if ws {
        let scheme = if tls { "wss" } else { "ws" };
        Endpoint::parse(&format!("{scheme}://127.0.0.1:{port}/bench"))
            .map_err(RunError::Endpoint)?
    } else {
        Endpoint::Socket(local.clone())
    };
    let mut copts = TransportOpts::new(Duration::from_secs(30));
    let mut sopts = TransportOpts::new(Duration::from_secs(30));
    if tls {
        let (client, server) = TestPki::new()?.loopback_creds()?;
        copts.tls = Some(TlsOpts {
            creds: client,
            hostname: Some("localhost".into()),
            authz: None,
            relaxed_eof: false,
        });
        sopts.tls = Some(TlsOpts {
            creds: server,
            hostname: None,
            authz: None,
            relaxed_eof: false,
        });
    }
    let mut threads = Vec::new();
    for i in 0..=n {
        let mut c = SocketChannel::connect_sync(&local)?;
        let mut a = listener.accept()?;
        let _ = c.set_delay(false);
        let _ = a.set_delay(false);
        let (ce, co) = (ep.clone(), copts.clone());
        let client = std::thread::spawn(move || {
            transport::layer_client(Box::new(c), &ce, &co, &format!("channel {i}"))
        });
        let (se, so) = (ep.clone(), sopts.clone());
        let server = std::thread::spawn(move || transport::wrap_accepted(Box::new(a), &se, &so));
        threads.push((client, server));
    }
    let _ = listener.close();
    let mut send: Chans = Vec::new();
    let mut recv: Chans = Vec::new();
    let panicked = |_| RunError::Panicked("a handshake panicked");
    for (c, a) in threads {
        send.push(c.join().map_err(panicked)??);
        recv.push(a.join().map_err(panicked)??);
    }
    let main = send.remove(0);
    Ok((main, send, Some(recv)))
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `file` rows' source file and output path, in tmpfs; removed on
/// drop.
#[derive(Debug)]
struct BenchFiles {
    source: PathBuf,
    output: PathBuf,
}

impl BenchFiles {
    fn write(image: &[u8]) -> Result<BenchFiles, BenchError> {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let files = BenchFiles {
            source: dir.join(format!("transit-bench-{}.src", std::process::id())),
            output: dir.join(format!("transit-bench-{}.out", std::process::id())),
        };
        payload_to_file(image, &files.source).map_err(|source| BenchError::WriteFile {
            path: files.source.clone(),
            source,
        })?;
        Ok(files)
    }
}

impl Drop for BenchFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.source);
        let _ = std::fs::remove_file(&self.output);
    }
}

/// Write `image` to `path`, leaving its zero MiB as holes.
fn payload_to_file(image: &[u8], path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    for (i, piece) in image.chunks(1 << 20).enumerate() {
        if !transit_multifd::zero::is_zero(piece) {
            f.write_all_at(piece, (i as u64) << 20)?;
        }
    }
    f.set_len(image.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(transports: Vec<Transport>, channels: Vec<u32>) -> BenchConfig {
        BenchConfig {
            size: 1 << 20,
            zero_ratio: 0.5,
            channels,
            transports,
            packet_size: 64 << 10,
            exec_program: None,
        }
    }

    #[test]
    fn transports_are_named_in_table_order() {
        for (t, name) in Transport::ALL.iter().zip(TRANSPORTS) {
            assert_eq!(t.name(), name);
            assert_eq!(name.parse::<Transport>(), Ok(*t));
            assert_eq!(format!("{t:<5}|"), format!("{name:<5}|"));
        }
        assert_eq!(
            "carrier-pigeon".parse::<Transport>(),
            Err(UnknownTransport("carrier-pigeon".into()))
        );
    }

    #[test]
    fn a_config_is_checked_in_order() {
        let mut c = config(vec![Transport::Null], vec![0]);
        c.size = 0;
        assert_eq!(c.check(), Err(ConfigError::EmptyImage));
        c.size = 1;
        assert_eq!(c.check(), Err(ConfigError::Channels(0)));
        c.channels.clear();
        assert_eq!(c.check(), Err(ConfigError::NoChannels));
        c.channels = vec![2];
        c.packet_size = 4095;
        assert_eq!(c.check(), Err(ConfigError::PacketSize(4095)));
        c.packet_size = 3 * 4096 + 5;
        assert_eq!(c.check(), Ok(()));
        assert_eq!(c.packet_payload(), Ok(3 * 4096));
    }

    #[test]
    fn rows_come_as_each_run_ends_and_serialize_with_the_transport_name() {
        let bench =
            Bench::prepare(config(vec![Transport::Null, Transport::Buffer], vec![1, 2])).unwrap();
        let mut seen = Vec::new();
        let rows = bench.run(|r| seen.push((r.transport, r.channels))).unwrap();
        let want = [
            (Transport::Null, 1),
            (Transport::Null, 2),
            (Transport::Buffer, 1),
            (Transport::Buffer, 2),
        ];
        assert_eq!(seen, want);
        for (r, (t, n)) in rows.iter().zip(want) {
            assert_eq!((r.transport, r.channels, r.image_bytes), (t, n, 1 << 20));
            assert!(r.seconds > 0.0);
        }
        let json = serde_json::to_string(&rows[0]).unwrap();
        assert!(
            json.starts_with(
                r#"{"transport":"null","channels":1,"image_bytes":1048576,"data_bytes":"#
            ),
            "{json}"
        );
    }

    #[test]
    fn a_failed_run_says_which_and_keeps_its_cause() {
        let mut c = config(vec![Transport::Exec], vec![1]);
        c.exec_program = Some("/nonexistent/transit".into());
        let bench = Bench::prepare(c).unwrap();
        let e = bench.run(|_| {}).unwrap_err();
        assert!(
            matches!(
                e,
                BenchError::Run {
                    transport: Transport::Exec,
                    channels: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("bench exec with 1 channels: "),
            "{e}"
        );
    }
}

//! `transit bench`: both ends of a multifd session in one process, over
//! every transport available, for each channel count; one table row (or
//! JSON object) per run.
//!
//! Transports: `tcp` (127.0.0.1), `unix` (a socket in the temp dir),
//! `buffer` (page channels are in-process [`MemPipe`]s: one memcpy,
//! no kernel; the main channel, which carries a few records, is a UNIX
//! socket pair) and `null` (page channels discard what they are given and
//! a minimal peer on the main channel accepts the session and echoes the
//! sender's totals as the verdict: the sender's framework alone: batching,
//! zero-page scan, digest, packet building); `tls`, `ws` and `wss`
//! (loopback TCP with the layers of `transit_endpoint::connect`; TLS credentials
//! generated in process by `TestPki::loopback_creds`, no files; every
//! handshake of both ends in parallel); and `exec` (`exec:` running this
//! executable as `transit recv stdio:`, the N+1 runs joined as
//! `transit_endpoint::join` describes: the one row whose receiver is another
//! process; CPU% counts the sender only).
//!
//! `file` is tcp between two files: the image is written once (not timed)
//! to a file in tmpfs (`/dev/shm`), sent from that file (mapped, holes
//! found with `SEEK_DATA`) and received into a new file there, which is
//! removed after each run.
//!
//! The image is generated once before the first run and is not timed.
//! `seconds` is the window a user waits for, once the connections are
//! open: the handshake, the receiver's destination set-up, the data, the
//! verification and putting the output in place, until the verdict; CPU%
//! is this process's CPU time (both ends) over the same window, 100% = one
//! core.

use std::time::Duration;

use serde::Serialize;
use transit_channel::tls::generate::TestPki;
use transit_channel::{Channel, NullChannel, SocketAddress, SocketChannel};
use transit_multifd::wire;
use transit_multifd::{
    Content, Destination, ImageSpec, Payload, Receiver, RecvConfig, SendConfig, Sender,
    SourceImage, Stats,
};

use crate::cli::BenchArgs;
use crate::error::AppError;
use crate::report::emit_json;
use transit_channel::MemPipe;
use transit_endpoint::connect as transport;
use transit_endpoint::Endpoint;
use transit_endpoint::{TlsOpts, TransportOpts};
use transit_transfer::report::CpuClock;
use transit_transfer::units;

/// Every transport `bench` knows, in table order.
pub const TRANSPORTS: [&str; 9] = [
    "tcp", "file", "unix", "buffer", "null", "tls", "ws", "wss", "exec",
];

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Transport name.
    pub transport: String,
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

#[derive(Serialize)]
struct Report<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    image_bytes: u64,
    zero_ratio: f64,
    packet_payload: u32,
    rows: &'a [Row],
}

/// Run `transit bench`.
pub fn run(args: BenchArgs) -> Result<(), AppError> {
    let size = args.size;
    if size == 0 {
        return Err(AppError::Usage("--size must be more than 0".into()));
    }
    if args.channels.is_empty() {
        return Err(AppError::Usage(
            "--channels needs at least one count".into(),
        ));
    }
    for &n in &args.channels {
        if n == 0 || n > wire::MAX_CHANNELS {
            return Err(AppError::Usage(format!(
                "--channels {n}: expected 1 to {}",
                wire::MAX_CHANNELS
            )));
        }
    }
    let transports: Vec<String> = if args.transports.is_empty() {
        TRANSPORTS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.transports.clone()
    };
    for t in &transports {
        if !TRANSPORTS.contains(&t.as_str()) {
            return Err(AppError::Usage(format!(
                "--transports {t}: unknown transport; available: {}",
                TRANSPORTS.join(", ")
            )));
        }
    }
    let packet_payload = match args.packet_size {
        p if (4096..=u64::from(wire::MAX_PACKET_PAYLOAD)).contains(&p) => (p as u32 / 4096) * 4096,
        p => {
            return Err(AppError::Usage(format!(
                "--packet-size {p}: expected 4 KiB to {} bytes",
                wire::MAX_PACKET_PAYLOAD
            )))
        }
    };
    let spec = ImageSpec {
        size,
        page_size: wire::DEFAULT_PAGE_SIZE,
        zero_ratio: args.zero_ratio,
        seed: 1,
        content: Content::Random,
    };
    if !args.json {
        eprintln!(
            "transit bench: generating a {} image with {:.0}% zero pages (not timed)",
            units::size(size),
            args.zero_ratio * 100.0
        );
    }
    let image = SourceImage::generate(&spec)
        .map_err(|e| AppError::context(format!("generate the image: {e}"), e))?;
    // Every run borrows the same pages; the image lives until the process
    // exits.
    let image: &'static SourceImage = Box::leak(Box::new(image));
    let files = if transports.iter().any(|t| t == "file") {
        Some(BenchFiles::write(image.as_slice())?)
    } else {
        None
    };
    let config = SendConfig {
        packet_payload,
        ..SendConfig::default()
    };
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "{:<9} {:>8} {:>10} {:>11} {:>9} {:>12} {:>12} {:>6}",
            "transport",
            "channels",
            "image",
            "data moved",
            "time",
            "image rate",
            "data rate",
            "CPU%"
        );
    }
    for t in &transports {
        for &n in &args.channels {
            let row = run_one(t, n, image.as_slice(), &config, files.as_ref())
                .map_err(|e| AppError::Failed(format!("bench {t} with {n} channels: {e}")))?;
            if !args.json {
                println!(
                    "{:<9} {:>8} {:>10} {:>11} {:>9} {:>12} {:>12} {:>6.0}",
                    row.transport,
                    row.channels,
                    units::size(row.image_bytes),
                    units::size(row.data_bytes),
                    units::seconds(row.seconds),
                    units::rate(row.image_bytes_per_second),
                    units::rate(row.data_bytes_per_second),
                    row.cpu_percent
                );
            }
            rows.push(row);
        }
    }
    if args.json {
        emit_json(
            &Report {
                kind: "bench",
                version: env!("CARGO_PKG_VERSION"),
                image_bytes: size,
                zero_ratio: args.zero_ratio,
                packet_payload,
                rows: &rows,
            },
            false,
        );
    }
    Ok(())
}

type Chans = Vec<Box<dyn Channel>>;
/// Sender main, sender pages, receiver connections (none for `null`).
type Sides = (Box<dyn Channel>, Chans, Option<Chans>);

/// Sender side (main, pages) and receiver side (main first, then pages)
/// of one transport.
fn make_channels(transport: &str, n: u32) -> Result<Sides, String> {
    let mut send: Chans = Vec::new();
    let mut recv: Chans = Vec::new();
    match transport {
        "tcp" | "unix" => {
            let (addr, _dir) = if transport == "tcp" {
                (SocketAddress::inet("127.0.0.1", 0), None)
            } else {
                let dir = std::env::temp_dir().join(format!(
                    "transit-bench-{}-{}",
                    std::process::id(),
                    n
                ));
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                (SocketAddress::unix(dir.join("s")), Some(TempDir(dir)))
            };
            let mut listener = SocketChannel::listen_sync(&addr, 300).map_err(|e| e.to_string())?;
            let local = listener
                .local_address()
                .ok_or_else(|| "the listener has no address".to_owned())?;
            for _ in 0..=n {
                let mut c = SocketChannel::connect_sync(&local).map_err(|e| e.to_string())?;
                let mut a = listener.accept().map_err(|e| e.to_string())?;
                let _ = c.set_delay(false);
                let _ = a.set_delay(false);
                send.push(Box::new(c));
                recv.push(Box::new(a));
            }
            let _ = listener.close();
        }
        "buffer" => {
            let (c, a) = SocketChannel::pair().map_err(|e| e.to_string())?;
            send.push(Box::new(c));
            recv.push(Box::new(a));
            for _ in 0..n {
                let (c, a) = MemPipe::pair();
                send.push(Box::new(c));
                recv.push(Box::new(a));
            }
        }
        "tls" | "ws" | "wss" => return layered(transport, n),
        "exec" => {
            let exe = std::env::current_exe().map_err(|e| format!("find this executable: {e}"))?;
            // The far end's summary would interleave with the table; its
            // failures reach the sender as channel errors and exit status.
            let cmd = format!(
                "{} recv stdio: --timeout 30 2>/dev/null",
                shell_quote(&exe.to_string_lossy())
            );
            let ep = Endpoint::Exec(cmd);
            let mut opts = TransportOpts::new(Duration::from_secs(30));
            opts.join = Some(
                transit_endpoint::join::JoinTag::new().map_err(|e| format!("a join token: {e}"))?,
            );
            let mut chans = transport::open_session(&ep, &opts, n).map_err(|e| e.error.message)?;
            let main = chans.remove(0);
            return Ok((main, chans, None));
        }
        "null" => {
            let (c, mut a) = SocketChannel::pair().map_err(|e| e.to_string())?;
            send.push(Box::new(c));
            for _ in 0..n {
                send.push(Box::new(NullChannel::new()));
            }
            let main = send.remove(0);
            let peer = std::thread::Builder::new()
                .name("null-peer".into())
                .spawn(move || transit_multifd::null_peer(&mut a))
                .map_err(|e| format!("spawn the null peer: {e}"))?;
            drop(peer); // It ends with the session; errors show on the sender.
            return Ok((main, send, None));
        }
        other => return Err(format!("unknown transport {other}")),
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
fn layered(transport: &str, n: u32) -> Result<Sides, String> {
    let mut listener = SocketChannel::listen_sync(&SocketAddress::inet("127.0.0.1", 0), 300)
        .map_err(|e| e.to_string())?;
    let local = listener
        .local_address()
        .ok_or_else(|| "the listener has no address".to_owned())?;
    let SocketAddress::Inet { port, .. } = local.clone() else {
        return Err("not a TCP listener".into());
    };
    let (tls, ws) = match transport {
        "tls" => (true, false),
        "ws" => (false, true),
        _ => (true, true),
    };
    let ep = if ws {
        let scheme = if tls { "wss" } else { "ws" };
        Endpoint::parse(&format!("{scheme}://127.0.0.1:{port}/bench"))?
    } else {
        Endpoint::Socket(local.clone())
    };
    let mut copts = TransportOpts::new(Duration::from_secs(30));
    let mut sopts = TransportOpts::new(Duration::from_secs(30));
    if tls {
        let pki = TestPki::new().map_err(|e| e.to_string())?;
        let (client, server) = pki.loopback_creds().map_err(|e| e.to_string())?;
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
        let mut c = SocketChannel::connect_sync(&local).map_err(|e| e.to_string())?;
        let mut a = listener.accept().map_err(|e| e.to_string())?;
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
    for (c, a) in threads {
        send.push(c.join().map_err(|_| "a handshake panicked".to_owned())??);
        recv.push(a.join().map_err(|_| "a handshake panicked".to_owned())??);
    }
    let main = send.remove(0);
    Ok((main, send, Some(recv)))
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `file` rows' source file and output path, in tmpfs; removed on
/// drop.
struct BenchFiles {
    source: std::path::PathBuf,
    output: std::path::PathBuf,
}

impl BenchFiles {
    fn write(image: &[u8]) -> Result<BenchFiles, AppError> {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let files = BenchFiles {
            source: dir.join(format!("transit-bench-{}.src", std::process::id())),
            output: dir.join(format!("transit-bench-{}.out", std::process::id())),
        };
        payload_to_file(image, &files.source)
            .map_err(|e| AppError::context(format!("write {}: {e}", files.source.display()), e))?;
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
fn payload_to_file(image: &[u8], path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    for (i, piece) in image.chunks(1 << 20).enumerate() {
        if !transit_multifd::zero::is_zero(piece) {
            f.write_all_at(piece, (i as u64) << 20)?;
        }
    }
    f.set_len(image.len() as u64)
}

fn run_one(
    transport: &str,
    n: u32,
    image: &'static [u8],
    config: &SendConfig,
    files: Option<&BenchFiles>,
) -> Result<Row, String> {
    let file = if transport == "file" {
        files.map(|f| (f.source.clone(), f.output.clone()))
    } else {
        None
    };
    let source = match &file {
        Some((src, _)) => {
            SourceImage::map_file(src).map_err(|e| format!("map {}: {e}", src.display()))?
        }
        None => SourceImage::from_static(image),
    };
    let dest = move || match &file {
        Some((_, out)) => Destination::File {
            path: out.clone(),
            mode: None,
        },
        None => Destination::Memory { prefault: false },
    };
    let channels_of = if transport == "file" {
        "tcp"
    } else {
        transport
    };
    let (main, pages, recv) = make_channels(channels_of, n)?;
    let receiver = match recv {
        None => None,
        Some(conns) => Some(
            std::thread::Builder::new()
                .name("bench-recv".into())
                .spawn(move || -> Result<Stats, String> {
                    let mut rx = Receiver::new(
                        RecvConfig {
                            handshake_timeout: Some(Duration::from_secs(30)),
                            ..RecvConfig::default()
                        },
                        dest(),
                    );
                    for c in conns {
                        rx.accept_channel(c).map_err(|e| e.to_string())?;
                    }
                    let out = rx.run().map_err(|e| e.to_string())?;
                    Ok(out.stats)
                })
                .map_err(|e| format!("spawn the receiver: {e}"))?,
        ),
    };
    // The window starts before the handshake: the receiver's destination
    // set-up and putting the output in place are in it.
    let clock = CpuClock::start();
    let sent = (|| {
        let mut tx = Sender::new(config.clone(), Payload::Image(source), main, pages)?;
        tx.send_all()?;
        tx.finish()
    })();
    let (cpu, window) = clock.stop();
    let received = receiver.map(|h| {
        h.join()
            .unwrap_or_else(|_| Err("the receiver panicked".into()))
    });
    if transport == "exec" {
        transit_endpoint::exec::wait_commands()?;
    }
    let stats = sent.map_err(|e| e.to_string())?;
    if let Some(r) = received {
        r?;
    }
    if let (true, Some(f)) = (transport == "file", files) {
        let _ = std::fs::remove_file(&f.output);
    }
    let secs = window.max(1e-9);
    Ok(Row {
        transport: transport.to_owned(),
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

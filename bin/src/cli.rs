//! Command-line definitions (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Move migration streams and RAM images between hosts.
#[derive(Debug, Parser)]
#[command(name = "transit", version, about, long_about = None, propagate_version = true)]
#[command(after_help = TOP_EXAMPLES, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a stream or a RAM image to a receiver.
    #[command(after_help = SEND_EXAMPLES)]
    #[command(mut_arg("channels", |a| a.help(SEND_CHANNELS_HELP)))]
    #[command(mut_arg("timeout", |a| a.help(SEND_TIMEOUT_HELP)))]
    Send(SendArgs),
    /// Receive a stream or a RAM image from a sender.
    #[command(after_help = RECV_EXAMPLES)]
    #[command(mut_arg("channels", |a| a.help(RECV_CHANNELS_HELP)))]
    #[command(mut_arg("timeout", |a| a.help(RECV_TIMEOUT_HELP)))]
    Recv(RecvArgs),
    /// Measure throughput of every transport over loopback, both ends in one process.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
    /// Print a shell completion script to stdout.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff, every subcommand in one page) to stdout.
    #[command(after_help = MAN_EXAMPLES)]
    Man,
}

/// `transit completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples (each runs as written):
  # bash, this session (for every session: save the script as
  # /usr/share/bash-completion/completions/transit)
  source <(transit completions bash)

  # zsh: save as _transit in a directory of $fpath
  transit completions zsh > _transit

  # fish: save in ~/.config/fish/completions/
  transit completions fish > transit.fish";

const MAN_EXAMPLES: &str = "\
Examples (each runs as written):
  # read it
  transit man | man -l -

  # save it (then install it as /usr/local/share/man/man1/transit.1)
  transit man > transit.1";

// Every example block below runs as written in one shell, on loopback, in
// a directory with a file vm.img (a test runs them: tests/tests/cli_help.rs).
// Lines stay within 80 columns.

const TOP_EXAMPLES: &str = "\
Examples (each block runs as written in one shell, on loopback):
  # a generated 64 MiB image, verified in memory by the receiver (--retry:
  # the sender waits up to 5 s for the receiver to listen)
  transit recv tcp:127.0.0.1:4444 &
  transit send tcp:127.0.0.1:4444 --ram 64M --retry 5

  # file to file: write a generated image into vm.img, copy it to copy.img
  transit send file:vm.img --ram 64M
  transit recv unix:/tmp/transit.sock --output copy.img &
  transit send unix:/tmp/transit.sock --input vm.img --retry 5

  # exec:, as QEMU's migrate \"exec:...\": the command is the receiver (one
  # run per channel); 'exec:ssh HOST transit recv stdio: ...' goes remote
  transit send 'exec:transit recv stdio: --output copy.img' --input vm.img

  # throughput of two transports, both ends in this process
  transit bench --size 256M --transports tcp,unix

More: transit COMMAND --help; the manual page: transit man | man -l -";

const SEND_EXAMPLES: &str = "\
Examples (each block runs as written in one shell, on loopback, next to a
file vm.img; --retry lets the sender wait for the receiver to listen):
  # a generated 64 MiB image, half zero pages
  transit recv tcp:127.0.0.1:4444 &
  transit send tcp:127.0.0.1:4444 --ram 64M --zero-ratio 0.5 --retry 5

  # a file mapped as the image, 8 page channels, over a UNIX socket
  transit recv unix:/tmp/transit.sock --output copy.img &
  transit send unix:/tmp/transit.sock --input vm.img --channels 8 --retry 5

  # a stream from stdin, over a websocket
  transit recv ws://127.0.0.1:8080/migrate --output numbers.txt &
  seq 100000 | transit send ws://127.0.0.1:8080/migrate --input - --retry 5

  # plain bytes for a peer that is not transit (socat, nc)
  socat -u TCP-LISTEN:5000,bind=127.0.0.1,reuseaddr CREATE:out.bin &
  transit send tcp:127.0.0.1:5000 --raw --input vm.img --retry 5

  # the payload bytes into a file (runs of zeros left as holes)
  transit send file:gen.img --ram 64M

  # exec:, as QEMU's migrate \"exec:...\": one run of the command per
  # channel; 'exec:ssh HOST transit recv stdio: ...' goes to another host
  transit send 'exec:transit recv stdio: --output copy.img' --input vm.img";

const RECV_EXAMPLES: &str = "\
Examples (each block runs as written in one shell, on loopback, next to a
file vm.img; the sender's --retry waits for the receiver to listen):
  # listen on all IPv4 and IPv6 addresses, write the image to copy.img
  transit recv tcp::4444 --output copy.img &
  transit send tcp:127.0.0.1:4444 --input vm.img --retry 5

  # verify in memory, print a JSON summary, require 4 page channels
  transit recv tcp:127.0.0.1:4444 --channels 4 --json &
  transit send tcp:127.0.0.1:4444 --ram 64M --channels 4 --retry 5

  # a stream to stdout
  transit recv unix:/tmp/transit.sock --output - | wc -l &
  seq 100000 | transit send unix:/tmp/transit.sock --input - --retry 5

  # plain bytes from a peer that is not transit (socat retries its connect
  # until the receiver listens)
  transit recv tcp:127.0.0.1:5000 --raw --output copy.bin &
  socat -u FILE:vm.img TCP:127.0.0.1:5000,retry=50,interval=0.1

  # plain bytes from a file, or from a command's stdout
  transit recv file:vm.img --output copy.img
  transit recv 'exec:cat vm.img' --raw --output copy.img";

const BENCH_EXAMPLES: &str = "\
Examples (each runs as written):
  # every transport, 1 and 4 channels, a 128 MiB image, 50% zero pages
  transit bench --size 128M

  # two transports, three channel counts, as JSON
  transit bench --size 128M --channels 1,2,4 --transports tcp,unix --json";

const SEND_CHANNELS_HELP: &str = "Number of page channels besides the main channel: N+1 \
connections (--raw and file: use one) [default: 4]";

const RECV_CHANNELS_HELP: &str = "Require the sender to use N page channels: a sender with \
another count is refused (default: accept the count the sender announces)";

const SEND_TIMEOUT_HELP: &str = "Give up connecting and handshaking after SECS seconds \
(each channel) [default: 30]";

const RECV_TIMEOUT_HELP: &str = "Give up after SECS seconds waiting for a sender and for all \
of its channels (default: wait for the first connection forever, then 30 s for the rest of \
the session to arrive)";

/// Options shared by send and recv.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Number of page channels (the subcommands word their own help).
    #[arg(long, short = 'c', value_name = "N")]
    pub channels: Option<u32>,

    /// Plain bytes on one channel, no framing, for peers that are not transit (socat, nc).
    #[arg(long)]
    pub raw: bool,

    /// Print one JSON summary object on stdout at the end (on stderr when the data goes to stdout).
    #[arg(long)]
    pub json: bool,

    /// Also print one JSON progress object every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub json_interval: Option<f64>,

    /// More detail: per-channel rates in the progress display and the summary.
    #[arg(long, short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Errors only: no progress, no warnings, no summary line (recv still prints its listening
    /// line, and a rollback of an interrupted in-place update; --json output is unchanged).
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,

    /// No progress display (the summary stays).
    #[arg(long)]
    pub no_progress: bool,

    /// Give up after SECS seconds (the subcommands word their own help).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Fail a transfer in which the peer makes no progress for SECS seconds once data flows
    /// (a stalled or stopped peer), naming the channel and the stage; 0 turns it off. Waiting for
    /// a slow source (send) or sink (recv) and, on send, for the verdict is not idle. recv: a
    /// stream source that pauses longer than this fails the transfer.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_idle_timeout)]
    pub idle_timeout: f64,

    /// A page channel whose connection is lost mid-transfer (reset, or stalled past
    /// --idle-timeout) is replaced: send connects it again and resends what recv had not
    /// applied; recv waits for it. SECS bounds how long one channel may stay lost (at most the
    /// idle timeout); 0 turns it off (a lost channel fails the transfer). Over tcp:, unix:,
    /// vsock:, ws:// and wss:// (exec:, fd:, stdio: and rdma: cannot connect again); the main
    /// channel's loss still ends the transfer.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_idle_timeout)]
    pub reconnect: f64,

    /// TLS credentials: a directory in QEMU's layout (ca-cert.pem, optional ca-crl.pem,
    /// client-cert.pem + client-key.pem on send, server-cert.pem + server-key.pem on recv).
    /// Every channel runs its own TLS session; the peer's certificate must be signed by the CA.
    #[arg(long, value_name = "DIR")]
    pub tls_creds: Option<PathBuf>,

    /// Compatibility: accept a TLS peer that closes without close_notify (a truncated stream is
    /// then indistinguishable from its end).
    #[arg(long, requires = "tls_creds")]
    pub tls_relaxed_eof: bool,

    /// Also compute a SHA-256 of the payload (what `sha256sum` prints for the file), shown in
    /// the summary and the JSON (`sha256`). Each side computes it when asked on that side:
    /// streams on the fly, images in a second pass over memory or the page cache once sent or
    /// verified. transit's own end-to-end verification is on either way.
    #[arg(long, value_name = "ALGO", value_enum)]
    pub checksum: Option<ChecksumKind>,

    /// Permissions of an output file, in octal (recv --output FILE, send file:PATH). Default: an
    /// existing file keeps its mode and owner, a new one is created 600 (images carry secrets).
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,
}

/// Seconds of `--idle-timeout` and `send --retry`: finite, 0 (off) to one week.
pub fn parse_idle_timeout(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=604_800.0).contains(&v) {
        return Err(format!(
            "{s} is out of range: give 0 (off) up to 604800 seconds (a week)"
        ));
    }
    Ok(v)
}

impl CommonArgs {
    /// `--idle-timeout` for the library: `None` when off.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.idle_timeout > 0.0).then(|| std::time::Duration::from_secs_f64(self.idle_timeout))
    }

    /// `--reconnect` for the library: how long a lost page channel may
    /// stay lost (never longer than the idle timeout); `None` when off.
    pub fn reconnect_window(&self) -> Option<std::time::Duration> {
        let secs = match self.idle_timeout() {
            Some(idle) => self.reconnect.min(idle.as_secs_f64()),
            None => self.reconnect,
        };
        (secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs))
    }
}

/// An octal file mode such as `644` or `0640`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => Err(format!(
            "'{s}' is not an octal file mode (e.g. 600, 644, 0640)"
        )),
    }
}

/// `transit send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send: tcp:HOST:PORT, unix:PATH, unix-abstract:NAME, vsock:CID:PORT, fd:N, file:PATH,
    /// ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, exec:COMMAND, stdio: (--raw).
    pub uri: String,

    /// Input file (mapped as the image when it is a regular file) or `-` for stdin (a stream).
    #[arg(long, short = 'i', value_name = "FILE|-", conflicts_with = "ram")]
    pub input: Option<PathBuf>,

    /// Send a generated RAM-like image of SIZE bytes (suffixes K, M, G, T; powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub ram: Option<u64>,

    /// Share of zero pages in the generated image (0.0 to 1.0).
    #[arg(long, value_name = "R", default_value_t = 0.5, value_parser = parse_ratio)]
    pub zero_ratio: f64,

    /// Seed of the generated image.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,

    /// Fill generated pages with compressible text instead of random bytes.
    #[arg(long)]
    pub compressible: bool,

    /// Page size in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value = PAGE_SIZE_DEFAULT, value_parser = parse_size)]
    pub page_size: u64,

    /// Payload bytes per page packet (rounded down to whole pages for an image).
    #[arg(long, value_name = "BYTES", default_value = PACKET_SIZE_DEFAULT, value_parser = parse_size)]
    pub packet_size: u64,

    /// Live-migration passes: pass 1 sends the image, passes 2..N only re-dirtied pages.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub passes: u32,

    /// Share of pages re-dirtied between passes.
    #[arg(long, value_name = "R", default_value_t = 0.05, value_parser = parse_ratio)]
    pub dirty_ratio: f64,

    /// Do not compute and compare the end-to-end digest.
    #[arg(long)]
    pub no_verify: bool,

    /// The name the server's TLS certificate must carry (default: the URI's host; required for
    /// unix:, unix-abstract:, vsock:, fd: and exec:, which have none).
    #[arg(long, value_name = "NAME", requires = "tls_creds")]
    pub tls_hostname: Option<String>,

    /// Compress data packets: none, zstd[:LEVEL] (every packet, sent raw when it does not
    /// shrink), auto[:LEVEL] (each channel compresses only while that is faster on its link and
    /// core). LEVEL: zstd's, default 1. The receiver needs no option.
    #[arg(long, value_name = "METHOD", default_value = "none", value_parser = parse_compress)]
    // The text above is the option's help, not rustdoc: `[:LEVEL]` is not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    pub compress: transit_multifd::compress::Compress,

    /// Cap the rate at RATE, one budget for all channels (packet headers included), applied
    /// evenly: a size per second (200M = 200 MiB/s) or bits as tc writes them (800mbit, 1gbit).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_bandwidth: Option<u64>,

    /// While nothing listens at the address yet (connection refused, no socket file), keep
    /// trying for up to SECS seconds, as socat's retry=: start sender and receiver in any order.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_idle_timeout)]
    pub retry: f64,

    /// Options shared with recv.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `transit recv`.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Where to listen: tcp:HOST:PORT (tcp::PORT = all IPv4 and IPv6), unix:PATH,
    /// unix-abstract:NAME, vsock:CID:PORT, fd:N (a listening socket), file:PATH,
    /// ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, stdio: (the far end of send exec:), exec:COMMAND (--raw).
    pub uri: String,

    /// Output file (written to a temporary file, renamed into place only on verified success),
    /// or `-` for stdout. Without it the image is kept in memory, verified and discarded.
    #[arg(long, short = 'o', value_name = "FILE|-")]
    pub output: Option<PathBuf>,

    /// Let in only TLS clients whose certificate has this identity: a subject DN such as
    /// `CN=client,O=Example`, or `DNS:NAME`, `IP:ADDR`, `email:ADDR` (repeatable).
    #[arg(long, value_name = "ID", requires = "tls_creds")]
    pub tls_authz: Vec<String>,

    /// Refuse an image larger than SIZE (suffixes K, M, G, T). Default: refuse an image that
    /// cannot fit: larger than the memory available (image kept in memory: no --output,
    /// --output -, a device), or than the free space of the output's file system plus what an
    /// existing output file occupies (--output FILE).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,

    /// With --output FILE that exists: start from it and receive only what differs (the sender
    /// sends the chunks whose hashes differ from this copy's; verified end to end as always).
    /// An absent FILE is received whole.
    #[arg(long, requires = "output")]
    pub delta: bool,

    /// With --delta: update FILE where it lies instead of building a new file next to it (no
    /// copy of FILE, for large images on file systems without reflink such as ext4). What each
    /// write overwrites is saved first in .FILE.transit-undo; a failed transfer puts FILE back as
    /// it was, and after a crash the next recv on FILE does before anything else. Readers of FILE
    /// meanwhile see old and new pages mixed. Not with --resume.
    #[arg(long)]
    pub inplace: bool,

    /// Write into .FILE.transit-partial next to --output FILE and keep it if the transfer fails
    /// or is killed; the next run with --resume picks it up and receives only what it lacks
    /// (verified end to end), then renames it over FILE. Images only.
    #[arg(long, requires = "output")]
    pub resume: bool,

    /// Options shared with send.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `transit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Image size (suffixes K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub size: u64,

    /// Share of zero pages.
    #[arg(long, value_name = "R", default_value_t = 0.5, value_parser = parse_ratio)]
    pub zero_ratio: f64,

    /// Channel counts to run: 1,2,4 or 1 2 4 or the option repeated.
    #[arg(long, value_name = "N", value_delimiter = ',', num_args = 1.., default_value = "1,4")]
    pub channels: Vec<u32>,

    /// Transports to run, as the channel counts (default: all).
    #[arg(long, value_name = "T", value_delimiter = ',', num_args = 1..,
          value_parser = clap::builder::PossibleValuesParser::new(crate::bench::TRANSPORTS))]
    pub transports: Vec<String>,

    /// Payload bytes per page packet (rounded down to whole 4 KiB pages).
    #[arg(long, value_name = "BYTES", default_value = PACKET_SIZE_DEFAULT, value_parser = parse_size)]
    pub packet_size: u64,

    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--page-size` unless given (`wire::DEFAULT_PAGE_SIZE`, as help shows it).
pub const PAGE_SIZE_DEFAULT: &str = "4K";
/// `--packet-size` unless given (`crate::DEFAULT_PACKET_PAYLOAD`).
pub const PACKET_SIZE_DEFAULT: &str = "512K";

/// Parse `--compress`: `none`, `zstd`, `zstd:LEVEL`, `auto`, `auto:LEVEL`.
pub fn parse_compress(s: &str) -> Result<transit_multifd::compress::Compress, String> {
    use transit_multifd::compress::Compress;
    let (method, level) = match s.split_once(':') {
        Some((m, l)) => {
            let l: i32 = l
                .parse()
                .map_err(|_| format!("invalid zstd level {l:?}: a whole number, e.g. 1 or 3"))?;
            if !(-7..=22).contains(&l) {
                return Err(format!("zstd level {l} is out of range: -7 to 22"));
            }
            (m, Some(l))
        }
        None => (s, None),
    };
    match (method, level) {
        ("none", None) => Ok(Compress::Off),
        ("zstd", l) => Ok(Compress::Zstd {
            level: l.unwrap_or(1),
        }),
        ("auto", l) => Ok(Compress::Auto {
            level: l.unwrap_or(1),
        }),
        _ => Err(format!(
            "unknown compression {s:?}: none, zstd[:LEVEL] or auto[:LEVEL]"
        )),
    }
}

/// Parse a rate in bytes per second: a size per second (`200M`, `200MB`,
/// `200MiB`: units of 1024, as sizes) or bits in units of 1000 as tc and
/// iperf3 write them (`800mbit`, `1gbit`), each with an optional `/s`.
/// Zero is refused (no rate at all is not a cap).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let lower = t.to_ascii_lowercase();
    let decimal = |num: &str, mult: f64| -> Result<u64, String> {
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate {s:?}: expected a number with a unit"))?;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("invalid rate {s:?}: must be above zero"));
        }
        Ok((v * mult).round().max(1.0) as u64)
    };
    for (unit, mult) in [
        ("kbit", 1e3 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("gbit", 1e9 / 8.0),
        ("tbit", 1e12 / 8.0),
    ] {
        if let Some(num) = lower.strip_suffix(unit) {
            return decimal(num, mult);
        }
    }
    let v = parse_size(t).map_err(|e| format!("{e} (a rate: e.g. 200M, 200MB or 1gbit)"))?;
    if v == 0 {
        return Err(format!("invalid rate {s:?}: must be above zero"));
    }
    Ok(v)
}

/// Parse `1G`, `512M`, `4096`, `64k`, `1.5G` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let mult = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("unknown unit in {s:?}: expected K, M, G or T")),
            };
            (&t[..i], mult)
        }
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with an optional K/M/G/T"))?;
    if v.is_nan() || v < 0.0 || !v.is_finite() {
        return Err(format!("invalid size {s:?}: must be a non-negative number"));
    }
    let bytes = v * mult as f64;
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parse a ratio in `0.0..=1.0`.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid ratio {s:?}: expected a number from 0 to 1"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("ratio {s:?} is out of range: expected 0 to 1"));
    }
    Ok(v)
}

/// The digests `--checksum` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecksumKind {
    // SHA-256, as `sha256sum` prints it. (No doc comment: clap would
    // print the value's description and switch help to its long layout.)
    #[allow(missing_docs)]
    Sha256,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeouts_parse_and_zero_turns_it_off() {
        assert_eq!(parse_idle_timeout("1.5"), Ok(1.5));
        assert_eq!(parse_idle_timeout("0"), Ok(0.0));
        for bad in ["-1", "nan", "inf", "1e300", "x"] {
            assert!(parse_idle_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compression_methods_parse() {
        use transit_multifd::compress::Compress;
        assert_eq!(parse_compress("none"), Ok(Compress::Off));
        assert_eq!(parse_compress("zstd"), Ok(Compress::Zstd { level: 1 }));
        assert_eq!(parse_compress("zstd:9"), Ok(Compress::Zstd { level: 9 }));
        assert_eq!(parse_compress("auto:-1"), Ok(Compress::Auto { level: -1 }));
        for bad in ["gzip", "zstd:", "zstd:99", "none:1", "auto:x", ""] {
            assert!(parse_compress(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_parse_as_sizes_per_second_or_bits() {
        assert_eq!(parse_rate("200M"), Ok(200 << 20));
        assert_eq!(parse_rate("200MiB/s"), Ok(200 << 20));
        assert_eq!(parse_rate("1gbit"), Ok(125_000_000));
        assert_eq!(parse_rate("800mbit/s"), Ok(100_000_000));
        assert_eq!(parse_rate("4096"), Ok(4096));
        for bad in ["0", "0mbit", "-1M", "fast", "1xbit", "nanM"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("abc").is_err());
        assert!(parse_size("-1G").is_err());
    }

    #[test]
    fn ratios_are_bounded() {
        assert_eq!(parse_ratio("0.5"), Ok(0.5));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("x").is_err());
    }

    #[test]
    fn size_defaults_shown_in_help_are_the_real_ones() {
        use transit_multifd::wire;
        assert_eq!(
            parse_size(PAGE_SIZE_DEFAULT),
            Ok(u64::from(wire::DEFAULT_PAGE_SIZE))
        );
        assert_eq!(
            parse_size(PACKET_SIZE_DEFAULT),
            Ok(u64::from(crate::DEFAULT_PACKET_PAYLOAD))
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

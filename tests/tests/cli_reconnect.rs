//! `--reconnect SECS` (default 30): a page channel whose TCP connection is
//! killed mid-transfer is replaced, the receiver says which packet it
//! applied last, the sender sends the rest, and the result is identical;
//! with `--reconnect 0` the same loss fails both ends. The first three
//! tests give no `--reconnect`: the default is on.
//!
//! The test bed is the one of `scripts/bench-network.sh`, made here for
//! each test (root needed): two network namespaces joined by a veth pair,
//! the sender's side limited to 1 Gbit/s by a token bucket, so a few
//! hundred MiB take a couple of seconds, long enough to kill one
//! connection in the middle. The namespaces are named after this file,
//! the test and this process (`trc<N>A-<pid>`, `trc<N>B-<pid>`), each
//! test has its own subnet (10.78.N.0/24), and both namespaces are deleted
//! when the test ends, panic or not; nothing but them is a target.
//!
//! Which connection is killed: the sender's established connections to
//! the receiver's port are listed with `ss -tin` in the sender's
//! namespace, and the one with the most bytes acknowledged is killed
//! (`ss -K`, which resets it) once that count passes a threshold (a
//! sixteenth of the data). The main channel carries only the session's
//! records (a few KiB) while each page channel carries a quarter of the
//! data, so the connection past the threshold is a page channel, and the
//! transfer is still in its first half when it goes. The source port
//! order is not used: the main channel connects first, but the kernel
//! does not promise increasing ports (the main channel's port was often
//! not the lowest of the five when these tests were written).
//!
//! The tests take a lock and run one at a time: each drives a 1 Gbit/s
//! transfer between two debug-built processes, and two of them at once on
//! a small machine would slow each other down below the link's rate.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use transit_tests::pki::{self, Fault};
use transit_tests::{error_lines, json, random_bytes, require_tool, transit_bin, Running, Scratch};

const MIB: u64 = 1 << 20;

/// Bound of each `ip`, `tc` and `ss` command.
const TOOL_LIMIT: Duration = Duration::from_secs(10);

/// Bound of each transfer, from the sender's start to both exits.
const TRANSFER_LIMIT: Duration = Duration::from_secs(45);

/// One test at a time (see the module's documentation).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Run a tool (bounded by [`TOOL_LIMIT`]); its stdout, or a panic with its
/// stderr if it failed.
fn tool(args: &[&str]) -> String {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]).stdin(Stdio::null());
    let r = Running::spawn(c).wait_within(TOOL_LIMIT);
    assert!(
        r.status.success(),
        "{args:?} failed ({}): {}",
        r.status,
        r.stderr
    );
    r.stdout_text()
}

/// Fail loudly unless this test can make network namespaces: root, and
/// `ip`, `tc` and `ss` (iproute2).
fn preflight() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "cli_reconnect makes network namespaces with ip(8): it must run as root (euid is {euid})"
    );
    for t in ["ip", "tc", "ss"] {
        require_tool(t);
    }
}

/// Two network namespaces, sender `a` (10.78.N.1) and receiver `b`
/// (10.78.N.2), joined by a veth pair, `a`'s side limited to 1 Gbit/s;
/// both deleted on drop.
struct TestBed {
    a: String,
    b: String,
    recv_ip: String,
}

impl TestBed {
    fn new(subnet: u8) -> TestBed {
        preflight();
        remove_stale_namespaces();
        let pid = std::process::id();
        let bed = TestBed {
            a: format!("trc{subnet}A-{pid}"),
            b: format!("trc{subnet}B-{pid}"),
            recv_ip: format!("10.78.{subnet}.2"),
        };
        // From here on, Drop deletes whatever was made.
        let (a, b) = (bed.a.as_str(), bed.b.as_str());
        let send_cidr = format!("10.78.{subnet}.1/24");
        let recv_cidr = format!("{}/24", bed.recv_ip);
        tool(&["ip", "netns", "add", a]);
        tool(&["ip", "netns", "add", b]);
        tool(&[
            "ip", "link", "add", "vA", "netns", a, "type", "veth", "peer", "name", "vB", "netns", b,
        ]);
        tool(&["ip", "-n", a, "addr", "add", &send_cidr, "dev", "vA"]);
        tool(&["ip", "-n", b, "addr", "add", &recv_cidr, "dev", "vB"]);
        for (ns, dev) in [(a, "vA"), (b, "vB"), (a, "lo"), (b, "lo")] {
            tool(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        tool(&[
            "tc", "-n", a, "qdisc", "add", "dev", "vA", "root", "tbf", "rate", "1gbit", "burst",
            "1mb", "latency", "50ms",
        ]);
        bed
    }

    /// `transit ARGS` in namespace `ns`.
    fn transit_in(ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(transit_bin()).args(args);
        c
    }

    /// Start `transit recv tcp:10.78.N.2:0 ARGS` in `b`; the receiver and
    /// its address.
    fn recv(&self, args: &[&str]) -> (Running, String) {
        let uri = format!("tcp:{}:0", self.recv_ip);
        let mut all = vec!["recv", uri.as_str()];
        all.extend_from_slice(args);
        let r = Running::spawn(Self::transit_in(&self.b, &all));
        let addr = r.listening();
        (r, addr)
    }

    /// `transit send ARGS` in `a`, stdin as given.
    fn send(&self, args: &[&str], stdin: Stdio) -> Running {
        let mut all = vec!["send"];
        all.extend_from_slice(args);
        let mut c = Self::transit_in(&self.a, &all);
        c.stdin(stdin);
        Running::spawn(c)
    }

    /// The sender's established connections to `port`: (source port,
    /// bytes acknowledged by the receiver).
    fn connections(&self, port: u16) -> Vec<(u16, u64)> {
        let filter = format!("( dport = :{port} )");
        let out = tool(&[
            "ip",
            "netns",
            "exec",
            &self.a,
            "ss",
            "-Htin",
            "state",
            "established",
            &filter,
        ]);
        let mut conns: Vec<(u16, u64)> = Vec::new();
        for line in out.lines() {
            if line.starts_with(char::is_whitespace) {
                // The info line of the socket above.
                if let (Some(last), Some(acked)) = (
                    conns.last_mut(),
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix("bytes_acked:")),
                ) {
                    last.1 = acked.parse().expect("bytes_acked");
                }
            } else if !line.trim().is_empty() {
                // Recv-Q Send-Q Local:Port Peer:Port
                let local = line.split_whitespace().nth(2).expect("local address");
                let sport = local.rsplit(':').next().unwrap().parse().expect("port");
                conns.push((sport, 0));
            }
        }
        conns
    }

    /// Once the sender has `channels` + 1 connections to `port` and one of
    /// them has had `threshold` bytes acknowledged, kill that one (a page
    /// channel, see the module's documentation) with `ss -K`; returns its
    /// source port. Panics if the sender exits first or nothing happens
    /// within 30 s.
    fn kill_busiest_page_connection(
        &self,
        send: &mut Running,
        port: u16,
        channels: usize,
        threshold: u64,
    ) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let (sport, acked) = loop {
            if let Some(st) = send.child.try_wait().expect("try_wait") {
                panic!(
                    "the sender exited ({st}) before a connection was killed; last seen {seen:?}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "no page connection passed {threshold} bytes acknowledged within 30 s: {seen:?}"
            );
            seen = self.connections(port);
            if seen.len() == channels + 1 {
                let &(sport, acked) = seen.iter().max_by_key(|c| c.1).unwrap();
                if acked >= threshold {
                    break (sport, acked);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let filter = format!("( dport = :{port} and sport = :{sport} )");
        let killed = tool(&[
            "ip",
            "netns",
            "exec",
            &self.a,
            "ss",
            "-HK",
            "state",
            "established",
            &filter,
        ]);
        // ss -K lists the sockets it closed, and only those.
        assert!(
            killed.contains(&format!(":{sport} ")),
            "ss -K did not close the connection from port {sport} (a kernel without \
             CONFIG_INET_DIAG_DESTROY?); ss printed {killed:?}; connections: {seen:?}"
        );
        eprintln!("killed the connection from port {sport} ({acked} bytes acked) of {seen:?}");
        sport
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Delete this file's namespaces left by a test process that died without
/// its drop (SIGKILL): `trc<N>A-<pid>` / `trc<N>B-<pid>` whose pid is gone.
fn remove_stale_namespaces() {
    for line in tool(&["ip", "netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some((head, pid)) = name.strip_prefix("trc").and_then(|r| r.split_once('-')) else {
            continue;
        };
        let ours = head.len() >= 2
            && head[..head.len() - 1].bytes().all(|c| c.is_ascii_digit())
            && matches!(head.as_bytes()[head.len() - 1], b'A' | b'B')
            && !pid.is_empty()
            && pid.bytes().all(|c| c.is_ascii_digit());
        if ours && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The port of a `tcp:HOST:PORT` address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// Write `size` bytes (a multiple of 1 MiB) of random-looking data to
/// `path`, fast: one pseudo-random MiB repeated, each 4 KiB page stamped
/// with its own number, so no page is zero and no two pages are alike (a
/// page landing at another page's offset shows).
fn write_input(path: &Path, size: u64, seed: u64) {
    let mut block = random_bytes(MIB as usize, seed);
    let mut f = BufWriter::with_capacity(MIB as usize, File::create(path).expect("create input"));
    for i in 0..size / MIB {
        for (p, page) in block.chunks_mut(4096).enumerate() {
            let n = i * (MIB / 4096) + p as u64 + 1;
            page[..8].copy_from_slice(&n.to_le_bytes());
        }
        f.write_all(&block).expect("write input");
    }
    f.flush().expect("flush input");
}

/// Panic unless `got` holds the same bytes as `want`, naming the first
/// MiB that differs.
fn assert_same_file(got: &Path, want: &Path) {
    let (gl, wl) = (
        std::fs::metadata(got)
            .unwrap_or_else(|e| panic!("{}: {e}", got.display()))
            .len(),
        std::fs::metadata(want).unwrap().len(),
    );
    assert_eq!(gl, wl, "{} has {gl} bytes, the input {wl}", got.display());
    let (mut g, mut w) = (File::open(got).unwrap(), File::open(want).unwrap());
    let (mut gb, mut wb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut off = 0u64;
    loop {
        let n = w.read(&mut wb).unwrap();
        if n == 0 {
            break;
        }
        g.read_exact(&mut gb[..n]).unwrap();
        if gb[..n] != wb[..n] {
            let i = (0..n).find(|&i| gb[i] != wb[i]).unwrap();
            panic!(
                "{} differs from the input at byte {} (page {})",
                got.display(),
                off + i as u64,
                (off + i as u64) / 4096
            );
        }
        off += n as u64;
    }
}

/// What a transfer with a killed connection left.
struct Outcome {
    send: transit_tests::Finished,
    recv: transit_tests::Finished,
    took: Duration,
}

/// Receive with `recv_args` in `b`, send with `send_args` (the address
/// first) in `a`, kill the busiest page connection once it has
/// `threshold` bytes acknowledged, and wait for both ends. `feed`, if
/// given, is written to the sender's stdin.
fn transfer_with_a_kill(
    bed: &TestBed,
    recv_args: &[&str],
    send_args: &[&str],
    threshold: u64,
    feed: Option<&Path>,
) -> Outcome {
    let t0 = Instant::now();
    let (recv, addr) = bed.recv(recv_args);
    let port = port_of(&addr);
    let mut args = vec![addr.as_str()];
    args.extend_from_slice(send_args);
    let stdin = if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut send = bed.send(&args, stdin);
    let feeder = feed.map(|path| {
        let mut from = File::open(path).expect("open the stream's source");
        let mut to = send.child.stdin.take().expect("stdin");
        // Ends at the end of the file, or at EPIPE once the sender exited.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
        })
    });
    bed.kill_busiest_page_connection(&mut send, port, 4, threshold);
    let send = send.wait_within(TRANSFER_LIMIT);
    let recv = recv.wait_within(TRANSFER_LIMIT);
    if let Some(f) = feeder {
        f.join().expect("feeder");
    }
    let took = t0.elapsed();
    eprintln!("transfer with a killed connection: {took:?}");
    Outcome { send, recv, took }
}

/// Both ends exited 0 and verified, each counted the replaced connection,
/// both saw the same digest and data, and `out` is `input`.
fn assert_replaced_and_identical(o: &Outcome, out: &Path, input: &Path, size: u64, mode: &str) {
    assert_eq!(o.send.code(), Some(0), "send: {}", o.send.stderr);
    assert_eq!(o.recv.code(), Some(0), "recv: {}", o.recv.stderr);
    let (sj, rj) = (json(&o.send.stdout), json(&o.recv.stdout));
    for (role, j) in [("send", &sj), ("recv", &rj)] {
        assert_eq!(j["verified"], true, "{role}: {j}");
        assert_eq!(j["mode"], mode, "{role}: {j}");
        assert_eq!(j["channels"], 4, "{role}: {j}");
        assert!(
            j["reconnects"].as_u64().unwrap_or(0) >= 1,
            "{role}: no reconnect counted: {j}"
        );
        // Sent again, counted once.
        assert_eq!(j["covered_bytes"], size, "{role}: {j}");
        assert_eq!(j["bytes"], size, "{role}: {j}");
    }
    assert!(sj["digest"].is_string(), "{sj}");
    assert_eq!(sj["digest"], rj["digest"]);
    for (role, f) in [("send", &o.send), ("recv", &o.recv)] {
        assert!(error_lines(&f.stderr).is_empty(), "{role}: {}", f.stderr);
    }
    assert_same_file(out, input);
    assert!(o.took < Duration::from_secs(50), "took {:?}", o.took);
}

#[test]
fn a_page_connection_killed_mid_transfer_is_replaced_and_the_file_arrives_identical() {
    let _serial = serial();
    let dir = Scratch::new("reconnect-file");
    let size = 256 * MIB;
    let input = dir.join("in.img");
    write_input(&input, size, 1);
    let out = dir.join("out.img");
    let bed = TestBed::new(1);
    let o = transfer_with_a_kill(
        &bed,
        &["--output", s(&out), "--json"],
        &["--input", s(&input), "-c", "4", "--json"],
        size / 16,
        None,
    );
    assert_replaced_and_identical(&o, &out, &input, size, "image");
}

#[test]
fn a_page_connection_killed_mid_transfer_over_tls_is_replaced_and_the_file_arrives_identical() {
    let _serial = serial();
    let dir = Scratch::new("reconnect-tls");
    let creds = pki::write(dir.path(), Fault::None);
    let size = 128 * MIB;
    let input = dir.join("in.img");
    write_input(&input, size, 2);
    let out = dir.join("out.img");
    let bed = TestBed::new(2);
    let o = transfer_with_a_kill(
        &bed,
        &[
            "--output",
            s(&out),
            "--tls-creds",
            s(&creds.server),
            "--json",
        ],
        &[
            "--input",
            s(&input),
            "-c",
            "4",
            "--tls-creds",
            s(&creds.client),
            // The server's certificate names localhost, not 10.78.2.2.
            "--tls-hostname",
            "localhost",
            "--json",
        ],
        size / 16,
        None,
    );
    assert_replaced_and_identical(&o, &out, &input, size, "image");
}

#[test]
fn a_page_connection_of_a_stream_killed_mid_transfer_is_replaced_and_the_stream_arrives_identical()
{
    let _serial = serial();
    let dir = Scratch::new("reconnect-stream");
    let size = 256 * MIB;
    let input = dir.join("in.bin");
    write_input(&input, size, 3);
    let out = dir.join("out.bin");
    let bed = TestBed::new(3);
    // stdin is a pipe fed from the file: a stream.
    let o = transfer_with_a_kill(
        &bed,
        &["--output", s(&out), "--json"],
        &["--input", "-", "-c", "4", "--json"],
        size / 16,
        Some(&input),
    );
    assert_replaced_and_identical(&o, &out, &input, size, "stream");
}

#[test]
fn with_reconnect_off_a_killed_channel_fails_both_ends() {
    let _serial = serial();
    let dir = Scratch::new("reconnect-off");
    let size = 128 * MIB;
    let input = dir.join("in.img");
    write_input(&input, size, 4);
    let outdir = Scratch::new("reconnect-off-out");
    let out = outdir.join("out.img");
    let bed = TestBed::new(4);
    let o = transfer_with_a_kill(
        &bed,
        &["--output", s(&out), "--reconnect", "0", "--json"],
        &[
            "--input",
            s(&input),
            "-c",
            "4",
            "--reconnect",
            "0",
            "--json",
        ],
        size / 16,
        None,
    );
    // The receiver names either its own page channel or, when the
    // sender's report on the main channel comes first, the sender's page
    // channel in the reported error.
    for (role, f) in [("send", &o.send), ("recv", &o.recv)] {
        assert_eq!(f.code(), Some(1), "{role}: {}", f.stderr);
        let errs = error_lines(&f.stderr);
        assert_eq!(errs.len(), 1, "{role}: {}", f.stderr);
        assert!(errs[0].contains("page channel"), "{role}: {}", errs[0]);
    }
    assert!(!out.exists(), "a failed transfer left {}", out.display());
    assert!(
        outdir.names().is_empty(),
        "files left: {:?}",
        outdir.names()
    );
    assert!(o.took < Duration::from_secs(50), "took {:?}", o.took);
}

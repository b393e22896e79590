//! Shared helpers of the cross-crate tests: locating and driving the
//! `transit` binary, unique scratch directories, generated images.
//!
//! The binary is looked up next to the test executable
//! (`target/<profile>/transit`, the test itself lives in
//! `target/<profile>/deps`). `cargo test --workspace` builds it; when a
//! single test crate is run alone, build it first with
//! `cargo build -p transit`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transit_multifd::{Content, ImageSpec, SourceImage};

/// Upper bound of any single command in the tests.
pub const LIMIT: Duration = Duration::from_secs(120);

/// Run `bash scripts/NAME` from the workspace root with this build's
/// binary as `TRANSIT`, the environment `envs` and no stdin, within
/// `within`; fails the test unless it exits 0, showing both outputs.
/// Returns its stdout.
pub fn run_script(name: &str, envs: &[(&str, &str)], within: Duration) -> String {
    let done = script(name, envs, within);
    let out = done.stdout_text();
    assert_eq!(
        done.code(),
        Some(0),
        "scripts/{name} {envs:?} failed:\n{out}\n{}",
        done.stderr
    );
    out
}

/// [`run_script`]'s run, whatever its exit status.
pub fn script(name: &str, envs: &[(&str, &str)], within: Duration) -> Finished {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts").join(name))
        .env("TRANSIT", transit_bin())
        .envs(envs.iter().copied())
        .current_dir(root)
        .stdin(Stdio::null());
    // Its own process group, so that a timeout kills what it started too
    // (see `Running::wait_within`).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Running::spawn(cmd).wait_within(within)
}

/// The path of the `transit` binary of this build.
pub fn transit_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target directory");
    let bin = dir.join("transit");
    assert!(
        bin.exists(),
        "{} does not exist: build it with `cargo build -p transit` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A `transit` command with the given arguments.
pub fn transit(args: &[&str]) -> Command {
    let mut c = Command::new(transit_bin());
    c.args(args);
    c
}

/// A unique directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Make a new empty directory tagged `tag`.
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!(
            "transit-t-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        Scratch(d)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names of the files in it, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bytes of a generated image, as `transit send --ram SIZE
/// --zero-ratio R --seed S` makes it (page size 4096, random content).
pub fn image_bytes(size: u64, zero_ratio: f64, seed: u64) -> Vec<u8> {
    let spec = ImageSpec {
        size,
        page_size: 4096,
        zero_ratio,
        seed,
        content: Content::Random,
    };
    SourceImage::generate(&spec)
        .expect("generate image")
        .as_slice()
        .to_vec()
}

/// Pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A running transit process whose stdout and stderr are collected by
/// reader threads.
pub struct Running {
    /// The process.
    pub child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    out_lines: mpsc::Receiver<String>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// What a finished process left.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: Vec<u8>,
    /// Everything on stderr.
    pub stderr: String,
}

impl Finished {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Assert that this `transit ... --json` run (`role` names it in
    /// messages) exited 0 and its summary reports `channels` page channels
    /// and a verified session.
    pub fn assert_verified(&self, role: &str, channels: u64) {
        assert_eq!(self.code(), Some(0), "{role}: {}", self.stderr);
        let json: serde_json::Value = serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!("{role}: summary is not JSON ({e}): {}", self.stdout_text())
        });
        assert_eq!(json["channels"], channels, "{role}: {json}");
        assert_eq!(json["verified"], true, "{role}: {json}");
    }

    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Running {
    /// Start `cmd` with piped stdout and stderr (stdin as configured, else
    /// null).
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn transit");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ltx, lines) = mpsc::channel();
        let (otx, out_lines) = mpsc::channel();
        let mut readers = Vec::new();
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let e2 = stderr.clone();
        readers.push(std::thread::spawn(move || {
            let mut line = String::new();
            while let Ok(n) = err.read_line(&mut line) {
                if n == 0 {
                    break;
                }
                e2.lock().unwrap().push_str(&line);
                let _ = ltx.send(line.trim_end().to_owned());
                line.clear();
            }
        }));
        let mut out = child.stdout.take().expect("stdout");
        let o2 = stdout.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut pending = Vec::new();
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o2.lock().unwrap().extend_from_slice(&buf[..n]);
                // Lines of text (JSON) as they come; binary data is ignored
                // by the consumers.
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let _ = otx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
                if pending.len() > 1 << 20 {
                    pending.clear();
                }
            }
        }));
        Running {
            child,
            stdout,
            stderr,
            lines,
            out_lines,
            readers,
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait (bounded) for a stderr line matching `pred`; returns it.
    pub fn wait_stderr(&self, pred: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        wait_line(&self.lines, pred, within)
    }

    /// Wait (bounded) for a stdout line matching `pred`; returns it.
    pub fn wait_stdout(&self, pred: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        wait_line(&self.out_lines, pred, within)
    }

    /// Wait for the `transit: listening on ADDR` line; returns ADDR.
    pub fn listening(&self) -> String {
        let line = self
            .wait_stderr(
                |l| l.starts_with("transit: listening on "),
                Duration::from_secs(30),
            )
            .unwrap_or_else(|| {
                panic!("no listening line; stderr: {}", self.stderr.lock().unwrap())
            });
        line.trim_start_matches("transit: listening on ").to_owned()
    }

    /// Send a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid of our own child and a valid signal.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait at most `within` for the exit; kills the process and panics
    /// if it does not exit in time.
    pub fn wait_within(mut self, within: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > within {
                // A child that leads its own process group (a script run
                // by `run_script`) takes what it started with it.
                // SAFETY: getpgid and kill on our own child's pid.
                unsafe {
                    let pid = self.pid();
                    if libc::getpgid(pid) == pid {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "transit did not exit within {within:?}; stderr: {}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stdout = std::mem::take(&mut *self.stdout.lock().unwrap());
        let stderr = std::mem::take(&mut *self.stderr.lock().unwrap());
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    /// Wait for the exit within [`LIMIT`].
    pub fn finish(self) -> Finished {
        self.wait_within(LIMIT)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_line(
    rx: &mpsc::Receiver<String>,
    pred: impl Fn(&str) -> bool,
    within: Duration,
) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Run a command to completion within [`LIMIT`].
pub fn run(cmd: Command) -> Finished {
    Running::spawn(cmd).finish()
}

/// Parse one JSON document (a `--json` summary on stdout).
pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Start `transit recv URI ARGS...` and wait for its listening address.
pub fn start_recv(uri: &str, args: &[&str]) -> (Running, String) {
    let mut c = transit(&["recv", uri]);
    c.args(args);
    let r = Running::spawn(c);
    let addr = r.listening();
    (r, addr)
}

/// `transit send --input INPUT --json` to a `transit recv tcp:127.0.0.1:0
/// --json RECV_ARGS...` started first; both must succeed. Returns the
/// sender's and the receiver's JSON summaries.
pub fn send_file_json(
    input: &std::path::Path,
    recv_args: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(recv_args);
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &args);
    let send = run(transit(&[
        "send",
        &addr,
        "--input",
        input.to_str().expect("a UTF-8 path"),
        "--json",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    (json(&send.stdout), json(&recv.stdout))
}

/// True for a `--json-interval` line that reports data moved.
pub fn has_bytes(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["bytes"].as_u64())
        .is_some_and(|b| b > 0)
}

/// The stderr lines that are errors.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("transit: error:"))
        .collect()
}

/// Fail unless a tool is installed (tests whose tool is missing fail).
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed (bash .ci/run installs it)");
}

/// Write `chunks` pieces of `chunk` pseudo-random bytes to `to`, pausing
/// `pause` after each, then close it: a slow stream source for `send
/// --input -`, whose progress bar and rates then have time to show.
pub fn feed_slowly(
    mut to: impl std::io::Write + Send + 'static,
    chunks: usize,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 0..chunks {
            if to.write_all(&random_bytes(chunk, i as u64 + 1)).is_err() {
                return;
            }
            let _ = to.flush();
            std::thread::sleep(pause);
        }
    })
}

pub mod tty;

/// TLS credential directories in QEMU's layout for loopback tests.
pub mod pki {
    use std::path::{Path, PathBuf};

    use transit_channel::tls::generate::{IssueParams, TestPki, Validity};
    use transit_channel::tls::Endpoint;

    /// What to change from a good setup.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum Fault {
        /// Everything valid.
        #[default]
        None,
        /// The client trusts another CA.
        WrongCa,
        /// The server's certificate has expired.
        ExpiredServer,
        /// The client has no certificate.
        NoClientCert,
        /// The server's certificate is revoked in the client's CRL.
        RevokedServer,
        /// The client's certificate is revoked in the server's CRL.
        RevokedClient,
    }

    /// A client and a server directory.
    #[derive(Debug)]
    pub struct Dirs {
        /// `--tls-creds` of send.
        pub client: PathBuf,
        /// `--tls-creds` of recv.
        pub server: PathBuf,
    }

    /// Write `client/` and `server/` under `root`: the server's
    /// certificate names localhost, 127.0.0.1 and ::1; the client's is
    /// `CN=transit-client`.
    pub fn write(root: &Path, fault: Fault) -> Dirs {
        let pki = TestPki::new().expect("CA");
        let mut sp = IssueParams::server(&["localhost", "127.0.0.1", "::1"]);
        if fault == Fault::ExpiredServer {
            sp.validity = Validity::Expired;
        }
        let server = pki.issue(&sp).expect("server cert");
        let client = pki
            .issue(&IssueParams::client("transit-client"))
            .expect("client cert");
        let (cdir, sdir) = (root.join("client"), root.join("server"));
        let other = TestPki::with_name("another CA").expect("CA 2");
        let client_pki = if fault == Fault::WrongCa {
            &other
        } else {
            &pki
        };
        let client_id = if fault == Fault::NoClientCert {
            None
        } else {
            Some(&client)
        };
        let crl_c: Option<&[&_]> = if fault == Fault::RevokedServer {
            Some(&[&server])
        } else {
            None
        };
        let crl_s: Option<&[&_]> = if fault == Fault::RevokedClient {
            Some(&[&client])
        } else {
            None
        };
        if fault == Fault::WrongCa {
            // The client's directory holds another CA's certificate but
            // still this CA's client identity (the server accepts it).
            client_pki
                .write_dir(&cdir, Endpoint::Client, None, None)
                .expect("client dir");
            for (name, text) in [
                ("client-cert.pem", &client.cert_pem),
                ("client-key.pem", &client.key_pem),
            ] {
                std::fs::write(cdir.join(name), text).expect("write");
            }
        } else {
            pki.write_dir(&cdir, Endpoint::Client, client_id, crl_c)
                .expect("client dir");
        }
        pki.write_dir(&sdir, Endpoint::Server, Some(&server), crl_s)
            .expect("server dir");
        Dirs {
            client: cdir,
            server: sdir,
        }
    }
}

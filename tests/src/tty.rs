//! A `transit` process whose stderr is a terminal: the slave side of a
//! pseudo-terminal this process reads. The progress bar is drawn only on a
//! terminal, so this is how tests see it.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Finished;

/// Open a pseudo-terminal 250 columns wide; returns (master, slave).
fn open_pty() -> (File, File) {
    // SAFETY: posix_openpt returns a new descriptor or -1; checked.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(
        master >= 0,
        "posix_openpt: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `master` is a descriptor we own from here on.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    use std::os::fd::AsRawFd;
    let m = master.as_raw_fd();
    // SAFETY: `m` is a valid pty master descriptor.
    let ok = unsafe { libc::grantpt(m) == 0 && libc::unlockpt(m) == 0 };
    assert!(ok, "grantpt/unlockpt: {}", std::io::Error::last_os_error());
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is a writable buffer of the length given.
    let rc = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
    assert_eq!(rc, 0, "ptsname_r");
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; the result is checked.
    let slave = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    assert!(
        slave >= 0,
        "open {path:?}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `slave` is a new descriptor we own.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let ws = libc::winsize {
        ws_row: 50,
        ws_col: 250,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer given.
    unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) };
    (File::from(master), File::from(slave))
}

/// What a terminal shows as lines: escape sequences removed, carriage
/// returns and newlines both end a line, blank lines dropped.
pub fn screen_lines(raw: &str) -> Vec<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte (a letter).
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(if c == '\r' { '\n' } else { c });
    }
    out.lines()
        .map(|l| l.trim_end().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A running process with its stderr on a terminal and its stdout piped.
pub struct OnTerminal {
    /// The process (its stdin as the command set it).
    pub child: Child,
    screen: Arc<Mutex<String>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl OnTerminal {
    /// Start `cmd` with stderr on a new terminal and stdout piped.
    pub fn spawn(mut cmd: Command) -> OnTerminal {
        let (mut master, slave) = open_pty();
        cmd.stderr(Stdio::from(slave)).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn transit");
        // Our copy of the slave goes with `cmd`: once the child exits, the
        // master reads end of file (EIO).
        drop(cmd);
        let screen = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let s2 = screen.clone();
        let mut readers = vec![std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })];
        let mut out = child.stdout.take().expect("stdout");
        let o2 = stdout.clone();
        readers.push(std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            *o2.lock().unwrap() = v;
        }));
        OnTerminal {
            child,
            screen,
            stdout,
            readers,
        }
    }

    /// The terminal's lines so far (see [`screen_lines`]).
    pub fn lines(&self) -> Vec<String> {
        screen_lines(&self.screen.lock().unwrap())
    }

    /// Wait (bounded) for a line matching `pred`; returns it.
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for `transit: listening on ADDR`; returns ADDR.
    pub fn listening(&self) -> String {
        let line = self
            .wait_line(
                |l| l.starts_with("transit: listening on "),
                Duration::from_secs(30),
            )
            .unwrap_or_else(|| panic!("no listening line; terminal: {:?}", self.lines()));
        line.trim_start_matches("transit: listening on ").to_owned()
    }

    /// Wait at most `within` for the exit (kill and panic after); the
    /// terminal's text is [`Finished::stderr`].
    pub fn wait_within(mut self, within: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "transit did not exit within {within:?}; terminal: {:?}",
                    self.lines()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stdout = std::mem::take(&mut *self.stdout.lock().unwrap());
        let stderr = std::mem::take(&mut *self.screen.lock().unwrap());
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_go_and_carriage_returns_end_lines() {
        let raw =
            "transit: listening on tcp:x\r\n\x1b[2Ksent [=> ] 1 MiB\rsent [==>] 2 MiB\x1b[0m\r\n";
        assert_eq!(
            screen_lines(raw),
            [
                "transit: listening on tcp:x",
                "sent [=> ] 1 MiB",
                "sent [==>] 2 MiB"
            ]
        );
    }
}

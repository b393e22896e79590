//! `exec:COMMAND` and `stdio:`: a second transit process at the far end of
//! a command's pipes (framed: one run per channel, joined at the far end;
//! and `--raw`), a command's exit status, and a command that ignores end
//! of file and SIGTERM.

use std::time::{Duration, Instant};

use transit_tests::pki::{self, Fault};
use transit_tests::{
    error_lines, image_bytes, random_bytes, run, transit, transit_bin, Running, Scratch,
};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn bin() -> String {
    transit_bin().display().to_string()
}

#[test]
fn exec_framed_through_a_second_transit_process() {
    let dir = Scratch::new("exec-4");
    let out = dir.join("out.img");
    let cmd = format!("exec:{} recv stdio: --output {}", bin(), out.display());
    let send = run(transit(&[
        "send",
        &cmd,
        "--ram",
        "8M",
        "--zero-ratio",
        "0.25",
        "--seed",
        "41",
        "--channels",
        "4",
        "--json",
    ]));
    send.assert_verified("send", 4);
    // The sender returns after every run of the command ended, so the far
    // end has put its output in place.
    assert!(std::fs::read(&out).unwrap() == image_bytes(8 << 20, 0.25, 41));
}

#[test]
fn exec_framed_input_file_through_sh_c() {
    let dir = Scratch::new("exec-file");
    let src = dir.join("img");
    std::fs::write(&src, image_bytes(4 << 20, 0.5, 42)).unwrap();
    let out = dir.join("copy");
    let cmd = format!(
        "exec:sh -c \"{} recv stdio: --output {}\"",
        bin(),
        out.display()
    );
    let send = run(transit(&["send", &cmd, "--input", s(&src)]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap());
}

#[test]
fn exec_raw_through_a_second_transit_process() {
    let dir = Scratch::new("exec-raw");
    let data = random_bytes((1 << 20) + 5, 43);
    let src = dir.join("src");
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out");
    let cmd = format!(
        "exec:{} recv stdio: --raw --output {}",
        bin(),
        out.display()
    );
    let send = run(transit(&["send", &cmd, "--raw", "--input", s(&src)]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn exec_framed_over_tls() {
    let dir = Scratch::new("exec-tls");
    let d = pki::write(dir.path(), Fault::None);
    let out = dir.join("out.img");
    let cmd = format!(
        "exec:{} recv stdio: --tls-creds {} --output {}",
        bin(),
        d.server.display(),
        out.display()
    );
    let send = run(transit(&[
        "send",
        &cmd,
        "--ram",
        "4M",
        "--seed",
        "44",
        "--channels",
        "2",
        "--tls-creds",
        s(&d.client),
        "--tls-hostname",
        "localhost",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    assert!(std::fs::read(&out).unwrap() == image_bytes(4 << 20, 0.5, 44));
}

#[test]
fn recv_exec_raw_reads_the_commands_stdout() {
    let dir = Scratch::new("recv-exec");
    let data = random_bytes(300_001, 45);
    let src = dir.join("src");
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out");
    let r = run(transit(&[
        "recv",
        &format!("exec:cat {}", src.display()),
        "--raw",
        "--output",
        s(&out),
    ]));
    assert_eq!(r.code(), Some(0), "recv: {}", r.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn a_command_that_exits_3_fails_send_with_its_status() {
    let r = run(transit(&["send", "exec:exit 3", "--ram", "1M", "--raw"]));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    let e = error_lines(&r.stderr);
    assert_eq!(e.len(), 1, "{}", r.stderr);
    assert!(e[0].contains("status 3"), "{}", e[0]);
}

#[test]
fn a_framed_session_to_a_command_that_exits_3_fails_with_its_status() {
    let r = run(transit(&["send", "exec:exit 3", "--ram", "1M"]));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    let e = error_lines(&r.stderr);
    assert_eq!(e.len(), 1, "{}", r.stderr);
    assert!(e[0].contains("status 3"), "{}", e[0]);
}

#[test]
fn a_command_ignoring_eof_and_sigterm_is_killed_within_the_close_timeout() {
    let start = Instant::now();
    let r = Running::spawn(transit(&[
        "send",
        "exec:trap '' TERM; while :; do sleep 1; done",
        "--ram",
        "4K",
        "--raw",
    ]))
    .wait_within(Duration::from_secs(30));
    // Close timeout 5 s + kill timeout 2 s; generous bound for a loaded
    // machine, far below the command's endless loop.
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    let e = error_lines(&r.stderr);
    assert_eq!(e.len(), 1, "{}", r.stderr);
    assert!(e[0].contains("SIGKILL"), "{}", e[0]);
}

#[test]
fn framed_recv_stdio_without_a_join_preamble_fails_clearly() {
    let mut c = transit(&["recv", "stdio:", "--timeout", "10"]);
    c.stdin(std::process::Stdio::piped());
    let mut r = Running::spawn(c);
    {
        use std::io::Write;
        let mut stdin = r.child.stdin.take().expect("stdin");
        stdin.write_all(&[0x55u8; 64]).unwrap();
    }
    let f = r.wait_within(Duration::from_secs(30));
    assert_eq!(f.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("join preamble"), "{}", f.stderr);
}

#[test]
fn recv_exec_without_raw_is_refused_with_the_alternative() {
    let r = run(transit(&["recv", "exec:true"]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--raw"), "{}", r.stderr);
    assert!(r.stderr.contains("recv stdio:"), "{}", r.stderr);
}

/// The mtime of `path`.
fn mtime(path: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn raw_send_terms_the_command_5_s_after_its_input_closed() {
    // docs/cli.md: stdin closes, 5 s, SIGTERM. The raw sender drains the
    // command's stdout for up to 5 s first; that time counts.
    let dir = Scratch::new("exec-term-time");
    let (eof, term) = (dir.join("eof"), dir.join("term"));
    let cmd = format!(
        "exec:cat >/dev/null; : > {}; trap ': > {}; exit 7' TERM; while :; do sleep 0.1; done",
        eof.display(),
        term.display()
    );
    let r = Running::spawn(transit(&["send", &cmd, "--raw", "--ram", "4K"]))
        .wait_within(Duration::from_secs(40));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("sent SIGTERM"), "{}", r.stderr);
    let waited = mtime(&term)
        .duration_since(mtime(&eof))
        .expect("SIGTERM after end of file");
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_millis(7500),
        "SIGTERM came {waited:?} after the command's stdin closed, not 5 s"
    );
}

#[test]
fn the_signals_reach_what_the_command_started() {
    let dir = Scratch::new("exec-group");
    let pidfile = dir.join("pid");
    let cmd = format!(
        // sleep lets go of transit's stderr, or collecting it would wait
        // for sleep to end.
        "exec:cat >/dev/null; sleep 30 >/dev/null 2>&1 & echo $! > {}; wait",
        pidfile.display()
    );
    let r = Running::spawn(transit(&["send", &cmd, "--raw", "--ram", "4K"]))
        .wait_within(Duration::from_secs(40));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
    };
    let start = Instant::now();
    while !gone(pid) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphan = !gone(pid);
    if orphan {
        // SAFETY: kill has no memory effects; clean up the orphan.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        !orphan,
        "sleep {pid} outlived the send: only sh was signalled"
    );
}

/// A framed `exec:` to a command that swallows the handshake in silence
/// (`cat > FILE`, not a transit receiver): the sender says what it waits
/// for after a few seconds, fails at its handshake timeout, not later (the
/// commands are ended at once, not granted the close timeout), and the
/// error says what `exec:` expects.
#[test]
fn a_framed_exec_to_a_silent_command_says_what_exec_expects_and_fails_at_the_timeout() {
    let dir = Scratch::new("exec-silent");
    let sink = dir.join("swallowed");
    let start = Instant::now();
    let r = Running::spawn(transit(&[
        "send",
        &format!("exec:cat > {}", sink.display()),
        "--ram",
        "1M",
        "--timeout",
        "5",
    ]))
    .wait_within(Duration::from_secs(40));
    let took = start.elapsed();
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("no handshake answer yet"),
        "no early note: {}",
        r.stderr
    );
    let e = error_lines(&r.stderr);
    assert_eq!(e.len(), 1, "{}", r.stderr);
    assert!(e[0].contains("timed out after 5.0 s"), "{}", e[0]);
    assert!(e[0].contains("transit recv stdio:"), "{}", e[0]);
    assert!(e[0].contains("--raw"), "{}", e[0]);
    // Handshake timeout 5 s; the old code added the 5 s close timeout of
    // every command on top (10 s).
    assert!(took < Duration::from_secs(9), "took {took:?}");
}

/// A framed `exec:` to a command that answers with something else and
/// exits: the error says what `exec:` expects.
#[test]
fn a_framed_exec_to_a_command_that_is_not_transit_says_what_exec_expects() {
    let r = run(transit(&["send", "exec:echo hello", "--ram", "1M"]));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    let e = error_lines(&r.stderr);
    assert_eq!(e.len(), 1, "{}", r.stderr);
    assert!(e[0].contains("transit recv stdio:"), "{}", e[0]);
}

//! Issue 15: how much send and recv say. `-v` adds a line per channel to
//! the summary (it added rates to the bar only, though its help promised
//! the summary too); `-q` prints errors only (and recv's listening line,
//! which scripts read the port from), JSON output untouched;
//! `--no-progress` drops the bar and keeps the summary.

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use transit_tests::tty::{screen_lines, OnTerminal};
use transit_tests::{error_lines, feed_slowly, run, start_recv, transit};

#[test]
fn verbose_adds_a_summary_line_per_channel() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["-v"]);
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "2M",
        "--channels",
        "3",
        "-v",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    for (role, stderr) in [("send", &send.stderr), ("recv", &recv.stderr)] {
        let channels: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("transit:   channel "))
            .collect();
        assert_eq!(channels.len(), 3, "{role}: {stderr}");
        for (i, l) in channels.iter().enumerate() {
            assert!(l.starts_with(&format!("transit:   channel {i}: ")), "{l}");
            assert!(l.contains("/s, ") && l.contains(" packets"), "{l}");
        }
    }
    // Without -v: the summary line alone.
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &[]);
    let send = run(transit(&["send", &addr, "--ram", "1M", "--channels", "2"]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    assert_eq!(send.stderr.lines().count(), 1, "{}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.stderr.lines().count(), 2, "{}", recv.stderr);
}

/// Send a slow stream (the bar has time to show) with `extra` options,
/// both ends on terminals; returns both terminals' lines.
fn on_terminals(recv_extra: &[&str], send_extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut rc = transit(&["recv", "tcp:127.0.0.1:0"]);
    rc.args(recv_extra);
    let recv = OnTerminal::spawn(rc);
    let addr = recv.listening();
    let mut cmd = transit(&["send", &addr, "--input", "-", "--channels", "2"]);
    cmd.args(send_extra).stdin(Stdio::piped());
    let mut send = OnTerminal::spawn(cmd);
    let stdin = send.child.stdin.take().expect("stdin");
    let feeder = feed_slowly(stdin, 4, 128 << 10, Duration::from_millis(250));
    let send = send.wait_within(Duration::from_secs(60));
    feeder.join().unwrap();
    let recv = recv.wait_within(Duration::from_secs(60));
    let (s, r) = (screen_lines(&send.stderr), screen_lines(&recv.stderr));
    assert_eq!(send.code(), Some(0), "send: {s:?}");
    assert_eq!(recv.code(), Some(0), "recv: {r:?}");
    (s, r)
}

#[test]
fn quiet_prints_nothing_but_the_listening_line() {
    // On terminals, where the bar would show.
    let (s, r) = on_terminals(&["-q"], &["--quiet"]);
    assert!(s.is_empty(), "send: {s:?}");
    assert_eq!(r.len(), 1, "recv: {r:?}");
    assert!(
        r[0].starts_with("transit: listening on tcp:127.0.0.1:"),
        "{r:?}"
    );
}

#[test]
fn no_progress_drops_the_bar_and_keeps_the_summary() {
    // The same run without the option draws bars (cli_progress).
    let (s, r) = on_terminals(&["--no-progress"], &["--no-progress"]);
    assert_eq!(s.len(), 1, "send: {s:?}");
    assert!(
        s[0].starts_with("transit: sent stream 512 KiB in "),
        "{s:?}"
    );
    assert_eq!(r.len(), 2, "recv: {r:?}");
    assert!(
        r[1].starts_with("transit: received stream 512 KiB in "),
        "{r:?}"
    );
}

#[test]
fn quiet_keeps_json_and_errors() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["-q", "--json"]);
    let send = run(transit(&["send", &addr, "--ram", "1M", "-q", "--json"]));
    send.assert_verified("send", 4);
    assert!(send.stderr.is_empty(), "{}", send.stderr);
    let recv = recv.finish();
    recv.assert_verified("recv", 4);
    // Nothing but the listening line.
    assert_eq!(recv.stderr.lines().count(), 1, "{}", recv.stderr);
    // An error is still said, in words and (with --json) as JSON.
    let fail = run(transit(&[
        "send",
        "tcp:127.0.0.1:1",
        "--ram",
        "1M",
        "-q",
        "--json",
    ]));
    assert_eq!(fail.code(), Some(1), "{}", fail.stderr);
    assert_eq!(error_lines(&fail.stderr).len(), 1, "{}", fail.stderr);
    let j: serde_json::Value = serde_json::from_slice(&fail.stdout).expect("error JSON");
    assert_eq!(j["type"], "error", "{j}");
}

#[test]
fn quiet_silences_warnings() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["-q"]);
    // A stranger the receiver turns away; it would warn about it.
    let mut c = TcpStream::connect(addr.trim_start_matches("tcp:")).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let send = run(transit(&["send", &addr, "--ram", "1M", "-q"]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert_eq!(recv.stderr.lines().count(), 1, "{}", recv.stderr);
}

#[test]
fn quiet_and_verbose_do_not_go_together() {
    let r = run(transit(&[
        "send",
        "tcp:127.0.0.1:1",
        "--ram",
        "1M",
        "-q",
        "-v",
    ]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

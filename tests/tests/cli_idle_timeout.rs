//! `--idle-timeout` (issue 14, item 7): a sender whose receiver was
//! stopped (SIGSTOP) mid-transfer waited as long as the receiver was
//! stopped; now it fails after the idle timeout, naming a page channel.

use std::time::{Duration, Instant};

use transit_tests::{error_lines, has_bytes, run, start_recv, transit, Running, Scratch};

#[test]
fn a_stopped_receiver_fails_the_sender_after_the_idle_timeout() {
    let dir = Scratch::new("idle-stop");
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--output", out.to_str().unwrap(), "--json-interval", "0.02"],
    );
    let send = Running::spawn(transit(&[
        "send",
        &addr,
        "--ram",
        "512M",
        "--zero-ratio",
        "0",
        "--channels",
        "2",
        "--idle-timeout",
        "1",
    ]));
    assert!(
        recv.wait_stdout(has_bytes, Duration::from_secs(60))
            .is_some(),
        "the transfer did not start"
    );
    recv.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let send = send.wait_within(Duration::from_secs(30));
    let took = stopped.elapsed();
    recv.signal(libc::SIGCONT);
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
    let lines = error_lines(&send.stderr);
    assert_eq!(lines.len(), 1, "{}", send.stderr);
    assert!(
        lines[0].contains("page channel") && lines[0].contains("timed out after 1.0 s"),
        "{}",
        lines[0]
    );
    assert!(took < Duration::from_secs(15), "the sender took {took:?}");
    // The receiver, resumed, fails too and cleans up.
    let recv = recv.wait_within(Duration::from_secs(30));
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    assert!(dir.names().is_empty(), "files left: {:?}", dir.names());
}

#[test]
fn idle_timeout_must_be_a_sane_number_of_seconds() {
    for bad in ["-1", "nan", "1e300", "soon"] {
        let arg = format!("--idle-timeout={bad}");
        let r = run(transit(&["recv", "tcp:127.0.0.1:0", &arg]));
        assert_eq!(r.code(), Some(2), "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("idle-timeout"), "{bad}: {}", r.stderr);
    }
}

/// `--raw` has the idle timeout too: a peer that sends a few bytes and
/// then nothing fails the receiver (no output left behind), and a peer
/// that accepts and never reads fails the sender.
#[test]
fn raw_copies_fail_after_the_idle_timeout() {
    use std::io::Write;
    let dir = Scratch::new("idle-raw");
    let out = dir.join("out.bin");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &[
            "--raw",
            "--idle-timeout",
            "1",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let mut peer = std::net::TcpStream::connect(addr.trim_start_matches("tcp:")).unwrap();
    peer.write_all(b"a few bytes").unwrap();
    let t = Instant::now();
    let r = recv.wait_within(Duration::from_secs(20));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(r.stderr.contains("--idle-timeout"), "{}", r.stderr);
    assert!(dir.names().is_empty(), "{:?}", dir.names());
    drop(peer);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        // Accept and hold without reading until the sender gave up.
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(8));
        drop(conn);
    });
    let t = Instant::now();
    let s = run(transit(&[
        "send",
        &format!("tcp:127.0.0.1:{port}"),
        "--raw",
        "--ram",
        "256M",
        "--idle-timeout",
        "1",
    ]));
    assert_eq!(s.code(), Some(1), "{}", s.stderr);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(s.stderr.contains("--idle-timeout"), "{}", s.stderr);
    holder.join().unwrap();
}

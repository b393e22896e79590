//! Cancellation and peer failures: SIGTERM on the receiver, the receiver
//! killed at random points, garbage on the listener.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use transit_tests::{error_lines, has_bytes, run, start_recv, transit, Running, Scratch};

#[test]
fn sigterm_on_recv_mid_transfer_exits_130_and_leaves_no_file() {
    let dir = Scratch::new("sigterm");
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--output", out.to_str().unwrap(), "--json-interval", "0.02"],
    );
    let send = Running::spawn(transit(&[
        "send",
        &addr,
        "--ram",
        "1G",
        "--zero-ratio",
        "0",
        "--channels",
        "2",
    ]));
    assert!(
        recv.wait_stdout(has_bytes, Duration::from_secs(60))
            .is_some(),
        "the transfer did not start"
    );
    recv.signal(libc::SIGTERM);
    let recv = recv.wait_within(Duration::from_secs(10));
    assert_eq!(recv.code(), Some(130), "recv: {}", recv.stderr);
    assert_eq!(error_lines(&recv.stderr).len(), 1, "{}", recv.stderr);
    assert!(!out.exists(), "output file left in place");
    assert!(dir.names().is_empty(), "files left: {:?}", dir.names());
    let send = send.wait_within(Duration::from_secs(10));
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
}

#[test]
fn sender_fails_fast_when_the_receiver_is_killed() {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    for round in 0..5 {
        let dir = Scratch::new("kill");
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
            "0.2",
            "--channels",
            "4",
        ]));
        assert!(
            recv.wait_stdout(has_bytes, Duration::from_secs(60))
                .is_some(),
            "round {round}: the transfer did not start"
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 200));
        recv.signal(libc::SIGKILL);
        let killed_at = Instant::now();
        let recv = recv.wait_within(Duration::from_secs(10));
        assert_eq!(
            recv.code(),
            None,
            "round {round}: the receiver finished before the kill"
        );
        let send = send.wait_within(Duration::from_secs(10));
        let took = killed_at.elapsed();
        assert_eq!(send.code(), Some(1), "round {round}: send: {}", send.stderr);
        assert!(
            took < Duration::from_secs(5),
            "round {round}: sender took {took:?}"
        );
        let errs = error_lines(&send.stderr);
        assert_eq!(errs.len(), 1, "{}", send.stderr);
        assert!(errs[0].contains("channel"), "round {round}: {}", errs[0]);
        assert!(!out.exists(), "round {round}: output file in place");
    }
}

#[test]
fn an_http_request_is_rejected_and_a_real_sender_still_succeeds() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--json"]);
    let target = addr.trim_start_matches("tcp:").to_owned();
    let mut http = std::net::TcpStream::connect(&target).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // The receiver closes the connection (EOF or reset), it does not hang.
    let _ = http.read_to_end(&mut rest);
    assert!(
        recv.wait_stderr(
            |l| l.contains("rejected a connection"),
            Duration::from_secs(20)
        )
        .is_some(),
        "no warning about the HTTP request"
    );
    let send = run(transit(&["send", &addr, "--ram", "2M"]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(
        recv.stderr.contains("not a transit sender"),
        "{}",
        recv.stderr
    );
    let v: serde_json::Value = serde_json::from_slice(&recv.stdout).unwrap();
    assert_eq!(v["verified"], true);
}

//! Listening never takes an address over from someone else: a second
//! `recv unix:PATH` on a live socket and `recv tcp::PORT` whose IPv4 (or
//! IPv6) port is taken fail with "in use" instead of stealing the first
//! receiver's sender or listening on one family alone.

use std::time::Duration;

use transit_tests::{error_lines, image_bytes, run, start_recv, transit, Scratch};

#[test]
fn a_second_recv_on_a_live_unix_socket_is_refused_and_the_first_keeps_it() {
    let dir = Scratch::new("listen-unix");
    let sock = dir.join("s.sock");
    let out = dir.join("out.img");
    let uri = format!("unix:{}", sock.display());
    let (first, addr) = start_recv(&uri, &["--output", out.to_str().unwrap()]);

    let out2 = dir.join("out2.img");
    let second = run(transit(&["recv", &uri, "--output", out2.to_str().unwrap()]));
    assert_eq!(second.code(), Some(1), "{}", second.stderr);
    let e = error_lines(&second.stderr);
    assert_eq!(e.len(), 1, "{}", second.stderr);
    assert!(e[0].contains("in use"), "{}", e[0]);
    assert!(!out2.exists());

    // The first receiver still owns the path and gets the sender.
    let send = run(transit(&["send", &addr, "--ram", "1M", "--seed", "7"]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let first = first.wait_within(Duration::from_secs(60));
    assert_eq!(first.code(), Some(0), "first recv: {}", first.stderr);
    assert!(std::fs::read(&out).unwrap() == image_bytes(1 << 20, 0.5, 7));
}

#[test]
fn a_stale_unix_socket_is_replaced() {
    let dir = Scratch::new("listen-stale");
    let sock = dir.join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap()); // leaves the file
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        &format!("unix:{}", sock.display()),
        &["--output", out.to_str().unwrap()],
    );
    let send = run(transit(&["send", &addr, "--ram", "1M", "--seed", "8"]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    assert_eq!(recv.finish().code(), Some(0));
}

#[test]
fn recv_on_a_wildcard_port_taken_for_ipv4_fails_instead_of_listening_on_ipv6_alone() {
    let holder = std::net::TcpListener::bind("0.0.0.0:0").expect("bind holder");
    let port = holder.local_addr().expect("addr").port();
    let dir = Scratch::new("listen-tcp");
    let out = dir.join("out.img");
    let r = run(transit(&[
        "recv",
        &format!("tcp::{port}"),
        "--output",
        out.to_str().unwrap(),
        "--timeout",
        "5",
    ]));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    let e = error_lines(&r.stderr);
    assert_eq!(e.len(), 1, "{}", r.stderr);
    assert!(e[0].contains("not listening on IPv6 alone"), "{}", e[0]);
    assert!(!r.stderr.contains("transit: listening on"), "{}", r.stderr);
}

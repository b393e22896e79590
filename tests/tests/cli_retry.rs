//! `send --retry SECS`: a sender started before its receiver listens
//! keeps trying (as socat's retry=) instead of failing with "Connection
//! refused", so `transit recv ... & transit send ... --retry 5` has no
//! race; without a listener it gives up after SECS with exit 1.

use std::time::{Duration, Instant};

use transit_tests::{error_lines, run, transit, Running, Scratch};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_sender_started_first_waits_for_its_receiver() {
    let port = free_port();
    let addr = format!("tcp:127.0.0.1:{port}");
    let mut send = Running::spawn(transit(&[
        "send",
        &addr,
        "--ram",
        "4M",
        "--channels",
        "2",
        "--retry",
        "20",
        "--json",
    ]));
    // Nothing listens yet: the sender must still be trying.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        send.child.try_wait().unwrap().is_none(),
        "the sender gave up before the receiver started"
    );
    let recv = Running::spawn(transit(&["recv", &addr, "--json"]));
    let send = send.finish();
    let recv = recv.finish();
    send.assert_verified("send", 2);
    recv.assert_verified("recv", 2);
}

#[test]
fn a_unix_socket_that_appears_late_is_retried_too() {
    let dir = Scratch::new("retry");
    let sock = dir.join("late.sock");
    let uri = format!("unix:{}", sock.display());
    let send = Running::spawn(transit(&[
        "send",
        &uri,
        "--ram",
        "1M",
        "--channels",
        "1",
        "--retry",
        "20",
        "--json",
    ]));
    std::thread::sleep(Duration::from_millis(500));
    let recv = Running::spawn(transit(&["recv", &uri, "--json"]));
    let send = send.finish();
    let recv = recv.finish();
    send.assert_verified("send", 1);
    recv.assert_verified("recv", 1);
}

#[test]
fn without_a_listener_retry_gives_up_after_its_time() {
    let port = free_port();
    let start = Instant::now();
    let r = run(transit(&[
        "send",
        &format!("tcp:127.0.0.1:{port}"),
        "--ram",
        "1M",
        "--retry",
        "0.5",
    ]));
    let took = start.elapsed();
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    let errs = error_lines(&r.stderr);
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    assert!(errs[0].contains("--retry"), "{}", errs[0]);
    assert!(errs[0].contains("listening there"), "{}", errs[0]);
    assert!(took >= Duration::from_millis(500), "gave up after {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

//! A second sender that comes while a session runs is told why it is
//! refused; the first session goes on.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use transit_tests::{run, start_recv, transit, Running};

#[test]
fn a_second_sender_is_told_the_receiver_is_busy() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--channels", "1"]);
    // The first sender streams from a pipe this test holds open, so its
    // session stays up while the second one tries.
    let mut first = transit(&["send", &addr, "--channels", "1", "--input", "-"]);
    first.stdin(Stdio::piped());
    let mut first = Running::spawn(first);
    let mut feed = first.child.stdin.take().unwrap();
    feed.write_all(&[7u8; 1 << 20]).unwrap();
    // Let the first session be accepted.
    std::thread::sleep(Duration::from_millis(500));
    let second = run(transit(&[
        "send",
        &addr,
        "--channels",
        "1",
        "--ram",
        "1M",
        "--timeout",
        "10",
    ]));
    assert_ne!(second.code(), Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("busy with another session"),
        "the second sender was not told why: {}",
        second.stderr
    );
    drop(feed);
    let first = first.wait_within(Duration::from_secs(30));
    assert_eq!(first.code(), Some(0), "first sender: {}", first.stderr);
    let recv = recv.wait_within(Duration::from_secs(30));
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
}

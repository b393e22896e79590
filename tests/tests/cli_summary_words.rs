//! Issue 15: a summary calls a stream a stream. The human line of a stream
//! session used to give its rate as `image 0.00 GB/s`.

use std::process::Stdio;
use std::time::Duration;

use transit_tests::{feed_slowly, start_recv, transit, Running};

#[test]
fn a_stream_session_is_never_called_an_image() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["-v"]);
    let mut cmd = transit(&["send", &addr, "--input", "-", "--channels", "2", "-v"]);
    cmd.stdin(Stdio::piped());
    let mut send = Running::spawn(cmd);
    let stdin = send.child.stdin.take().expect("stdin");
    let feeder = feed_slowly(stdin, 2, 256 << 10, Duration::from_millis(50));
    let send = send.finish();
    feeder.join().unwrap();
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    for (role, verb, stderr) in [
        ("send", "sent", &send.stderr),
        ("recv", "received", &recv.stderr),
    ] {
        let summary = stderr
            .lines()
            .find(|l| l.starts_with(&format!("transit: {verb} ")))
            .unwrap_or_else(|| panic!("{role}: no summary: {stderr}"));
        assert!(
            summary.starts_with(&format!("transit: {verb} stream 512 KiB in ")),
            "{role}: {summary}"
        );
        assert!(summary.contains(": stream "), "{role}: {summary}");
        assert!(!stderr.contains("image"), "{role}: {stderr}");
        assert!(!stderr.contains("zero pages"), "{role}: {stderr}");
    }
}

/// And an image is still an image.
#[test]
fn an_image_session_is_called_an_image() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &[]);
    let send = Running::spawn(transit(&["send", &addr, "--ram", "1M", "--channels", "1"])).finish();
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    for (verb, stderr) in [("sent", &send.stderr), ("received", &recv.stderr)] {
        assert!(
            stderr.contains(&format!("transit: {verb} image 1.00 MiB in ")),
            "{stderr}"
        );
        assert!(stderr.contains(": image "), "{stderr}");
    }
}

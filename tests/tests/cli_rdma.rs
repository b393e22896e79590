//! `rdma:` on send and recv: without an RDMA device (this machine's kernel
//! has no InfiniBand support) both ends fail at once with exit 1 and a
//! message that says why — never a hang. With the `rdma` feature of this
//! crate the binary must have been built with RDMA support and the message
//! must say that no RDMA device was found.

use std::io::Read;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use transit_tests::transit;

/// Wait for `child` at most `limit` (a bound against hanging, not a speed
/// check), killing it if it is still running.
fn finish(mut child: Child, limit: Duration) -> Output {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = Vec::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_end(&mut stderr).expect("read stderr");
            }
            return Output {
                status,
                stdout: Vec::new(),
                stderr,
            };
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("transit still running after {limit:?}: it must fail at once");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(args: &[&str]) -> (i32, String) {
    let child = transit(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn transit");
    let out = finish(child, Duration::from_secs(20));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_rdma(code: i32, err: &str) {
    assert_eq!(code, 1, "expected exit 1, stderr: {err}");
    assert!(
        err.starts_with("transit: error: "),
        "not a one-line error: {err}"
    );
    assert!(
        err.contains("rdma:127.0.0.1:"),
        "the error does not name the peer: {err}"
    );
    if cfg!(feature = "rdma") {
        assert!(err.contains("no RDMA device was found"), "{err}");
    } else {
        assert!(
            err.contains("no RDMA device was found") || err.contains("`rdma` cargo feature"),
            "{err}"
        );
    }
}

#[test]
fn send_over_rdma_without_a_device_fails_at_once() {
    let (code, err) = run(&[
        "send",
        "rdma:127.0.0.1:4799",
        "--ram",
        "1M",
        "--channels",
        "2",
    ]);
    assert_no_rdma(code, &err);
    assert!(
        err.contains("main channel"),
        "the error does not name the channel: {err}"
    );
}

#[test]
fn recv_over_rdma_without_a_device_fails_at_once() {
    let (code, err) = run(&["recv", "rdma:127.0.0.1:4798"]);
    assert_no_rdma(code, &err);
    assert!(
        err.contains("listen"),
        "the error does not name the stage: {err}"
    );
}

#[test]
fn a_malformed_rdma_address_is_a_usage_error() {
    let (code, err) = run(&["send", "rdma:127.0.0.1", "--ram", "1M"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rdma:HOST:PORT"), "{err}");
}

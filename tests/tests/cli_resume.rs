//! `recv --output FILE --resume`: a transfer killed midway leaves
//! `.FILE.transit-partial` (never FILE), the next run with `--resume`
//! receives only what the partial file lacks, verifies end to end, renames
//! it over FILE and leaves no partial file behind.

use std::time::Duration;

use transit_tests::{random_bytes, run, send_file_json, start_recv, transit, Running, Scratch};

#[test]
fn a_killed_transfer_resumes_where_it_stopped() {
    let dir = Scratch::new("resume");
    let data = random_bytes(12 << 20, 31);
    let input = dir.join("in.img");
    std::fs::write(&input, &data).unwrap();
    let out = dir.join("out.img");
    let partial = dir.join(".out.img.transit-partial");
    let args = ["--json", "--resume", "--output", out.to_str().unwrap()];

    // Run 1: the sender is killed after about half the file.
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &args);
    let send = Running::spawn(transit(&[
        "send",
        &addr,
        "--input",
        input.to_str().unwrap(),
        "--max-bandwidth",
        "8M",
    ]));
    std::thread::sleep(Duration::from_millis(800));
    send.signal(libc::SIGKILL);
    let _ = send.wait_within(Duration::from_secs(30));
    let recv = recv.wait_within(Duration::from_secs(60));
    assert_eq!(recv.code(), Some(1), "{}", recv.stderr);
    assert!(!out.exists(), "FILE must not appear before a verified run");
    assert!(partial.exists(), "the partial file stays for the next run");

    // Run 2: resumed.
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &args);
    let send = run(transit(&[
        "send",
        &addr,
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(send.code(), Some(0), "{}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "{}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
    assert!(!partial.exists());
    let s: serde_json::Value = serde_json::from_slice(&send.stdout).unwrap();
    let kept = s["kept_pages"].as_u64().unwrap_or(0);
    let sent = s["bytes"].as_u64().unwrap();
    assert!(kept > 0, "{s}");
    assert_eq!(kept * 4096 + sent, 12 << 20, "{s}");
}

#[test]
fn resume_needs_an_output_file_and_framing() {
    for args in [
        vec!["recv", "tcp:127.0.0.1:0", "--resume"],
        vec!["recv", "tcp:127.0.0.1:0", "--resume", "--output", "-"],
        vec![
            "recv",
            "tcp:127.0.0.1:0",
            "--resume",
            "--raw",
            "--output",
            "x",
        ],
    ] {
        let r = run(transit(&args));
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.stderr);
    }
}

/// `--resume --delta` without a partial file starts from FILE: only what
/// differs is sent, and FILE is replaced once verified.
#[test]
fn resume_with_delta_starts_from_the_file_when_no_partial_file_exists() {
    let dir = Scratch::new("resume-delta");
    let old = random_bytes(4 << 20, 41);
    let mut new = old.clone();
    new[100_000] ^= 1;
    new[3_000_000] ^= 1;
    let input = dir.join("in.img");
    std::fs::write(&input, &new).unwrap();
    let out = dir.join("out.img");
    std::fs::write(&out, &old).unwrap();
    let (s, _) = send_file_json(
        &input,
        &["--resume", "--delta", "--output", out.to_str().unwrap()],
    );
    assert!(std::fs::read(&out).unwrap() == new);
    assert!(!dir.join(".out.img.transit-partial").exists());
    assert_eq!(s["bytes"], 2 * 4096, "{s}");
    assert_eq!(s["kept_pages"], 1022, "{s}");
}

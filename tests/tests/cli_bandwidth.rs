//! `send --max-bandwidth RATE`: framed (4 channels) and `--raw` transfers
//! take at least as long as the cap allows, the summary and the JSON say
//! the cap, and bad rates or a cap on `file:` are usage errors. How close
//! to the cap a transfer gets is measured by `scripts/bench-bandwidth.sh`.

use std::time::{Duration, Instant};

use transit_tests::{json, run, start_recv, transit, Scratch};

#[test]
fn a_capped_framed_session_takes_the_time_the_cap_allows() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &[]);
    let t0 = Instant::now();
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "8M",
        "--zero-ratio",
        "0",
        "--channels",
        "4",
        "--max-bandwidth",
        "8M",
        "--json",
    ]));
    let took = t0.elapsed();
    assert_eq!(send.code(), Some(0), "{}", send.stderr);
    assert_eq!(recv.finish().code(), Some(0));
    let s = json(&send.stdout);
    assert_eq!(s["max_bandwidth_bytes_per_second"], 8 << 20);
    // 8 MiB at 8 MiB/s: 1 s, less the 25 ms burst.
    assert!(took >= Duration::from_millis(880), "took {took:?}");
    assert!(s["seconds"].as_f64().unwrap() >= 0.85, "{s}");
}

#[test]
fn a_capped_raw_copy_takes_the_time_the_cap_allows_and_says_so() {
    let dir = Scratch::new("cap-raw");
    let out = dir.join("out");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--raw", "--output", out.to_str().unwrap()],
    );
    let t0 = Instant::now();
    let send = run(transit(&[
        "send",
        &addr,
        "--raw",
        "--ram",
        "4M",
        "--zero-ratio",
        "0",
        "--max-bandwidth",
        "32mbit",
    ]));
    let took = t0.elapsed();
    assert_eq!(send.code(), Some(0), "{}", send.stderr);
    assert_eq!(recv.finish().code(), Some(0));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 4 << 20);
    // 4 MiB at 4 MB/s: 1.05 s, less the burst.
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    assert!(send.stderr.contains("capped at"), "{}", send.stderr);
}

#[test]
fn bad_rates_and_a_cap_on_a_local_file_are_usage_errors() {
    let dir = Scratch::new("cap-usage");
    for bad in ["0", "fast", "-5M"] {
        let r = run(transit(&[
            "send",
            "tcp:127.0.0.1:9",
            "--ram",
            "1M",
            "--max-bandwidth",
            bad,
        ]));
        assert_eq!(r.code(), Some(2), "{bad}: {}", r.stderr);
    }
    let f = dir.join("f");
    let r = run(transit(&[
        "send",
        &format!("file:{}", f.display()),
        "--ram",
        "1M",
        "--max-bandwidth",
        "1M",
    ]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("file:"), "{}", r.stderr);
}

//! Issue 15: one convention of units for people. Summaries, the per-channel
//! lines and the `bench` table write binary sizes and rates with three
//! significant digits, and a rate never rounds to zero: a 2 MB/s stream
//! used to read `data 4.00 MiB at 0.00 GB/s`.

use std::process::Stdio;
use std::time::Duration;

use transit_tests::{feed_slowly, run, start_recv, transit, Running};

/// Every rate a line shows: the number and unit before each `/s`.
fn rates(line: &str) -> Vec<(f64, String)> {
    let words: Vec<&str> = line
        .split([' ', ',', ';', '(', ')'])
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter(|w| w[1].ends_with("/s"))
        .filter_map(|w| Some((w[0].parse().ok()?, w[1].to_owned())))
        .collect()
}

/// A stream of 3 MiB over about 1.5 s: about 2 MiB/s.
fn slow_stream(addr: &str, extra: &[&str]) -> transit_tests::Finished {
    let mut cmd = transit(&["send", addr, "--input", "-", "--channels", "2"]);
    cmd.args(extra).stdin(Stdio::piped());
    let mut send = Running::spawn(cmd);
    let stdin = send.child.stdin.take().expect("stdin");
    let feeder = feed_slowly(stdin, 3, 1 << 20, Duration::from_millis(500));
    let send = send.finish();
    feeder.join().unwrap();
    send
}

#[test]
fn a_slow_stream_has_rates_in_mib_per_second_not_zero_gb_per_second() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["-v"]);
    let send = slow_stream(&addr, &["-v"]);
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    for (role, stderr) in [("send", &send.stderr), ("recv", &recv.stderr)] {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("transit: listening"))
            .collect();
        // The summary and one line per channel.
        assert_eq!(lines.len(), 3, "{role}: {stderr}");
        assert!(lines[0].contains(" 3.00 MiB in "), "{role}: {}", lines[0]);
        for l in &lines {
            let r = rates(l);
            assert!(!r.is_empty(), "{role}: no rate in {l}");
            for (v, unit) in r {
                assert!(v > 0.0, "{role}: a rate of zero in {l}");
                assert!(
                    ["B/s", "KiB/s", "MiB/s"].contains(&unit.as_str()),
                    "{role}: {unit} in {l}"
                );
                // Three significant digits: 1.91, 19.1, 191 (or 1010).
                let digits = format!("{v}")
                    .replace('.', "")
                    .trim_start_matches('0')
                    .len();
                assert!(digits <= 4, "{role}: {v} in {l}");
            }
        }
        assert!(!stderr.contains("GB/s"), "{role}: {stderr}");
    }
}

#[test]
fn the_bench_table_speaks_the_same_units() {
    let b = run(transit(&[
        "bench",
        "--size",
        "4M",
        "--channels",
        "1",
        "--transports",
        "null",
    ]));
    assert_eq!(b.code(), Some(0), "{}", b.stderr);
    let table = b.stdout_text();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].contains("image rate"), "{table}");
    assert!(!table.contains("GB/s"), "{table}");
    let row = lines[1];
    assert!(row.contains("4.00 MiB"), "{row}");
    let r = rates(row);
    assert_eq!(r.len(), 2, "{row}");
    for (v, unit) in r {
        assert!(v > 0.0, "{row}");
        assert!(unit.ends_with("iB/s") || unit == "B/s", "{row}");
    }
    assert!(
        b.stderr.contains("generating a 4.00 MiB image"),
        "{}",
        b.stderr
    );
}

//! `--json` and `--json-interval` output of send and recv.

use transit_tests::{run, start_recv, transit};

#[test]
fn summaries_have_the_documented_fields() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--json"]);
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "4M",
        "--zero-ratio",
        "0.5",
        "--channels",
        "2",
        "--json",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    let s: serde_json::Value = serde_json::from_slice(&send.stdout).expect("send JSON");
    let r: serde_json::Value = serde_json::from_slice(&recv.stdout).expect("recv JSON");
    for (v, role) in [(&s, "send"), (&r, "recv")] {
        assert_eq!(v["type"], "summary");
        assert_eq!(v["role"], role);
        assert_eq!(v["mode"], "image");
        assert_eq!(v["channels"], 2);
        assert_eq!(v["image_bytes"], 4 << 20);
        assert_eq!(
            v["pages"].as_u64().unwrap() + v["zero_pages"].as_u64().unwrap(),
            1024
        );
        assert_eq!(
            v["bytes"].as_u64().unwrap(),
            v["pages"].as_u64().unwrap() * 4096
        );
        assert_eq!(v["verified"], true);
        assert!(v["seconds"].as_f64().unwrap() > 0.0);
        // Rates are plain bytes per second, in fields that say so.
        let secs = v["seconds"].as_f64().unwrap();
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.max(1.0);
        let data = v["data_bytes_per_second"].as_f64().unwrap();
        assert!(near(data, v["bytes"].as_f64().unwrap() / secs), "{v}");
        let covered = v["covered_bytes_per_second"].as_f64().unwrap();
        assert!(
            near(covered, v["covered_bytes"].as_f64().unwrap() / secs),
            "{v}"
        );
        assert!(v["total_bytes_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(gbps_fields(v), Vec::<String>::new(), "{v}");
        assert!(v["cpu"]["user_seconds"].is_number());
        assert!(v["cpu"]["system_seconds"].is_number());
        assert_eq!(v["per_channel"].as_array().unwrap().len(), 2);
        for c in v["per_channel"].as_array().unwrap() {
            assert!(c["cpu_seconds"].as_f64().unwrap() > 0.0, "{c}");
            assert!(c["data_bytes_per_second"].as_f64().unwrap() > 0.0, "{c}");
        }
        assert!(v["peer"].is_string());
    }
    assert_eq!(s["digest"], r["digest"]);
    assert_eq!(s["zero_pages"], r["zero_pages"]);
}

/// Every key of `v`, at any depth, that still ends in `_gbps` (the old
/// names, which read as gigabits).
fn gbps_fields(v: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k.ends_with("_gbps") {
                    found.push(k.clone());
                }
                found.extend(gbps_fields(x));
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| found.extend(gbps_fields(x))),
        _ => {}
    }
    found
}

#[test]
fn json_goes_to_stderr_when_the_data_goes_to_stdout() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--json", "--output", "-"]);
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "1M",
        "--zero-ratio",
        "0",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0));
    assert_eq!(recv.stdout.len(), 1 << 20, "stdout holds the image only");
    let line = recv
        .stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("JSON on stderr");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["image_bytes"], 1 << 20);
}

#[test]
fn intervals_come_before_the_summary() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &[]);
    // Throttle nothing: a big enough image in a debug build takes several
    // 50 ms intervals.
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "64M",
        "--zero-ratio",
        "0",
        "--json",
        "--json-interval",
        "0.05",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    assert_eq!(recv.finish().code(), Some(0));
    let objs: Vec<serde_json::Value> = send
        .stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(objs.len() >= 2, "{} objects", objs.len());
    assert_eq!(objs.last().unwrap()["type"], "summary");
    assert!(objs[..objs.len() - 1]
        .iter()
        .all(|o| o["type"] == "interval"));
    assert!(objs[0]["t_seconds"].as_f64().unwrap() > 0.0);
    for o in &objs[..objs.len() - 1] {
        assert!(o["covered_bytes_per_second"].is_number(), "{o}");
        assert!(o["data_bytes_per_second"].is_number(), "{o}");
        for c in o["per_channel"].as_array().unwrap() {
            assert!(c["data_bytes_per_second"].is_number(), "{c}");
        }
        assert_eq!(gbps_fields(o), Vec::<String>::new(), "{o}");
    }
}

/// `transit bench --json` names its rates the same way.
#[test]
fn bench_rows_carry_bytes_per_second() {
    let b = run(transit(&[
        "bench",
        "--size",
        "4M",
        "--channels",
        "1",
        "--transports",
        "null,buffer",
        "--json",
    ]));
    assert_eq!(b.code(), Some(0), "{}", b.stderr);
    let v: serde_json::Value = serde_json::from_slice(&b.stdout).expect("bench JSON");
    assert_eq!(gbps_fields(&v), Vec::<String>::new(), "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for r in rows {
        let secs = r["seconds"].as_f64().unwrap();
        let image = r["image_bytes_per_second"].as_f64().unwrap();
        let data = r["data_bytes_per_second"].as_f64().unwrap();
        assert!((image * secs - (4 << 20) as f64).abs() < 1.0, "{r}");
        assert!(
            (data * secs - r["data_bytes"].as_f64().unwrap()).abs() < 1.0,
            "{r}"
        );
    }
}

#[test]
fn a_json_interval_out_of_bounds_is_a_usage_error() {
    // A port nobody listens on: an accepted interval would fail later
    // with exit 1 (connection refused), a refused one exits 2 at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("tcp:127.0.0.1:{port}");
    for bad in ["1e-300", "0.001", "1e300", "0", "-1", "NaN", "inf"] {
        for role in ["send", "recv"] {
            let mut args = vec![role];
            if role == "send" {
                args.extend([addr.as_str(), "--ram", "1M"]);
            } else {
                args.extend(["tcp:127.0.0.1:0", "--timeout", "5"]);
            }
            let opt = format!("--json-interval={bad}");
            args.push(&opt);
            let r = run(transit(&args));
            assert_eq!(
                r.code(),
                Some(2),
                "{role} --json-interval {bad}: {}",
                r.stderr
            );
            assert!(r.stderr.contains("0.01"), "{}", r.stderr);
        }
    }
    // The bound itself is fine (the send then fails to connect: exit 1).
    let r = run(transit(&[
        "send",
        &addr,
        "--ram",
        "1M",
        "--json-interval",
        "0.01",
    ]));
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
}

/// With --json a failure is a JSON object too (as iperf3 -J does), where
/// the summary would have gone, next to the human error line.
#[test]
fn a_failure_with_json_prints_an_error_object() {
    // Nothing listens on port 1 of loopback.
    let s = run(transit(&[
        "send",
        "tcp:127.0.0.1:1",
        "--ram",
        "1M",
        "--json",
    ]));
    assert_eq!(s.code(), Some(1), "{}", s.stderr);
    let j: serde_json::Value = serde_json::from_slice(&s.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", s.stdout_text()));
    assert_eq!(j["type"], "error", "{j}");
    assert_eq!(j["role"], "send", "{j}");
    assert_eq!(j["error"], "failure", "{j}");
    assert_eq!(j["exit_code"], 1, "{j}");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{j}"
    );
    assert!(s.stderr.contains("transit: error:"), "{}", s.stderr);
    // The address once in the connect error (it was three times), and a
    // next step.
    assert_eq!(
        s.stderr.matches("connect to 127.0.0.1:1").count(),
        1,
        "{}",
        s.stderr
    );
    assert!(
        s.stderr.contains("is `transit recv` listening there?"),
        "{}",
        s.stderr
    );
    // A usage error found by transit (not by the argument parser).
    let u = run(transit(&[
        "recv",
        "tcp:127.0.0.1:0",
        "--json",
        "--channels",
        "0",
    ]));
    assert_eq!(u.code(), Some(2), "{}", u.stderr);
    let j: serde_json::Value = serde_json::from_slice(&u.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", u.stdout_text()));
    assert_eq!(
        (j["error"].as_str(), j["exit_code"].as_i64()),
        (Some("usage"), Some(2))
    );
}

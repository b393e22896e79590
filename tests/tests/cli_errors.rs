//! Exit codes and error messages: usage errors exit 2, failures exit 1
//! with one `transit: error:` line naming the peer, channel and stage.

use transit_tests::{error_lines, run, start_recv, transit};

#[test]
fn send_without_a_payload_is_a_usage_error() {
    let r = run(transit(&["send", "tcp:127.0.0.1:9"]));
    assert_eq!(r.code(), Some(2));
    assert!(r.stderr.contains("--ram"), "{}", r.stderr);
}

#[test]
fn unknown_options_and_bad_uris_are_usage_errors() {
    assert_eq!(
        run(transit(&[
            "send",
            "tcp:127.0.0.1:9",
            "--ram",
            "1M",
            "--bogus"
        ]))
        .code(),
        Some(2)
    );
    assert_eq!(
        run(transit(&["send", "carrier-pigeon:x", "--ram", "1M"])).code(),
        Some(2)
    );
    assert_eq!(
        run(transit(&["recv", "tcp:127.0.0.1:0", "--channels", "0"])).code(),
        Some(2)
    );
    assert_eq!(run(transit(&["frobnicate"])).code(), Some(2));
    assert_eq!(
        run(transit(&[
            "send",
            "tcp:127.0.0.1:9",
            "--ram",
            "1M",
            "--zero-ratio",
            "2"
        ]))
        .code(),
        Some(2)
    );
}

#[test]
fn a_refused_connect_names_the_channel_and_the_peer() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = run(transit(&[
        "send",
        &format!("tcp:127.0.0.1:{port}"),
        "--ram",
        "1M",
    ]));
    assert_eq!(r.code(), Some(1));
    let errs = error_lines(&r.stderr);
    assert_eq!(errs.len(), 1, "{}", r.stderr);
    assert!(errs[0].contains("channel"), "{}", errs[0]);
    assert!(
        errs[0].contains(&format!("127.0.0.1:{port}")),
        "{}",
        errs[0]
    );
    assert!(errs[0].contains("connect"), "{}", errs[0]);
}

#[test]
fn a_channel_count_mismatch_fails_both_sides_clearly() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--channels", "2"]);
    let send = run(transit(&["send", &addr, "--ram", "1M", "--channels", "4"]));
    let recv = recv.finish();
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    for out in [&send.stderr, &recv.stderr] {
        let errs = error_lines(out);
        assert_eq!(errs.len(), 1, "{out}");
        assert!(
            errs[0].contains("channel count") || errs[0].contains("channels"),
            "{}",
            errs[0]
        );
        assert!(
            errs[0].contains('4') && errs[0].contains('2'),
            "{}",
            errs[0]
        );
    }
}

/// Address mistakes people make get a next step: the URL habit
/// (`tcp://`), a bare HOST:PORT or path; a known scheme with a bad rest
/// gets no list of every scheme.
#[test]
fn address_mistakes_say_what_was_meant() {
    for (addr, want) in [
        ("tcp://127.0.0.1:4000", "did you mean tcp:127.0.0.1:4000?"),
        ("127.0.0.1:4000", "did you mean tcp:127.0.0.1:4000?"),
        (
            "/tmp/x.sock",
            "did you mean unix:/tmp/x.sock or file:/tmp/x.sock?",
        ),
        ("bogus", "rdma:HOST:PORT"),
    ] {
        let r = run(transit(&["send", addr, "--ram", "1M"]));
        assert_eq!(r.code(), Some(2), "{addr}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{addr}: {}", r.stderr);
    }
    let r = run(transit(&["send", "tcp:host:", "--ram", "1M"]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(!r.stderr.contains("exec:COMMAND"), "{}", r.stderr);
}

/// The hint line of a usage error.
fn hint_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("transit: try '"))
        .collect()
}

/// One style for every usage error, whether the argument parser or
/// transit found it: one `transit: error:` line, then
/// `transit: try 'transit SUBCOMMAND --help'`; exit 2, nothing on stdout.
/// Help and version still print to stdout and exit 0.
#[test]
fn parser_and_transit_usage_errors_look_alike() {
    for (args, want, hint) in [
        (
            &["send", "tcp:127.0.0.1:9", "--ram", "1M", "--bogus"][..],
            "--bogus",
            "transit send --help",
        ),
        (&["send", "tcp:127.0.0.1:9"], "--ram", "transit send --help"),
        (&["recv"], "<URI>", "transit recv --help"),
        (
            &["bench", "--channels", "x"],
            "--channels",
            "transit bench --help",
        ),
        (&["frobnicate"], "frobnicate", "transit --help"),
    ] {
        let r = run(transit(args));
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout_text());
        let errs = error_lines(&r.stderr);
        assert_eq!(errs.len(), 1, "{args:?}: {}", r.stderr);
        assert!(errs[0].contains(want), "{args:?}: {}", errs[0]);
        assert_eq!(
            hint_lines(&r.stderr),
            [format!("transit: try '{hint}'")],
            "{args:?}: {}",
            r.stderr
        );
        for l in r.stderr.lines() {
            assert!(
                l.starts_with("transit: "),
                "{args:?}: a line of another style: {l}"
            );
        }
    }
    for args in [
        &["--help"][..],
        &["send", "--help"],
        &["--version"],
        &["recv", "-V"],
    ] {
        let r = run(transit(args));
        assert_eq!(r.code(), Some(0), "{args:?}: {}", r.stderr);
        assert!(r.stderr.is_empty(), "{args:?}: {}", r.stderr);
        assert!(!r.stdout.is_empty(), "{args:?}");
    }
}

/// With --json a usage error the argument parser found is an error object
/// too, where the summary would have gone.
#[test]
fn parser_usage_errors_with_json_print_an_error_object() {
    let r = run(transit(&["bench", "--json", "--channels", "x"]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout_text()));
    assert_eq!(j["type"], "error", "{j}");
    assert_eq!(j["role"], "bench", "{j}");
    assert_eq!(j["error"], "usage", "{j}");
    assert_eq!(j["exit_code"], 2, "{j}");
    assert!(j["message"].as_str().unwrap().contains("--channels"), "{j}");
    assert_eq!(error_lines(&r.stderr).len(), 1, "{}", r.stderr);
    // The data would have gone to stdout: the object goes to stderr.
    let r = run(transit(&[
        "recv",
        "tcp:127.0.0.1:0",
        "--output",
        "-",
        "--json",
        "--bogus",
    ]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout_text());
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON on stderr: {}", r.stderr));
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        (j["role"].as_str(), j["error"].as_str()),
        (Some("recv"), Some("usage"))
    );
}

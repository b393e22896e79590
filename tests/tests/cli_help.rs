//! The help texts: examples at the top level, laid out for 80 columns,
//! defaults shown, each subcommand's own wording, `bench --channels`
//! accepting what its help shows, and every example block running as
//! written on loopback.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use transit_tests::{require_tool, run, transit, transit_bin, Scratch};

/// `transit ARGS --help` as printed to a pipe with `COLUMNS` columns.
fn help(args: &[&str], columns: u32) -> String {
    let mut c = transit(args);
    c.arg("--help").env("COLUMNS", columns.to_string());
    let r = run(c);
    assert_eq!(r.code(), Some(0), "{args:?} --help: {}", r.stderr);
    assert!(r.stderr.is_empty(), "help goes to stdout: {}", r.stderr);
    r.stdout_text()
}

/// The lines of the Examples section (its heading included).
fn examples(help: &str) -> Vec<&str> {
    help.lines()
        .skip_while(|l| !l.starts_with("Examples"))
        .take_while(|l| !l.starts_with("More:"))
        .collect()
}

/// The help of one option: its line and the continuation lines.
fn option_help(help: &str, long: &str) -> String {
    let mut lines = help.lines().skip_while(|l| {
        !l.trim_start()
            .split(", ")
            .any(|f| f.starts_with(&format!("{long} ")))
    });
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no {long} in:\n{help}"));
    let mut out = first.trim().to_owned();
    for l in lines.take_while(|l| !l.trim_start().starts_with('-') && !l.trim().is_empty()) {
        out.push(' ');
        out.push_str(l.trim());
    }
    out
}

#[test]
fn top_level_help_has_examples_that_fit_80_columns() {
    let narrow = help(&[], 80);
    let ex = examples(&narrow);
    assert!(!ex.is_empty(), "no Examples section:\n{narrow}");
    let text = ex.join("\n");
    for want in [
        "transit recv tcp:127.0.0.1:",
        "transit send tcp:127.0.0.1:",
        "--ram",
        "--output copy.img",
        "file:",
        "exec:",
        "transit bench",
    ] {
        assert!(text.contains(want), "examples lack {want:?}:\n{text}");
    }
    for args in [&[][..], &["send"], &["recv"], &["bench"]] {
        let narrow = help(args, 80);
        for l in narrow.lines() {
            assert!(
                l.chars().count() <= 80,
                "{args:?}: a line over 80 columns: {l:?}"
            );
        }
        // Laid out by hand for 80 columns: clap must not have rewrapped
        // any example, so the section reads the same on a wide terminal.
        let wide = help(args, 200);
        assert_eq!(
            examples(&narrow),
            examples(&wide),
            "{args:?}: the examples were rewrapped at 80 columns"
        );
        assert!(!examples(&narrow).is_empty(), "{args:?}: no examples");
    }
}

#[test]
fn defaults_are_shown_and_each_subcommand_words_its_own_options() {
    let send = help(&["send"], 100);
    let recv = help(&["recv"], 100);
    let send_channels = option_help(&send, "--channels");
    let recv_channels = option_help(&recv, "--channels");
    assert!(send_channels.contains("[default: 4]"), "{send_channels}");
    assert!(!send_channels.contains("recv"), "{send_channels}");
    assert!(!recv_channels.contains("[default"), "{recv_channels}");
    assert!(recv_channels.contains("refused"), "{recv_channels}");
    let send_timeout = option_help(&send, "--timeout");
    let recv_timeout = option_help(&recv, "--timeout");
    assert!(send_timeout.contains("[default: 30]"), "{send_timeout}");
    assert!(!send_timeout.contains("recv"), "{send_timeout}");
    assert!(
        recv_timeout.contains("waiting for a sender"),
        "{recv_timeout}"
    );
    assert!(!recv_timeout.contains("send:"), "{recv_timeout}");
    assert!(
        option_help(&send, "--page-size").contains("[default: 4K]"),
        "{send}"
    );
    assert!(
        option_help(&send, "--packet-size").contains("[default: 512K]"),
        "{send}"
    );
    let bench = help(&["bench"], 100);
    assert!(
        option_help(&bench, "--packet-size").contains("[default: 512K]"),
        "{bench}"
    );
}

#[test]
fn reconnect_is_in_send_and_recv_help_with_its_default_and_its_off_switch() {
    for sub in ["send", "recv"] {
        let text = help(&[sub], 100);
        let reconnect = option_help(&text, "--reconnect");
        assert!(reconnect.contains("[default: 30]"), "{sub}: {reconnect}");
        assert!(reconnect.contains("0 turns it off"), "{sub}: {reconnect}");
        assert!(reconnect.contains("--idle-timeout"), "{sub}: {reconnect}");
    }
}

#[test]
fn bench_channels_accept_what_help_shows_and_help_lists_the_transports() {
    let bench = help(&["bench"], 100);
    let channels = option_help(&bench, "--channels");
    assert!(channels.contains("[default: 1,4]"), "{channels}");
    let transports = option_help(&bench, "--transports");
    for t in transit::bench::TRANSPORTS {
        assert!(transports.contains(t), "{t} missing: {transports}");
    }
    // 1,2 as help shows it, 1 2 and the option repeated: the same runs.
    for form in [&["1,2"][..], &["1", "2"], &["1", "--channels", "2"]] {
        let mut args = vec!["bench", "--size", "4M", "--transports", "null", "--json"];
        args.push("--channels");
        args.extend_from_slice(form);
        let r = run(transit(&args));
        assert_eq!(r.code(), Some(0), "{form:?}: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("bench JSON");
        let counts: Vec<u64> = v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| row["channels"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, [1, 2], "{form:?}: {v}");
    }
    let r = run(transit(&["bench", "--transports", "carrier-pigeon"]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("tcp"), "{}", r.stderr);
}

/// The example blocks of a help text: lines after the Examples heading,
/// split at blank lines, without their indentation.
fn example_blocks(help: &str) -> Vec<String> {
    let ex = examples(help);
    let body = ex
        .iter()
        .skip_while(|l| !l.ends_with(':'))
        .skip(1)
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    body.split("\n\n")
        .map(str::to_owned)
        .filter(|b| b.lines().any(|l| !l.starts_with('#')))
        .collect()
}

/// In the child, before exec: a network namespace of its own with its
/// loopback up, so the examples' fixed ports (4444, 5000, 8080) meet
/// nothing else running on this machine.
fn private_loopback() -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: system calls on a zeroed ifreq owned here and on a socket
    // opened and closed here (between fork and exec: no allocation).
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(err());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let e = err();
        libc::close(fd);
        if r != 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// Run one example block with bash in `dir` (in a network namespace of
/// its own), with this build's transit first on PATH; every background
/// job must succeed too. Bounded: the whole process group is killed after
/// `limit`.
fn run_block(block: &str, dir: &std::path::Path, limit: Duration) {
    let bin_dir = transit_bin().parent().unwrap().to_owned();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir];
    dirs.extend(std::env::split_paths(&path));
    let script = format!("set -eo pipefail\n{block}\nfor j in $(jobs -p); do wait \"$j\"; done\n");
    let mut cmd = Command::new("bash");
    // SAFETY: private_loopback only makes system calls.
    unsafe {
        cmd.pre_exec(private_loopback);
    }
    let mut child = cmd
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn bash in a network namespace of its own (needs root, as the tests do)");
    let pgid = child.id() as i32;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill with the process group this test created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match status {
        None => panic!("example still running after {limit:?}:\n{block}\nstderr:\n{stderr}"),
        Some(s) => assert!(
            s.success(),
            "example failed ({s}):\n{block}\nstderr:\n{stderr}"
        ),
    }
}

fn run_examples_of(args: &[&str], want_blocks: usize) {
    let text = help(args, 80);
    let blocks = example_blocks(&text);
    assert!(
        blocks.len() >= want_blocks,
        "{args:?}: {} example blocks:\n{text}",
        blocks.len()
    );
    let dir = Scratch::new("help-examples");
    std::fs::write(
        dir.join("vm.img"),
        transit_tests::image_bytes(8 << 20, 0.5, 7),
    )
    .unwrap();
    for b in &blocks {
        run_block(b, dir.path(), Duration::from_secs(60));
    }
}

/// Every example of the top-level, send and recv help runs as written on
/// loopback (in order, in one directory holding a vm.img), the receiver
/// and the sender started together in one shell without a race.
#[test]
fn the_examples_of_top_send_and_recv_help_run_as_written() {
    require_tool("socat");
    run_examples_of(&[], 4);
    run_examples_of(&["send"], 6);
    run_examples_of(&["recv"], 5);
}

#[test]
fn the_examples_of_bench_help_run_as_written() {
    run_examples_of(&["bench"], 2);
}

#[test]
fn the_examples_of_completions_and_man_help_run_as_written() {
    require_tool("man");
    run_examples_of(&["completions"], 3);
    run_examples_of(&["man"], 2);
}

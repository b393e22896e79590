//! `transit completions SHELL` and `transit man`: generated from the clap
//! definitions, printed to stdout.

use std::io::Write;
use std::process::{Command, Stdio};

use transit_tests::{require_tool, run, transit};

fn stdout_of(args: &[&str]) -> String {
    let r = run(transit(args));
    assert_eq!(r.code(), Some(0), "{args:?}: {}", r.stderr);
    r.stdout_text()
}

/// Run `tool ARGS` with `input` on stdin; returns (success, stdout, stderr).
fn pipe_through(tool: &str, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = Command::new(require_tool(tool))
        .args(args)
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bash_completion_knows_the_subcommands_and_options() {
    let script = stdout_of(&["completions", "bash"]);
    for word in [
        "send",
        "recv",
        "bench",
        "completions",
        "man",
        "--channels",
        "--ram",
        "--input",
        "--output",
        "--retry",
        "--tls-creds",
        "--transports",
    ] {
        assert!(script.contains(word), "no {word} in the bash completion");
    }
    // It is bash that defines a completion for transit.
    let (ok, out, err) = pipe_through(
        "bash",
        &["-c", "source /dev/stdin && complete -p transit"],
        &script,
    );
    assert!(ok, "bash rejected the script: {err}");
    assert!(out.contains("transit"), "{out}");
}

#[test]
fn zsh_and_fish_completions_are_printed() {
    for shell in ["zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        for word in ["send", "recv", "bench", "channels", "output"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let r = run(transit(&["completions", "tcsh"]));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
}

#[test]
fn the_man_page_is_roff_with_every_command_and_option() {
    let page = stdout_of(&["man"]);
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    assert!(page.contains(".TH transit 1"), "{page}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        ".SH EXAMPLES",
        ".SH \"TRANSIT SEND\"",
        ".SH \"TRANSIT RECV\"",
        ".SH \"TRANSIT BENCH\"",
        ".SH \"EXIT STATUS\"",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    // Formatted by man: no warnings, and the options and examples readable.
    let (ok, text, err) = pipe_through("man", &["-l", "-"], &page);
    assert!(ok, "man -l - failed: {err}");
    assert!(err.trim().is_empty(), "man warned: {err}");
    for want in [
        "TRANSIT SEND",
        "--channels <N>",
        "--ram <SIZE>",
        "--output <FILE|->",
        "--tls-authz <ID>",
        "--transports <T>",
        "[default: 4]",
        "transit send tcp:127.0.0.1:4444 --ram 64M --retry 5",
    ] {
        assert!(text.contains(want), "man output lacks {want:?}:\n{text}");
    }
    let (ok, _, warnings) = pipe_through("groff", &["-man", "-Tutf8", "-ww", "-z"], &page);
    assert!(ok && warnings.trim().is_empty(), "groff: {warnings}");
}

//! The binary answers `--version` and `--help` with examples.
//!
//! Living in the `transit` package, this test also makes `cargo test
//! --workspace` build the `transit` executable that the end-to-end tests in
//! `transit-tests` drive.

use std::process::Command;

fn transit(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_transit"))
        .args(args)
        .output()
        .expect("run transit");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn version_names_the_program_and_its_version() {
    let (code, out) = transit(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("transit {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn subcommand_help_shows_examples() {
    for sub in ["send", "recv", "bench"] {
        let (code, out) = transit(&[sub, "--help"]);
        assert_eq!(code, 0, "{sub} --help failed");
        assert!(
            out.contains("Examples:"),
            "{sub} --help has no examples:\n{out}"
        );
        assert!(
            out.contains("transit "),
            "{sub} --help shows no command line:\n{out}"
        );
    }
}

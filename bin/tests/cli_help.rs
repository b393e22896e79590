//! The binary answers `--version` and `--help` with examples (in detail:
//! tests/tests/cli_help.rs and cli_version.rs of transit-tests).
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
    // The version, then what the build has (tests/tests/cli_version.rs).
    assert!(
        out.trim().starts_with(&format!(
            "transit {} (features: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
}

#[test]
fn subcommand_help_shows_examples() {
    for sub in ["send", "recv", "bench", "completions", "man"] {
        let (code, out) = transit(&[sub, "--help"]);
        assert_eq!(code, 0, "{sub} --help failed");
        assert!(
            out.lines().any(|l| l.starts_with("Examples")),
            "{sub} --help has no examples:\n{out}"
        );
        assert!(
            out.contains("transit "),
            "{sub} --help shows no command line:\n{out}"
        );
    }
}

//! The shell examples of README.md and docs/*.md, run as a user would type
//! them by `scripts/run-doc-examples.sh` (the convention is in docs/cli.md,
//! "The examples are tested") with this build's `transit`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use transit_tests::{transit_bin, Running};

#[test]
fn readme_and_docs_examples_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/run-doc-examples.sh"))
        .env("TRANSIT", transit_bin())
        .env("BLOCK_TIMEOUT", "60")
        .current_dir(root)
        .stdin(Stdio::null());
    let done = Running::spawn(cmd).wait_within(Duration::from_secs(240));
    let out = done.stdout_text();
    assert_eq!(
        done.code(),
        Some(0),
        "scripts/run-doc-examples.sh failed:\n{out}\n{}",
        done.stderr
    );
    // The runnable examples were run, not skipped.
    for file in ["README.md", "docs/cli.md"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("PASS    {file}:"))),
            "no example of {file} ran:\n{out}"
        );
    }
}

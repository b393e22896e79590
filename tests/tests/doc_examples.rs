//! The shell examples of README.md and docs/*.md, run as a user would type
//! them by `scripts/run-doc-examples.sh` (the convention is in docs/cli.md,
//! "The examples are tested") with this build's `transit`.

use std::time::Duration;

use transit_tests::run_script;

#[test]
fn readme_and_docs_examples_pass() {
    let out = run_script(
        "run-doc-examples.sh",
        &[("BLOCK_TIMEOUT", "60")],
        Duration::from_secs(240),
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

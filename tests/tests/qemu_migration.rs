//! A real QEMU live migration carried by this build's `transit`:
//! `scripts/qemu-migrate.sh` starts two QEMU processes (TCG, a guest
//! program dirtying pages while it migrates, random bytes loaded into its
//! memory), migrates with `migrate "exec:transit send ..."` into
//! `-incoming "exec:transit recv ... --output -"`, compares the whole guest
//! memory of both sides and checks that the destination runs on. QEMU
//! (qemu-system-x86) is installed by `.ci/run`; without it this fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use transit_tests::{transit_bin, Running};

fn migrate(envs: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/qemu-migrate.sh"))
        .env("TRANSIT", transit_bin())
        .env("TIMEOUT", "60")
        .envs(envs.iter().copied())
        .current_dir(root)
        .stdin(Stdio::null());
    let done = Running::spawn(cmd).wait_within(Duration::from_secs(180));
    let out = done.stdout_text();
    assert_eq!(
        done.code(),
        Some(0),
        "scripts/qemu-migrate.sh {envs:?} failed:\n{out}\n{}",
        done.stderr
    );
    out
}

#[test]
fn a_live_qemu_guest_migrates_over_four_channels_with_memory_identical() {
    let out = migrate(&[("CHANNELS", "4")]);
    let pass = out
        .lines()
        .find(|l| l.starts_with("PASS: VIA=transit"))
        .unwrap_or_else(|| panic!("no PASS line:\n{out}"));
    assert!(pass.contains("memory identical"), "{pass}");
    // Both transit ends ran and verified the stream end to end.
    for side in [
        "source stderr: transit: sent stream",
        "destination stderr: transit: received stream",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(side))
            .unwrap_or_else(|| panic!("no {side:?} line:\n{out}"));
        assert!(
            line.contains("over 4 channels") && line.ends_with("verified"),
            "{line}"
        );
    }
}

#[test]
fn a_live_qemu_guest_migrates_over_one_compressed_channel() {
    let out = migrate(&[("CHANNELS", "1"), ("EXTRA", "--compress zstd")]);
    assert!(
        out.lines().any(|l| l.starts_with("PASS: VIA=transit")),
        "no PASS line:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("source stderr: transit: sent stream")
                && l.contains("over 1 channel")),
        "{out}"
    );
}

#[test]
fn a_stream_corrupted_in_flight_is_refused_by_the_destination_qemu() {
    // One bit flipped 1 MB into each page channel by a proxy: transit must
    // fail the session, and the destination QEMU must never get the whole
    // stream (it exits refusing it) rather than load a corrupt guest.
    let out = migrate(&[("CHANNELS", "4"), ("CORRUPT", "1000000")]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("PASS: CORRUPT=1000000: transit failed the session")),
        "no PASS line:\n{out}"
    );
}

//! `recv --output FILE --delta`: only what differs from the FILE already
//! there crosses the network, the result is the sender's file byte for
//! byte (verified end to end), an absent FILE is received whole, and the
//! option is refused where there is no file to start from.

use transit_tests::{json, random_bytes, run, send_file_json, start_recv, transit, Scratch};

#[test]
fn only_the_changed_pages_are_sent() {
    let dir = Scratch::new("delta");
    let old = random_bytes(8 << 20, 21);
    let mut new = old.clone();
    for i in 0..16usize {
        new[i * 500_000 + 3] ^= 0xff;
    }
    let (input, out) = (dir.join("new.img"), dir.join("out.img"));
    std::fs::write(&input, &new).unwrap();
    for (round, start_from) in [(0, Some(&old)), (1, None)] {
        match start_from {
            Some(o) => std::fs::write(&out, o).unwrap(),
            None => {
                let _ = std::fs::remove_file(&out);
            }
        }
        let (s, r) = send_file_json(&input, &["--delta", "--output", out.to_str().unwrap()]);
        assert!(std::fs::read(&out).unwrap() == new, "round {round}");
        assert_eq!(s["verified"], true);
        if round == 0 {
            // 16 changed pages of 2048 went; the others were kept.
            assert!(s["bytes"].as_u64().unwrap() <= 16 * 4096, "{s}");
            assert!(s["kept_pages"].as_u64().unwrap() >= 2000, "{s}");
            assert_eq!(r["kept_pages"], s["kept_pages"]);
        } else {
            assert!(s.get("kept_pages").is_none(), "{s}");
            assert_eq!(s["bytes"], 8 << 20);
        }
    }
}

#[test]
fn delta_needs_an_output_file_and_framing() {
    let dir = Scratch::new("delta-usage");
    let f = dir.join("f");
    for args in [
        vec!["recv", "tcp:127.0.0.1:0", "--delta"],
        vec!["recv", "tcp:127.0.0.1:0", "--delta", "--output", "-"],
        vec![
            "recv",
            "tcp:127.0.0.1:0",
            "--delta",
            "--raw",
            "--output",
            f.to_str().unwrap(),
        ],
    ] {
        let r = run(transit(&args));
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.stderr);
    }
}

/// Delta and compression together, over TLS: kept ranges and compressed
/// packets in one session, the result identical.
#[test]
fn delta_with_compression_over_tls() {
    let dir = Scratch::new("delta-zstd-tls");
    let pki = transit_tests::pki::write(dir.path(), transit_tests::pki::Fault::None);
    let mut old = Vec::new();
    for i in 0..150_000u32 {
        old.extend_from_slice(format!("record {i:08}: unchanged text\n").as_bytes());
    }
    let mut new = old.clone();
    for i in 0..8usize {
        new[i * 400_000 + 5] = b'#';
    }
    let (input, out) = (dir.join("new.txt"), dir.join("out.txt"));
    std::fs::write(&input, &new).unwrap();
    std::fs::write(&out, &old).unwrap();
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &[
            "--json",
            "--delta",
            "--output",
            out.to_str().unwrap(),
            "--tls-creds",
            pki.server.to_str().unwrap(),
        ],
    );
    let send = run(transit(&[
        "send",
        &addr,
        "--input",
        input.to_str().unwrap(),
        "--compress",
        "zstd",
        "--tls-creds",
        pki.client.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(send.code(), Some(0), "{}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "{}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == new);
    let s = json(&send.stdout);
    assert!(s["kept_pages"].as_u64().unwrap() > 1000, "{s}");
    assert!(
        s["wire_bytes"].as_u64().unwrap() < s["bytes"].as_u64().unwrap(),
        "{s}"
    );
}

/// `recv --delta --inplace`: the changed pages are written into FILE
/// itself (the same inode, no copy of it), the result is the sender's file
/// byte for byte, and no journal or temporary file is left.
#[test]
fn in_place_delta_round_trip() {
    use std::os::unix::fs::MetadataExt;
    let dir = Scratch::new("delta-inplace");
    let old = random_bytes(8 << 20, 22);
    let mut new = old.clone();
    for i in 0..16usize {
        new[i * 500_000 + 7] ^= 0xff;
    }
    // One more page, and the last one changed.
    new.extend_from_slice(&random_bytes(4096, 23));
    let (input, out) = (dir.join("new.img"), dir.join("out.img"));
    std::fs::write(&input, &new).unwrap();
    std::fs::write(&out, &old).unwrap();
    let inode = std::fs::metadata(&out).unwrap().ino();
    let (s, r) = send_file_json(
        &input,
        &["--delta", "--inplace", "--output", out.to_str().unwrap()],
    );
    assert!(std::fs::read(&out).unwrap() == new);
    assert_eq!(
        std::fs::metadata(&out).unwrap().ino(),
        inode,
        "updated in place"
    );
    assert_eq!(dir.names(), ["new.img", "out.img"]);
    assert_eq!(s["verified"], true);
    assert!(s["bytes"].as_u64().unwrap() <= 17 * 4096, "{s}");
    assert_eq!(r["kept_pages"], s["kept_pages"]);
    // The receiver's summary says where the output went.
    assert_eq!(r["in_place"], true, "{r}");
    assert!(s.get("in_place").is_none(), "{s}");
}

/// `--inplace` needs `--delta`, a regular `--output FILE` and framing, and
/// is not resumable: each is a usage error (exit 2) naming `--inplace`;
/// the right combination is accepted (it then waits for a sender).
#[test]
fn inplace_usage_errors() {
    let dir = Scratch::new("delta-inplace-usage");
    let f = dir.join("f");
    let f = f.to_str().unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let uri = "tcp:127.0.0.1:0";
    for args in [
        vec!["recv", uri, "--inplace", "--output", f],
        vec!["recv", uri, "--delta", "--inplace", "--output", "-"],
        vec![
            "recv",
            uri,
            "--delta",
            "--inplace",
            "--output",
            fifo.to_str().unwrap(),
        ],
        vec!["recv", uri, "--delta", "--inplace", "--raw", "--output", f],
        vec![
            "recv",
            uri,
            "--delta",
            "--inplace",
            "--resume",
            "--output",
            f,
        ],
    ] {
        let r = run(transit(&args));
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("--inplace"), "{args:?}: {}", r.stderr);
    }
    let r = run(transit(&[
        "recv",
        uri,
        "--delta",
        "--inplace",
        "--output",
        f,
        "--timeout",
        "0.5",
    ]));
    assert_eq!(r.code(), Some(1), "accepted, then no sender: {}", r.stderr);
}

/// An in-place receiver in `dir` sent `sig` mid-update (once 2 MiB of
/// journal are written): its outcome, FILE (`out.img`), the journal's
/// path, the old and the new contents.
fn interrupt_in_place(
    dir: &Scratch,
    sig: i32,
) -> (
    transit_tests::Finished,
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<u8>,
    Vec<u8>,
) {
    use std::time::{Duration, Instant};
    let old = random_bytes(16 << 20, 24);
    let mut new = old.clone();
    for p in (0..4096usize).step_by(2) {
        new[p * 4096 + 5] ^= 0xff;
    }
    let (input, out) = (dir.join("new.img"), dir.join("out.img"));
    let journal = dir.join(".out.img.transit-undo");
    std::fs::write(&input, &new).unwrap();
    std::fs::write(&out, &old).unwrap();
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--delta", "--inplace", "--output", out.to_str().unwrap()],
    );
    // 8 MiB of changed pages at 4 MiB/s: about 2 s of writing in place.
    let send = transit_tests::Running::spawn(transit(&[
        "send",
        &addr,
        "--input",
        input.to_str().unwrap(),
        "--max-bandwidth",
        "4M",
    ]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&journal).map_or(0, |m| m.len()) < 2 << 20 {
        assert!(Instant::now() < deadline, "no journal grew");
        std::thread::sleep(Duration::from_millis(5));
    }
    recv.signal(sig);
    let recv = recv.finish();
    let _ = send.finish();
    (recv, out, journal, old, new)
}

/// A receiver cancelled (SIGINT) in the middle of an in-place update rolls
/// FILE back before it exits: byte for byte the old file, no journal.
#[test]
fn a_cancelled_in_place_receiver_rolls_back_before_it_exits() {
    let dir = Scratch::new("delta-inplace-cancel");
    let (recv, out, _journal, old, _new) = interrupt_in_place(&dir, libc::SIGINT);
    assert_eq!(recv.code(), Some(130), "{}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == old, "rolled back");
    assert_eq!(dir.names(), ["new.img", "out.img"]);
}

/// An in-place receiver killed (SIGKILL) mid-update in `dir`: FILE
/// (`out.img`) is left mixed with its journal; returns (FILE, journal,
/// old, new).
fn killed_in_place(dir: &Scratch) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>, Vec<u8>) {
    let (recv, out, journal, old, new) = interrupt_in_place(dir, libc::SIGKILL);
    assert_eq!(recv.code(), None, "killed");
    let mixed = std::fs::read(&out).unwrap();
    assert!(mixed != old && mixed != new, "the kill left FILE mixed");
    assert!(journal.exists());
    (out, journal, old, new)
}

/// The next `recv` on FILE a killed in-place receiver left, with or
/// without `--delta`, rolls it back before anything else and says so.
#[test]
fn a_killed_in_place_receiver_is_rolled_back_by_the_next_recv() {
    let dir = Scratch::new("delta-inplace-kill");
    let (out, _journal, old, _new) = killed_in_place(&dir);
    let r = run(transit(&[
        "recv",
        "tcp:127.0.0.1:0",
        "--output",
        out.to_str().unwrap(),
        "--timeout",
        "0.5",
    ]));
    assert!(
        r.stderr
            .contains("rolled back an interrupted in-place update"),
        "{}",
        r.stderr
    );
    assert!(std::fs::read(&out).unwrap() == old, "rolled back");
    assert_eq!(dir.names(), ["new.img", "out.img"]);
}

/// A file a killed in-place receiver left mixed is never sent as it is:
/// the sender rolls it back first (the old code sent the mixed file).
#[test]
fn a_file_left_mixed_by_a_killed_receiver_is_rolled_back_before_it_is_sent() {
    let dir = Scratch::new("delta-inplace-send");
    let (out, journal, old, _new) = killed_in_place(&dir);
    let copy = dir.join("copy.img");
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", copy.to_str().unwrap()]);
    let send = run(transit(&["send", &addr, "--input", out.to_str().unwrap()]));
    let recv = recv.finish();
    assert_eq!(send.code(), Some(0), "{}", send.stderr);
    assert_eq!(recv.code(), Some(0), "{}", recv.stderr);
    assert!(
        send.stderr
            .contains("rolled back an interrupted in-place update"),
        "{}",
        send.stderr
    );
    assert!(!journal.exists());
    assert!(std::fs::read(&out).unwrap() == old, "FILE rolled back");
    assert!(
        std::fs::read(&copy).unwrap() == old,
        "the old file was sent"
    );
}

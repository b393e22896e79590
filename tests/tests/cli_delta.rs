//! `recv --output FILE --delta`: only what differs from the FILE already
//! there crosses the network, the result is the sender's file byte for
//! byte (verified end to end), an absent FILE is received whole, and the
//! option is refused where there is no file to start from.

use transit_tests::{json, random_bytes, run, start_recv, transit, Scratch};

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
        let (recv, addr) = start_recv(
            "tcp:127.0.0.1:0",
            &["--json", "--delta", "--output", out.to_str().unwrap()],
        );
        let send = run(transit(&[
            "send",
            &addr,
            "--input",
            input.to_str().unwrap(),
            "--json",
        ]));
        assert_eq!(send.code(), Some(0), "{}", send.stderr);
        let recv = recv.finish();
        assert_eq!(recv.code(), Some(0), "{}", recv.stderr);
        assert!(std::fs::read(&out).unwrap() == new, "round {round}");
        let (s, r) = (json(&send.stdout), json(&recv.stdout));
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

//! `send --compress zstd[:LEVEL] | auto[:LEVEL]`: files arrive identical,
//! far fewer bytes cross the wire for compressible data, both summaries
//! say so, and the option is refused where nothing can decompress.
//! Speed over a slow link is measured by `scripts/bench-network.sh`.

use transit_tests::{run, start_recv, transit, Scratch};

fn text_file(dir: &Scratch) -> std::path::PathBuf {
    let p = dir.join("in.txt");
    let mut v = Vec::new();
    for i in 0..200_000u32 {
        v.extend_from_slice(format!("line {i}: the same few words again and again\n").as_bytes());
    }
    std::fs::write(&p, v).unwrap();
    p
}

#[test]
fn compressed_files_arrive_identical_with_few_wire_bytes() {
    let dir = Scratch::new("compress");
    let input = text_file(&dir);
    for method in ["zstd", "zstd:3", "auto"] {
        let out = dir.join(&format!("out-{method}"));
        let (recv, addr) = start_recv(
            "tcp:127.0.0.1:0",
            &["--json", "--output", out.to_str().unwrap()],
        );
        let send = run(transit(&[
            "send",
            &addr,
            "--input",
            input.to_str().unwrap(),
            "--compress",
            method,
            "--json",
        ]));
        assert_eq!(send.code(), Some(0), "{method}: {}", send.stderr);
        let recv = recv.finish();
        assert_eq!(recv.code(), Some(0), "{method}: {}", recv.stderr);
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&input).unwrap());
        let s: serde_json::Value = serde_json::from_slice(&send.stdout).unwrap();
        let r: serde_json::Value = serde_json::from_slice(&recv.stdout).unwrap();
        let want = if method == "zstd" {
            "zstd:1"
        } else if method == "auto" {
            "auto:1"
        } else {
            method
        };
        assert_eq!(s["compress"], want);
        assert_eq!(r["compress"], "zstd");
        assert_eq!(s["verified"], true);
        if method.starts_with("zstd") {
            let (bytes, wire) = (
                s["bytes"].as_u64().unwrap(),
                s["wire_bytes"].as_u64().unwrap(),
            );
            assert!(wire * 5 < bytes, "{method}: {wire} on the wire for {bytes}");
            assert_eq!(r["wire_bytes"], s["wire_bytes"]);
        }
    }
}

#[test]
fn without_the_option_nothing_says_compressed() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--json"]);
    let send = run(transit(&["send", &addr, "--ram", "2M", "--json"]));
    assert_eq!(send.code(), Some(0), "{}", send.stderr);
    let recv = recv.finish();
    let s: serde_json::Value = serde_json::from_slice(&send.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&recv.stdout).unwrap();
    assert!(s.get("compress").is_none() && r.get("compress").is_none());
}

#[test]
fn compress_is_refused_where_nothing_decompresses() {
    let dir = Scratch::new("compress-usage");
    let f = format!("file:{}", dir.join("f").display());
    for args in [
        vec![
            "send",
            "tcp:127.0.0.1:9",
            "--ram",
            "1M",
            "--compress",
            "gzip",
        ],
        vec![
            "send",
            "tcp:127.0.0.1:9",
            "--ram",
            "1M",
            "--compress",
            "zstd:99",
        ],
        vec![
            "send",
            "tcp:127.0.0.1:9",
            "--ram",
            "1M",
            "--raw",
            "--compress",
            "zstd",
        ],
        vec!["send", &f, "--ram", "1M", "--compress", "zstd"],
    ] {
        let r = run(transit(&args));
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.stderr);
    }
}

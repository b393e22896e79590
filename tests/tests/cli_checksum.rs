//! `--checksum sha256`: both ends report the SHA-256 that `sha256sum`
//! prints for the file, for images (sparse files, memory destinations),
//! streams and `--raw`; without the option the JSON has no `sha256`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use transit_tests::{random_bytes, require_tool, run, start_recv, transit, Finished, Scratch};

/// What `sha256sum` says of `path`.
fn sha256sum(path: &Path) -> String {
    let tool = require_tool("sha256sum");
    let out = Command::new(tool).arg(path).output().expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn json(f: &Finished, role: &str) -> serde_json::Value {
    assert_eq!(f.code(), Some(0), "{role}: {}", f.stderr);
    serde_json::from_slice(&f.stdout).unwrap_or_else(|e| panic!("{role} JSON: {e}"))
}

/// A sparse file: 3 MiB of data in two extents inside 64 MiB.
fn sparse_input(dir: &Scratch) -> std::path::PathBuf {
    let p = dir.join("in.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(1 << 20, 7), 4 << 20).unwrap();
    f.write_all_at(&random_bytes(2 << 20, 8), 40 << 20).unwrap();
    p
}

#[test]
fn an_image_file_reports_the_sha256_of_sha256sum_at_both_ends() {
    let dir = Scratch::new("sha-image");
    let input = sparse_input(&dir);
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &[
            "--json",
            "--checksum",
            "sha256",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let send = run(transit(&[
        "send",
        &addr,
        "--input",
        input.to_str().unwrap(),
        "--channels",
        "4",
        "--checksum",
        "sha256",
        "--json",
    ]));
    let s = json(&send, "send");
    let r = json(&recv.finish(), "recv");
    let want = sha256sum(&input);
    assert_eq!(sha256sum(&out), want);
    assert_eq!(s["sha256"], want.as_str());
    assert_eq!(r["sha256"], want.as_str());
}

#[test]
fn a_memory_image_reports_its_sha256_at_both_ends_and_the_human_line_shows_it() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--checksum", "sha256"]);
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "8M",
        "--zero-ratio",
        "0.5",
        "--passes",
        "2",
        "--checksum",
        "sha256",
    ]));
    assert_eq!(send.code(), Some(0), "{}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "{}", recv.stderr);
    let pick = |s: &str| {
        let at = s
            .find("sha256 ")
            .unwrap_or_else(|| panic!("no sha256: {s}"));
        s[at + 7..at + 7 + 64].to_owned()
    };
    assert_eq!(pick(&send.stderr), pick(&recv.stderr));
}

#[test]
fn a_stream_and_a_raw_copy_report_the_sha256_of_their_bytes() {
    let dir = Scratch::new("sha-stream");
    let data = random_bytes(3 << 20, 11);
    let input = dir.join("in.bin");
    std::fs::write(&input, &data).unwrap();
    let want = sha256sum(&input);
    for raw in [false, true] {
        let out = dir.join(&format!("out-{raw}.bin"));
        let mut rargs = vec![
            "--json",
            "--checksum",
            "sha256",
            "--output",
            out.to_str().unwrap(),
        ];
        if raw {
            rargs.push("--raw");
        }
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &rargs);
        let mut c = transit(&[
            "send",
            &addr,
            "--input",
            "-",
            "--checksum",
            "sha256",
            "--json",
        ]);
        if raw {
            c.arg("--raw");
        }
        c.stdin(Stdio::piped());
        let mut child = transit_tests::Running::spawn(c);
        {
            let mut stdin = child.child.stdin.take().unwrap();
            stdin.write_all(&data).unwrap();
        }
        let s = json(&child.finish(), "send");
        let r = json(&recv.finish(), "recv");
        assert_eq!(s["sha256"], want.as_str(), "raw {raw}");
        assert_eq!(r["sha256"], want.as_str(), "raw {raw}");
        assert_eq!(sha256sum(&out), want);
    }
}

#[test]
fn without_the_option_there_is_no_sha256() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--json"]);
    let send = run(transit(&["send", &addr, "--ram", "1M", "--json"]));
    let s = json(&send, "send");
    let r = json(&recv.finish(), "recv");
    assert!(s.get("sha256").is_none(), "{s}");
    assert!(r.get("sha256").is_none(), "{r}");
    let bad = run(transit(&[
        "send",
        &addr,
        "--ram",
        "1M",
        "--checksum",
        "md5",
    ]));
    assert_eq!(bad.code(), Some(2), "{}", bad.stderr);
}

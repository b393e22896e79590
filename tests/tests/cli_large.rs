//! Files larger than what a side should hold in memory: sparse files keep
//! their holes end to end, and neither side's peak memory grows with the
//! file (each process reports its own peak RSS, from getrusage, in its
//! `--json` summary).

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use transit_tests::{json, random_bytes, run, start_recv, transit, Scratch};

const MIB: u64 = 1 << 20;

#[test]
fn a_sparse_file_arrives_sparse_and_identical() {
    let dir = Scratch::new("sparse");
    let src = dir.join("src.img");
    let size = 1024 * MIB + 4096 * 3 + 100;
    let mut expected_data = Vec::new();
    {
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(size).unwrap();
        for (k, off) in [0u64, 300 * MIB + 512, 1024 * MIB].into_iter().enumerate() {
            let data = random_bytes(2 * MIB as usize, k as u64 + 1);
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&data).unwrap();
            expected_data.push((off, data));
        }
    }
    let size = std::fs::metadata(&src).unwrap().len();
    let out = dir.join("out.img");
    // A limit below the image's size but above its data lets it in: the
    // holes cost the destination nothing.
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &[
            "--output",
            out.to_str().unwrap(),
            "--json",
            "--max-size",
            "64M",
        ],
    );
    let s = run(transit(&[
        "send",
        &addr,
        "--input",
        src.to_str().unwrap(),
        "--channels",
        "4",
        "--json",
    ]));
    s.assert_verified("send", 4);
    recv.finish().assert_verified("recv", 4);
    let sent = json(&s.stdout);
    // Only the data crossed: 6 MiB and a little, not 1 GiB.
    assert!(
        sent["bytes"].as_u64().unwrap() <= 6 * MIB + 2 * 4096,
        "{sent}"
    );
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), size);
    assert!(
        meta.blocks() * 512 < 32 * MIB,
        "the output is not sparse: {} bytes allocated",
        meta.blocks() * 512
    );
    let got = std::fs::read(&out).unwrap();
    let mut want = vec![0u8; size as usize];
    for (off, data) in &expected_data {
        want[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    assert!(got == want, "the output differs from the input");
}

#[test]
fn memory_does_not_grow_with_the_file() {
    let dir = Scratch::new("rss");
    let src = dir.join("src.img");
    let size = 384 * MIB;
    {
        let mut f = std::fs::File::create(&src).unwrap();
        let chunk = random_bytes(MIB as usize, 9);
        for i in 0..size / MIB {
            let mut c = chunk.clone();
            c[..8].copy_from_slice(&i.to_le_bytes());
            f.write_all(&c).unwrap();
        }
    }
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--output", out.to_str().unwrap(), "--json"],
    );
    let s = run(transit(&[
        "send",
        &addr,
        "--input",
        src.to_str().unwrap(),
        "--channels",
        "2",
        "--json",
    ]));
    s.assert_verified("send", 2);
    let r = recv.finish();
    r.assert_verified("recv", 2);
    for (role, out) in [("send", &s.stdout), ("recv", &r.stdout)] {
        let j = json(out);
        let rss = j["max_rss_bytes"].as_u64().unwrap();
        assert!(
            rss < 128 * MIB,
            "{role}: peak RSS {} MiB for a {} MiB file",
            rss / MIB,
            size / MIB
        );
        let total = j["total_seconds"].as_f64().unwrap();
        let data = j["seconds"].as_f64().unwrap();
        assert!(total >= data && total > 0.0, "{role}: {j}");
    }
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
}

/// An image received into memory holds its data pages, not the image:
/// zero pages of fresh memory are never touched.
#[test]
fn a_memory_destination_holds_the_data_not_the_image() {
    let dir = Scratch::new("memdest");
    let src = dir.join("img");
    let g = run(transit(&[
        "send",
        &format!("file:{}", src.display()),
        "--ram",
        "256M",
        "--zero-ratio",
        "0.75",
    ]));
    assert_eq!(g.code(), Some(0), "{}", g.stderr);
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--json"]);
    let s = run(transit(&[
        "send",
        &addr,
        "--input",
        src.to_str().unwrap(),
        "--channels",
        "2",
    ]));
    assert_eq!(s.code(), Some(0), "{}", s.stderr);
    let r = recv.finish();
    r.assert_verified("recv", 2);
    let j = json(&r.stdout);
    let data = j["bytes"].as_u64().unwrap();
    let rss = j["max_rss_bytes"].as_u64().unwrap();
    assert!(
        rss < data + 64 * MIB,
        "peak RSS {} MiB for {} MiB of data in a 256 MiB image",
        rss / MIB,
        data / MIB
    );
}

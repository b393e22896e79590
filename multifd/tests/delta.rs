//! Delta transfer (`RecvConfig::delta`): a receiver whose output path
//! holds an older copy gets only the chunks that differ, the result is the
//! sender's image byte for byte, and the digest covers the kept pages.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use transit_multifd::image::SourceImage;
use transit_multifd::{Destination, Payload, RecvConfig, SendConfig, Sender, Stats};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("transit-delta-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Send the file `input` to a delta receiver writing `out`.
fn delta_send(input: &Path, out: &Path) -> Stats {
    let (mut send, recv) = tcp_pairs(5);
    let config = RecvConfig {
        delta: true,
        ..RecvConfig::default()
    };
    let rx = spawn_receiver(
        recv,
        config,
        Destination::File {
            path: out.to_owned(),
            mode: None,
        },
    );
    let main = send.remove(0);
    let source = SourceImage::map_file(input).unwrap();
    let sent = bounded(60, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Image(source), main, send)?;
        tx.send_all()?;
        tx.finish()
    });
    let got = rx.join().unwrap();
    let sent = sent.unwrap();
    let got = got.unwrap();
    assert_eq!(got.stats.digest, sent.digest);
    assert_eq!(got.stats.kept_pages, sent.kept_pages);
    sent
}

fn image(size: u64, seed: u64) -> Vec<u8> {
    SourceImage::generate(&spec(size, 0.2, seed))
        .unwrap()
        .as_slice()
        .to_vec()
}

#[test]
fn one_percent_changed_sends_one_percent() {
    let dir = scratch("1pc");
    let old = image(8 << 20, 3);
    let mut new = old.clone();
    // Change 1% of the 2048 pages: 20 pages, spread out.
    for i in 0..20usize {
        new[i * 100 * 4096 + 17] ^= 0x5a;
    }
    let (input, out) = (dir.join("new.img"), dir.join("out.img"));
    std::fs::write(&input, &new).unwrap();
    std::fs::write(&out, &old).unwrap();
    let sent = delta_send(&input, &out);
    assert!(std::fs::read(&out).unwrap() == new);
    // 20 changed pages went; the rest were kept or were zero pages.
    assert!(sent.pages <= 20, "{} pages sent", sent.pages);
    assert!(sent.kept_pages >= 1500, "{} pages kept", sent.kept_pages);
    assert!(sent.bytes <= 20 * 4096);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn older_copies_of_another_length_and_no_copy_at_all() {
    let dir = scratch("len");
    let new = image(4 << 20, 5);
    let input = dir.join("new.img");
    std::fs::write(&input, &new).unwrap();
    let out = dir.join("out.img");
    // Shorter, longer (cut), and absent (a plain transfer).
    for old in [
        new[..(3 << 20) + 100].to_vec(),
        [new.clone(), vec![9u8; 1 << 20]].concat(),
    ] {
        std::fs::write(&out, &old).unwrap();
        let sent = delta_send(&input, &out);
        assert!(std::fs::read(&out).unwrap() == new);
        assert!(sent.kept_pages > 0);
    }
    std::fs::remove_file(&out).unwrap();
    let sent = delta_send(&input, &out);
    assert!(std::fs::read(&out).unwrap() == new);
    assert_eq!(sent.kept_pages, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sparse_source_keeps_its_holes_against_an_old_copy_with_data_there() {
    let dir = scratch("sparse");
    let input = dir.join("new.img");
    let data = image(1 << 20, 8);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&input).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&data, 2 << 20).unwrap();
    }
    let new = std::fs::read(&input).unwrap();
    // The old copy has data everywhere, the same data in the middle.
    let mut old = image(8 << 20, 9);
    old[2 << 20..3 << 20].copy_from_slice(&data);
    let out = dir.join("out.img");
    std::fs::write(&out, &old).unwrap();
    let sent = delta_send(&input, &out);
    assert!(
        std::fs::read(&out).unwrap() == new,
        "holes must read as zeros"
    );
    assert!(sent.kept_pages >= 200, "{}", sent.kept_pages);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The output starts as a copy of the older one made while it is hashed:
/// that copy must not fill the older copy's holes (a 256 MiB sparse image
/// with 2 MiB of data arrives in a few MiB of blocks, identical).
#[test]
fn a_sparse_older_copy_stays_sparse_in_the_output() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let dir = scratch("sparse-old");
    let input = dir.join("new.img");
    let out = dir.join("out.img");
    let data = image(2 << 20, 10);
    for p in [&input, &out] {
        let f = std::fs::File::create(p).unwrap();
        f.set_len(256 << 20).unwrap();
        f.write_all_at(&data, 100 << 20).unwrap();
    }
    // One changed page in the data.
    std::fs::File::options()
        .write(true)
        .open(&input)
        .unwrap()
        .write_all_at(&[7u8; 4096], (100 << 20) + 8192)
        .unwrap();
    let sent = delta_send(&input, &out);
    assert!(sent.kept_pages >= 500, "{}", sent.kept_pages);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&input).unwrap());
    let used = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(used < 16 << 20, "{used} bytes allocated for 2 MiB of data");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The kept pages are verified by the hashes of the older copy taken
/// before the transfer: if that file changes before the output is put in
/// place, the output is refused and the file at the path left alone.
#[test]
fn an_older_copy_that_changes_during_the_transfer_fails_the_session() {
    use transit_multifd::{Error, Receiver};
    let dir = scratch("changed");
    let old = image(4 << 20, 11);
    let mut new = old.clone();
    new[100] ^= 1;
    let (input, out) = (dir.join("new.img"), dir.join("out.img"));
    std::fs::write(&input, &new).unwrap();
    std::fs::write(&out, &old).unwrap();
    let (mut send, recv) = unix_pairs(3);
    let target = out.clone();
    let rx = std::thread::spawn(move || {
        let config = RecvConfig {
            delta: true,
            ..RecvConfig::default()
        };
        let mut rx = Receiver::new(
            config,
            Destination::File {
                path: target.clone(),
                mode: None,
            },
        );
        for ch in recv {
            rx.accept_channel(ch)?;
        }
        rx.run_with(|o| {
            // Someone writes to the file at the output path meanwhile.
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            f.write_all_at(b"edited", 8192).unwrap();
            o.image
                .as_mut()
                .unwrap()
                .persist_in_place()
                .map_err(|e| Error::data("put the output in place", e))
        })
    });
    let main = send.remove(0);
    let source = SourceImage::map_file(&input).unwrap();
    let sent = bounded(60, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Image(source), main, send)?;
        tx.send_all()?;
        tx.finish()
    });
    let got = rx.join().unwrap();
    let e = got.expect_err("refused");
    assert!(e.to_string().contains("changed during the transfer"), "{e}");
    assert!(sent.is_err(), "the sender is told");
    // The path still holds the (edited) older copy, not a mix.
    let now = std::fs::read(&out).unwrap();
    assert_eq!(&now[8192..8198], b"edited");
    std::fs::remove_dir_all(&dir).unwrap();
}

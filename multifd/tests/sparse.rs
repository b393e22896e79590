//! Files with holes: the sender finds them (`SEEK_DATA`/`SEEK_HOLE`) and
//! sends them as ranges without reading them; the receiver keeps them as
//! holes in a fresh file and zeroes them over data it had before.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use transit_multifd::image::SourceImage;
use transit_multifd::{DestImage, Destination, Payload, RecvConfig, SendConfig, Sender};

const MIB: u64 = 1 << 20;

/// A sparse file of `size` bytes with `extents` (offset, length) of
/// pseudo-random data (a few all-zero pages inside them too); returns the
/// expected contents.
fn sparse_file(path: &Path, size: u64, extents: &[(u64, u64)]) -> Vec<u8> {
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut expected = vec![0u8; size as usize];
    for (k, &(off, len)) in extents.iter().enumerate() {
        let mut data: Vec<u8> = (0..len)
            .map(|i| ((i * 31 + k as u64 * 7 + off) % 251) as u8 | 1)
            .collect();
        // One zero page inside the extent (found by scanning, not SEEK).
        if len >= 3 * 4096 {
            data[4096..8192].fill(0);
        }
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&data).unwrap();
        expected[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    f.sync_all().unwrap();
    expected
}

fn send_file(
    src: &Path,
    dest: Destination,
    channels: usize,
) -> (transit_multifd::Stats, transit_multifd::RecvOutcome) {
    let source = SourceImage::map_file(src).unwrap();
    let (mut send, recv) = unix_pairs(channels + 1);
    let rx = spawn_receiver(recv, RecvConfig::default(), dest);
    let main = send.remove(0);
    let sent = bounded(60, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Image(source), main, send)?;
        tx.send_all()?;
        tx.finish()
    })
    .unwrap();
    (sent, rx.join().unwrap().unwrap())
}

#[test]
fn holes_travel_as_ranges_and_stay_holes() {
    let dir = std::env::temp_dir().join(format!("transit-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src.img");
    // 256 MiB with 3 MiB of data in 3 extents, one not page aligned at
    // either end, and a partial last page.
    let size = 256 * MIB + 1000;
    let expected = sparse_file(
        &src,
        size,
        &[(MIB, MIB), (100 * MIB + 100, 5000), (200 * MIB, 2 * MIB)],
    );
    let image = SourceImage::map_file(&src).unwrap();
    let extents = image
        .data_extents()
        .expect("this file system reports holes")
        .to_vec();
    assert!(extents.len() >= 3, "{extents:?}");
    drop(image);

    let out = dir.join("out.img");
    let (sent, got) = send_file(
        &src,
        Destination::File {
            path: out.clone(),
            mode: None,
        },
        4,
    );
    let pages = size.div_ceil(4096);
    assert_eq!(sent.pages + sent.zero_pages, pages);
    assert_eq!(got.stats.zero_pages, sent.zero_pages);
    // Only the data extents' pages went as payload (3 MiB + 2 pages of
    // the unaligned extent, less the zero page in each big extent).
    assert!(
        sent.bytes <= 3 * MIB + 3 * 4096,
        "sent {} bytes",
        sent.bytes
    );
    // Holes are packed: far fewer packets than 64 per MiB of offsets.
    assert!(sent.packets < 64, "{} packets", sent.packets);
    let data = std::fs::read(&out).unwrap();
    assert!(data == expected, "destination differs");
    let meta = std::fs::metadata(&out).unwrap();
    assert!(
        meta.blocks() * 512 < 16 * MIB,
        "destination is not sparse: {} bytes allocated",
        meta.blocks() * 512
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn holes_zero_what_the_destination_held_before() {
    let dir = std::env::temp_dir().join(format!("transit-sparse-old-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src.img");
    let size = 8 * MIB;
    let expected = sparse_file(&src, size, &[(2 * MIB, 64 * 1024)]);
    let mut old = DestImage::anonymous(size, false).unwrap();
    old.as_mut_slice().fill(0xee);
    let (_, got) = send_file(&src, Destination::Image(old), 2);
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dense_file_goes_to_a_file_destination_unmapped() {
    let dir = std::env::temp_dir().join(format!("transit-dense-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src.img");
    let size = 16 * MIB + 512;
    let expected = sparse_file(&src, size, &[(0, size)]);
    let out = dir.join("out.img");
    let (sent, got) = send_file(
        &src,
        Destination::File {
            path: out.clone(),
            mode: None,
        },
        3,
    );
    assert_eq!(got.stats.digest, sent.digest);
    assert!(got.image.unwrap().as_slice().is_empty());
    assert!(std::fs::read(&out).unwrap() == expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two passes over a sparse file into an image that held data before: the
/// holes of pass 1 zero old pages, pass 2 sends data there again; the
/// receiver's count of data pages must stay consistent (it wrapped below
/// zero once, and the next pass overflowed it).
#[test]
fn passes_over_a_reused_image_keep_the_data_count_consistent() {
    let dir = std::env::temp_dir().join(format!("transit-sparse-passes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src.img");
    let size = 4 * MIB;
    let expected = sparse_file(&src, size, &[(MIB, 64 * 1024)]);
    let mut old = DestImage::anonymous(size, false).unwrap();
    old.as_mut_slice().fill(0x5a);
    let source = SourceImage::map_file(&src).unwrap();
    let (mut send, recv) = unix_pairs(3);
    let rx = spawn_receiver(recv, RecvConfig::default(), Destination::Image(old));
    let main = send.remove(0);
    let pages = size / 4096;
    bounded(60, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Image(source), main, send)?;
        tx.send_all()?;
        tx.send_pass(0..pages)?;
        tx.finish()
    })
    .unwrap();
    let got = rx.join().unwrap().unwrap();
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

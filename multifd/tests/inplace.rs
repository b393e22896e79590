//! In-place delta (`RecvConfig::inplace`, `transit_multifd::undo`): the
//! receiver writes the differing pages into the file at its output path,
//! saving what it overwrites in an undo journal first. A verified session
//! leaves the new image in the same inode and no journal; a failed one
//! (verification, a commit step, a lost peer) leaves the file byte for
//! byte as it was; a journal left by a crash, even torn at its end, is
//! rolled back by the next receive before anything else.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use transit_channel::fault::FailAfter;
use transit_channel::Channel;
use transit_multifd::image::SourceImage;
use transit_multifd::undo::{self, Change, Journal, UndoError};
use transit_multifd::{
    Destination, Error, Payload, Receiver, RecvConfig, RecvOutcome, Result as MfResult, SendConfig,
    Sender, Stats,
};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("transit-inplace-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn image(size: u64, seed: u64) -> Vec<u8> {
    SourceImage::generate(&spec(size, 0.2, seed))
        .unwrap()
        .as_slice()
        .to_vec()
}

fn inplace() -> RecvConfig {
    RecvConfig {
        delta: true,
        inplace: true,
        ..RecvConfig::default()
    }
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

fn journal(out: &Path) -> PathBuf {
    undo::journal_path_for(out).unwrap()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Send `new` to a receiver with `config` writing `out`, over `channels`
/// page channels (`wrap` may break the sender's), the receiver committing
/// with `commit`. Both ends' results.
fn session(
    new: Vec<u8>,
    out: &Path,
    config: RecvConfig,
    channels: usize,
    wrap: impl Fn(Box<dyn Channel>) -> Box<dyn Channel>,
    passes: impl FnOnce(&mut Sender) -> MfResult<()> + Send + 'static,
    commit: impl FnOnce(&mut RecvOutcome) -> MfResult<()> + Send + 'static,
) -> (MfResult<Stats>, MfResult<RecvOutcome>) {
    let (mut send, recv) = unix_pairs(channels + 1);
    let target = out.to_path_buf();
    let rx = std::thread::spawn(move || {
        let mut rx = Receiver::new(
            config,
            Destination::File {
                path: target,
                mode: None,
            },
        );
        for ch in recv {
            rx.accept_channel(ch)?;
        }
        rx.run_with(commit)
    });
    let main = send.remove(0);
    let pages: Vec<Box<dyn Channel>> = send.into_iter().map(wrap).collect();
    let sent = bounded(60, move || {
        let mut tx = Sender::new(
            SendConfig::default(),
            Payload::Image(SourceImage::from_vec(new)),
            main,
            pages,
        )?;
        tx.send_all()?;
        passes(&mut tx)?;
        tx.finish()
    });
    (sent, rx.join().unwrap())
}

/// The usual commit: put the output in place.
fn persist(o: &mut RecvOutcome) -> MfResult<()> {
    o.image
        .as_mut()
        .unwrap()
        .persist_in_place()
        .map_err(|e| Error::data("put the output in place", e))
}

/// Old and new images: 1% of the pages changed, a few data pages zeroed,
/// a few zero pages given data; the old one `extra` bytes longer (or
/// shorter).
fn old_and_new(size: u64, extra: i64, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let old = image(size, seed);
    let mut new = old.clone();
    let pages = (size / 4096) as usize;
    for i in (0..pages).step_by(97) {
        new[i * 4096 + 11] ^= 0x5a;
        new[i * 4096] |= 1;
    }
    for i in (5..pages).step_by(301) {
        new[i * 4096..(i + 1) * 4096].fill(0);
    }
    for i in (7..pages).step_by(211) {
        new[i * 4096..(i + 1) * 4096].fill(0x3c);
    }
    let old = match extra {
        0 => old,
        e if e > 0 => [old, image(e as u64, seed + 1)].concat(),
        e => old[..(size as i64 + e) as usize].to_vec(),
    };
    (old, new)
}

#[test]
fn in_place_delta_updates_the_file_itself_and_leaves_no_journal() {
    let dir = scratch("ok");
    let out = dir.join("out.img");
    for (channels, extra) in [(4, 0), (1, 0), (4, 3 << 20), (1, -(1 << 20) - 100)] {
        let (old, new) = old_and_new(8 << 20, extra, 3);
        std::fs::write(&out, &old).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = ino(&out);
        let j = journal(&out);
        let (sent, got) = session(
            new.clone(),
            &out,
            inplace(),
            channels,
            |c| c,
            |_| Ok(()),
            move |o| {
                // Before the commit the journal is there, as private as
                // the file.
                let m = std::fs::metadata(&j).expect("the undo journal during the update");
                assert_eq!(m.permissions().mode() & 0o777, 0o640);
                persist(o)
            },
        );
        let (sent, got) = (sent.unwrap(), got.unwrap());
        assert_eq!(got.stats.digest, sent.digest);
        assert!(std::fs::read(&out).unwrap() == new, "{channels} {extra}");
        assert_eq!(ino(&out), before, "the same file, not a new one");
        assert_eq!(names(&dir), ["out.img"], "no journal, no temporary file");
        assert!(sent.kept_pages > 1500, "{}", sent.kept_pages);
        // 32 changed pages, and the 257 an older copy 1 MiB shorter lacks.
        assert!(sent.pages < 300, "{} pages sent", sent.pages);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Several passes (a page written twice, data over zeros, zeros over
/// data): the file ends as the last pass left it; and when the commit
/// then fails, as it was before the first.
#[test]
fn passes_in_place_commit_or_roll_back_to_the_very_first_contents() {
    let dir = scratch("passes");
    let out = dir.join("out.img");
    let (old, new) = old_and_new(4 << 20, 0, 5);
    for fail in [false, true] {
        std::fs::write(&out, &old).unwrap();
        let (tx_done, rx_done) = std::sync::mpsc::channel();
        let (sent, got) = session(
            new.clone(),
            &out,
            inplace(),
            2,
            |c| c,
            move |tx| {
                for pass in 1..3u64 {
                    let img = tx.image_mut()?;
                    let mut dirty = Vec::new();
                    for p in (0..1024u64).filter(|p| (p * 7 + pass) % 10 < 3) {
                        let page = &mut img[(p * 4096) as usize..((p + 1) * 4096) as usize];
                        if p % 2 == 0 {
                            page.fill(0);
                        } else {
                            page.fill(p as u8 ^ pass as u8 | 1);
                        }
                        dirty.push(p);
                    }
                    tx.send_pass(dirty)?;
                }
                let _ = tx_done.send(tx.image().unwrap().to_vec());
                Ok(())
            },
            move |o| {
                if fail {
                    return Err(Error::Aborted("the commit step failed".into()));
                }
                persist(o)
            },
        );
        let last = rx_done.recv().unwrap();
        if fail {
            assert!(matches!(got, Err(Error::Aborted(_))), "{got:?}");
            assert!(sent.is_err());
            assert!(std::fs::read(&out).unwrap() == old, "rolled back");
        } else {
            got.unwrap();
            sent.unwrap();
            assert!(std::fs::read(&out).unwrap() == last);
        }
        assert_eq!(names(&dir), ["out.img"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A commit step that fails once every page is in the file (the file
/// longer, shorter, or as long as the image): rolled back byte for byte,
/// size included.
#[test]
fn a_failure_after_every_write_rolls_the_file_back() {
    let dir = scratch("rollback");
    let out = dir.join("out.img");
    for extra in [0i64, 2 << 20, -(1 << 20) - 100] {
        let (old, new) = old_and_new(8 << 20, extra, 7);
        std::fs::write(&out, &old).unwrap();
        let check = out.clone();
        let (sent, got) = session(
            new.clone(),
            &out,
            inplace(),
            4,
            |c| c,
            |_| Ok(()),
            move |_| {
                // The changes are in the file now.
                assert!(std::fs::read(&check).unwrap() == new);
                Err(Error::Aborted("the commit step failed".into()))
            },
        );
        assert!(matches!(got, Err(Error::Aborted(_))), "{got:?}");
        assert!(sent.is_err(), "the sender is told");
        assert!(std::fs::read(&out).unwrap() == old, "extra {extra}");
        assert_eq!(names(&dir), ["out.img"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The sender's page connection breaks in the middle of the transfer (no
/// reconnection): the receiver fails and rolls back.
#[test]
fn a_lost_peer_mid_transfer_leaves_the_file_as_it_was() {
    let dir = scratch("lost");
    let out = dir.join("out.img");
    let old = image(8 << 20, 9);
    // Half of the pages differ: about 3 MiB to send; the connection
    // breaks after 1 MiB of it.
    let mut new = old.clone();
    for p in (0..2048).step_by(2) {
        new[p * 4096 + 1] ^= 0xff;
        new[p * 4096] |= 1;
    }
    std::fs::write(&out, &old).unwrap();
    let (sent, got) = session(
        new,
        &out,
        inplace(),
        1,
        |c| Box::new(FailAfter::new(c, 1 << 20)),
        |_| Ok(()),
        persist,
    );
    assert!(sent.is_err());
    assert!(got.is_err());
    assert!(std::fs::read(&out).unwrap() == old);
    assert_eq!(names(&dir), ["out.img"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What a crashed in-place receiver leaves: its journal with saved
/// ranges, the file changed there (and cut shorter). The next receive on
/// the path, delta or not, rolls back before it does anything else.
fn crash(out: &Path, old: &[u8]) {
    std::fs::write(out, old).unwrap();
    let j = Journal::create(out, 4096).unwrap();
    let ranges = [(0, 4096), (40960, 3 * 4096), (1 << 20, 4096)];
    j.save(&ranges, Change::Write).unwrap();
    for &(o, l) in &ranges {
        j.file().write_all_at(&vec![0xee; l as usize], o).unwrap();
    }
    j.save(&[(2 << 20, 4096)], Change::Zero).unwrap();
    j.file().write_all_at(&[0u8; 4096], 2 << 20).unwrap();
    j.set_len(old.len() as u64 - 100_000).unwrap();
    drop(j); // killed: no commit, no rollback
    assert!(std::fs::read(out).unwrap() != old);
}

#[test]
fn a_journal_left_by_a_crash_is_rolled_back_by_the_next_receive() {
    let dir = scratch("crash");
    let out = dir.join("out.img");
    let old = image(4 << 20, 11);
    let mut new = old.clone();
    new[3 << 20] ^= 1;
    new[3 << 20] |= 1;
    for config in [inplace(), RecvConfig::default()] {
        crash(&out, &old);
        let j = journal(&out);
        assert!(j.exists());
        let check = out.clone();
        let expect = old.clone();
        let delta = config.delta;
        let (sent, got) = session(
            new.clone(),
            &out,
            config,
            2,
            |c| c,
            |_| Ok(()),
            move |o| {
                if delta {
                    // Rolled back before the file was hashed: only the
                    // one page that differs from the old file was sent.
                    assert_eq!(o.stats.pages, 1);
                } else {
                    // A new file replaces it; the old one was whole again.
                    assert!(std::fs::read(&check).unwrap() == expect);
                }
                persist(o)
            },
        );
        sent.unwrap();
        got.unwrap();
        assert!(std::fs::read(&out).unwrap() == new);
        assert_eq!(names(&dir), ["out.img"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A crash in the middle of an append leaves a torn last record (or
/// garbage, or zeros where the file system had not written the data yet):
/// it is ignored, and the ranges saved before it are put back.
#[test]
fn a_torn_last_record_is_ignored() {
    let dir = scratch("torn");
    let out = dir.join("out.img");
    // No zero pages: each saved range is one record of data.
    let old = SourceImage::generate(&spec(1 << 20, 0.0, 13))
        .unwrap()
        .as_slice()
        .to_vec();
    for tail in ["cut", "garbage", "zeros"] {
        std::fs::write(&out, &old).unwrap();
        let j = Journal::create(&out, 4096).unwrap();
        j.save(&[(8192, 8192)], Change::Write).unwrap();
        j.file().write_all_at(&[0xab; 8192], 8192).unwrap();
        let whole = std::fs::metadata(journal(&out)).unwrap().len();
        // The next record's append is cut short by the crash; its write
        // never happened.
        j.save(&[(65536, 4096)], Change::Write).unwrap();
        drop(j);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(journal(&out))
            .unwrap();
        match tail {
            "cut" => f.set_len(whole + 4000).unwrap(),
            "garbage" => {
                f.set_len(whole).unwrap();
                f.write_all_at(&[0x5a; 777], whole).unwrap();
            }
            _ => {
                f.set_len(whole).unwrap();
                f.set_len(whole + 4128).unwrap();
            }
        }
        drop(f);
        let r = undo::recover(&out).unwrap().expect("a journal");
        assert!(r.torn, "{tail}");
        assert_eq!(r.ranges, 1, "{tail}");
        assert_eq!(r.old_size, old.len() as u64);
        assert!(std::fs::read(&out).unwrap() == old, "{tail}");
        assert!(!journal(&out).exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Recovery refuses rather than guess, and touches nothing: a journal a
/// live receiver holds, one written for a file that was replaced since,
/// one that is not a journal. A receive on the path refuses too.
#[test]
fn recovery_refuses_what_it_cannot_trust() {
    let dir = scratch("refuse");
    let out = dir.join("out.img");
    let old = image(1 << 20, 15);
    std::fs::write(&out, &old).unwrap();

    // Held by a live update.
    let held = Journal::create(&out, 4096).unwrap();
    assert!(matches!(undo::recover(&out), Err(UndoError::Busy { .. })));
    assert!(matches!(
        Journal::create(&out, 4096),
        Err(UndoError::Busy { .. })
    ));
    let (sent, got) = session(old.clone(), &out, inplace(), 1, |c| c, |_| Ok(()), persist);
    assert!(sent.is_err());
    assert!(
        matches!(got, Err(Error::Undo(UndoError::Busy { .. }))),
        "{got:?}"
    );
    drop(held);

    // The file was replaced since the crash.
    let other = dir.join("other");
    std::fs::write(&other, image(1 << 20, 16)).unwrap();
    std::fs::rename(&other, &out).unwrap();
    let now = std::fs::read(&out).unwrap();
    assert!(matches!(
        undo::recover(&out),
        Err(UndoError::OtherFile { .. })
    ));
    assert!(std::fs::read(&out).unwrap() == now);
    assert!(journal(&out).exists());

    // Not a journal.
    std::fs::write(
        journal(&out),
        b"something else entirely, longer than a header",
    )
    .unwrap();
    assert!(matches!(
        undo::recover(&out),
        Err(UndoError::NotAJournal { .. })
    ));
    assert!(std::fs::read(&out).unwrap() == now);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn in_place_and_resume_exclude_each_other() {
    let dir = scratch("resume");
    let out = dir.join("out.img");
    let old = image(1 << 20, 17);
    std::fs::write(&out, &old).unwrap();
    let config = RecvConfig {
        resume: true,
        ..inplace()
    };
    let (sent, got) = session(old.clone(), &out, config, 1, |c| c, |_| Ok(()), persist);
    assert!(sent.is_err());
    assert!(matches!(got, Err(Error::Config(_))), "{got:?}");
    assert!(std::fs::read(&out).unwrap() == old);
    assert_eq!(names(&dir), ["out.img"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

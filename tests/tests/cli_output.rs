//! Where received data lands: a sender's success means the output is in
//! place; devices, FIFOs and links are written, never replaced; outputs
//! are private by default; a framed peer and a raw peer never take each
//! other's bytes for success.
//!
//! The disk-full test mounts a small tmpfs and an ext4 file system on a
//! loop device inside it (root); where the machine forbids mounts it says
//! so loudly and fails.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use transit_tests::{image_bytes, random_bytes, run, start_recv, transit, Scratch};

fn send(addr: &str, input: &Path, extra: &[&str]) -> transit_tests::Finished {
    let mut c = transit(&["send", addr, "--input", input.to_str().unwrap()]);
    c.args(extra);
    run(c)
}

/// `transit send ADDR --channels 2` of `src`: as an image (`--input
/// FILE`) or as a stream (`--input -` from the file on stdin).
fn send_2(addr: &str, src: &Path, stream: bool) -> Command {
    let mut c = transit(&["send", addr, "--channels", "2"]);
    if stream {
        c.stdin(std::fs::File::open(src).unwrap());
        c.args(["--input", "-"]);
    } else {
        c.args(["--input", src.to_str().unwrap()]);
    }
    c
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The target turns into a directory after the receiver started: the
/// rename cannot happen, and the sender must not report success.
#[test]
fn the_sender_succeeds_only_once_the_output_is_in_place() {
    let dir = Scratch::new("in-place");
    let src = dir.join("src.img");
    std::fs::write(&src, image_bytes(4 << 20, 0.5, 3)).unwrap();
    for stream in [false, true] {
        let out = dir.join(if stream { "stream.out" } else { "image.out" });
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", out.to_str().unwrap()]);
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("occupied"), b"x").unwrap();
        let s = run(send_2(&addr, &src, stream));
        let r = recv.finish();
        assert_ne!(r.code(), Some(0), "recv (stream {stream}): {}", r.stderr);
        assert_ne!(
            s.code(),
            Some(0),
            "send (stream {stream}) reported success though the output is not in place: {}",
            s.stderr
        );
        assert!(
            s.stderr.contains("put the output in place"),
            "send (stream {stream}): {}",
            s.stderr
        );
        // Nothing left behind but the directory the test made.
        assert_eq!(
            dir.names()
                .iter()
                .filter(|n| n.contains(".transit-"))
                .count(),
            0,
            "{:?}",
            dir.names()
        );
    }
}

/// `recv --output - | head -c 10`: the image cannot be written out, so
/// the sender must fail.
#[test]
fn an_image_into_a_closed_stdout_fails_the_sender() {
    let dir = Scratch::new("closed-stdout");
    let src = dir.join("src.img");
    std::fs::write(&src, image_bytes(8 << 20, 0.25, 4)).unwrap();
    let mut c = transit(&["recv", "tcp:127.0.0.1:0", "--output", "-"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Read the listening line, then close our end of its stdout.
    drop(child.stdout.take());
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains('\n') {
        assert_eq!(err.read(&mut byte).unwrap(), 1, "recv closed stderr");
        seen.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&seen).into_owned();
    let addr = line
        .trim()
        .strip_prefix("transit: listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        rest
    });
    let s = send(&addr, &src, &["--channels", "2"]);
    let status = child.wait().unwrap();
    let rerr = reader.join().unwrap();
    assert_ne!(status.code(), Some(0), "recv: {rerr}");
    assert_ne!(s.code(), Some(0), "send: {}", s.stderr);
    assert!(s.stderr.contains("stdout"), "send: {}", s.stderr);
}

/// Unmounts (lazily) and detaches on drop, whatever the test did.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    /// Mount a tmpfs with `opts` at `at` (unmounted on drop); the test
    /// fails, loudly, where the machine forbids it.
    fn tmpfs(&mut self, at: &Path, opts: &str) {
        assert!(
            sh(Command::new("mount").args([
                "-t",
                "tmpfs",
                "-o",
                opts,
                "tmpfs",
                at.to_str().unwrap()
            ])),
            "THIS MACHINE FORBIDS MOUNTS: the test needs root and tmpfs"
        );
        self.0.push(at.to_path_buf());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn sh(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A thin-provisioned disk: ext4 of 400 MiB on a loop device whose file
/// lives on a 48 MiB tmpfs. Writes land in the page cache, and only
/// writeback (fsync) finds the space missing. Both ends must fail.
#[test]
fn a_disk_that_fills_up_at_fsync_fails_both_ends() {
    let dir = Scratch::new("disk-full");
    let backing = dir.join("backing");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mut mounts = Mounts(Vec::new());
    let mounted = sh(Command::new("mount").args([
        "-t",
        "tmpfs",
        "-o",
        "size=48m",
        "tmpfs",
        backing.to_str().unwrap(),
    ]));
    assert!(
        mounted,
        "THIS MACHINE FORBIDS MOUNTS: the disk-full test needs root and tmpfs"
    );
    mounts.0.push(backing.clone());
    let img = backing.join("fs.img");
    assert!(sh(Command::new("truncate").args([
        "-s",
        "400M",
        img.to_str().unwrap()
    ])));
    assert!(
        sh(Command::new("mkfs.ext4").args(["-q", "-F", img.to_str().unwrap()])),
        "mkfs.ext4 failed (e2fsprogs installed?)"
    );
    assert!(
        sh(Command::new("mount").args([
            "-o",
            "loop",
            img.to_str().unwrap(),
            mnt.to_str().unwrap()
        ])),
        "THIS MACHINE FORBIDS LOOP MOUNTS: the disk-full test needs a loop device"
    );
    mounts.0.push(mnt.clone());
    let src = dir.join("src.img");
    std::fs::write(&src, random_bytes(96 << 20, 9)).unwrap();
    for stream in [false, true] {
        let out = mnt.join(if stream { "stream.out" } else { "image.out" });
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", out.to_str().unwrap()]);
        let s = run(send_2(&addr, &src, stream));
        let r = recv.finish();
        assert_ne!(r.code(), Some(0), "recv (stream {stream}): {}", r.stderr);
        assert_ne!(
            s.code(),
            Some(0),
            "send (stream {stream}) said success on a full disk: {}",
            s.stderr
        );
        assert!(!out.exists(), "a partial output is in place");
    }
}

/// Devices and FIFOs are written in order; links lead to their target;
/// nothing is replaced.
#[test]
fn devices_fifos_and_links_are_written_not_replaced() {
    let dir = Scratch::new("devices");
    let data = image_bytes(2 << 20, 0.5, 5);
    let src = dir.join("src.img");
    std::fs::write(&src, &data).unwrap();

    // A FIFO, read by a thread: image and stream sessions.
    for stream in [false, true] {
        let fifo = dir.join(if stream { "stream.fifo" } else { "image.fifo" });
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A second name for the FIFO: if the receiver wrongly replaced it,
        // the reader (blocked in open) is released through this one.
        let keep = dir.join(if stream { "stream.keep" } else { "image.keep" });
        std::fs::hard_link(&fifo, &keep).unwrap();
        let f2 = fifo.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(std::fs::read(&f2).unwrap_or_default());
        });
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", fifo.to_str().unwrap()]);
        let s = run(send_2(&addr, &src, stream));
        assert_eq!(s.code(), Some(0), "send: {}", s.stderr);
        let r = recv.finish();
        assert_eq!(r.code(), Some(0), "recv: {}", r.stderr);
        let got = done_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                // Release the reader: it waits for a writer that never came.
                let _ = std::fs::OpenOptions::new().write(true).open(&keep);
                done_rx.recv().unwrap_or_default()
            });
        assert!(got == data, "the FIFO's reader got {} bytes", got.len());
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    // A character device node of our own (the null device's numbers):
    // still a device afterwards. Raw mode too.
    let node = dir.join("null-node");
    let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: mknod reads the NUL-terminated path; makedev is arithmetic.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    for raw in [false, true] {
        let mut args = vec!["--output", node.to_str().unwrap()];
        if raw {
            args.push("--raw");
        }
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &args);
        let mut extra = vec!["--channels", "1"];
        if raw {
            extra = vec!["--raw"];
        }
        let s = send(&addr, &src, &extra);
        assert_eq!(s.code(), Some(0), "send: {}", s.stderr);
        let r = recv.finish();
        assert_eq!(r.code(), Some(0), "recv: {}", r.stderr);
        let meta = std::fs::metadata(&node).unwrap();
        assert!(
            meta.file_type().is_char_device(),
            "the device node was replaced"
        );
        assert_eq!(meta.rdev(), libc::makedev(1, 3));
    }

    // Links: to a file (the file gets the data, the link stays), dangling
    // (the file is created where it points), to the null device.
    let real = dir.join("real.img");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.join("link.img");
    std::os::unix::fs::symlink("real.img", &link).unwrap();
    let dangling = dir.join("dangling.img");
    std::os::unix::fs::symlink("later.img", &dangling).unwrap();
    let to_null = dir.join("to-null");
    std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
    for out in [&link, &dangling, &to_null] {
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", out.to_str().unwrap()]);
        let s = send(&addr, &src, &["--channels", "2"]);
        assert_eq!(s.code(), Some(0), "send: {}", s.stderr);
        let r = recv.finish();
        assert_eq!(r.code(), Some(0), "recv: {}", r.stderr);
        assert!(
            std::fs::symlink_metadata(out)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{} was replaced",
            out.display()
        );
    }
    assert!(std::fs::read(&real).unwrap() == data);
    assert!(std::fs::read(dir.join("later.img")).unwrap() == data);
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// New outputs are 0600 unless --mode says otherwise; a replaced file
/// keeps its mode. Image, stream and raw receives, and `send file:`.
#[test]
fn outputs_are_private_unless_asked_and_keep_an_existing_mode() {
    let dir = Scratch::new("modes");
    let src = dir.join("src.img");
    std::fs::write(&src, image_bytes(1 << 20, 0.5, 6)).unwrap();
    let recv_into = |out: &Path, extra_recv: &[&str], kind: &str| {
        let mut args = vec!["--output", out.to_str().unwrap()];
        args.extend_from_slice(extra_recv);
        if kind == "raw" {
            args.push("--raw");
        }
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &args);
        let mut c = transit(&["send", &addr]);
        match kind {
            "raw" => c.args(["--raw", "--input", src.to_str().unwrap()]),
            "stream" => c
                .args(["--input", "-"])
                .stdin(std::fs::File::open(&src).unwrap()),
            _ => c.args(["--input", src.to_str().unwrap()]),
        };
        let s = run(c);
        assert_eq!(s.code(), Some(0), "send {kind}: {}", s.stderr);
        let r = recv.finish();
        assert_eq!(r.code(), Some(0), "recv {kind}: {}", r.stderr);
    };
    for kind in ["image", "stream", "raw"] {
        let new = dir.join(&format!("{kind}.new"));
        recv_into(&new, &[], kind);
        assert_eq!(mode_of(&new), 0o600, "{kind}: a new output");
        let old = dir.join(&format!("{kind}.old"));
        std::fs::write(&old, b"x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        recv_into(&old, &[], kind);
        assert_eq!(mode_of(&old), 0o640, "{kind}: an existing output");
        let asked = dir.join(&format!("{kind}.asked"));
        recv_into(&asked, &["--mode", "644"], kind);
        assert_eq!(mode_of(&asked), 0o644, "{kind}: --mode 644");
    }
    let via_file = dir.join("via-file.img");
    let s = run(transit(&[
        "send",
        &format!("file:{}", via_file.display()),
        "--input",
        src.to_str().unwrap(),
    ]));
    assert_eq!(s.code(), Some(0), "send file: {}", s.stderr);
    assert_eq!(mode_of(&via_file), 0o600, "send file:");
    let bad = run(transit(&["recv", "tcp:127.0.0.1:0", "--mode", "999"]));
    assert_eq!(bad.code(), Some(2), "{}", bad.stderr);
}

/// A framed sender into `recv --raw`, and a `--raw` sender into a framed
/// receiver: neither looks like success, and the messages name the
/// mismatch.
#[test]
fn framed_and_raw_peers_are_told_apart() {
    let dir = Scratch::new("mismatch");
    let src = dir.join("src.img");
    std::fs::write(&src, image_bytes(1 << 20, 0.5, 7)).unwrap();
    let out = dir.join("out.img");

    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--raw", "--output", out.to_str().unwrap()],
    );
    let s = send(&addr, &src, &["--channels", "2", "--timeout", "10"]);
    let r = recv.finish();
    assert_ne!(r.code(), Some(0), "recv --raw: {}", r.stderr);
    assert!(r.stderr.contains("framed protocol"), "recv: {}", r.stderr);
    assert_ne!(s.code(), Some(0), "send: {}", s.stderr);
    assert!(!out.exists(), "recv --raw wrote an output");

    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--output", out.to_str().unwrap(), "--timeout", "5"],
    );
    let s = send(&addr, &src, &["--raw"]);
    assert_ne!(s.code(), Some(0), "send --raw: {}", s.stderr);
    assert!(s.stderr.contains("framed protocol"), "send: {}", s.stderr);
    let r = recv.wait_within(Duration::from_secs(30));
    assert!(r.stderr.contains("not a transit sender"), "{}", r.stderr);
    assert!(!out.exists());
}

/// An output in a directory nobody may create files in (a read-only
/// mount) is a usage error before anything listens, not a failure once the
/// sender has connected.
#[test]
fn an_unwritable_output_directory_is_refused_before_listening() {
    let dir = Scratch::new("ro-dir");
    let ro = dir.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mut mounts = Mounts(Vec::new());
    mounts.tmpfs(&ro, "ro,size=1m");
    let out = ro.join("out.img");
    let r = transit_tests::Running::spawn(transit(&[
        "recv",
        "tcp:127.0.0.1:0",
        "--output",
        out.to_str().unwrap(),
    ]))
    .wait_within(Duration::from_secs(10));
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    assert!(!r.stderr.contains("listening on"), "{}", r.stderr);
    assert!(r.stderr.contains("cannot create files"), "{}", r.stderr);
}

/// Detaches a loop device on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A block device (a loop device over a file of the test's) is written in
/// place, image and raw, and stays a device.
#[test]
fn a_block_device_is_written_in_place() {
    let dir = Scratch::new("blockdev");
    let backing = dir.join("backing");
    std::fs::write(&backing, vec![0u8; 4 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show", backing.to_str().unwrap()])
        .output()
        .expect("losetup (util-linux) is needed");
    assert!(
        out.status.success(),
        "THIS MACHINE FORBIDS LOOP DEVICES: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let _detach = Loop(dev.clone());
    let data = image_bytes(2 << 20, 0.5, 11);
    let src = dir.join("src.img");
    std::fs::write(&src, &data).unwrap();
    for raw in [false, true] {
        let mut args = vec!["--output", dev.as_str()];
        if raw {
            args.push("--raw");
        }
        let (recv, addr) = start_recv("tcp:127.0.0.1:0", &args);
        let extra: &[&str] = if raw {
            &["--raw"]
        } else {
            &["--channels", "2"]
        };
        let s = send(&addr, &src, extra);
        assert_eq!(s.code(), Some(0), "send: {}", s.stderr);
        let r = recv.finish();
        assert_eq!(r.code(), Some(0), "recv: {}", r.stderr);
        assert!(std::fs::metadata(&dev)
            .unwrap()
            .file_type()
            .is_block_device());
        let _ = Command::new("losetup").args(["-d", &dev]).status();
        let got = std::fs::read(&backing).unwrap();
        assert!(
            got[..data.len()] == data[..],
            "raw {raw}: the device holds other bytes"
        );
        std::fs::write(&backing, vec![0u8; 4 << 20]).unwrap();
        let re = Command::new("losetup")
            .args([dev.as_str(), backing.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(re.success());
    }
}

/// One page channel into a file: a second thread writes the pages while
/// the channel reads the next packet. A write that fails there (a full
/// file system, ENOSPC at `pwrite`) still fails both ends with the reason
/// and leaves no file.
#[test]
fn a_write_that_fails_on_the_writer_thread_fails_both_ends() {
    let dir = Scratch::new("enospc-1ch");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut mounts = Mounts(Vec::new());
    mounts.tmpfs(&mnt, "size=2m");
    let src = dir.join("src.img");
    std::fs::write(&src, random_bytes(16 << 20, 12)).unwrap();
    let out = mnt.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--output", out.to_str().unwrap(), "--max-size", "100M"],
    );
    let s = run(transit(&[
        "send",
        &addr,
        "--input",
        src.to_str().unwrap(),
        "--channels",
        "1",
    ]));
    let r = recv.finish();
    assert_eq!(s.code(), Some(1), "{}", s.stderr);
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    assert!(s.stderr.contains("No space left"), "{}", s.stderr);
    assert!(r.stderr.contains("No space left"), "{}", r.stderr);
    let left: Vec<_> = std::fs::read_dir(&mnt).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

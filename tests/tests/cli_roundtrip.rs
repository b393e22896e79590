//! `transit send` / `transit recv` round trips between two processes: the
//! output file equals what was sent.

use std::io::Write;
use std::process::Stdio;

use transit_tests::{image_bytes, random_bytes, run, start_recv, transit, Scratch};

/// Send a generated image to `uri` with `channels` and compare the output.
fn image_round_trip(listen: &str, channels: &str, size: &str, bytes: u64) {
    let dir = Scratch::new("rt");
    let out = dir.join("out.img");
    let listen = listen.replace("DIR", &dir.path().display().to_string());
    let (recv, addr) = start_recv(&listen, &["--output", out.to_str().unwrap()]);
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        size,
        "--zero-ratio",
        "0.3",
        "--seed",
        "11",
        "--channels",
        channels,
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    let got = std::fs::read(&out).expect("output file");
    assert!(
        got == image_bytes(bytes, 0.3, 11),
        "output differs from the image"
    );
    assert_eq!(
        dir.names(),
        vec!["out.img".to_owned()],
        "temporary files left"
    );
}

#[test]
fn tcp_one_channel_image_reaches_the_file() {
    image_round_trip("tcp:127.0.0.1:0", "1", "8M", 8 << 20);
}

#[test]
fn tcp_four_channels_image_reaches_the_file() {
    image_round_trip("tcp:127.0.0.1:0", "4", "8M", 8 << 20);
}

#[test]
fn unix_one_channel_image_reaches_the_file() {
    image_round_trip("unix:DIR/s.sock", "1", "4M", 4 << 20);
}

#[test]
fn unix_four_channels_image_with_a_partial_page_reaches_the_file() {
    image_round_trip("unix:DIR/s.sock", "4", "4100K", 4100 << 10);
}

#[test]
fn a_file_input_is_sent_as_an_image() {
    let dir = Scratch::new("file-in");
    let src = dir.join("src.bin");
    let mut data = random_bytes(3 << 20, 5);
    data[4096..3 * 4096].fill(0);
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out.bin");
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", out.to_str().unwrap()]);
    let send = run(transit(&[
        "send",
        &addr,
        "--input",
        src.to_str().unwrap(),
        "--channels",
        "2",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    assert_eq!(recv.finish().code(), Some(0));
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn a_stream_from_stdin_reaches_stdout_in_order() {
    // Not a multiple of the chunk size, and more than one chunk per channel.
    let data = random_bytes((5 << 20) + 12_345, 9);
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", "-"]);
    let mut cmd = transit(&["send", &addr, "--input", "-", "--channels", "3"]);
    cmd.stdin(Stdio::piped());
    let mut send = transit_tests::Running::spawn(cmd);
    let mut stdin = send.child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    writer.join().unwrap().unwrap();
    let send = send.finish();
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert_eq!(recv.stdout.len(), data.len());
    assert!(recv.stdout == data, "stream content differs");
}

#[test]
fn a_stream_to_a_file_is_renamed_into_place() {
    let dir = Scratch::new("stream-file");
    let data = random_bytes(1_000_003, 4);
    // A pipe input is not mappable, so it goes as a stream.
    let out = dir.join("out.bin");
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--output", out.to_str().unwrap()]);
    let mut cmd = transit(&["send", &addr, "--input", "-"]);
    cmd.stdin(Stdio::piped());
    let mut send = transit_tests::Running::spawn(cmd);
    send.child.stdin.take().unwrap().write_all(&data).unwrap();
    assert_eq!(send.finish().code(), Some(0));
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&out).unwrap() == data);
    assert_eq!(dir.names(), vec!["out.bin".to_owned()]);
}

#[test]
fn passes_with_dirty_pages_end_with_the_final_image() {
    let dir = Scratch::new("passes");
    let out = dir.join("out.img");
    let (recv, addr) = start_recv(
        "tcp:127.0.0.1:0",
        &["--output", out.to_str().unwrap(), "--json"],
    );
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "4M",
        "--zero-ratio",
        "0.4",
        "--seed",
        "3",
        "--channels",
        "2",
        "--passes",
        "3",
        "--dirty-ratio",
        "0.2",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    let mut expect = image_bytes(4 << 20, 0.4, 3);
    let mut dirtied = 0;
    for pass in 2..=3 {
        dirtied +=
            transit_multifd::dirty::dirty_image(&mut expect, 4096, 0.2, 3, pass).len() as u64;
    }
    assert!(dirtied > 0);
    assert!(
        std::fs::read(&out).unwrap() == expect,
        "final image differs"
    );
    let v: serde_json::Value = serde_json::from_slice(&recv.stdout).unwrap();
    assert_eq!(v["passes"], 3);
    assert_eq!(
        v["pages"].as_u64().unwrap() + v["zero_pages"].as_u64().unwrap(),
        1024 + dirtied
    );
}

#[test]
fn recv_on_an_inherited_listening_fd() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let mut cmd = transit(&["recv", "fd:3", "--json"]);
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the child
    // before exec and make fd 3 (without close-on-exec) the listener.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let recv = transit_tests::Running::spawn(cmd);
    drop(listener);
    assert_eq!(recv.listening(), format!("tcp:127.0.0.1:{port}"));
    let send = run(transit(&[
        "send",
        &format!("tcp:127.0.0.1:{port}"),
        "--ram",
        "2M",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.finish();
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    let v: serde_json::Value = serde_json::from_slice(&recv.stdout).unwrap();
    assert_eq!(v["verified"], true);
}

#[test]
fn file_uri_stores_and_reads_the_payload_bytes() {
    let dir = Scratch::new("fileuri");
    let stored = dir.join("stored.img");
    let send = run(transit(&[
        "send",
        &format!("file:{}", stored.display()),
        "--ram",
        "3M",
        "--zero-ratio",
        "0.5",
        "--seed",
        "2",
    ]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let expect = image_bytes(3 << 20, 0.5, 2);
    assert!(std::fs::read(&stored).unwrap() == expect);
    let copy = dir.join("copy.img");
    let recv = run(transit(&[
        "recv",
        &format!("file:{}", stored.display()),
        "--output",
        copy.to_str().unwrap(),
    ]));
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(std::fs::read(&copy).unwrap() == expect);
}

//! Issue 14, item 10: an unauthenticated session header no longer decides
//! how much the receiver allocates. `recv --max-size`, and by default an
//! image that cannot fit (memory, or the output's free space), is refused
//! before anything is allocated, with an error record (code Refused) the
//! sender's message names; the receiver fails with the same reason.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use transit_multifd::wire::{self, Layout, SessionHeader};
use transit_tests::{error_lines, run, start_recv, transit, Scratch};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn max_size_refuses_a_larger_image_on_both_ends() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--max-size", "1M", "--timeout", "20"]);
    let send = run(transit(&[
        "send",
        &addr,
        "--ram",
        "2M",
        "--channels",
        "2",
        "--timeout",
        "20",
    ]));
    assert_eq!(send.code(), Some(1), "send: {}", send.stderr);
    let se = error_lines(&send.stderr);
    assert_eq!(se.len(), 1, "send: {}", send.stderr);
    assert!(se[0].contains("--max-size"), "{}", se[0]);
    assert!(se[0].contains("2.00 MiB"), "{}", se[0]);
    let recv = recv.wait_within(Duration::from_secs(30));
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    let re = error_lines(&recv.stderr);
    assert_eq!(re.len(), 1, "recv: {}", recv.stderr);
    assert!(re[0].contains("--max-size"), "{}", re[0]);
}

#[test]
fn max_size_lets_an_image_of_that_size_in() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--max-size", "2M", "--json"]);
    let send = run(transit(&["send", &addr, "--ram", "2M", "--channels", "2"]));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    recv.finish().assert_verified("recv", 2);
}

/// Send only a session header claiming `size` bytes; returns what the
/// receiver answered before it closed (bounded).
fn claim(addr: &str, size: u64) -> String {
    let hdr = SessionHeader {
        version: wire::VERSION,
        uuid: [7; 16],
        page_size: 4096,
        channels: 1,
        layout: Layout::Image { size },
        compression: wire::Compression::None,
        verify: true,
        packet_payload: 512 * 1024,
        data_bytes: size,
    };
    let mut c = TcpStream::connect(addr.trim_start_matches("tcp:")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(&hdr.encode()).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn an_image_larger_than_memory_is_refused_before_anything_is_allocated() {
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--timeout", "20"]);
    // 1 PiB: no machine running this has that much memory available.
    let answer = claim(&addr, 1 << 50);
    assert!(answer.contains("memory available"), "answer: {answer:?}");
    let recv = recv.wait_within(Duration::from_secs(30));
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    let re = error_lines(&recv.stderr);
    assert!(re[0].contains("memory available"), "{}", recv.stderr);
}

#[test]
fn an_image_larger_than_the_free_space_is_refused() {
    let dir = Scratch::new("max-size-free");
    let out = dir.join("out.img");
    let (recv, addr) = start_recv("tcp:127.0.0.1:0", &["--timeout", "20", "--output", s(&out)]);
    let answer = claim(&addr, 1 << 50);
    assert!(answer.contains("free space"), "answer: {answer:?}");
    let recv = recv.wait_within(Duration::from_secs(30));
    assert_eq!(recv.code(), Some(1), "recv: {}", recv.stderr);
    assert!(!out.exists());
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

//! Issue 15: the progress bar (drawn only on a terminal, so these tests
//! give transit one) says what it counts. The sender's counts what it
//! handed to its channels (`sent`), the receiver's what arrived
//! (`received`): nothing acknowledges data before the verdict, so through a
//! slow relay the two differ. Its rate is binary, and its ETA is `--` until
//! there is a rate (it said `0s` before any data arrived).

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use transit_multifd::wire::{self, Layout, SessionHeader};
use transit_tests::tty::{screen_lines, OnTerminal};
use transit_tests::{feed_slowly, transit};

/// Lines of a terminal that are the bar (not `transit: ...` lines).
fn bar_lines(screen: &str) -> Vec<String> {
    screen_lines(screen)
        .into_iter()
        .filter(|l| !l.starts_with("transit:"))
        .collect()
}

#[test]
fn the_sender_says_sent_and_the_receiver_received() {
    let recv = OnTerminal::spawn(transit(&["recv", "tcp:127.0.0.1:0"]));
    let addr = recv.listening();
    let mut cmd = transit(&["send", &addr, "--input", "-", "--channels", "2"]);
    cmd.stdin(Stdio::piped());
    let mut send = OnTerminal::spawn(cmd);
    let stdin = send.child.stdin.take().expect("stdin");
    let feeder = feed_slowly(stdin, 4, 256 << 10, Duration::from_millis(300));
    let send = send.wait_within(Duration::from_secs(60));
    feeder.join().unwrap();
    let recv = recv.wait_within(Duration::from_secs(60));
    assert_eq!(
        send.code(),
        Some(0),
        "send: {:?}",
        screen_lines(&send.stderr)
    );
    assert_eq!(
        recv.code(),
        Some(0),
        "recv: {:?}",
        screen_lines(&recv.stderr)
    );
    for (role, word, screen) in [
        ("send", "sent ", &send.stderr),
        ("recv", "received ", &recv.stderr),
    ] {
        let bars = bar_lines(screen);
        assert!(
            !bars.is_empty(),
            "{role}: no bar: {:?}",
            screen_lines(screen)
        );
        for b in &bars {
            assert!(b.starts_with(word), "{role}: {b}");
        }
        // The bar's rate, once it has one, is binary.
        assert!(
            bars.iter()
                .any(|b| b.contains("iB/s") || b.contains(" B/s")),
            "{role}: {bars:?}"
        );
        assert!(!bars.iter().any(|b| b.contains("GB/s")), "{role}: {bars:?}");
    }
}

#[test]
fn the_eta_is_dashes_before_any_data_arrived() {
    let recv = OnTerminal::spawn(transit(&["recv", "tcp:127.0.0.1:0", "--timeout", "20"]));
    let addr = recv.listening();
    // A sender's main channel announcing a 64 MiB image, whose page
    // channel never comes: the receiver draws its bar, and no byte moves.
    let hdr = SessionHeader {
        version: wire::VERSION,
        uuid: [9; 16],
        page_size: 4096,
        channels: 1,
        layout: Layout::Image { size: 64 << 20 },
        compression: wire::Compression::None,
        verify: true,
        packet_payload: 512 * 1024,
        data_bytes: 64 << 20,
    };
    let mut main = TcpStream::connect(addr.trim_start_matches("tcp:")).unwrap();
    main.write_all(&hdr.encode()).unwrap();
    // Several draws (one per 200 ms), the first without a rate, the later
    // ones with a rate of zero.
    let seen = recv.wait_line(|l| l.contains("0 B/s"), Duration::from_secs(20));
    let lines = recv.lines();
    assert!(seen.is_some(), "{lines:?}");
    let bars: Vec<&String> = lines.iter().filter(|l| l.starts_with("received")).collect();
    assert!(!bars.is_empty(), "{lines:?}");
    for b in &bars {
        assert!(b.contains("0 B of 64.0 MiB"), "{b}");
        assert!(b.ends_with("ETA --"), "{b}");
    }
    // The receiver is killed when dropped.
    drop(main);
}

//! RDMA setup outside the model: the `rdma:HOST:PORT` grammar, and connect
//! and listen on a machine without an RDMA device, which must fail at once
//! with an error that says so (never hang, never panic). Without the `rdma`
//! feature the same calls are `Unsupported`.

use std::time::{Duration, Instant};

use transit_channel::rdma::{format_address, parse_address, RdmaChannel, RdmaListener};
use transit_channel::{Error, SocketAddress};

#[test]
fn rdma_addresses_parse_and_print() {
    let cases = [
        (
            "rdma:127.0.0.1:4444",
            SocketAddress::inet("127.0.0.1", 4444),
        ),
        (
            "rdma:host-1.example:1",
            SocketAddress::inet("host-1.example", 1),
        ),
        ("rdma:[::1]:4444", SocketAddress::inet("::1", 4444)),
        ("rdma::5000", SocketAddress::inet("", 5000)),
    ];
    for (text, want) in cases {
        let got = parse_address(text).unwrap();
        assert_eq!(got, want, "{text}");
        assert_eq!(format_address(&got), text);
    }
}

#[test]
fn bad_rdma_addresses_say_what_was_expected() {
    for (text, needle) in [
        ("rdma:host", "port"),
        ("rdma:host:99999", "0-65535"),
        ("rdma:::1:4", "brackets"),
        ("tcp:host:1", "rdma:HOST:PORT"),
    ] {
        let err = parse_address(text).unwrap_err();
        assert!(matches!(err, Error::Address { .. }), "{text}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(text) && msg.contains(needle), "{text}: {msg}");
    }
}

/// What connect/listen must say on this machine.
fn assert_no_device(err: &Error, started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "setup did not fail at once"
    );
    let msg = err.to_string();
    if cfg!(feature = "rdma") {
        assert!(msg.contains("no RDMA device"), "{msg}");
    } else {
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(msg.contains("rdma"), "{msg}");
    }
}

fn have_rdma_device() -> bool {
    std::path::Path::new("/sys/class/infiniband")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
}

#[test]
fn connect_without_device_fails_at_once() {
    if have_rdma_device() && cfg!(feature = "rdma") {
        eprintln!("skipped: this machine has an RDMA device");
        return;
    }
    let started = Instant::now();
    let err = RdmaChannel::connect(&parse_address("rdma:127.0.0.1:1").unwrap()).unwrap_err();
    assert_no_device(&err, started);
    assert!(err.to_string().contains("rdma:127.0.0.1:1"), "{err}");
}

#[test]
fn listen_without_device_fails_at_once() {
    if have_rdma_device() && cfg!(feature = "rdma") {
        eprintln!("skipped: this machine has an RDMA device");
        return;
    }
    let started = Instant::now();
    let err = RdmaListener::listen(&parse_address("rdma:127.0.0.1:0").unwrap()).unwrap_err();
    assert_no_device(&err, started);
}

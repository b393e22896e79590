//! The library examples run: `cargo test --workspace` builds them (cargo
//! builds every example when it tests), and these tests run the binaries.
//!
//! * `transit-multifd`: `recv_file_tls` and `send_file_tls` move a sparse
//!   file over TLS with 4 page channels; the output is byte-identical.
//! * `transit-endpoint`: `recv_uri` and `send_uri` move a sparse file
//!   over `ws://` and `wss://` with 4 page channels through the library's
//!   connect and accept stacks; the output is byte-identical.
//! * `transit-channel`: `main_loop` (fd watch, timer, bottom half from
//!   another thread). `tokio_tls` needs the `tokio` feature: `.ci/run`
//!   runs it with `cargo run -p transit-channel --features tokio --example
//!   tokio_tls`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use transit_tests::{pki, random_bytes, transit_bin, Running, Scratch};

/// The built example `name` (next to the transit binary, in `examples/`).
fn example(name: &str) -> PathBuf {
    let p = transit_bin()
        .parent()
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo test --workspace` (it builds the examples) or `cargo build --examples`",
        p.display()
    );
    p
}

#[test]
fn send_and_receive_a_file_over_tls_with_4_channels() {
    let dir = Scratch::new("example-tls");
    let creds = pki::write(dir.path(), pki::Fault::None);
    let input = dir.join("in.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&input).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&random_bytes(3 << 20, 5), 1 << 20).unwrap();
        f.write_all_at(&random_bytes(1 << 20, 6), 12 << 20).unwrap();
    }
    let out = dir.join("out.img");
    let mut c = Command::new(example("recv_file_tls"));
    c.arg("127.0.0.1:0").arg(&creds.server).arg(&out);
    let recv = Running::spawn(c);
    let line = recv
        .wait_stdout(|s| s.contains("listening on "), Duration::from_secs(30))
        .expect("the receiver prints its address");
    let addr = line
        .lines()
        .find_map(|l| l.strip_prefix("listening on "))
        .expect("address line")
        .trim()
        .trim_start_matches("tcp:")
        .to_owned();
    let mut c = Command::new(example("send_file_tls"));
    c.arg(&addr).arg(&creds.client).arg(&input);
    let send = Running::spawn(c).wait_within(Duration::from_secs(60));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.wait_within(Duration::from_secs(60));
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(
        send.stdout_text().contains("verified"),
        "{}",
        send.stdout_text()
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
}

/// `recv_uri` and `send_uri` over `scheme`: a sparse file with 4 page
/// channels, the output byte-identical.
fn uri_examples(scheme: &str, tls: bool) {
    let dir = Scratch::new(&format!("example-{scheme}"));
    let creds = pki::write(dir.path(), pki::Fault::None);
    let input = dir.join("in.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&input).unwrap();
        f.set_len(24 << 20).unwrap();
        f.write_all_at(&random_bytes(5 << 20, 7), 2 << 20).unwrap();
        f.write_all_at(&random_bytes(1 << 20, 8), 20 << 20).unwrap();
    }
    let out = dir.join("out.img");
    let mut c = Command::new(example("recv_uri"));
    c.arg(format!("{scheme}://127.0.0.1:0/migrate")).arg(&out);
    if tls {
        c.arg(&creds.server);
    }
    let recv = Running::spawn(c);
    let line = recv
        .wait_stdout(|s| s.contains("listening on "), Duration::from_secs(30))
        .expect("the receiver prints its address");
    let uri = line
        .lines()
        .find_map(|l| l.strip_prefix("listening on "))
        .expect("address line")
        .trim()
        .replace("127.0.0.1", "localhost")
        .to_owned();
    let mut c = Command::new(example("send_uri"));
    c.arg(&uri).arg(&input).arg("4");
    if tls {
        c.arg(&creds.client);
    }
    let send = Running::spawn(c).wait_within(Duration::from_secs(60));
    assert_eq!(send.code(), Some(0), "send: {}", send.stderr);
    let recv = recv.wait_within(Duration::from_secs(60));
    assert_eq!(recv.code(), Some(0), "recv: {}", recv.stderr);
    assert!(
        send.stdout_text().contains("over 4 channels") && send.stdout_text().contains("verified"),
        "{}",
        send.stdout_text()
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
}

#[test]
fn send_and_receive_a_file_over_a_websocket_uri_with_the_endpoint_library() {
    uri_examples("ws", false);
}

#[test]
fn send_and_receive_a_file_over_a_tls_websocket_uri_with_the_endpoint_library() {
    uri_examples("wss", true);
}

#[test]
fn the_main_loop_example_sees_its_watch_timer_and_bottom_half() {
    let r = Running::spawn(Command::new(example("main_loop"))).wait_within(Duration::from_secs(30));
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(
        r.stdout_text().contains("read 3 lines"),
        "{}",
        r.stdout_text()
    );
}

//! UNIX socket listeners: clients are accepted, and the socket path is
//! unlinked on disconnect and on drop.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use common::{temp_dir, BOUND};
use transit_channel::{Channel, SocketAddress};
use transit_net_listener::NetListener;

#[test]
fn a_unix_listener_accepts_and_unlinks_its_path_on_disconnect() {
    let dir = temp_dir("unix");
    let path = dir.join("listen.sock");
    let mut l = NetListener::with_name("unix-listener");
    l.open_sync(&SocketAddress::Unix(path.clone()), 4)
        .expect("listen on a UNIX path");
    assert!(path.exists(), "the socket file exists while listening");
    assert_eq!(l.local_addresses(), [SocketAddress::Unix(path.clone())]);
    assert_eq!(l.port(), None);

    let mut c = UnixStream::connect(&path).expect("connect");
    c.write_all(b"u").expect("write");
    let accepted = l.wait_client(Some(BOUND)).expect("accept");
    assert!(accepted.name().starts_with("unix-listener"));

    l.disconnect();
    assert!(!path.exists(), "disconnect unlinks the socket path");
    assert!(!l.is_connected());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dropping_a_unix_listener_unlinks_its_path() {
    let dir = temp_dir("unix-drop");
    let path = dir.join("drop.sock");
    let mut l = NetListener::new();
    l.open_sync(&SocketAddress::Unix(path.clone()), 4)
        .expect("listen");
    assert!(path.exists());
    drop(l);
    assert!(!path.exists(), "drop unlinks the socket path");
    let _ = std::fs::remove_dir_all(dir);
}

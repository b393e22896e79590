//! Adopting sockets from file descriptors (`fd:N`, `from_fd`) and vsock.
//!
//! vsock: this kernel has no vsock loopback transport, so only address
//! handling, listening (where the kernel allows it) and a clear connect
//! error are tested; vsock data transfer is untested here.

mod socket_util;

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use socket_util::{bound, read_exact, write_all};
use transit_channel::{Channel, Error, Features, SocketAddress, SocketChannel};

#[test]
fn from_fd_adopts_a_connected_socket() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut ch = SocketChannel::from_fd(OwnedFd::from(ours)).unwrap();
    bound(&ch);
    assert_eq!(
        ch.features(),
        Features::SHUTDOWN | Features::READ_MSG_PEEK | Features::FD_PASS
    );
    let mut theirs = SocketChannel::from_fd(OwnedFd::from(theirs)).unwrap();
    write_all(&mut theirs, b"adopted");
    assert_eq!(read_exact(&mut ch, 7), b"adopted");
}

#[test]
fn from_address_duplicates_the_inherited_number() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let n = ours.as_raw_fd();
    let addr = SocketAddress::Fd(n);
    let mut ch = SocketChannel::from_address(&addr).unwrap();
    bound(&ch);
    assert!(ch.name().starts_with(&format!("fd:{n} ")), "{}", ch.name());
    assert_ne!(ch.as_raw_fd(), n, "a duplicate, not the original");
    let mut theirs = SocketChannel::from_fd(OwnedFd::from(theirs)).unwrap();
    write_all(&mut theirs, b"dup");
    assert_eq!(read_exact(&mut ch, 3), b"dup");
    ch.close().unwrap();
    // The original number is still open (it belongs to `ours`).
    // SAFETY: F_GETFD only inspects the fd table.
    assert!(unsafe { libc::fcntl(n, libc::F_GETFD) } >= 0);
    drop(ours);
}

#[test]
fn connect_sync_with_fd_adopts_too() {
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let ch = SocketChannel::connect_sync(&SocketAddress::Fd(ours.as_raw_fd())).unwrap();
    assert!(ch.has_feature(Features::FD_PASS));
}

#[test]
fn a_tcp_fd_gets_tcp_features_and_name() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ch = SocketChannel::from_fd(OwnedFd::from(s)).unwrap();
    assert_eq!(ch.features(), Features::SHUTDOWN | Features::READ_MSG_PEEK);
    assert!(ch.name().starts_with("tcp 127.0.0.1:"), "{}", ch.name());
    assert!(
        ch.name().ends_with(&format!("->127.0.0.1:{port}")),
        "{}",
        ch.name()
    );
}

#[test]
fn an_adopted_listener_accepts() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut ch = SocketChannel::from_fd(OwnedFd::from(l)).unwrap();
    assert!(ch.is_listener());
    let mut c = SocketChannel::connect_sync(&SocketAddress::inet("127.0.0.1", port)).unwrap();
    let mut s = ch.accept().unwrap();
    bound(&s);
    write_all(&mut c, b"hi");
    assert_eq!(read_exact(&mut s, 2), b"hi");
}

#[test]
fn listen_sync_on_an_inherited_bound_socket() {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let mut l = SocketChannel::listen_sync(&SocketAddress::Fd(sock.as_raw_fd()), 4).unwrap();
    assert!(l.is_listener());
    let addr = l.local_address().unwrap();
    let mut c = SocketChannel::connect_sync(&addr).unwrap();
    let mut s = l.accept().unwrap();
    bound(&s);
    write_all(&mut c, b"listening");
    assert_eq!(read_exact(&mut s, 9), b"listening");
}

#[test]
fn an_unconnected_socket_has_no_peek() {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let ch = SocketChannel::from_fd(OwnedFd::from(sock)).unwrap();
    assert_eq!(ch.features(), Features::SHUTDOWN);
}

#[test]
fn a_non_socket_fd_is_refused() {
    let f = std::fs::File::open("/dev/null").unwrap();
    let err = SocketChannel::from_fd(OwnedFd::from(f)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK), "{err}");
    assert!(err.to_string().contains("must be a socket"), "{err}");

    let f = std::fs::File::open("/dev/null").unwrap();
    let n = f.as_raw_fd();
    let err = SocketChannel::from_address(&SocketAddress::Fd(n)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK), "{err}");
    assert!(err.to_string().starts_with(&format!("fd:{n}:")), "{err}");
}

#[test]
fn a_datagram_socket_is_refused() {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None).unwrap();
    let err = SocketChannel::from_fd(OwnedFd::from(sock)).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
}

#[test]
fn an_unopened_fd_number_is_refused() {
    let err = SocketChannel::from_address(&SocketAddress::Fd(1 << 30)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
}

#[test]
fn from_address_refuses_non_fd_addresses() {
    let err = SocketChannel::from_address(&SocketAddress::inet("127.0.0.1", 1)).unwrap_err();
    assert!(matches!(err, Error::Address { .. }), "{err:?}");
}

#[test]
fn vsock_listen_works_or_fails_clearly() {
    // CID -1 = VMADDR_CID_ANY, port -1 = VMADDR_PORT_ANY (kernel picks).
    let addr: SocketAddress = "vsock:4294967295:4294967295".parse().unwrap();
    match SocketChannel::listen_sync(&addr, 2) {
        Ok(mut l) => {
            assert!(l.is_listener());
            match l.local_address() {
                Some(SocketAddress::Vsock { port, .. }) => assert_ne!(port, u32::MAX),
                other => panic!("vsock listener address {other:?}"),
            }
            assert!(l.name().starts_with("listen vsock:"), "{}", l.name());
            l.set_blocking(false).unwrap();
            assert!(matches!(l.accept(), Err(Error::WouldBlock)));
        }
        Err(e) => {
            assert!(matches!(e, Error::Os { .. }), "{e:?}");
            assert!(e.to_string().contains("vsock:4294967295:4294967295"), "{e}");
        }
    }
}

#[test]
fn vsock_connect_without_a_peer_fails_clearly() {
    // CID 1 is the local loopback CID; without the vsock_loopback transport
    // (or with nobody listening) the connect fails.
    let addr = SocketAddress::vsock(1, 4_000_000_000);
    let err = SocketChannel::connect_sync(&addr).unwrap_err();
    assert!(matches!(err, Error::Os { .. }), "{err:?}");
    assert!(err.to_string().contains("vsock:1:4000000000"), "{err}");
    assert!(err.raw_os_error().is_some(), "an OS error: {err}");
}

//! TCP socket channels over loopback (IPv4 127.0.0.1 and IPv6 ::1):
//! vectored I/O blocking and non-blocking, EOF, MSG_PEEK, feature checks,
//! socket options, names and connect errors.

mod socket_util;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::SockRef;
use socket_util::{connected, read_exact, retry, wait_for, write_all};
use transit_channel::{
    Channel, Error, Features, KeepAlive, ReadFlags, SocketAddress, SocketChannel, WriteFlags,
};

fn vectored_round_trip(addr: &str) {
    let (_l, mut client, mut server) = connected(addr);
    let n = client
        .writev(
            &[
                IoSlice::new(b"hello "),
                IoSlice::new(b""),
                IoSlice::new(b"vectored world"),
            ],
            &[],
            WriteFlags::empty(),
        )
        .expect("writev");
    assert_eq!(n, 20);
    let (mut a, mut b) = ([0u8; 8], [0u8; 12]);
    let mut got = 0usize;
    while got < 20 {
        let (ra, rb) = (got.min(8), got.saturating_sub(8));
        let r = server
            .readv(
                &mut [IoSliceMut::new(&mut a[ra..]), IoSliceMut::new(&mut b[rb..])],
                None,
                ReadFlags::empty(),
            )
            .expect("readv");
        assert!(r > 0, "unexpected EOF");
        got += r;
    }
    assert_eq!(&a, b"hello ve");
    assert_eq!(&b, b"ctored world");
}

#[test]
fn ipv4_vectored_round_trip_blocking() {
    vectored_round_trip("tcp:127.0.0.1:0");
}

#[test]
fn ipv6_vectored_round_trip_blocking() {
    vectored_round_trip("tcp:[::1]:0");
}

fn nonblocking_round_trip(addr: &str) {
    let (_l, mut client, mut server) = connected(addr);
    server.set_blocking(false).unwrap();
    assert!(!server.is_blocking());
    let mut buf = [0u8; 16];
    let r = server.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    assert!(matches!(r, Err(Error::WouldBlock)), "empty socket: {r:?}");

    client.set_blocking(false).unwrap();
    let n = retry(|| {
        client.writev(
            &[IoSlice::new(b"abc"), IoSlice::new(b"def")],
            &[],
            WriteFlags::empty(),
        )
    })
    .unwrap();
    assert_eq!(n, 6);
    assert_ne!(wait_for(&server, libc::POLLIN) & libc::POLLIN, 0);
    let mut got = Vec::new();
    while got.len() < 6 {
        let r = retry(|| server.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()))
            .unwrap();
        assert!(r > 0);
        got.extend_from_slice(&buf[..r]);
    }
    assert_eq!(got, b"abcdef");
    server.set_blocking(true).unwrap();
    assert!(server.is_blocking());
}

#[test]
fn ipv4_nonblocking_read_would_block_then_round_trip() {
    nonblocking_round_trip("tcp:127.0.0.1:0");
}

#[test]
fn ipv6_nonblocking_read_would_block_then_round_trip() {
    nonblocking_round_trip("tcp:[::1]:0");
}

#[test]
fn clean_eof_reads_zero() {
    let (_l, mut client, mut server) = connected("tcp:127.0.0.1:0");
    write_all(&mut client, b"last");
    client.close().unwrap();
    assert_eq!(read_exact(&mut server, 4), b"last");
    let mut buf = [0u8; 8];
    let r = server.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    assert_eq!(r.unwrap(), 0);
}

#[test]
fn peek_then_read_returns_the_same_bytes() {
    let (_l, mut client, mut server) = connected("tcp:127.0.0.1:0");
    assert!(server.has_feature(Features::READ_MSG_PEEK));
    write_all(&mut client, b"peekaboo");
    assert_ne!(wait_for(&server, libc::POLLIN) & libc::POLLIN, 0);
    let mut peeked = [0u8; 8];
    let mut n = 0;
    let start = std::time::Instant::now();
    while n < 8 {
        // A peek returns what is queued; wait until all 8 bytes are there.
        assert!(
            start.elapsed() < socket_util::BOUND,
            "only {n} bytes arrived"
        );
        n = server
            .readv(
                &mut [IoSliceMut::new(&mut peeked)],
                None,
                ReadFlags::MSG_PEEK,
            )
            .unwrap();
    }
    assert_eq!(&peeked, b"peekaboo");
    assert_eq!(read_exact(&mut server, 8), b"peekaboo");
}

#[test]
fn file_descriptors_on_tcp_are_unsupported() {
    let (_l, mut client, mut server) = connected("tcp:127.0.0.1:0");
    assert!(!client.has_feature(Features::FD_PASS));
    let other = std::fs::File::open("/dev/null").unwrap();
    let r = client.writev(&[IoSlice::new(b"x")], &[other.as_fd()], WriteFlags::empty());
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    let mut fds = Vec::new();
    let mut buf = [0u8; 1];
    let r = server.readv(
        &mut [IoSliceMut::new(&mut buf)],
        Some(&mut fds),
        ReadFlags::empty(),
    );
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
}

#[test]
fn names_show_local_and_peer() {
    let (listener, client, server) = connected("tcp:127.0.0.1:0");
    let lport = listener.local_address().and_then(|a| a.port()).unwrap();
    let cport = client.local_address().and_then(|a| a.port()).unwrap();
    assert_eq!(listener.name(), format!("listen tcp:127.0.0.1:{lport}"));
    assert_eq!(
        client.name(),
        format!("tcp 127.0.0.1:{cport}->127.0.0.1:{lport}")
    );
    assert_eq!(
        server.name(),
        format!("tcp 127.0.0.1:{lport}->127.0.0.1:{cport}")
    );
    assert_eq!(client.peer_address(), server.local_address());
    assert_eq!(server.peer_address(), client.local_address());
}

#[test]
fn ipv6_names_use_brackets() {
    let (_l, client, _server) = connected("tcp:[::1]:0");
    assert!(client.name().starts_with("tcp [::1]:"), "{}", client.name());
    assert!(client.name().contains("->[::1]:"), "{}", client.name());
}

#[test]
fn listener_features_and_real_port() {
    let l = SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse().unwrap(), 4).unwrap();
    assert!(l.is_listener());
    assert_eq!(l.features(), Features::LISTEN | Features::SHUTDOWN);
    assert_ne!(l.local_address().and_then(|a| a.port()), Some(0));
    assert!(SockRef::from(&l).reuse_address().unwrap());
}

#[test]
fn wildcard_listener_accepts_ipv4_and_ipv6() {
    let mut l = SocketChannel::listen_sync(&"tcp::0".parse().unwrap(), 4).unwrap();
    let port = l.local_address().and_then(|a| a.port()).unwrap() as u16;
    for host in ["127.0.0.1", "::1"] {
        let mut c = SocketChannel::connect_sync(&SocketAddress::inet(host, port)).unwrap();
        let mut s = l.accept().unwrap();
        write_all(&mut c, host.as_bytes());
        assert_eq!(read_exact(&mut s, host.len()), host.as_bytes());
    }
}

#[test]
fn listen_on_sets_v6only() {
    let l = SocketChannel::listen_on("[::1]:0".parse().unwrap(), 4, Some(true)).unwrap();
    assert!(SockRef::from(&l).only_v6().unwrap());
    let l = SocketChannel::listen_on("[::]:0".parse().unwrap(), 4, Some(false)).unwrap();
    assert!(!SockRef::from(&l).only_v6().unwrap());
}

#[test]
fn accept_on_a_connected_socket_is_unsupported() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    assert!(matches!(client.accept(), Err(Error::Unsupported { .. })));
}

#[test]
fn nonblocking_accept_would_block() {
    let mut l = SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse().unwrap(), 4).unwrap();
    l.set_blocking(false).unwrap();
    assert!(matches!(l.accept(), Err(Error::WouldBlock)));
}

#[test]
fn accepted_sockets_are_cloexec_and_blocking() {
    let (_l, _client, server) = connected("tcp:127.0.0.1:0");
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFD/F_GETFL on an open fd owned by `server`.
    let (fdfl, fl) = unsafe {
        (
            libc::fcntl(server.as_raw_fd(), libc::F_GETFD),
            libc::fcntl(server.as_raw_fd(), libc::F_GETFL),
        )
    };
    assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
    assert_eq!(fl & libc::O_NONBLOCK, 0);
    assert!(server.is_blocking());
}

#[test]
fn connect_refused_names_the_address() {
    // Bind a port, never listen: connecting is refused.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    let addr = SocketAddress::inet("127.0.0.1", port);
    let err = SocketChannel::connect_sync(&addr).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("tcp:127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("connect to"), "{msg}");
}

#[test]
fn connect_to_a_name_resolves_it() {
    let mut l = SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse().unwrap(), 4).unwrap();
    let port = l.local_address().and_then(|a| a.port()).unwrap() as u16;
    // "localhost" may resolve to ::1 first; the v4 address must still win.
    let mut c = SocketChannel::connect_sync(&SocketAddress::inet("localhost", port)).unwrap();
    let mut s = l.accept().unwrap();
    write_all(&mut c, b"named");
    assert_eq!(read_exact(&mut s, 5), b"named");
}

#[test]
fn keepalive_is_applied() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    client
        .set_keepalive(Some(KeepAlive {
            idle: Some(Duration::from_secs(31)),
            interval: Some(Duration::from_secs(7)),
            count: Some(4),
        }))
        .unwrap();
    let s = SockRef::from(&client);
    assert!(s.keepalive().unwrap());
    assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(31));
    assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(7));
    assert_eq!(s.keepalive_retries().unwrap(), 4);
    client.set_keepalive(None).unwrap();
    assert!(!SockRef::from(&client).keepalive().unwrap());
}

/// Both ends of every TCP connection carry keep-alive from the start
/// (issue 14, item 7: idle sockets carried none, so a vanished peer held a
/// transfer for the system default of two hours).
#[test]
fn every_tcp_connection_has_keepalive_on_both_ends() {
    for addr in ["tcp:127.0.0.1:0", "tcp:[::1]:0"] {
        let (_l, client, server) = connected(addr);
        for (side, ch) in [("connect", &client), ("accept", &server)] {
            let s = SockRef::from(ch);
            assert!(s.keepalive().unwrap(), "{addr} {side}");
            assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(30));
            assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(5));
            assert_eq!(s.keepalive_retries().unwrap(), 3);
        }
    }
    assert_eq!(
        KeepAlive::DEFAULT,
        KeepAlive {
            idle: Some(Duration::from_secs(30)),
            interval: Some(Duration::from_secs(5)),
            count: Some(3),
        }
    );
}

#[test]
fn delay_toggles_nodelay() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    client.set_delay(false).unwrap();
    assert!(SockRef::from(&client).nodelay().unwrap());
    client.set_delay(true).unwrap();
    assert!(!SockRef::from(&client).nodelay().unwrap());
}

#[test]
fn cork_is_applied() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    client.set_cork(true).unwrap();
    assert!(SockRef::from(&client).cork().unwrap());
    client.set_cork(false).unwrap();
    assert!(!SockRef::from(&client).cork().unwrap());
}

#[test]
fn buffer_sizes_are_applied() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    client.set_send_buffer(256 * 1024).unwrap();
    client.set_recv_buffer(192 * 1024).unwrap();
    let s = SockRef::from(&client);
    // The kernel doubles the request (capped by wmem_max/rmem_max for
    // unprivileged callers); it never gives less than half.
    let snd = s.send_buffer_size().unwrap();
    let rcv = s.recv_buffer_size().unwrap();
    assert!(snd >= 256 * 1024 || snd >= 2 * 212_992, "SO_SNDBUF {snd}");
    assert!(rcv >= 192 * 1024 || rcv >= 2 * 212_992, "SO_RCVBUF {rcv}");
    client.set_send_buffer(8192).unwrap();
    assert_eq!(SockRef::from(&client).send_buffer_size().unwrap(), 16384);
}

#[test]
fn keepalive_on_a_unix_socket_is_unsupported() {
    let (mut a, _b) = SocketChannel::pair().unwrap();
    assert!(matches!(
        a.set_keepalive(Some(KeepAlive::default())),
        Err(Error::Unsupported { .. })
    ));
    // Nagle and cork are hints: ignored on UNIX sockets.
    a.set_delay(false).unwrap();
    a.set_cork(true).unwrap();
}

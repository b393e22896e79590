//! Opening listeners: dual-stack on port 0, localhost on both families,
//! repeated opens, adopting a socket, and the error when nothing listens.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use common::{connect, have_ipv6_loopback, BOUND};
use transit_channel::socket::SocketChannel;
use transit_channel::{Channel, Error, SocketAddress};
use transit_net_listener::NetListener;

fn parse(s: &str) -> SocketAddress {
    s.parse().unwrap_or_else(|e| panic!("parse {s}: {e}"))
}

/// The IP of an accepted client's peer.
fn peer_ip(ch: &SocketChannel) -> IpAddr {
    match ch.peer_address() {
        Some(SocketAddress::Inet { host, .. }) => host.parse().expect("numeric peer host"),
        other => panic!("accepted client has no inet peer: {other:?}"),
    }
}

/// Connect from `ip` to `port` and accept it, checking the peer address.
fn connect_and_accept(l: &mut NetListener, ip: IpAddr, port: u16) {
    let mut c = connect(SocketAddr::new(ip, port));
    c.write_all(b"x").expect("client write");
    let accepted = l
        .wait_client(Some(BOUND))
        .unwrap_or_else(|e| panic!("accept the client from {ip}: {e}"));
    assert_eq!(peer_ip(&accepted), ip);
}

#[test]
fn wildcard_port_zero_listens_on_both_families_on_one_port() {
    let mut l = NetListener::with_name("dual");
    l.open_sync(&parse("tcp::0"), 8).expect("open tcp::0");
    let port = l.port().expect("a port");
    assert_ne!(port, 0);
    let mut hosts: Vec<String> = Vec::new();
    for a in l.local_addresses() {
        match a {
            SocketAddress::Inet { host, port: p } => {
                assert_eq!(p, port, "every address shares the port");
                hosts.push(host);
            }
            other => panic!("unexpected address {other:?}"),
        }
    }
    let v6 = have_ipv6_loopback();
    if v6 {
        assert_eq!(hosts, ["0.0.0.0", "::"]);
    } else {
        assert_eq!(hosts[0], "0.0.0.0");
    }

    connect_and_accept(&mut l, IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    if v6 {
        connect_and_accept(&mut l, IpAddr::V6(Ipv6Addr::LOCALHOST), port);
    } else {
        eprintln!("IPv6 part skipped: no ::1 in /proc/net/if_inet6");
    }
}

#[test]
fn localhost_port_zero_listens_on_both_loopbacks_on_one_port() {
    let mut l = NetListener::new();
    l.open_sync(&parse("tcp:localhost:0"), 8)
        .expect("open tcp:localhost:0");
    let port = l.port().expect("a port");
    let addrs = l.local_addresses();
    assert!(addrs.contains(&SocketAddress::Inet {
        host: "127.0.0.1".into(),
        port
    }));
    connect_and_accept(&mut l, IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    if have_ipv6_loopback() {
        assert!(addrs.contains(&SocketAddress::Inet {
            host: "::1".into(),
            port
        }));
        connect_and_accept(&mut l, IpAddr::V6(Ipv6Addr::LOCALHOST), port);
    }
}

#[test]
fn open_may_be_called_again_to_add_addresses() {
    let mut l = NetListener::new();
    assert!(!l.is_connected());
    l.open_sync(&parse("tcp:127.0.0.1:0"), 4)
        .expect("first open");
    l.open_sync(&parse("tcp:127.0.0.1:0"), 4)
        .expect("second open");
    assert!(l.is_connected());
    assert_eq!(l.num_sockets(), 2);
    let ports: Vec<u16> = l
        .local_addresses()
        .into_iter()
        .map(|a| match a {
            SocketAddress::Inet { port, .. } => port,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_ne!(ports[0], ports[1], "two separate kernel ports");
    for port in ports {
        connect_and_accept(&mut l, IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    }
}

#[test]
fn a_listening_socket_can_be_adopted() {
    let sock = SocketChannel::listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 4, None)
        .expect("listen");
    let mut l = NetListener::with_name("adopter");
    l.add(sock).expect("add");
    assert!(l.is_connected());
    let port = l.port().expect("port");
    connect_and_accept(&mut l, IpAddr::V4(Ipv4Addr::LOCALHOST), port);
}

#[test]
fn a_socket_that_does_not_listen_is_refused() {
    let (a, _b) = SocketChannel::pair().expect("socketpair");
    let mut l = NetListener::with_name("picky");
    let err = l.add(a).expect_err("a connected socket cannot be adopted");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(!l.is_connected());
}

#[test]
fn open_fails_with_the_first_error_when_no_address_listens() {
    let mut l = NetListener::with_name("doomed");
    // 192.0.2.1 (TEST-NET-1) is not an address of this machine: bind fails
    // locally with EADDRNOTAVAIL, no packet is sent.
    let err = l
        .open_sync(&parse("tcp:192.0.2.1:0"), 4)
        .expect_err("cannot listen on a foreign address");
    assert!(!l.is_connected());
    assert_eq!(l.num_sockets(), 0);
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("doomed"), "names the listener: {msg}");
    assert!(msg.contains("192.0.2.1"), "names the address: {msg}");
}

#[test]
fn one_failing_address_does_not_fail_the_open() {
    // Hold a port on 127.0.0.1 only, then ask for both loopbacks on it: the
    // IPv4 address fails with EADDRINUSE, ::1 still listens.
    if !have_ipv6_loopback() {
        eprintln!("skipped: no ::1");
        return;
    }
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind holder");
    let port = holder.local_addr().expect("addr").port();
    let mut l = NetListener::new();
    l.open_sync(&parse(&format!("tcp:localhost:{port}")), 4)
        .expect("::1 listens");
    assert_eq!(
        l.local_addresses(),
        [SocketAddress::Inet {
            host: "::1".into(),
            port
        }]
    );
}

#[test]
fn a_wildcard_whose_ipv4_port_is_taken_fails_instead_of_listening_on_ipv6_alone() {
    if !have_ipv6_loopback() {
        eprintln!("skipped: no ::1");
        return;
    }
    let holder = std::net::TcpListener::bind("0.0.0.0:0").expect("bind holder");
    let port = holder.local_addr().expect("addr").port();
    let mut l = NetListener::with_name("wild");
    let err = l
        .open_sync(&parse(&format!("tcp::{port}")), 4)
        .expect_err("IPv4 is taken: tcp::PORT must not listen on IPv6 alone");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("not listening on IPv6 alone"), "{msg}");
    assert!(!l.is_connected());
    assert_eq!(l.num_sockets(), 0);
    // Nothing of ours is left on ::1.
    assert!(std::net::TcpStream::connect(("::1", port)).is_err());
}

#[test]
fn a_wildcard_whose_ipv6_port_is_taken_fails_too() {
    if !have_ipv6_loopback() {
        eprintln!("skipped: no ::1");
        return;
    }
    let holder =
        socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).expect("socket");
    holder.set_only_v6(true).expect("v6only");
    holder
        .bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())
        .expect("bind holder");
    holder.listen(1).expect("listen");
    let port = holder
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet")
        .port();
    let mut l = NetListener::new();
    let err = l
        .open_sync(&parse(&format!("tcp::{port}")), 4)
        .expect_err("IPv6 is taken");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
    assert!(
        err.to_string().contains("not listening on IPv4 alone"),
        "{err}"
    );
    assert_eq!(l.num_sockets(), 0);
}

#[test]
fn wait_client_on_a_disconnected_listener_is_closed() {
    let mut l = NetListener::with_name("closed-one");
    l.open_sync(&parse("tcp:127.0.0.1:0"), 4).expect("open");
    l.disconnect();
    assert!(!l.is_connected());
    let err = l
        .wait_client(Some(Duration::from_millis(10)))
        .expect_err("no sockets");
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

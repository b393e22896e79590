//! The endpoint URI grammar: parse, print, round-trip, and every error.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;

use transit_channel::{Error, SocketAddress};

fn parse(s: &str) -> SocketAddress {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

/// The error for `s`, which must be an `Error::Address` quoting `s`.
fn fail(s: &str) -> String {
    match s.parse::<SocketAddress>() {
        Ok(a) => panic!("{s:?} should not parse, got {a:?}"),
        Err(Error::Address { input, expected }) => {
            assert_eq!(input, s, "the error quotes the input");
            let msg = Error::Address {
                input: input.clone(),
                expected: expected.clone(),
            }
            .to_string();
            assert!(
                msg.contains(&format!("{s:?}")),
                "message {msg:?} quotes {s:?}"
            );
            expected
        }
        Err(e) => panic!("{s:?}: wrong error variant {e:?}"),
    }
}

#[test]
fn parses_each_scheme_into_the_right_variant() {
    assert_eq!(
        parse("tcp:127.0.0.1:4444"),
        SocketAddress::inet("127.0.0.1", 4444)
    );
    assert_eq!(parse("tcp:[::1]:4444"), SocketAddress::inet("::1", 4444));
    assert_eq!(parse("tcp::4444"), SocketAddress::inet("", 4444));
    assert_eq!(
        parse("tcp:example.com:80"),
        SocketAddress::inet("example.com", 80)
    );
    assert_eq!(
        parse("tcp:[fe80::1%2]:0"),
        SocketAddress::inet("fe80::1%2", 0)
    );
    assert_eq!(
        parse("unix:/run/x.sock"),
        SocketAddress::Unix(PathBuf::from("/run/x.sock"))
    );
    assert_eq!(
        parse("unix:rel/x.sock"),
        SocketAddress::Unix(PathBuf::from("rel/x.sock"))
    );
    assert_eq!(
        parse("unix-abstract:qemu"),
        SocketAddress::UnixAbstract(b"qemu".to_vec())
    );
    assert_eq!(
        parse("unix-abstract:"),
        SocketAddress::UnixAbstract(Vec::new())
    );
    assert_eq!(
        parse("vsock:2:1234"),
        SocketAddress::Vsock { cid: 2, port: 1234 }
    );
    assert_eq!(
        parse("vsock:4294967295:4294967295"),
        SocketAddress::Vsock {
            cid: u32::MAX,
            port: u32::MAX
        }
    );
    assert_eq!(parse("fd:3"), SocketAddress::Fd(3));
}

#[test]
fn printing_round_trips() {
    for s in [
        "tcp:127.0.0.1:4444",
        "tcp:[::1]:4444",
        "tcp:[::]:0",
        "tcp::65535",
        "tcp:host-name.example_x:1",
        "tcp:[fe80::1%eth0]:22",
        "unix:/tmp/a b/c.sock",
        "unix:relative",
        "unix-abstract:name with spaces",
        "unix-abstract:\\x00\\x5cx\\xff",
        "vsock:3:5000",
        "fd:0",
    ] {
        let a = parse(s);
        assert_eq!(a.to_string(), s, "print of {a:?}");
        assert_eq!(parse(&a.to_string()), a);
    }
}

#[test]
fn abstract_names_with_any_byte_round_trip() {
    let mut name: Vec<u8> = (0..=105u8).collect();
    name.push(b'\\');
    assert_eq!(name.len(), 107);
    let a = SocketAddress::unix_abstract(name.clone());
    let printed = a.to_string();
    assert!(printed.is_ascii(), "{printed:?} is printable");
    assert_eq!(parse(&printed), SocketAddress::UnixAbstract(name));
}

#[test]
fn ipv6_hosts_print_in_brackets() {
    assert_eq!(SocketAddress::inet("::1", 80).to_string(), "tcp:[::1]:80");
    assert_eq!(
        SocketAddress::inet("10.0.0.1", 80).to_string(),
        "tcp:10.0.0.1:80"
    );
    assert_eq!(SocketAddress::inet("", 80).to_string(), "tcp::80");
}

#[test]
fn converts_from_std_socket_addrs() {
    let v4: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    assert_eq!(
        SocketAddress::from(v4),
        SocketAddress::inet("127.0.0.1", 5000)
    );
    let v6: SocketAddr = "[::1]:5000".parse().unwrap();
    assert_eq!(SocketAddress::from(v6).to_string(), "tcp:[::1]:5000");
    let scoped = SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), 7, 0, 3);
    assert_eq!(SocketAddress::from(scoped).to_string(), "tcp:[fe80::1%3]:7");
    assert_eq!(SocketAddress::from(v6).to_socket_addr(), Some(v6));
    assert_eq!(SocketAddress::inet("localhost", 1).to_socket_addr(), None);
}

#[test]
fn wildcards_are_recognised() {
    assert!(parse("tcp::1").is_wildcard());
    assert!(parse("tcp:0.0.0.0:1").is_wildcard());
    assert!(parse("tcp:[::]:1").is_wildcard());
    assert!(!parse("tcp:127.0.0.1:1").is_wildcard());
    assert!(!parse("tcp:localhost:1").is_wildcard());
    assert!(!parse("unix:/x").is_wildcard());
}

#[test]
fn ports_are_reported() {
    assert_eq!(parse("tcp:h:80").port(), Some(80));
    assert_eq!(parse("vsock:1:99").port(), Some(99));
    assert_eq!(parse("unix:/x").port(), None);
}

#[test]
fn missing_port_is_refused() {
    assert!(fail("tcp:localhost").contains("PORT"));
    assert!(fail("tcp:localhost:").contains("missing port"));
    assert!(fail("tcp:[::1]").contains(":PORT"));
    assert!(fail("tcp:[::1]:").contains("missing port"));
}

#[test]
fn port_out_of_range_is_refused() {
    assert!(fail("tcp:h:65536").contains("0-65535"));
    assert!(fail("tcp:h:99999999999").contains("0-65535"));
}

#[test]
fn non_numeric_port_is_refused() {
    assert!(fail("tcp:h:http").contains("decimal port"));
    assert!(fail("tcp:h:-1").contains("decimal port"));
}

#[test]
fn unknown_scheme_lists_the_known_ones() {
    let e = fail("udp:1.2.3.4:5");
    for known in ["tcp:", "unix:", "unix-abstract:", "vsock:", "fd:"] {
        assert!(e.contains(known), "{e:?} lists {known}");
    }
    assert!(e.contains("\"udp\""), "{e:?} names the bad scheme");
    assert!(fail("no-colon-at-all").contains("SCHEME"));
}

#[test]
fn unbalanced_brackets_are_refused() {
    assert!(fail("tcp:[::1:4444").contains("']'"));
    assert!(fail("tcp:::1]:4444").contains("brackets"));
    assert!(fail("tcp:h]:4444").contains("'['"));
    assert!(fail("tcp:[::1]4444").contains(":PORT"));
}

#[test]
fn ipv6_without_brackets_is_refused() {
    assert!(fail("tcp:::1:4444").contains("brackets"));
}

#[test]
fn brackets_must_hold_an_ipv6_address() {
    assert!(fail("tcp:[localhost]:1").contains("IPv6"));
    assert!(fail("tcp:[]:1").contains("IPv6"));
    assert!(fail("tcp:[fe80::1%]:1").contains("IPv6"));
}

#[test]
fn bad_host_characters_are_refused() {
    assert!(fail("tcp:a b:1").contains("host name"));
    assert!(fail("tcp:a/b:1").contains("host name"));
}

#[test]
fn unix_paths_are_limited_to_sun_path() {
    let ok = format!("unix:/{}", "a".repeat(107));
    assert_eq!(parse(&ok), SocketAddress::Unix(PathBuf::from(&ok[5..])));
    let long = format!("unix:/{}", "a".repeat(108));
    assert!(fail(&long).contains("108"));
    assert!(fail("unix:").contains("path"));
}

#[test]
fn abstract_names_are_limited_to_107_bytes() {
    let ok = format!("unix-abstract:{}", "n".repeat(107));
    assert_eq!(parse(&ok), SocketAddress::UnixAbstract(vec![b'n'; 107]));
    let long = format!("unix-abstract:{}", "n".repeat(108));
    assert!(fail(&long).contains("107"));
}

#[test]
fn bad_abstract_escapes_are_refused() {
    assert!(fail("unix-abstract:a\\").contains("\\xNN"));
    assert!(fail("unix-abstract:a\\x4").contains("\\xNN"));
    assert!(fail("unix-abstract:a\\xZZ").contains("\\xNN"));
}

#[test]
fn bad_vsock_addresses_are_refused() {
    assert!(fail("vsock:2").contains(":PORT"));
    assert!(fail("vsock:x:1").contains("CID"));
    assert!(fail("vsock:4294967296:1").contains("out of range"));
    assert!(fail("vsock:1:").contains("port"));
}

#[test]
fn bad_fd_numbers_are_refused() {
    assert!(fail("fd:").contains("fd:N"));
    assert!(fail("fd:-1").contains("fd:N"));
    assert!(fail("fd:abc").contains("fd:N"));
    assert!(fail("fd:99999999999").contains("at most"));
}

#[test]
fn validate_catches_what_cannot_be_printed_and_parsed() {
    assert!(SocketAddress::inet("::1", 1).validate().is_ok());
    assert!(SocketAddress::inet("bad host", 1).validate().is_err());
    assert!(SocketAddress::unix("/".repeat(109)).validate().is_err());
    assert!(SocketAddress::unix_abstract(vec![0; 108])
        .validate()
        .is_err());
    assert!(SocketAddress::Fd(-2).validate().is_err());
}

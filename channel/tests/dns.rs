//! Resolver behaviour: numeric hosts, the listening wildcard, the hosts file,
//! localhost, unknown names and unanswered DNS queries, all without any
//! network beyond loopback.
//!
//! Where a test must prove that DNS was *not* asked, the resolver is pointed
//! at a UDP socket on 127.0.0.1 that never answers, and the test checks that
//! no query arrived there.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use transit_channel::dns::{Resolver, ResolverOptions};
use transit_channel::{Error, SocketAddress};

/// The longest any single lookup in these tests may take before the test
/// fails instead of hanging.
const BOUND: Duration = Duration::from_secs(20);

/// Run `f` on a thread and fail the test if it does not finish within
/// [`BOUND`].
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND) {
        Ok(v) => v,
        Err(_) => panic!("lookup did not finish within {BOUND:?}"),
    }
}

/// A unique, fresh temporary directory for this test.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "transit-dns-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A DNS "server" on loopback that receives queries and never answers.
struct SilentDns {
    sock: UdpSocket,
}

impl SilentDns {
    fn new() -> SilentDns {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP on loopback");
        sock.set_nonblocking(true).expect("non-blocking");
        SilentDns { sock }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local addr")
    }

    /// How many queries arrived so far.
    fn queries(&self) -> usize {
        let mut buf = [0u8; 1500];
        let mut n = 0;
        while self.sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

/// A resolver that reads `hosts_file` and asks only `dns` (which never
/// answers), giving up after `timeout`.
fn isolated(hosts_file: PathBuf, dns: &SilentDns, timeout: Duration) -> Resolver {
    let mut opts = ResolverOptions::default();
    opts.hosts_file = hosts_file;
    opts.name_servers = Some(vec![dns.addr()]);
    opts.timeout = timeout;
    Resolver::with_options(opts)
}

fn inet(host: &str, port: u16) -> SocketAddress {
    SocketAddress::Inet {
        host: host.to_owned(),
        port,
    }
}

/// The `io::ErrorKind` inside an [`Error::Os`].
fn os_kind(e: &Error) -> io::ErrorKind {
    match e {
        Error::Os { source, .. } => source.kind(),
        other => panic!("expected Error::Os, got {other:?}"),
    }
}

/// The addresses of `name` in /etc/hosts, in file order.
fn etc_hosts_entries(name: &str) -> Vec<IpAddr> {
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if words.any(|w| w.eq_ignore_ascii_case(name)) {
            out.push(ip);
        }
    }
    out
}

/// IPv4 first, then IPv6, first occurrence kept.
fn v4_first(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for v4 in [true, false] {
        for ip in ips {
            if ip.is_ipv4() == v4 && !out.contains(ip) {
                out.push(*ip);
            }
        }
    }
    out
}

#[test]
fn numeric_hosts_are_returned_without_any_lookup() {
    let dns = SilentDns::new();
    let dir = temp_dir("numeric");
    let r = isolated(dir.join("no-hosts-file"), &dns, Duration::from_secs(2));
    let got = bounded(move || {
        [
            r.lookup_sync(&inet("192.0.2.1", 80)),
            r.lookup_sync(&inet("2001:db8::5", 81)),
            r.lookup_sync(&inet("[::1]", 82)),
        ]
        .map(|res| res.expect("numeric lookup"))
    });
    assert_eq!(got[0], [inet("192.0.2.1", 80)]);
    assert_eq!(got[1], [inet("2001:db8::5", 81)]);
    assert_eq!(got[2], [inet("::1", 82)]);
    assert_eq!(dns.queries(), 0, "a numeric host must not reach DNS");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn empty_host_listens_on_the_wildcard_of_both_families() {
    let got = Resolver::global()
        .lookup_sync(&inet("", 4444))
        .expect("wildcard lookup");
    assert_eq!(got, [inet("0.0.0.0", 4444), inet("::", 4444)]);
}

#[test]
fn empty_host_is_an_error_for_connecting() {
    let err = Resolver::global()
        .lookup_connect("", 4444)
        .expect_err("an empty host cannot be connected to");
    assert!(matches!(err, Error::Address { .. }), "{err:?}");
}

#[test]
fn lookup_connect_returns_socket_addresses() {
    let got = Resolver::global()
        .lookup_connect("127.0.0.1", 22)
        .expect("numeric connect lookup");
    assert_eq!(got, [SocketAddr::from((Ipv4Addr::LOCALHOST, 22))]);
}

#[test]
fn non_inet_addresses_come_back_unchanged() {
    let r = Resolver::global();
    for addr in [
        SocketAddress::Unix(PathBuf::from("/tmp/x.sock")),
        SocketAddress::UnixAbstract(b"abstract".to_vec()),
        SocketAddress::Vsock { cid: 3, port: 1234 },
        SocketAddress::Fd(7),
    ] {
        assert_eq!(
            r.lookup_sync(&addr).expect("lookup"),
            std::slice::from_ref(&addr)
        );
    }
}

#[test]
fn hosts_file_names_return_every_address_ipv4_first_without_dns() {
    let dns = SilentDns::new();
    let dir = temp_dir("hosts");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "# test hosts file\n\
         2001:db8::7  transit-test-host\n\
         192.0.2.7    transit-test-host alias-one\n\
         192.0.2.8    other-host Transit-Test-Host\n\
         192.0.2.7    transit-test-host   # duplicate\n",
    )
    .expect("write hosts file");
    let r = isolated(hosts, &dns, Duration::from_secs(2));
    let got = bounded(move || r.lookup_sync(&inet("transit-test-host", 9000)));
    assert_eq!(
        got.expect("hosts-file lookup"),
        [
            inet("192.0.2.7", 9000),
            inet("192.0.2.8", 9000),
            inet("2001:db8::7", 9000),
        ]
    );
    assert_eq!(dns.queries(), 0, "a hosts-file name must not reach DNS");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hosts_file_is_read_again_on_every_lookup() {
    let dns = SilentDns::new();
    let dir = temp_dir("reread");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "192.0.2.10 moving-host\n").expect("write hosts file");
    let r = isolated(hosts.clone(), &dns, Duration::from_secs(2));
    let first = r.lookup_host("moving-host").expect("first lookup");
    std::fs::write(&hosts, "192.0.2.11 moving-host\n").expect("rewrite hosts file");
    let second = r.lookup_host("moving-host").expect("second lookup");
    assert_eq!(first, [IpAddr::from([192, 0, 2, 10])]);
    assert_eq!(second, [IpAddr::from([192, 0, 2, 11])]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn localhost_gives_both_loopbacks_and_its_etc_hosts_entries() {
    let mut expected = etc_hosts_entries("localhost");
    if !expected.iter().any(IpAddr::is_ipv4) {
        expected.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if !expected.iter().any(IpAddr::is_ipv6) {
        expected.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    let expected = v4_first(&expected);
    let got = bounded(|| Resolver::global().lookup_host("localhost")).expect("localhost");
    assert_eq!(got, expected);
    assert!(got.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert!(got.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));
}

#[test]
fn localhost_never_reaches_dns_even_without_a_hosts_file() {
    let dns = SilentDns::new();
    let dir = temp_dir("localhost");
    let r = isolated(dir.join("missing"), &dns, Duration::from_secs(2));
    let got = bounded(move || r.lookup_sync(&inet("LocalHost.", 1))).expect("localhost");
    assert_eq!(got, [inet("127.0.0.1", 1), inet("::1", 1)]);
    assert_eq!(dns.queries(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_name_only_in_etc_hosts_resolves_to_its_entries() {
    // Pick a name /etc/hosts defines that is not localhost (container and
    // VM images nearly always list the machine's own name there).
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let name = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|ip| ip.parse::<IpAddr>().is_ok())
        })
        .flat_map(|l| l.split_whitespace().skip(1).map(str::to_owned))
        .find(|n| {
            let n = n.to_ascii_lowercase();
            n != "localhost"
                && !n.ends_with(".localhost")
                && n.contains(|c: char| c.is_alphabetic())
        });
    let Some(name) = name else {
        eprintln!("skipped: /etc/hosts names nothing but localhost");
        return;
    };
    let expected = v4_first(&etc_hosts_entries(&name));
    let lookup_name = name.clone();
    let got = bounded(move || Resolver::global().lookup_host(&lookup_name))
        .unwrap_or_else(|e| panic!("{name} is in /etc/hosts but failed: {e}"));
    assert_eq!(got, expected, "addresses of {name}");
}

#[test]
fn an_unknown_name_fails_quickly_and_names_the_host() {
    let err = bounded(|| Resolver::global().lookup_sync(&inet("nonexistent.invalid", 80)))
        .expect_err("nonexistent.invalid must not resolve");
    assert_eq!(os_kind(&err), io::ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("resolve host \"nonexistent.invalid\""),
        "message should name the host: {msg}"
    );
}

#[test]
fn an_unanswered_dns_query_times_out_with_a_clear_error() {
    let dns = SilentDns::new();
    let dir = temp_dir("timeout");
    let r = isolated(dir.join("missing"), &dns, Duration::from_millis(400));
    let err = bounded(move || r.lookup_host("no-answer.example"))
        .expect_err("a silent server cannot resolve anything");
    assert_eq!(os_kind(&err), io::ErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("\"no-answer.example\""), "{err}");
    assert!(dns.queries() > 0, "the query should have been sent");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn concurrent_lookups_from_several_threads_all_finish() {
    let dns = SilentDns::new();
    let dir = temp_dir("concurrent");
    let r = isolated(dir.join("missing"), &dns, Duration::from_millis(300));
    let results = bounded(move || {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let r = r.clone();
                std::thread::spawn(move || r.lookup_host(&format!("host{i}.example")))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("lookup thread panicked"))
            .collect::<Vec<_>>()
    });
    assert_eq!(results.len(), 4);
    for res in results {
        let err = res.expect_err("silent server");
        assert_eq!(os_kind(&err), io::ErrorKind::TimedOut, "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_lookup_inside_a_tokio_runtime_does_not_panic() {
    let dns = SilentDns::new();
    let dir = temp_dir("nested");
    let r = isolated(dir.join("missing"), &dns, Duration::from_millis(300));
    let err = bounded(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async { r.lookup_host("nested.example") })
    })
    .expect_err("silent server");
    assert_eq!(os_kind(&err), io::ErrorKind::TimedOut, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_invalid_host_name_is_invalid_input() {
    let err = Resolver::global()
        .lookup_host("bad name")
        .expect_err("spaces are not allowed in host names");
    assert_eq!(os_kind(&err), io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn lookup_task_completes_on_the_context_thread() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Instant;
    use transit_channel::main_loop::{ControlFlow, MainContext};

    let ctx = MainContext::new().expect("context");
    let got: Rc<RefCell<Option<transit_channel::Result<Vec<SocketAddress>>>>> =
        Rc::new(RefCell::new(None));
    let sink = got.clone();
    let caller = std::thread::current().id();
    let task = Resolver::global().lookup_task(&ctx, inet("", 5555), move |res| {
        assert_eq!(
            std::thread::current().id(),
            caller,
            "done runs on the context thread"
        );
        *sink.borrow_mut() = Some(res);
    });
    // A ticker keeps a blocking iteration from sleeping past the bound.
    let ticker = ctx.timeout_add(Duration::from_millis(20), || ControlFlow::Continue);
    let deadline = Instant::now() + BOUND;
    while got.borrow().is_none() && Instant::now() < deadline {
        ctx.iteration(true);
    }
    ctx.remove(ticker);
    assert!(task.is_complete());
    let res = got.borrow_mut().take().expect("completed within the bound");
    assert_eq!(
        res.expect("lookup"),
        [inet("0.0.0.0", 5555), inet("::", 5555)]
    );
}

#[test]
fn lookup_task_reports_errors_through_done() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use transit_channel::main_loop::MainContext;

    let ctx = MainContext::new().expect("context");
    let got = Rc::new(RefCell::new(None));
    let sink = got.clone();
    let task = Resolver::global().lookup_task(&ctx, inet("gone.invalid", 1), move |res| {
        *sink.borrow_mut() = Some(res);
    });
    // Block until the worker finished and run `done` inline.
    task.wait_thread();
    let err = got
        .borrow_mut()
        .take()
        .expect("done ran")
        .expect_err("gone.invalid does not resolve");
    assert_eq!(os_kind(&err), io::ErrorKind::NotFound, "{err}");
}

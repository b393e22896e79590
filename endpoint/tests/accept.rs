//! The acceptor hands over connections layered and classified, from a
//! listener (on the main loop) and from channels given to it (on threads),
//! and drops strangers that send nothing in time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transit_channel::{io, Channel, MainContext, SocketAddress, SocketChannel};
use transit_endpoint::accept::{self, AcceptConfig, Acceptor, Incoming, Source};
use transit_endpoint::admit::Head;
use transit_endpoint::{Endpoint, TransportOpts};

/// The first four bytes, as a string.
fn four(b: &[u8]) -> Head<String> {
    if b.len() < 4 {
        Head::More(4)
    } else {
        Head::Done(String::from_utf8_lossy(&b[..4]).into_owned())
    }
}

type Got = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Deliveries: the kind and the first 6 bytes read back from the channel.
fn collector(got: Got, fatal: Arc<Mutex<Vec<String>>>) -> impl Fn(Incoming<String>) + Send + Sync {
    move |inc| match inc {
        Incoming::Conn(mut a) => {
            let mut b = [0u8; 6];
            io::read_all(&mut *a.ch, &mut b).unwrap();
            got.lock().unwrap().push((a.kind, b.to_vec()));
        }
        Incoming::Fatal(why) => fatal.lock().unwrap().push(why),
    }
}

#[test]
fn a_listeners_connections_arrive_classified_with_their_bytes_put_back() {
    let ep = Endpoint::parse("tcp:127.0.0.1:0").unwrap();
    let source = accept::listen(&ep).unwrap();
    let uris = source.local_uris(&ep);
    assert_eq!(uris.len(), 1);
    let addr: SocketAddress = uris[0].parse().unwrap();
    let ctx = MainContext::new().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let l2 = logs.clone();
    let cfg = AcceptConfig {
        timeout: Duration::from_millis(300),
        log: Arc::new(move |m: &str| l2.lock().unwrap().push(m.to_owned())),
        ..AcceptConfig::new(ep, TransportOpts::new(Duration::from_secs(5)))
    };
    let (got, fatal) = (Got::default(), Arc::new(Mutex::new(Vec::new())));
    let acceptor = Acceptor::start(&ctx, source, cfg, four, collector(got.clone(), fatal)).unwrap();
    // A silent stranger first: it must delay no one.
    let _silent = SocketChannel::connect_sync(&addr).unwrap();
    let mut a = SocketChannel::connect_sync(&addr).unwrap();
    io::write_all(&mut a, b"MAIN01").unwrap();
    let mut b = SocketChannel::connect_sync(&addr).unwrap();
    io::write_all(&mut b, b"PAGE02").unwrap();
    let start = Instant::now();
    while (got.lock().unwrap().len() < 2 || logs.lock().unwrap().is_empty())
        && start.elapsed() < Duration::from_secs(10)
    {
        ctx.iteration(true);
    }
    let mut got = got.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("MAIN".to_owned(), b"MAIN01".to_vec()),
            ("PAGE".to_owned(), b"PAGE02".to_vec())
        ]
    );
    let logs = logs.lock().unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    acceptor.close();
}

#[test]
fn given_channels_are_classified_on_threads_and_a_failed_layer_is_fatal() {
    let ctx = MainContext::new().unwrap();
    let (got, fatal) = (Got::default(), Arc::new(Mutex::new(Vec::new())));
    // Plain channels: classified on threads of their own.
    let (mut x, y) = SocketChannel::pair().unwrap();
    io::write_all(&mut x, b"ABCDEF").unwrap();
    let ep = Endpoint::Stdio;
    let cfg = AcceptConfig::new(ep.clone(), TransportOpts::new(Duration::from_secs(5)));
    let acc = Acceptor::start(
        &ctx,
        Source::Channels(vec![Box::new(y) as Box<dyn Channel>]),
        cfg,
        four,
        collector(got.clone(), fatal.clone()),
    )
    .unwrap();
    let start = Instant::now();
    while got.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        *got.lock().unwrap(),
        [("ABCD".to_owned(), b"ABCDEF".to_vec())]
    );
    acc.close();
    // With TLS, a peer that is not a TLS client fails the layer: fatal for
    // the caller's own channels.
    let pki = transit_channel::tls::generate::TestPki::new().unwrap();
    let mut opts = TransportOpts::new(Duration::from_secs(5));
    opts.tls = Some(transit_endpoint::TlsOpts {
        creds: pki.loopback_creds().unwrap().1,
        hostname: None,
        authz: None,
        relaxed_eof: false,
    });
    let (mut x, y) = SocketChannel::pair().unwrap();
    io::write_all(
        &mut x,
        b"this is not a TLS client hello, not at all\r\n\r\n",
    )
    .unwrap();
    let acc = Acceptor::start(
        &ctx,
        Source::Channels(vec![Box::new(y) as Box<dyn Channel>]),
        AcceptConfig::new(ep, opts),
        four,
        collector(got.clone(), fatal.clone()),
    )
    .unwrap();
    let start = Instant::now();
    while fatal.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fatal.lock().unwrap().len(), 1);
    assert_eq!(acc.in_flight().count(), 0);
    acc.close();
}

/// One of the caller's own channels whose peer closes before its first
/// bytes is fatal (the session would otherwise wait for it for ever), and
/// the channels it hands over are marked as the caller's own.
#[test]
fn a_given_channel_that_ends_before_its_first_bytes_is_fatal() {
    let ctx = MainContext::new().unwrap();
    let (x, y) = SocketChannel::pair().unwrap();
    drop(x); // the sender's run died before sending anything
    let (mut ok_side, ok) = SocketChannel::pair().unwrap();
    io::write_all(&mut ok_side, b"PAGE01").unwrap();
    let (got, fatal) = (Got::default(), Arc::new(Mutex::new(Vec::new())));
    let own = Arc::new(Mutex::new(Vec::new()));
    let (g2, f2, o2) = (got.clone(), fatal.clone(), own.clone());
    let cfg = AcceptConfig::new(Endpoint::Stdio, TransportOpts::new(Duration::from_secs(5)));
    let acc = Acceptor::start(
        &ctx,
        Source::Channels(vec![Box::new(y) as Box<dyn Channel>, Box::new(ok)]),
        cfg,
        four,
        move |inc: Incoming<String>| match inc {
            Incoming::Conn(a) => {
                o2.lock().unwrap().push(a.own);
                g2.lock().unwrap().push((a.kind, Vec::new()));
            }
            Incoming::Fatal(why) => f2.lock().unwrap().push(why),
        },
    )
    .unwrap();
    let start = Instant::now();
    while (fatal.lock().unwrap().is_empty() || got.lock().unwrap().is_empty())
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        fatal.lock().unwrap().len(),
        1,
        "{:?}",
        fatal.lock().unwrap()
    );
    assert_eq!(*own.lock().unwrap(), [true]);
    assert_eq!(acc.in_flight().count(), 0);
    acc.close();
}

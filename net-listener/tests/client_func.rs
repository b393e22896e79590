//! Accepting on the main loop with `set_client_func`: clients arrive while
//! the context is iterated, a replaced or cleared callback gets nothing
//! more, and clients queued by `wait_client` reach a later callback.

mod common;

use std::cell::RefCell;
use std::io::{IoSliceMut, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use common::{connect, iterate_for, iterate_until, BOUND};
use transit_channel::main_loop::MainContext;
use transit_channel::socket::SocketChannel;
use transit_channel::{Channel, ReadFlags, SocketAddress};
use transit_net_listener::NetListener;

fn loopback_listener(name: &str) -> (NetListener, SocketAddr) {
    let mut l = NetListener::with_name(name);
    l.open_sync(
        &SocketAddress::Inet {
            host: "127.0.0.1".into(),
            port: 0,
        },
        16,
    )
    .expect("open");
    let port = l.port().expect("port");
    (l, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

type Inbox = Rc<RefCell<Vec<SocketChannel>>>;

fn inbox() -> Inbox {
    Rc::new(RefCell::new(Vec::new()))
}

/// Read one byte from an accepted client (blocking, bounded by the peer
/// having written it already).
fn first_byte(ch: &mut SocketChannel) -> u8 {
    ch.set_blocking(true).expect("blocking");
    let mut b = [0u8; 1];
    let n = ch
        .readv(&mut [IoSliceMut::new(&mut b)], None, ReadFlags::empty())
        .expect("read from accepted client");
    assert_eq!(n, 1);
    b[0]
}

fn tagged_client(addr: SocketAddr, tag: u8) -> TcpStream {
    let mut c = connect(addr);
    c.write_all(&[tag]).expect("client write");
    c
}

#[test]
fn clients_arrive_while_the_context_is_iterated() {
    let ctx = MainContext::new().expect("context");
    let (mut l, addr) = loopback_listener("on-loop");
    let got = inbox();
    let sink = got.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));

    let _clients: Vec<TcpStream> = (1..=3).map(|i| tagged_client(addr, i)).collect();
    assert!(
        iterate_until(&ctx, || got.borrow().len() == 3),
        "3 clients within {BOUND:?}, got {}",
        got.borrow().len()
    );
    let mut tags: Vec<u8> = got.borrow_mut().iter_mut().map(first_byte).collect();
    tags.sort_unstable();
    assert_eq!(tags, [1, 2, 3]);
    for c in got.borrow().iter() {
        assert!(
            c.name().starts_with("on-loop"),
            "client named after the listener: {}",
            c.name()
        );
    }
}

#[test]
fn a_replaced_callback_gets_no_more_clients() {
    let ctx = MainContext::new().expect("context");
    let (mut l, addr) = loopback_listener("replace");
    let (old, new) = (inbox(), inbox());
    let sink = old.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));
    let _a = tagged_client(addr, 1);
    assert!(iterate_until(&ctx, || old.borrow().len() == 1));

    let sink = new.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));
    let _b = tagged_client(addr, 2);
    assert!(iterate_until(&ctx, || new.borrow().len() == 1));
    assert_eq!(
        old.borrow().len(),
        1,
        "the old callback saw only the first client"
    );
    assert_eq!(first_byte(&mut new.borrow_mut()[0]), 2);
}

#[test]
fn a_cleared_callback_leaves_clients_for_wait_client() {
    let ctx = MainContext::new().expect("context");
    let (mut l, addr) = loopback_listener("cleared");
    let got = inbox();
    let sink = got.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));
    l.clear_client_func();
    let _a = tagged_client(addr, 7);
    iterate_for(&ctx, Duration::from_millis(100));
    assert!(got.borrow().is_empty(), "no watch after clearing");
    let mut c = l.wait_client(Some(BOUND)).expect("wait_client");
    assert_eq!(first_byte(&mut c), 7);
}

#[test]
fn clients_queued_by_wait_client_reach_a_later_callback() {
    let ctx = MainContext::new().expect("context");
    let (mut l, addr) = loopback_listener("queued");
    let _a = tagged_client(addr, 1);
    let _b = tagged_client(addr, 2);
    // Give the kernel time to complete both handshakes so one accept pass
    // takes both (the second is then queued).
    std::thread::sleep(Duration::from_millis(50));
    let mut first = l.wait_client(Some(BOUND)).expect("first client");
    assert_eq!(first_byte(&mut first), 1);

    let got = inbox();
    let sink = got.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));
    assert!(iterate_until(&ctx, || got.borrow().len() == 1));
    assert_eq!(first_byte(&mut got.borrow_mut()[0]), 2);
}

#[test]
fn a_callback_set_before_open_watches_the_new_sockets() {
    let ctx = MainContext::new().expect("context");
    let mut l = NetListener::with_name("late-open");
    let got = inbox();
    let sink = got.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));
    l.open_sync(
        &SocketAddress::Inet {
            host: "127.0.0.1".into(),
            port: 0,
        },
        4,
    )
    .expect("open");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, l.port().expect("port")));
    let _a = tagged_client(addr, 9);
    assert!(iterate_until(&ctx, || got.borrow().len() == 1));
}

#[test]
fn disconnect_stops_the_callback_and_closes_the_port() {
    let ctx = MainContext::new().expect("context");
    let (mut l, addr) = loopback_listener("stop");
    let got = inbox();
    let sink = got.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));
    l.disconnect();
    assert!(!l.is_connected());
    let refused = TcpStream::connect_timeout(&addr, BOUND);
    assert!(refused.is_err(), "nothing listens after disconnect");
    iterate_for(&ctx, Duration::from_millis(50));
    assert!(got.borrow().is_empty());
}

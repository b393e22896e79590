//! 1000 connections accepted and closed, half through `wait_client` and
//! half through a main-loop callback, leave the process' fd count where it
//! started. (One test in this binary, so no other test opens fds meanwhile.)

mod common;

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use common::{connect, iterate_until, open_fds, BOUND};
use transit_channel::main_loop::MainContext;
use transit_channel::SocketAddress;
use transit_net_listener::NetListener;

const CONNECTIONS: usize = 1000;

#[test]
fn a_thousand_accepted_and_closed_connections_leak_no_fd() {
    let ctx = MainContext::new().expect("context");
    let mut l = NetListener::with_name("leak-check");
    l.open_sync(
        &SocketAddress::Inet {
            host: "127.0.0.1".into(),
            port: 0,
        },
        64,
    )
    .expect("open");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, l.port().expect("port")));

    // Warm up both paths once so lazily created state (the context's
    // poller registrations, the resolver) is already there.
    drop(connect(addr));
    drop(l.wait_client(Some(BOUND)).expect("warm-up accept"));
    let seen = Rc::new(Cell::new(0usize));
    let counter = seen.clone();
    l.set_client_func(&ctx, move |client| {
        counter.set(counter.get() + 1);
        drop(client);
    });
    drop(connect(addr));
    assert!(iterate_until(&ctx, || seen.get() == 1), "warm-up callback");
    l.clear_client_func();
    seen.set(0);

    let before = open_fds();

    for i in 0..CONNECTIONS / 2 {
        let c = connect(addr);
        let accepted = l
            .wait_client(Some(BOUND))
            .unwrap_or_else(|e| panic!("accept {i}: {e}"));
        drop(accepted);
        drop(c);
    }

    let counter = seen.clone();
    l.set_client_func(&ctx, move |client| {
        counter.set(counter.get() + 1);
        drop(client);
    });
    for i in 0..CONNECTIONS / 2 {
        let c = connect(addr);
        assert!(
            iterate_until(&ctx, || seen.get() == i + 1),
            "callback client {i} within {BOUND:?}"
        );
        drop(c);
    }
    l.clear_client_func();

    assert_eq!(seen.get(), CONNECTIONS / 2);
    assert_eq!(
        open_fds(),
        before,
        "fds open before and after {CONNECTIONS} connections"
    );
}

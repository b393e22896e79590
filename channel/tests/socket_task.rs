//! Connect and listen as Tasks: the result arrives on the context's thread.

use std::cell::RefCell;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use transit_channel::main_loop::MainContext;
use transit_channel::{io, Channel, Error, Result, SocketAddress, SocketChannel};

/// Iterate `ctx` until `slot` is filled, at most 10 s.
fn wait_for<T>(ctx: &MainContext, slot: &Rc<RefCell<Option<T>>>) -> T {
    let end = Instant::now() + Duration::from_secs(10);
    while slot.borrow().is_none() {
        assert!(Instant::now() < end, "task did not complete within 10 s");
        ctx.iteration(true);
    }
    slot.borrow_mut().take().expect("filled")
}

#[test]
fn listen_then_connect_as_tasks_on_the_context_thread() -> Result<()> {
    let ctx = MainContext::new()?;
    let me = thread::current().id();

    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    SocketChannel::listen_task(&ctx, "tcp:127.0.0.1:0".parse()?, 4, move |r| {
        *s.borrow_mut() = Some((thread::current().id(), r));
    });
    let (tid, listener) = wait_for(&ctx, &slot);
    assert_eq!(tid, me, "listen completion ran on another thread");
    let mut listener = listener?;
    let addr = listener.local_address().expect("bound address");

    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    SocketChannel::connect_task(&ctx, addr, move |r| {
        *s.borrow_mut() = Some((thread::current().id(), r));
    });
    let (tid, client) = wait_for(&ctx, &slot);
    assert_eq!(tid, me, "connect completion ran on another thread");
    let mut client = client?;
    let mut server = listener.accept()?;
    io::write_all(&mut client, b"ping")?;
    let mut buf = [0u8; 4];
    io::read_all(&mut server, &mut buf)?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

#[test]
fn a_refused_connect_reports_the_error_through_done() -> Result<()> {
    let ctx = MainContext::new()?;
    // Bind a port, then close it so nothing listens there.
    let port = {
        let l = SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse()?, 1)?;
        match l.local_address() {
            Some(SocketAddress::Inet { port, .. }) => port,
            other => panic!("unexpected local address {other:?}"),
        }
    };
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    SocketChannel::connect_task(&ctx, SocketAddress::inet("127.0.0.1", port), move |r| {
        *s.borrow_mut() = Some(r);
    });
    match wait_for(&ctx, &slot) {
        Err(e @ Error::Os { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&port.to_string()),
                "error does not name the peer: {msg}"
            );
        }
        Err(other) => panic!("expected an OS error, got {other}"),
        Ok(ch) => panic!("connected to a closed port: {}", ch.name()),
    }
    Ok(())
}

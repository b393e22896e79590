//! The handshake as a main-loop task (watch driven, non-blocking) and as an
//! async fn; cancelling or dropping a task mid-handshake removes its watch,
//! closes the channel and never runs the completion (QEMU's
//! CVE-2023-3354).

mod tls_util;

use std::cell::{Cell, RefCell};
use std::io::IoSliceMut;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tls_util::{bounded, Setup};
use transit_channel::io::{read_all, read_all_eof, write_all};
use transit_channel::main_loop::MainContext;
use transit_channel::tls::TlsChannel;
use transit_channel::{Channel, ReadFlags, Result, SocketChannel};

/// Iterate `ctx` until `cond` holds or the bound passes.
fn iterate_until(ctx: &MainContext, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + tls_util::BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        // Block at most briefly: the peer runs on another thread.
        ctx.handle().wakeup();
        ctx.iteration(true);
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn server_handshake_task_completes_and_restores_blocking_mode() {
    let setup = Setup::new("task");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (a, b) = SocketChannel::pair().expect("pair");
    let client = std::thread::spawn(move || -> Result<Vec<u8>> {
        let mut tls = TlsChannel::client(Box::new(a), cc, "localhost")?;
        tls.handshake_blocking()?;
        write_all(&mut tls, b"over the task")?;
        let mut reply = vec![0u8; 2];
        read_all(&mut tls, &mut reply)?;
        tls.bye()?;
        Ok(reply)
    });

    let ctx = MainContext::new().expect("context");
    let server = TlsChannel::server(Box::new(b), sc, None).expect("server");
    assert!(server.is_blocking());
    let slot: Rc<RefCell<Option<Result<TlsChannel>>>> = Rc::default();
    let s = slot.clone();
    let task = server.handshake_task(&ctx, move |r| *s.borrow_mut() = Some(r));
    assert!(
        slot.borrow().is_none(),
        "done must not run inside handshake_task"
    );
    iterate_until(&ctx, || slot.borrow().is_some());
    assert!(task.is_finished());
    assert_eq!(task.pending_source(), None);
    let mut tls = slot
        .borrow_mut()
        .take()
        .expect("done ran")
        .expect("handshake");
    assert!(tls.is_handshake_complete());
    assert!(tls.is_blocking(), "blocking mode restored");
    let mut buf = vec![0u8; 13];
    read_all(&mut tls, &mut buf).expect("read");
    assert_eq!(buf, b"over the task");
    write_all(&mut tls, b"ok").expect("write");
    assert!(!read_all_eof(&mut tls, &mut [0u8; 1]).expect("eof"));
    assert_eq!(
        client.join().expect("client thread").expect("client"),
        b"ok"
    );
}

#[test]
fn handshake_task_reports_a_refusal_through_done() {
    let setup = Setup::new("task-refusal");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (a, b) = SocketChannel::pair().expect("pair");
    let client = std::thread::spawn(move || {
        let mut tls = TlsChannel::client(Box::new(a), cc, "wrong.example").expect("client");
        tls.handshake_blocking().map_err(|e| e.to_string())
    });
    let ctx = MainContext::new().expect("context");
    let slot: Rc<RefCell<Option<Result<TlsChannel>>>> = Rc::default();
    let s = slot.clone();
    let _task = TlsChannel::server(Box::new(b), sc, None)
        .expect("server")
        .handshake_task(&ctx, move |r| *s.borrow_mut() = Some(r));
    iterate_until(&ctx, || slot.borrow().is_some());
    let err = slot
        .borrow_mut()
        .take()
        .expect("done ran")
        .expect_err("refused");
    assert!(
        err.to_string().contains("client refused our certificate"),
        "{err}"
    );
    let c = client
        .join()
        .expect("client thread")
        .expect_err("client refuses");
    assert!(c.contains("does not match the host name"), "{c}");
}

/// Start a server handshake task and bring it mid-handshake: a client on
/// this thread sends its hello, the task answers and arms a watch for the
/// client's next flight. Returns the context, the task, the done flag and
/// the client.
fn mid_handshake(
    setup: &Setup,
) -> (
    MainContext,
    transit_channel::tls::TlsHandshake,
    Rc<Cell<bool>>,
    TlsChannel,
) {
    let (a, b) = SocketChannel::pair().expect("pair");
    let ctx = MainContext::new().expect("context");
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let task = TlsChannel::server(Box::new(b), setup.server_creds(), None)
        .expect("server")
        .handshake_task(&ctx, move |_| d.set(true));
    let first = task.pending_source().expect("first step scheduled");
    // A real client hello from a non-blocking client that stops when it
    // must wait for the server.
    let mut client =
        TlsChannel::client(Box::new(a), setup.client_creds(), "localhost").expect("client");
    client.set_blocking(false).expect("nonblocking");
    let r = client.readv(
        &mut [IoSliceMut::new(&mut [0u8; 1])],
        None,
        ReadFlags::empty(),
    );
    assert!(r.is_err_and(|e| e.is_would_block()));
    // The task answers the hello and waits on a watch for the next flight.
    let deadline = Instant::now() + tls_util::BOUND;
    loop {
        ctx.iteration(false);
        if task
            .pending_source()
            .is_some_and(|id| id != first && ctx.contains(id))
        {
            break;
        }
        assert!(Instant::now() < deadline, "task never armed its watch");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!done.get());
    client.set_blocking(true).expect("blocking");
    (ctx, task, done, client)
}

/// The client of a cancelled server: whatever it tries ends (an error or
/// end of file), within the bound.
fn client_sees_the_close(mut client: TlsChannel) {
    let outcome = bounded("client after cancel", move || {
        let r = client
            .handshake_blocking()
            .and_then(|()| read_all_eof(&mut client, &mut [0u8; 1]));
        r.map_err(|e| e.to_string())
    });
    assert!(
        matches!(outcome, Err(_) | Ok(false)),
        "client got data from a cancelled server: {outcome:?}"
    );
}

#[test]
fn cancel_mid_handshake_removes_the_watch_and_never_completes() {
    let setup = Setup::new("cancel");
    let (ctx, task, done, client) = mid_handshake(&setup);
    let id = task.pending_source().expect("a pending watch");
    assert!(ctx.contains(id));
    task.cancel();
    assert!(!ctx.contains(id), "the watch must be removed");
    // The client goes on (its second flight makes the old fd readable, were
    // it still open); nothing fires on the context afterwards.
    client_sees_the_close(client);
    for _ in 0..20 {
        ctx.iteration(false);
    }
    assert!(!done.get(), "done must never run after cancel");
    assert!(!ctx.pending(), "no source left on the context");
}

#[test]
fn dropping_the_task_mid_handshake_removes_the_watch() {
    let setup = Setup::new("drop");
    let (ctx, task, done, client) = mid_handshake(&setup);
    let id = task.pending_source().expect("a pending watch");
    drop(task);
    assert!(!ctx.contains(id));
    client_sees_the_close(client);
    for _ in 0..20 {
        ctx.iteration(false);
    }
    assert!(!done.get());
    assert!(!ctx.pending());
}

#[test]
fn async_handshake_on_the_local_executor() {
    let setup = Setup::new("async");
    let (cc, sc) = (setup.client_creds(), setup.server_creds());
    let (a, b) = SocketChannel::pair().expect("pair");
    let client = std::thread::spawn(move || -> Result<()> {
        let mut tls = TlsChannel::client(Box::new(a), cc, "localhost")?;
        tls.handshake_blocking()?;
        write_all(&mut tls, b"async")?;
        tls.bye()
    });
    let ctx = MainContext::new().expect("context");
    let mut tls = TlsChannel::server(Box::new(b), sc, None).expect("server");
    tls.set_blocking(false).expect("nonblocking");
    let got = ctx.block_on({
        let ctx2 = ctx.clone();
        async move {
            tls.handshake_async(&ctx2).await?;
            let mut buf = [0u8; 5];
            transit_channel::io::read_all_async(&ctx2, &mut tls, &mut buf).await?;
            // Read on to the client's close_notify, so the client's bye never
            // races our close.
            let mut more = [0u8; 1];
            let clean_eof =
                !transit_channel::io::read_all_eof_async(&ctx2, &mut tls, &mut more).await?;
            assert!(clean_eof, "data after the message");
            Ok::<_, transit_channel::Error>(buf)
        }
    });
    assert_eq!(&got.expect("async server"), b"async");
    client.join().expect("client thread").expect("client");
}

//! RDMA channels on the main loop (verbs model): watches for IN and OUT
//! drive a non-blocking transfer through credit exhaustion, and the
//! blocking wait helper sees readiness.

use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::rc::Rc;
use std::time::{Duration, Instant};

use transit_channel::io::wait_blocking;
use transit_channel::rdma::model::{pair, ModelConfig};
use transit_channel::rdma::RdmaConfig;
use transit_channel::{Channel, Condition, ControlFlow, Error, MainContext, ReadFlags, WriteFlags};

fn small() -> RdmaConfig {
    RdmaConfig {
        ring_depth: 4,
        slot_size: 512,
        send_depth: 4,
        ..RdmaConfig::default()
    }
}

#[test]
fn main_loop_watches_drive_a_non_blocking_transfer() {
    const LEN: usize = 2 << 20;
    let (mut a, mut b, _w) = pair("watch", &ModelConfig::default(), &small()).unwrap();
    a.set_blocking(false).unwrap();
    b.set_blocking(false).unwrap();
    let (wa, wb) = (a.watch_source(), b.watch_source());
    let data: Rc<Vec<u8>> = Rc::new((0..LEN).map(|i| (i * 7 + i / 4096) as u8).collect());
    let got = Rc::new(RefCell::new(Vec::with_capacity(LEN)));
    let would_block = Rc::new(RefCell::new(0u32));
    let ctx = MainContext::new().unwrap();

    let (d, wbk) = (Rc::clone(&data), Rc::clone(&would_block));
    let mut sent = 0usize;
    ctx.add_watch(&wa, Condition::OUT, move |cond| {
        assert!(
            !cond.intersects(Condition::ERR | Condition::HUP),
            "{cond:?}"
        );
        match a.writev(&[IoSlice::new(&d[sent..])], &[], WriteFlags::empty()) {
            Ok(n) => sent += n,
            Err(Error::WouldBlock) => *wbk.borrow_mut() += 1,
            Err(e) => panic!("write: {e}"),
        }
        if sent == d.len() {
            ControlFlow::Remove
        } else {
            ControlFlow::Continue
        }
    });
    let g = Rc::clone(&got);
    ctx.add_watch(&wb, Condition::IN, move |_| {
        let mut buf = [0u8; 3000];
        match b.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()) {
            Ok(0) => panic!("unexpected EOF"),
            Ok(n) => g.borrow_mut().extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => {}
            Err(e) => panic!("read: {e}"),
        }
        if g.borrow().len() == LEN {
            ControlFlow::Remove
        } else {
            ControlFlow::Continue
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut iterations = 0u64;
    while got.borrow().len() < LEN {
        assert!(
            Instant::now() < deadline,
            "stalled at {}",
            got.borrow().len()
        );
        ctx.iteration(true);
        iterations += 1;
    }
    assert!(*got.borrow() == *data, "data altered");
    // The OUT watch fires only when a write can make progress: at most a
    // few spurious wake-ups, not a busy loop.
    assert!(
        u64::from(*would_block.borrow()) * 10 < iterations,
        "{} WouldBlock in {iterations} iterations",
        would_block.borrow()
    );
}

#[test]
fn wait_blocking_reports_in_when_data_arrives() {
    let (mut a, b, _w) = pair("wait", &ModelConfig::default(), &small()).unwrap();
    let ws = b.watch_source();
    let none = wait_blocking(&ws, Condition::IN, Some(Duration::from_millis(50))).unwrap();
    assert!(!none.contains(Condition::IN), "{none:?}");
    a.writev(&[IoSlice::new(b"hi")], &[], WriteFlags::empty())
        .unwrap();
    let ready = wait_blocking(&ws, Condition::IN, Some(Duration::from_secs(10))).unwrap();
    assert!(ready.contains(Condition::IN), "{ready:?}");
}

#[test]
fn wait_blocking_reports_out_only_with_credits() {
    let (mut a, mut b, _w) = pair("waitout", &ModelConfig::default(), &small()).unwrap();
    a.set_blocking(false).unwrap();
    let ws = a.watch_source();
    let ready = wait_blocking(&ws, Condition::OUT, Some(Duration::ZERO)).unwrap();
    assert!(ready.contains(Condition::OUT));
    // Use up every credit.
    let big = vec![0u8; 100_000];
    let mut sent = 0;
    while let Ok(n) = a.writev(&[IoSlice::new(&big[sent..])], &[], WriteFlags::empty()) {
        sent += n;
    }
    let blocked = wait_blocking(&ws, Condition::OUT, Some(Duration::from_millis(50))).unwrap();
    assert!(!blocked.contains(Condition::OUT), "{blocked:?}");
    // The reader returns credits: OUT comes back.
    let mut buf = vec![0u8; sent];
    transit_channel::io::read_all(&mut b, &mut buf).unwrap();
    let ready = wait_blocking(&ws, Condition::OUT, Some(Duration::from_secs(10))).unwrap();
    assert!(ready.contains(Condition::OUT), "{ready:?}");
}

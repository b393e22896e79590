//! A listening receiver's policy (`transit_multifd::serve`): strangers are
//! told why and the session assembles around them, in any order; a second
//! sender is told the receiver is busy; a fatal event closes what was
//! taken; a missing main channel times out.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use transit_channel::{io as chio, Channel, SocketChannel};
use transit_multifd::incoming;
use transit_multifd::serve::{self, Arrival, AssembleError, Event, Policy};
use transit_multifd::wire::{self, Record};
use transit_multifd::{Destination, Payload, Receiver, RecvConfig, SendConfig, Sender};

fn policy(log: Arc<Mutex<Vec<String>>>) -> Policy {
    Policy {
        wait_limit: Some(Duration::from_secs(20)),
        handshake: Duration::from_secs(20),
        linger: Duration::from_secs(2),
        not_framed: "not framed here",
        busy: "busy here",
        log: Arc::new(move |m: &str| log.lock().unwrap().push(m.to_owned())),
    }
}

/// Classify `ch` as an acceptor would, and send it.
fn arrive(tx: &mpsc::Sender<Event>, ch: Box<dyn Channel>, peer: &str) {
    let (ch, kind) = match incoming::sniff(ch, Instant::now() + Duration::from_secs(10)) {
        Ok(x) => x,
        Err(_) => panic!("sniff failed"),
    };
    tx.send(Event::Arrival(Arrival {
        ch,
        peer: peer.into(),
        kind,
    }))
    .unwrap();
}

/// The error record a refused connection reads.
fn refusal(ch: &mut dyn Channel) -> String {
    let mut h = [0u8; wire::RECORD_HEADER_LEN];
    chio::read_all(ch, &mut h).unwrap();
    let h = wire::decode_record_header(&h).unwrap();
    let mut body = vec![0u8; h.len as usize];
    chio::read_all(ch, &mut body).unwrap();
    match wire::decode_record_body(&h, &body).unwrap() {
        Record::Error { message, .. } => message,
        other => panic!("{other:?}"),
    }
}

#[test]
fn strangers_are_told_why_and_the_session_assembles_in_any_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, events) = mpsc::channel();
    let (mut send, mut recv) = unix_pairs(3);
    // A stranger first, then the page channels, then the main channel.
    let (mut stranger, theirs) = SocketChannel::pair().unwrap();
    chio::write_all(&mut stranger, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let main_rx = recv.remove(0);
    let main = send.remove(0);
    let sender = std::thread::spawn(move || {
        let img = transit_multifd::SourceImage::from_vec(vec![7u8; 64 * 4096]);
        let mut tx = Sender::new(SendConfig::default(), Payload::Image(img), main, send)?;
        tx.send_all()?;
        tx.finish()
    });
    arrive(&tx, Box::new(theirs), "stranger");
    for (i, ch) in recv.into_iter().enumerate() {
        arrive(&tx, ch, &format!("page {i}"));
    }
    arrive(&tx, main_rx, "main");
    let mut rx = Receiver::new(
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let p = policy(log.clone());
    let mut told = 0;
    let peer = serve::assemble(&mut rx, &events, &p, &|| 0, |_| told += 1).unwrap();
    assert_eq!((peer.as_deref(), told), (Some("main"), 1));
    assert_eq!(refusal(&mut stranger), "not framed here");
    // A second sender while the session runs is told the receiver is busy.
    let busy = serve::serve_busy(rx.rejoin_handle(), events, p).unwrap();
    let (mut late, theirs) = SocketChannel::pair().unwrap();
    chio::write_all(&mut late, &common::header(2, 1 << 20).encode()).unwrap();
    arrive(&tx, Box::new(theirs), "late");
    assert_eq!(refusal(&mut late), "busy here");
    let out = rx.run().unwrap();
    sender.join().unwrap().unwrap();
    assert_eq!(out.image.unwrap().as_slice(), &vec![7u8; 64 * 4096][..]);
    drop(tx);
    busy.join().unwrap();
    let log = log.lock().unwrap();
    assert!(log.iter().any(|l| l.contains("stranger")), "{log:?}");
}

#[test]
fn a_fatal_event_closes_what_was_taken_and_a_missing_sender_times_out() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, events) = mpsc::channel();
    let (_send, mut recv) = unix_pairs(2);
    // A page channel's init packet arrives, then a fatal event.
    let (mut page, theirs) = SocketChannel::pair().unwrap();
    let h = common::header(1, 1 << 20);
    chio::write_all(&mut page, &common::init(&h, 0)).unwrap();
    arrive(&tx, Box::new(theirs), "page");
    tx.send(Event::Fatal("main channel: TLS refused".into()))
        .unwrap();
    let mut rx = Receiver::new(
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let e = serve::assemble(&mut rx, &events, &policy(log.clone()), &|| 0, |_| {}).unwrap_err();
    assert!(
        matches!(e, AssembleError::Fatal(ref why) if why.contains("TLS")),
        "{e}"
    );
    // The page connection was closed gracefully: end of file, no reset.
    let mut b = [0u8; 1];
    assert!(!chio::read_all_eof(&mut page, &mut b).unwrap());
    // Nobody comes: the wait for a main channel ends.
    let (_tx2, events2) = mpsc::channel::<Event>();
    let mut p = policy(log);
    p.wait_limit = Some(Duration::from_millis(200));
    let mut rx = Receiver::new(
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let e = serve::assemble(&mut rx, &events2, &p, &|| 0, |_| {}).unwrap_err();
    assert!(matches!(e, AssembleError::NoSender { .. }), "{e}");
    drop(recv.pop());
}

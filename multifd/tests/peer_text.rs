//! Text from a peer's error record reaches our errors with its control
//! characters escaped: a hostile peer cannot write terminal escapes (ESC,
//! CR, ...) into the messages we print.

mod common;

use common::*;
use transit_channel::io as chio;
use transit_multifd::wire::{self, ErrorCode, Record};
use transit_multifd::{Destination, Error, Payload, RecvConfig, SendConfig, Sender, SourceImage};

/// A message that would clear the screen and overwrite the line.
const HOSTILE: &str = "disk\x1b[2J full\r\x1b]0;owned\x07\tdone\n";
const ESCAPED: &str = "disk\\x1b[2J full\\r\\x1b]0;owned\\x07\\tdone\\n";

fn assert_no_controls(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control()),
        "control characters in {text:?}"
    );
}

#[test]
fn a_senders_error_record_is_escaped_in_the_receivers_error() {
    let h = header(1, 1 << 20);
    let (mut send, recv) = unix_pairs(2);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let mut main = send.remove(0);
    raw_handshake(&mut *main, &mut send, &h);
    let rec = Record::Error {
        code: ErrorCode::Aborted,
        message: HOSTILE.into(),
    };
    chio::write_all(&mut *main, &rec.to_bytes()).unwrap();
    let err = bounded(30, move || rx.join().unwrap().unwrap_err());
    drop((main, send));
    match &err {
        Error::Remote { message, .. } => assert_eq!(message, ESCAPED),
        other => panic!("{other}"),
    }
    assert_no_controls(&err.to_string());
}

#[test]
fn a_receivers_refusal_is_escaped_in_the_senders_error() {
    let source = SourceImage::generate(&spec(1 << 20, 0.0, 5)).unwrap();
    let (mut send, mut recv) = unix_pairs(2);
    // A receiver that reads the handshake and refuses with a hostile text.
    let fake = std::thread::spawn(move || {
        let mut hdr = [0u8; wire::SESSION_HEADER_LEN];
        chio::read_all(&mut recv[0], &mut hdr).unwrap();
        let mut b = [0u8; wire::INIT_PACKET_LEN];
        chio::read_all(&mut recv[1], &mut b).unwrap();
        let rec = Record::Error {
            code: ErrorCode::Refused,
            message: HOSTILE.into(),
        };
        chio::write_all(&mut recv[0], &rec.to_bytes()).unwrap();
        recv
    });
    let main = send.remove(0);
    // The sender's handshake reads the refusal.
    let err = bounded(30, move || {
        match Sender::new(SendConfig::default(), Payload::Image(source), main, send) {
            Err(e) => e,
            Ok(mut tx) => match tx.send_all() {
                Err(e) => e,
                Ok(()) => tx.finish().unwrap_err(),
            },
        }
    });
    drop(fake.join().unwrap());
    match &err {
        Error::Remote { message, .. } => assert_eq!(message, ESCAPED),
        other => panic!("{other}"),
    }
    assert_no_controls(&err.to_string());
}

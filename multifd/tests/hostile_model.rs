//! Model-based test of the receiver against a hostile sender (issue 14,
//! item 6): a seeded generator builds an honest session script for 1..=4
//! page channels (image or stream layout, a few epochs, small images),
//! then mutates it the way a hostile or broken peer would: drops,
//! duplicates, swaps and moves packets and records, inserts stray SYNC
//! and END packets, records of every kind and garbage, cuts a write in
//! half, flips bytes, stops early. Each script is written over UNIX
//! socket pairs with the crafted-bytes helpers of `common`, then the peer
//! closes every channel.
//!
//! The oracle: the receiver always ends, with a verdict or an error,
//! within [`CASE_BOUND`] (no idle timeout is configured: termination may
//! not come from a timer); an unmutated script always succeeds. A case
//! that hangs fails the test with its seed and its script.
//!
//! One case in [`HOLD_OPEN_EVERY`] instead keeps every channel open after
//! its script, as a stalled peer would, with a short idle timeout
//! ([`HOLD_OPEN_IDLE`]): the idle timeout must then end whatever the
//! script left waiting, and an honest script must still succeed.
//!
//! `HOSTILE_CASES=N` and `HOSTILE_SEED=S` override the case count and
//! the first seed (to replay one case: `HOSTILE_CASES=1 HOSTILE_SEED=S`).

mod common;

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use transit_channel::{io as chio, Shutdown};
use transit_multifd::digest::{page_hash, zero_hash, Digest};
use transit_multifd::wire::{ErrorCode, PacketFlags, Record, SessionHeader, Totals};
use transit_multifd::{Destination, Receiver, RecvConfig};

/// Longest a case may take before it counts as a hang. Cases take about a
/// millisecond; the slack is for a loaded CI machine.
const CASE_BOUND: Duration = Duration::from_secs(10);
const CASES: u64 = 5000;
const HOLD_OPEN_EVERY: u64 = 250;
const HOLD_OPEN_IDLE: Duration = Duration::from_millis(150);
const PAGE: u32 = 512;
const PAGES: u64 = 16;

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum To {
    Main,
    Page(usize),
}

#[derive(Clone)]
struct Action {
    to: To,
    bytes: Vec<u8>,
    what: String,
}

struct Case {
    header: SessionHeader,
    actions: Vec<Action>,
    mutated: Vec<String>,
}

impl Case {
    fn describe(&self, seed: u64) -> String {
        let mut s = format!(
            "seed {seed}: {} page channels, {:?}, {}, mutations {:?}\n",
            self.header.channels,
            self.header.layout,
            if seed.is_multiple_of(HOLD_OPEN_EVERY) {
                "channels held open after the script"
            } else {
                "every channel closed after the script"
            },
            self.mutated
        );
        for a in &self.actions {
            let _ = writeln!(s, "  {:?}: {} ({} bytes)", a.to, a.what, a.bytes.len());
        }
        s
    }
}

fn act(to: To, bytes: Vec<u8>, what: String) -> Action {
    Action { to, bytes, what }
}

/// An honest session: every page (or chunk) in epoch 0, dirty pages in
/// later epochs, a SYNC on every channel plus a Sync record closing each
/// epoch, END everywhere and the End record with the right totals.
fn honest(rng: &mut Rng) -> Case {
    let channels = 1 + rng.below(4) as u32;
    let stream = rng.chance(30);
    let header = if stream {
        stream_header(channels, PAGE)
    } else {
        SessionHeader {
            page_size: PAGE,
            packet_payload: 4 * PAGE,
            ..header(channels, PAGES * u64::from(PAGE))
        }
    };
    let n = channels as usize;
    let mut actions = Vec::new();
    let mut num = 0u64;
    let mut digest = Digest::default();
    let mut t = Totals {
        pages: 0,
        zero_pages: 0,
        bytes: 0,
        packets: 0,
        stream_len: 0,
        digest: 0,
    };
    let epochs = if stream { 1 } else { 1 + rng.below(3) as u32 };
    if stream {
        let chunks = rng.below(PAGES + 1);
        let mut last = vec![0u64; n];
        let mut offset = 0u64;
        for _ in 0..chunks {
            let len = if rng.chance(20) {
                1 + rng.below(u64::from(PAGE)) as u32
            } else {
                PAGE
            };
            let zero = rng.chance(30);
            let fill = 1 + rng.below(255) as u8;
            let i = rng.below(n as u64) as usize;
            num += 1;
            last[i] = num;
            actions.push(act(
                To::Page(i),
                stream_chunk(num, 0, offset, len, zero, fill),
                format!("chunk #{num} @{offset}+{len} zero={zero}"),
            ));
            if zero {
                t.zero_pages += 1;
                digest.add(zero_hash(offset, len));
            } else {
                t.pages += 1;
                t.bytes += u64::from(len);
                digest.add(page_hash(offset, &vec![fill; len as usize]));
            }
            t.packets += 1;
            offset += u64::from(len);
        }
        t.stream_len = offset;
    } else {
        t.stream_len = PAGES * u64::from(PAGE);
        for epoch in 0..epochs {
            let mut pages: Vec<u64> = (0..PAGES)
                .filter(|_| epoch == 0 || rng.chance(40))
                .collect();
            while !pages.is_empty() {
                let k = (1 + rng.below(4) as usize).min(pages.len());
                let batch: Vec<u64> = pages.drain(..k).collect();
                let (mut normal, mut zero) = (Vec::new(), Vec::new());
                for p in batch {
                    let off = p * u64::from(PAGE);
                    if rng.chance(30) {
                        zero.push(off);
                    } else {
                        normal.push(off);
                    }
                }
                let fill = 1 + rng.below(255) as u8;
                for &o in &normal {
                    digest.add(page_hash(o, &vec![fill; PAGE as usize]));
                }
                for &o in &zero {
                    digest.add(zero_hash(o, PAGE));
                }
                t.pages += normal.len() as u64;
                t.zero_pages += zero.len() as u64;
                t.bytes += normal.len() as u64 * u64::from(PAGE);
                t.packets += 1;
                num += 1;
                let i = rng.below(n as u64) as usize;
                actions.push(act(
                    To::Page(i),
                    image_packet(num, epoch, &normal, &zero, PAGE, fill),
                    format!("DATA #{num} e{epoch} normal {normal:?} zero {zero:?}"),
                ));
            }
            for i in 0..n {
                num += 1;
                t.packets += 1;
                actions.push(act(
                    To::Page(i),
                    control(PacketFlags::SYNC, num, epoch),
                    format!("SYNC #{num} e{epoch}"),
                ));
            }
            actions.push(act(
                To::Main,
                Record::Sync { epoch }.to_bytes(),
                format!("Sync({epoch})"),
            ));
        }
    }
    let last_epoch = if stream { 0 } else { epochs };
    for i in 0..n {
        num += 1;
        t.packets += 1;
        actions.push(act(
            To::Page(i),
            control(PacketFlags::END, num, last_epoch),
            format!("END #{num} e{last_epoch}"),
        ));
    }
    t.digest = digest.0;
    actions.push(act(To::Main, Record::End(t).to_bytes(), "End".into()));
    Case {
        header,
        actions,
        mutated: Vec::new(),
    }
}

/// A stray packet or record a hostile sender might write.
fn stray(rng: &mut Rng, n: usize) -> Action {
    let page = To::Page(rng.below(n as u64) as usize);
    let epoch = rng.below(3) as u32;
    let num = rng.below(64);
    match rng.below(9) {
        0 => act(
            page,
            control(PacketFlags::SYNC, num, epoch),
            format!("stray SYNC #{num} e{epoch}"),
        ),
        1 => act(
            page,
            control(PacketFlags::END, num, epoch),
            format!("stray END #{num} e{epoch}"),
        ),
        2 => {
            let off = rng.below(PAGES + 2) * u64::from(PAGE);
            act(
                page,
                image_packet(num, epoch, &[off], &[], PAGE, 7),
                format!("stray DATA #{num} e{epoch} @{off}"),
            )
        }
        3 => act(
            To::Main,
            Record::Sync { epoch }.to_bytes(),
            format!("stray Sync({epoch})"),
        ),
        4 => act(
            To::Main,
            Record::End(Totals {
                pages: rng.below(20),
                zero_pages: rng.below(20),
                bytes: rng.below(10_000),
                packets: rng.below(40),
                stream_len: rng.below(10_000),
                digest: rng.next(),
            })
            .to_bytes(),
            "stray End".into(),
        ),
        5 => act(
            To::Main,
            Record::Error {
                code: ErrorCode::Aborted,
                message: "hostile".into(),
            }
            .to_bytes(),
            "stray Error".into(),
        ),
        6 => act(
            To::Main,
            Record::Accept {
                channels: 1,
                have: false,
            }
            .to_bytes(),
            "stray Accept".into(),
        ),
        7 => {
            let off = rng.below(PAGES * u64::from(PAGE) + 1);
            let len = 1 + rng.below(u64::from(PAGE)) as u32;
            act(
                page,
                stream_chunk(num, epoch, off, len, rng.chance(50), 3),
                format!("stray chunk #{num} e{epoch} @{off}+{len}"),
            )
        }
        _ => {
            let len = rng.below(48) as usize;
            let to = if rng.chance(50) { To::Main } else { page };
            act(
                to,
                (0..len).map(|_| rng.next() as u8).collect(),
                format!("{len} garbage bytes"),
            )
        }
    }
}

fn mutate(case: &mut Case, rng: &mut Rng) {
    let n = case.header.channels as usize;
    for _ in 0..1 + rng.below(3) {
        let len = case.actions.len() as u64;
        let i = rng.below(len) as usize;
        let kind = rng.below(9);
        let a = &mut case.actions;
        let note = match kind {
            0 if !a.is_empty() => {
                let gone = a.remove(i);
                format!("drop {}", gone.what)
            }
            1 if !a.is_empty() => {
                let dup = a[i].clone();
                a.insert(rng.below(len + 1) as usize, dup);
                format!("duplicate action {i}")
            }
            2 if a.len() > 1 => {
                let j = rng.below(len) as usize;
                a.swap(i, j);
                format!("swap {i} {j}")
            }
            3 if !a.is_empty() => {
                let to = if rng.chance(20) {
                    To::Main
                } else {
                    To::Page(rng.below(n as u64) as usize)
                };
                a[i].to = to;
                format!("move action {i} to {to:?}")
            }
            4 | 5 => {
                let s = stray(rng, n);
                let note = format!("insert {} at {i}", s.what);
                a.insert(i, s);
                note
            }
            6 if !a.is_empty() && !a[i].bytes.is_empty() => {
                let cut = rng.below(a[i].bytes.len() as u64) as usize;
                a[i].bytes.truncate(cut);
                a.truncate(i + 1);
                format!("cut action {i} at byte {cut}, then stop")
            }
            7 if !a.is_empty() && !a[i].bytes.is_empty() => {
                let b = rng.below(a[i].bytes.len() as u64) as usize;
                a[i].bytes[b] ^= 1 << rng.below(8);
                format!("flip a bit of byte {b} of action {i}")
            }
            _ => {
                a.truncate(i);
                format!("stop after {i} actions")
            }
        };
        case.mutated.push(note);
    }
}

/// Run one case: a receiver on one side of the socket pairs, the script
/// on the other, then close. Err(description) if the receiver did not end
/// within the bound, or an honest script failed.
fn run_case(seed: u64) -> Result<(Duration, bool), String> {
    let mut rng = Rng::new(seed);
    let mut case = honest(&mut rng);
    if rng.chance(90) {
        mutate(&mut case, &mut rng);
    }
    let h = case.header;
    let dest = match h.layout {
        transit_multifd::wire::Layout::Stream => Destination::Writer(Box::new(std::io::sink())),
        _ => Destination::Memory { prefault: false },
    };
    let hold_open = seed.is_multiple_of(HOLD_OPEN_EVERY);
    let config = RecvConfig {
        handshake_timeout: Some(CASE_BOUND),
        idle_timeout: hold_open.then_some(HOLD_OPEN_IDLE),
        ..RecvConfig::default()
    };
    let (mut send, mut recv) = unix_pairs(h.channels as usize + 1);
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    let actions = case.actions.clone();
    std::thread::spawn(move || {
        let receiver = std::thread::spawn(move || {
            let mut r = Receiver::new(config, dest);
            for ch in recv.drain(..).rev() {
                r.accept_channel(ch)?;
            }
            r.run().map(|o| o.stats)
        });
        let mut main = send.remove(0);
        raw_handshake(&mut *main, &mut send, &h);
        for a in actions {
            let ch = match a.to {
                To::Main => &mut main,
                To::Page(i) => &mut send[i],
            };
            // The receiver may have failed and shut the channel down.
            let _ = chio::write_all(ch, &a.bytes);
        }
        if !hold_open {
            send.clear();
            let _ = main.shutdown_handle().map(|s| s.shutdown(Shutdown::Write));
        }
        let result = receiver.join().expect("receiver thread panicked");
        let told = read_record(&mut *main);
        drop(send);
        let _ = tx.send((result, told));
    });
    let (result, told) = match rx.recv_timeout(CASE_BOUND) {
        Ok(r) => r,
        Err(_) => {
            return Err(format!(
                "the receiver hung (no verdict, no error within {CASE_BOUND:?}):\n{}",
                case.describe(seed)
            ))
        }
    };
    if case.mutated.is_empty() {
        let ok = matches!(told, Some(Record::Verdict { .. }));
        if result.is_err() || !ok {
            return Err(format!(
                "an honest session failed: {:?}, told {told:?}\n{}",
                result.err(),
                case.describe(seed)
            ));
        }
    }
    Ok((started.elapsed(), result.is_ok()))
}

#[test]
fn a_hostile_sender_never_hangs_the_receiver() {
    let cases: u64 = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES);
    let first: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let started = Instant::now();
    let mut slowest = (Duration::ZERO, 0);
    let mut verdicts = 0;
    for seed in first..first + cases {
        match run_case(seed) {
            Ok((d, ok)) => {
                verdicts += u64::from(ok);
                if d > slowest.0 {
                    slowest = (d, seed);
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!(
        "{cases} hostile cases in {:.2?} ({verdicts} ended in an Ok verdict, {} in an error); \
         slowest: seed {} in {:.2?}",
        started.elapsed(),
        cases - verdicts,
        slowest.1,
        slowest.0
    );
}

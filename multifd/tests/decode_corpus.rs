//! Every wire decoder over the seed corpus in `fuzz-corpus/<decoder>/` and
//! thousands of deterministic mutations of each seed: decoders must return
//! `Ok` or `Err`, never panic. The seeds double as valid examples: each
//! file named without `bad`, `http`, `truncated` or `out-of-range` must
//! decode.

use std::path::Path;

use transit_multifd::wire::{self, Compression, Layout, SessionHeader};

fn sessions() -> [SessionHeader; 3] {
    let image = SessionHeader {
        version: wire::VERSION,
        uuid: [0x11; 16],
        page_size: 4096,
        channels: 4,
        layout: Layout::Image { size: 1 << 20 },
        compression: Compression::None,
        verify: true,
        packet_payload: 512 * 1024,
        data_bytes: 0,
    };
    let mut small = image;
    small.page_size = 512;
    small.packet_payload = 4096;
    small.layout = Layout::Image { size: 3 * 512 + 7 };
    let mut stream = image;
    stream.layout = Layout::Stream;
    stream.packet_payload = 65536;
    [image, small, stream]
}

/// Run the decoder family `target` over `data`; true if it decoded.
fn decode(target: &str, data: &[u8]) -> bool {
    match target {
        "session_header" => wire::decode_session_header(data).is_ok(),
        "init_packet" => match wire::decode_init_packet(data) {
            Ok(p) => {
                let _ = p.check(&sessions()[0]);
                true
            }
            Err(_) => false,
        },
        "packet" => {
            let mut any = false;
            let mut offsets = Vec::new();
            for s in sessions() {
                let Ok(h) = wire::decode_packet_header(data, &s) else {
                    continue;
                };
                let rest = &data[wire::PACKET_HEADER_LEN..];
                if h.flags == wire::PacketFlags::HOLES {
                    let mut ranges = Vec::new();
                    any |= wire::decode_hole_ranges(rest, &h, &s, &mut ranges).is_ok();
                    continue;
                }
                if h.flags.bits() != 0 {
                    any = true;
                    continue;
                }
                let ok = match s.layout {
                    Layout::Image { .. } => {
                        wire::decode_page_offsets(rest, &h, &s, &mut offsets).is_ok()
                    }
                    Layout::Stream => wire::decode_stream_entry(rest, &h, &s).is_ok(),
                };
                any |= ok;
            }
            any
        }
        "record" => {
            // The receiver reads the header, then exactly its body.
            let split = match wire::decode_record_header(data) {
                Ok(h) => data
                    .get(wire::RECORD_HEADER_LEN..)
                    .is_some_and(|body| wire::decode_record_body(&h, body).is_ok()),
                Err(_) => false,
            };
            wire::decode_record(data).is_ok() || split
        }
        "connection_magic" => wire::classify(data).is_ok(),
        "page_reply" => match wire::decode_page_reply(data) {
            Ok(r) => {
                assert_eq!(wire::decode_page_reply(&r.encode()), Ok(r));
                true
            }
            Err(_) => false,
        },
        // "Decodes": the answer is decided (framed or raw), and more bytes
        // never change it.
        "framed_start" => match wire::framed_start(data) {
            wire::FramedStart::NeedMore(n) => {
                assert!(n > data.len(), "asks for {n} with {} bytes", data.len());
                false
            }
            decided => {
                let mut more = data.to_vec();
                more.extend_from_slice(&[0xa5; 16]);
                assert_eq!(wire::framed_start(&more), decided);
                true
            }
        },
        "stream_entry" => {
            let Some((&[flag, a, b, c, d], entry)) = data.split_first_chunk::<5>() else {
                return false;
            };
            let zero = flag & 1 == 1;
            let payload_len = u32::from_be_bytes([a, b, c, d]);
            let s = sessions()[2];
            let hdr = wire::PacketHeader {
                flags: wire::PacketFlags::DATA,
                packet_num: 1,
                normal: u32::from(!zero),
                zero: u32::from(zero),
                payload_len,
                epoch: 0,
            };
            match wire::decode_stream_entry(entry, &hdr, &s) {
                Ok(e) => {
                    assert!(e.len > 0 && e.len <= s.packet_payload);
                    assert_eq!(payload_len, if zero { 0 } else { e.len });
                    true
                }
                Err(_) => false,
            }
        }
        other => panic!("unknown target {other}"),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            4 if v.len() >= 4 => {
                // An extreme 32-bit field at an aligned position.
                let i = rng.below(v.len() / 4) * 4;
                let x = [0u32, 1, 0x7fff_ffff, 0xffff_ffff, 4096, 4097][rng.below(6)];
                v[i..i + 4].copy_from_slice(&x.to_be_bytes());
            }
            _ => v.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
    }
    v
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

fn run_target(target: &str) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for (name, seed) in seeds(target) {
        let bad = ["bad", "http", "truncated", "out-of-range"]
            .iter()
            .any(|b| name.contains(b));
        assert_eq!(decode(target, &seed), !bad, "{target}/{name}");
        for _ in 0..3000 {
            decode(target, &mutate(&seed, &mut rng));
        }
    }
    for len in 0..200 {
        let v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        decode(target, &v);
    }
}

#[test]
fn session_header_decoder_survives_mutations() {
    run_target("session_header");
}

#[test]
fn init_packet_decoder_survives_mutations() {
    run_target("init_packet");
}

#[test]
fn packet_decoders_survive_mutations() {
    run_target("packet");
}

#[test]
fn record_decoder_survives_mutations() {
    run_target("record");
}

#[test]
fn connection_magic_classifier_survives_mutations() {
    run_target("connection_magic");
}

#[test]
fn framed_start_survives_mutations() {
    run_target("framed_start");
}

#[test]
fn stream_entry_decoder_survives_mutations() {
    run_target("stream_entry");
}

#[test]
fn page_reply_decoder_survives_mutations() {
    run_target("page_reply");
}

/// Every corpus directory is a fuzz target this file runs: a new corpus
/// cannot be added without being tested.
#[test]
fn every_corpus_is_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "connection_magic",
            "framed_start",
            "init_packet",
            "packet",
            "page_reply",
            "record",
            "session_header",
            "stream_entry"
        ]
    );
}

#[test]
fn every_encoder_round_trips() {
    use wire::{Record, Totals, VerdictStatus};
    for s in sessions() {
        assert_eq!(wire::decode_session_header(&s.encode()).unwrap(), s);
    }
    let t = Totals {
        pages: 1,
        zero_pages: 2,
        bytes: 3,
        packets: 4,
        stream_len: 5,
        digest: 6,
    };
    for r in [
        Record::Sync { epoch: 9 },
        Record::End(t),
        Record::Accept {
            channels: 3,
            have: false,
        },
        Record::Verdict {
            status: VerdictStatus::Mismatch,
            totals: t,
        },
        Record::Error {
            code: wire::ErrorCode::Other(77),
            message: "é".repeat(700),
        },
    ] {
        let b = r.to_bytes();
        let (d, used) = wire::decode_record(&b).unwrap();
        assert_eq!(used, b.len());
        match (&r, &d) {
            // Long messages are cut at a character boundary.
            (Record::Error { message: m, .. }, Record::Error { message: n, .. }) => {
                assert!(m.starts_with(n.as_str()) && n.len() <= wire::MAX_ERROR_MESSAGE)
            }
            _ => assert_eq!(r, d),
        }
    }
}

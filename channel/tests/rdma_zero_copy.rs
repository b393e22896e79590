//! RDMA zero-copy writes over the verbs model: bytes gathered straight from
//! a registered region arrive intact, the model sees them come from the
//! region (not the channel's buffers), also when registered for the life of
//! a boxed channel with `register_region`, and flush reports what happened.

use std::io::{IoSlice, IoSliceMut};
use std::thread;

use transit_channel::rdma::model::{pair, ModelConfig, Side};
use transit_channel::rdma::RdmaConfig;
use transit_channel::{io, Channel, FlushOutcome, ReadFlags, WriteFlags};

/// Write every slice with `ZERO_COPY` on a blocking channel.
fn write_zc(
    ch: &mut impl Channel,
    mut bufs: &mut [IoSlice<'_>],
) -> Result<(), transit_channel::Error> {
    while !bufs.is_empty() {
        let n = ch.writev(bufs, &[], WriteFlags::ZERO_COPY)?;
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

fn image(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

#[test]
fn zero_copy_writes_from_a_registered_region_arrive_intact() {
    const LEN: usize = 16 << 20;
    let (mut a, mut b, w) = pair("zc", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    let img = image(LEN);
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; LEN];
        io::read_all(&mut b, &mut got).unwrap();
        got
    });
    let region = a.register_memory(&img).unwrap();
    assert_eq!(region.len(), LEN);
    // Several slices of the image, out of order, as multifd would send pages.
    let half = LEN / 2;
    let mut bufs = [IoSlice::new(&img[half..]), IoSlice::new(&img[..half])];
    write_zc(&mut a, &mut bufs).unwrap();
    assert_eq!(a.flush().unwrap(), FlushOutcome::ZeroCopy);
    let got = reader.join().unwrap();
    let mut expect = img[half..].to_vec();
    expect.extend_from_slice(&img[..half]);
    assert!(got == expect, "zero-copy bytes altered");
    // Every payload byte was gathered from the region, none copied.
    assert_eq!(w.stats(Side::A).gathered_from_user_regions, LEN as u64);
    let st = a.stats();
    assert_eq!(st.zero_copy_sent, st.data_sent);
    drop(region);
}

#[test]
fn zero_copy_flag_on_unregistered_memory_copies() {
    let (mut a, mut b, w) =
        pair("zc-copy", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    let data = image(300_000);
    let writer_data = data.clone();
    let writer = thread::spawn(move || {
        let mut bufs = [IoSlice::new(&writer_data)];
        write_zc(&mut a, &mut bufs).unwrap();
        let outcome = a.flush().unwrap();
        (outcome, a)
    });
    let mut got = vec![0u8; data.len()];
    io::read_all(&mut b, &mut got).unwrap();
    let (outcome, a) = writer.join().unwrap();
    assert_eq!(outcome, FlushOutcome::Copied);
    assert_eq!(got, data);
    assert_eq!(a.stats().zero_copy_sent, 0);
    assert_eq!(w.stats(Side::A).gathered_from_user_regions, 0);
}

#[test]
fn mixed_registered_and_plain_slices_keep_their_order() {
    let (mut a, mut b, _w) =
        pair("zc-mix", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    let img = image(200_000);
    let region = a.register_memory(&img).unwrap();
    let header = b"page-header:".to_vec();
    let mut bufs = [
        IoSlice::new(&header),
        IoSlice::new(&img[1000..101_000]),
        IoSlice::new(&header),
    ];
    let total = 2 * header.len() + 100_000;
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; total];
        io::read_all(&mut b, &mut got).unwrap();
        got
    });
    write_zc(&mut a, &mut bufs).unwrap();
    a.flush().unwrap();
    let got = reader.join().unwrap();
    let mut expect = header.clone();
    expect.extend_from_slice(&img[1000..101_000]);
    expect.extend_from_slice(&header);
    assert_eq!(got, expect);
    assert!(a.stats().zero_copy_sent > 0);
    drop(region);
}

#[test]
fn releasing_a_region_with_sends_in_flight_tears_the_connection_down() {
    let cfg = RdmaConfig {
        close_timeout: std::time::Duration::from_millis(200),
        ..RdmaConfig::default()
    };
    let (mut a, mut b, w) = pair("zc-release", &ModelConfig::default(), &cfg).unwrap();
    let img = image(1 << 20);
    w.pause(); // SENDs stay outstanding: the device still "reads" the region.
    {
        let region = a.register_memory(&img).unwrap();
        a.set_blocking(false).unwrap();
        let n = a
            .writev(&[IoSlice::new(&img)], &[], WriteFlags::ZERO_COPY)
            .unwrap();
        assert!(n > 0);
        drop(region); // must not return while the wire may still read `img`
    }
    w.resume();
    // The connection was torn down instead: both sides see the failure.
    let err = a
        .writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty())
        .unwrap_err();
    assert!(err.to_string().contains("registered region"), "{err}");
    b.set_blocking(true).unwrap();
    let mut buf = [0u8; 64];
    let r = b.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn flush_reports_zero_copy_sends_lost_to_a_vanished_peer() {
    let (mut a, _b, w) = pair("zc-lost", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    let img = image(256 * 1024);
    let region = a.register_memory(&img).unwrap();
    w.pause();
    a.set_blocking(false).unwrap();
    let n = a
        .writev(&[IoSlice::new(&img)], &[], WriteFlags::ZERO_COPY)
        .unwrap();
    assert!(n > 0);
    w.kill(); // the queued SENDs are flushed, never delivered
    let err = a.flush().unwrap_err();
    assert!(err.to_string().contains("without closing"), "{err}");
    drop(region);
}

#[test]
fn register_region_through_a_boxed_channel_sends_without_a_copy() {
    const LEN: usize = 1 << 20;
    let (a, mut b, w) = pair("zc-box", &ModelConfig::default(), &RdmaConfig::default()).unwrap();
    let img = image(LEN);
    let mut a: Box<dyn Channel> = Box::new(a);
    // SAFETY: `img` outlives `a` (declared before it, dropped after it) and
    // is not written while the channel lives.
    unsafe { a.register_region(&img) }.unwrap();
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; LEN];
        io::read_all(&mut b, &mut got).unwrap();
        got
    });
    write_zc(&mut a, &mut [IoSlice::new(&img)]).unwrap();
    assert_eq!(a.flush().unwrap(), FlushOutcome::ZeroCopy);
    assert_eq!(
        w.stats(Side::A).gathered_from_user_regions,
        LEN as u64,
        "every payload byte came from the registered region"
    );
    let got = reader.join().unwrap();
    assert!(got == img);
    a.close().unwrap();
    // SAFETY: as above; the channel is closed, so this must fail.
    let err = unsafe { a.register_region(&img) }.unwrap_err();
    assert!(
        matches!(err, transit_channel::Error::Closed { .. }),
        "{err}"
    );
}

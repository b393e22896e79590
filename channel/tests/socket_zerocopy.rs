//! MSG_ZEROCOPY over loopback TCP: data arrives intact and `flush` reports
//! that the kernel fell back to copying (it always does over loopback; the
//! gain needs a real NIC and is not tested here); `register_region` needs
//! no work for `MSG_ZEROCOPY`.

mod socket_util;

use std::io::IoSlice;

use socket_util::{connected, pattern, read_exact};
use transit_channel::{Channel, Error, Features, FlushOutcome, SocketChannel, WriteFlags};

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

#[test]
fn sixty_four_mib_zero_copy_arrive_intact_and_flush_reports_copied() {
    let (_l, mut client, server) = connected("tcp:127.0.0.1:0");
    client.enable_zero_copy().unwrap();
    assert!(client.has_feature(Features::WRITE_ZERO_COPY));
    let data = pattern(TOTAL, 0x5a);
    let expect = data.clone();
    let reader = std::thread::spawn(move || {
        let mut server = server;
        read_exact(&mut server, TOTAL)
    });
    let mut off = 0;
    while off < TOTAL {
        let end = (off + CHUNK).min(TOTAL);
        let n = client
            .writev(&[IoSlice::new(&data[off..end])], &[], WriteFlags::ZERO_COPY)
            .unwrap();
        assert!(n > 0);
        off += n;
    }
    // `data` must stay unchanged until flush returns.
    assert_eq!(client.flush().unwrap(), FlushOutcome::Copied);
    assert_eq!(
        client.flush().unwrap(),
        FlushOutcome::Nothing,
        "nothing new"
    );
    let got = reader.join().expect("reader thread");
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "zero-copy data corrupted");
}

#[test]
fn zero_copy_and_plain_writes_mix() {
    let (_l, mut client, mut server) = connected("tcp:127.0.0.1:0");
    client.enable_zero_copy().unwrap();
    client
        .writev(&[IoSlice::new(b"plain ")], &[], WriteFlags::empty())
        .unwrap();
    assert_eq!(client.flush().unwrap(), FlushOutcome::Nothing);
    let n = client
        .writev(
            &[IoSlice::new(b"zc "), IoSlice::new(b"vectored")],
            &[],
            WriteFlags::ZERO_COPY,
        )
        .unwrap();
    assert_eq!(n, 11);
    assert_eq!(read_exact(&mut server, 17), b"plain zc vectored");
    assert_eq!(client.flush().unwrap(), FlushOutcome::Copied);
}

#[test]
fn zero_copy_write_without_enabling_is_unsupported() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    assert!(!client.has_feature(Features::WRITE_ZERO_COPY));
    let r = client.writev(&[IoSlice::new(b"x")], &[], WriteFlags::ZERO_COPY);
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
}

#[test]
fn zero_copy_on_unix_sockets_is_unsupported() {
    let (mut a, _b) = SocketChannel::pair().unwrap();
    assert!(matches!(
        a.enable_zero_copy(),
        Err(Error::Unsupported { .. })
    ));
    assert!(!a.has_feature(Features::WRITE_ZERO_COPY));
}

#[test]
fn flush_without_zero_copy_reports_nothing() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    client
        .writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty())
        .unwrap();
    assert_eq!(client.flush().unwrap(), FlushOutcome::Nothing);
}

#[test]
fn register_region_is_a_no_op_only_with_zero_copy_enabled() {
    let (_l, mut client, _server) = connected("tcp:127.0.0.1:0");
    let mem = vec![1u8; 4096];
    // SAFETY: `mem` outlives `client` in this test and is never written.
    let r = unsafe { client.register_region(&mem) };
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    client.enable_zero_copy().unwrap();
    // SAFETY: as above.
    unsafe { client.register_region(&mem) }.unwrap();
}

//! UNIX socket channels: path and abstract sockets, listener path handling,
//! and SCM_RIGHTS file descriptor passing over a socketpair.

mod socket_util;

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

use socket_util::{bound, connected, read_exact, wait_for, write_all, TempDir};
use transit_channel::socket::MAX_FDS;
use transit_channel::{
    Channel, Error, Features, ReadFlags, SocketAddress, SocketChannel, WriteFlags,
};

/// A pipe as (read end, write end) Files.
fn pipe(nonblocking: bool) -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
    // SAFETY: pipe2 writes two fds into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

fn fd_flags(fd: &impl AsRawFd) -> (i32, i32) {
    // SAFETY: F_GETFD/F_GETFL on an open fd.
    unsafe {
        (
            libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
            libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
        )
    }
}

#[test]
fn path_socket_vectored_round_trip() {
    let dir = TempDir::new("unix-rt");
    let uri = format!("unix:{}", dir.path().join("s.sock").display());
    let (listener, mut client, mut server) = connected(&uri);
    assert_eq!(listener.name(), format!("listen {uri}"));
    assert_eq!(client.name(), uri);
    assert_eq!(server.name(), uri);
    assert!(client.has_feature(Features::FD_PASS | Features::READ_MSG_PEEK | Features::SHUTDOWN));
    let n = client
        .writev(
            &[IoSlice::new(b"abc"), IoSlice::new(b"defg")],
            &[],
            WriteFlags::empty(),
        )
        .unwrap();
    assert_eq!(n, 7);
    assert_eq!(read_exact(&mut server, 7), b"abcdefg");
    assert_eq!(client.peer_address(), Some(uri.parse().unwrap()));
}

#[test]
fn path_socket_nonblocking_would_block() {
    let dir = TempDir::new("unix-nb");
    let uri = format!("unix:{}", dir.path().join("s.sock").display());
    let (_l, mut client, mut server) = connected(&uri);
    server.set_blocking(false).unwrap();
    let mut buf = [0u8; 4];
    let r = server.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    assert!(matches!(r, Err(Error::WouldBlock)), "{r:?}");
    write_all(&mut client, b"wake");
    assert_ne!(wait_for(&server, libc::POLLIN) & libc::POLLIN, 0);
    let r = server
        .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
        .unwrap();
    assert_eq!(&buf[..r], &b"wake"[..r]);
}

#[test]
fn abstract_socket_round_trip() {
    let name = format!(
        "transit-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let uri = format!("unix-abstract:{name}");
    let (listener, mut client, mut server) = connected(&uri);
    assert_eq!(
        listener.local_address(),
        Some(SocketAddress::UnixAbstract(name.clone().into_bytes()))
    );
    assert_eq!(client.name(), uri);
    write_all(&mut server, b"from server");
    assert_eq!(read_exact(&mut client, 11), b"from server");
    let mut nb = server;
    nb.set_blocking(false).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(
        nb.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()),
        Err(Error::WouldBlock)
    ));
}

#[test]
fn path_of_exactly_108_bytes_works() {
    let dir = TempDir::new("unix-108");
    let base = dir.path().display().to_string();
    let fill = 108 - base.len() - 1;
    assert!(fill > 0, "temp dir path too long for this test");
    let path = format!("{base}/{}", "p".repeat(fill));
    assert_eq!(path.len(), 108);
    let (listener, mut client, mut server) = connected(&format!("unix:{path}"));
    assert_eq!(listener.local_address(), Some(SocketAddress::unix(&path)));
    write_all(&mut client, b"long");
    assert_eq!(read_exact(&mut server, 4), b"long");
}

#[test]
fn listener_path_is_unlinked_on_close() {
    let dir = TempDir::new("unix-unlink");
    let path = dir.path().join("l.sock");
    let mut l = SocketChannel::listen_sync(&SocketAddress::unix(&path), 2).unwrap();
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_socket());
    l.close().unwrap();
    assert!(!path.exists(), "{} still exists", path.display());
}

#[test]
fn listener_path_is_unlinked_on_drop() {
    let dir = TempDir::new("unix-drop");
    let path = dir.path().join("l.sock");
    let l = SocketChannel::listen_sync(&SocketAddress::unix(&path), 2).unwrap();
    drop(l);
    assert!(!path.exists());
}

#[test]
fn a_replaced_listener_path_is_left_alone() {
    let dir = TempDir::new("unix-replaced");
    let path = dir.path().join("l.sock");
    let mut l = SocketChannel::listen_sync(&SocketAddress::unix(&path), 2).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's file").unwrap();
    l.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's file");
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new("unix-stale");
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // std leaves the file
    assert!(path.exists());
    let mut l = SocketChannel::listen_sync(&SocketAddress::unix(&path), 2).unwrap();
    let mut c = SocketChannel::connect_sync(&SocketAddress::unix(&path)).unwrap();
    let mut s = l.accept().unwrap();
    bound(&s);
    write_all(&mut c, b"ok");
    assert_eq!(read_exact(&mut s, 2), b"ok");
}

#[test]
fn a_path_a_live_listener_holds_is_refused_as_in_use() {
    let dir = TempDir::new("unix-live");
    let path = dir.path().join("live.sock");
    let addr = SocketAddress::unix(&path);
    let mut first = SocketChannel::listen_sync(&addr, 2).unwrap();
    let err = SocketChannel::listen_sync(&addr, 2).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    // The first listener still owns the path: a client reaches it.
    let mut c = SocketChannel::connect_sync(&addr).unwrap();
    let mut probe = first.accept().unwrap(); // the second listen's probe
    let mut s = first.accept().unwrap();
    write_all(&mut c, b"ok");
    assert_eq!(read_exact(&mut s, 2), b"ok");
    let _ = probe.close();
}

#[test]
fn a_regular_file_at_the_path_is_not_removed() {
    let dir = TempDir::new("unix-file");
    let path = dir.path().join("data");
    std::fs::write(&path, b"precious").unwrap();
    let err = SocketChannel::listen_sync(&SocketAddress::unix(&path), 2).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn connect_to_a_missing_path_names_it() {
    let dir = TempDir::new("unix-missing");
    let addr = SocketAddress::unix(dir.path().join("nobody"));
    let err = SocketChannel::connect_sync(&addr).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// Send a pipe's write end from `tx` to `rx`; `rx` writes through it and the
/// test reads the bytes back from the pipe.
fn pass_pipe(tx: &mut SocketChannel, rx: &mut SocketChannel, msg: &[u8]) {
    let (mut pr, pw) = pipe(false);
    let n = tx
        .writev(&[IoSlice::new(b"F")], &[pw.as_fd()], WriteFlags::empty())
        .unwrap();
    assert_eq!(n, 1);
    drop(pw); // only the passed copy remains
    let mut fds = Vec::new();
    let mut b = [0u8; 1];
    let n = rx
        .readv(
            &mut [IoSliceMut::new(&mut b)],
            Some(&mut fds),
            ReadFlags::empty(),
        )
        .unwrap();
    assert_eq!((n, b[0], fds.len()), (1, b'F', 1));
    let mut w = std::fs::File::from(fds.pop().unwrap());
    w.write_all(msg).unwrap();
    drop(w);
    let mut got = Vec::new();
    pr.read_to_end(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn fd_passing_works_both_ways() {
    let (mut a, mut b) = SocketChannel::pair().unwrap();
    bound(&a);
    bound(&b);
    pass_pipe(&mut a, &mut b, b"a to b");
    pass_pipe(&mut b, &mut a, b"b to a");
}

#[test]
fn fd_passing_over_a_path_socket() {
    let dir = TempDir::new("unix-fdpass");
    let uri = format!("unix:{}", dir.path().join("s.sock").display());
    let (_l, mut client, mut server) = connected(&uri);
    pass_pipe(&mut client, &mut server, b"via path");
}

#[test]
fn received_fds_are_cloexec_and_blocking() {
    let (mut a, mut b) = SocketChannel::pair().unwrap();
    bound(&b);
    let (_pr, pw) = pipe(true);
    a.writev(&[IoSlice::new(b"x")], &[pw.as_fd()], WriteFlags::empty())
        .unwrap();
    let mut fds = Vec::new();
    let mut buf = [0u8; 1];
    b.readv(
        &mut [IoSliceMut::new(&mut buf)],
        Some(&mut fds),
        ReadFlags::empty(),
    )
    .unwrap();
    let (fdfl, fl) = fd_flags(&fds[0]);
    assert_ne!(fdfl & libc::FD_CLOEXEC, 0, "close-on-exec");
    assert_eq!(fl & libc::O_NONBLOCK, 0, "made blocking");
}

#[test]
fn preserve_blocking_keeps_nonblocking_fds() {
    let (mut a, mut b) = SocketChannel::pair().unwrap();
    bound(&b);
    let (_pr, pw) = pipe(true);
    a.writev(&[IoSlice::new(b"x")], &[pw.as_fd()], WriteFlags::empty())
        .unwrap();
    let mut fds = Vec::new();
    let mut buf = [0u8; 1];
    b.readv(
        &mut [IoSliceMut::new(&mut buf)],
        Some(&mut fds),
        ReadFlags::FD_PRESERVE_BLOCKING,
    )
    .unwrap();
    assert_ne!(fd_flags(&fds[0]).1 & libc::O_NONBLOCK, 0);
}

#[test]
fn sixteen_fds_pass_and_seventeen_are_refused() {
    let (mut a, mut b) = SocketChannel::pair().unwrap();
    bound(&b);
    let files: Vec<std::fs::File> = (0..MAX_FDS + 1)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let all: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let err = a
        .writev(&[IoSlice::new(b"x")], &all, WriteFlags::empty())
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("16"), "{err}");

    a.writev(&[IoSlice::new(b"y")], &all[..MAX_FDS], WriteFlags::empty())
        .unwrap();
    let mut fds = Vec::new();
    let mut buf = [0u8; 1];
    let n = b
        .readv(
            &mut [IoSliceMut::new(&mut buf)],
            Some(&mut fds),
            ReadFlags::empty(),
        )
        .unwrap();
    assert_eq!((n, buf[0], fds.len()), (1, b'y', MAX_FDS));
}

#[test]
fn fds_without_data_are_refused() {
    let (mut a, _b) = SocketChannel::pair().unwrap();
    let f = std::fs::File::open("/dev/null").unwrap();
    let err = a
        .writev(&[], &[f.as_fd()], WriteFlags::empty())
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
}

/// Send `n` fds in one message with a raw sendmsg (our channel refuses more
/// than 16, a foreign peer may not).
fn raw_send_fds(sock: &impl AsRawFd, fds: &[OwnedFd]) {
    let payload = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut data = *b"z";
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: zeroed msghdr is valid; we then point it at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer has CMSG_SPACE(payload) bytes, enough for
    // the header and every fd; `msg` points at live buffers during sendmsg.
    unsafe {
        let h = libc::CMSG_FIRSTHDR(&msg);
        (*h).cmsg_level = libc::SOL_SOCKET;
        (*h).cmsg_type = libc::SCM_RIGHTS;
        (*h).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        let d = libc::CMSG_DATA(h).cast::<i32>();
        for (i, f) in fds.iter().enumerate() {
            d.add(i).write_unaligned(f.as_raw_fd());
        }
        assert_eq!(libc::sendmsg(sock.as_raw_fd(), &msg, 0), 1);
    }
}

#[test]
fn more_than_sixteen_incoming_fds_is_an_error() {
    let (a, mut b) = SocketChannel::pair().unwrap();
    bound(&b);
    let fds: Vec<OwnedFd> = (0..20)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
    raw_send_fds(&a, &fds);
    let mut got = Vec::new();
    let mut buf = [0u8; 1];
    let err = b
        .readv(
            &mut [IoSliceMut::new(&mut buf)],
            Some(&mut got),
            ReadFlags::empty(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(got.is_empty(), "no fds handed out on error");
}

#[test]
fn peek_on_unix_then_read() {
    let (mut a, mut b) = SocketChannel::pair().unwrap();
    bound(&b);
    write_all(&mut a, b"look");
    let mut p = [0u8; 4];
    let n = b
        .readv(&mut [IoSliceMut::new(&mut p)], None, ReadFlags::MSG_PEEK)
        .unwrap();
    assert_eq!(&p[..n], &b"look"[..n]);
    assert_eq!(read_exact(&mut b, 4), b"look");
}

#[test]
fn socketpair_names_and_features() {
    let (a, b) = SocketChannel::pair().unwrap();
    assert_eq!(a.name(), "socketpair[0]");
    assert_eq!(b.name(), "socketpair[1]");
    assert_eq!(
        a.features(),
        Features::FD_PASS | Features::SHUTDOWN | Features::READ_MSG_PEEK
    );
    assert_eq!(a.local_address(), None, "unnamed");
}

//! An accept that fails with EMFILE does not kill the listener: the
//! synchronous caller gets the error, the main-loop watch backs off instead
//! of spinning, and once fds are free again the pending client and the next
//! one are accepted. (One test in this binary: RLIMIT_NOFILE is per
//! process.)

mod common;

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use common::{iterate_for, iterate_until, BOUND};
use socket2::{Domain, Socket, Type};
use transit_channel::main_loop::MainContext;
use transit_channel::SocketAddress;
use transit_net_listener::NetListener;

/// Lowers the soft fd limit so no new fd can be opened; restores it on drop.
struct FdExhaustion {
    saved: libc::rlimit,
    fillers: Vec<File>,
}

impl FdExhaustion {
    fn start() -> FdExhaustion {
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `saved` is a valid rlimit for getrlimit to fill in.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) };
        assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
        let highest = std::fs::read_dir("/proc/self/fd")
            .expect("read /proc/self/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .expect("some fd is open");
        let low = libc::rlimit {
            rlim_cur: highest + 1,
            rlim_max: saved.rlim_max,
        };
        // SAFETY: `low` is a valid rlimit; lowering the soft limit below
        // the hard limit is always allowed.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
        assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
        let mut guard = FdExhaustion {
            saved,
            fillers: Vec::new(),
        };
        // Fill the holes below the limit so the next fd fails with EMFILE.
        loop {
            match File::open("/dev/null") {
                Ok(f) => guard.fillers.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("fill fd table: {e}"),
            }
        }
        guard
    }
}

impl Drop for FdExhaustion {
    fn drop(&mut self) {
        self.fillers.clear();
        // SAFETY: `saved` came from getrlimit and is a valid rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.saved) };
    }
}

#[test]
fn emfile_does_not_kill_the_listener() {
    let ctx = MainContext::new().expect("context");
    let mut l = NetListener::with_name("emfile-listener");
    l.open_sync(
        &SocketAddress::Inet {
            host: "127.0.0.1".into(),
            port: 0,
        },
        8,
    )
    .expect("open");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, l.port().expect("port")));
    // The client socket exists before the fd table fills up; connecting it
    // needs no new fd.
    let pending = Socket::new(Domain::IPV4, Type::STREAM, None).expect("client socket");

    let exhaustion = FdExhaustion::start();
    pending
        .connect(&addr.into())
        .expect("connect while fds are exhausted");

    // Synchronous: the caller sees EMFILE, the listener stays.
    let err = l
        .wait_client(Some(BOUND))
        .expect_err("accept cannot get an fd");
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
    assert!(err.to_string().starts_with("emfile-listener"), "{err}");
    assert_eq!(l.accept_errors(), 1);
    assert!(l.is_connected());

    // On the loop: the watch fires, fails, backs off, retries on a timer.
    let got = Rc::new(RefCell::new(Vec::new()));
    let sink = got.clone();
    l.set_client_func(&ctx, move |c| sink.borrow_mut().push(c));
    iterate_for(&ctx, Duration::from_millis(500));
    assert!(got.borrow().is_empty());
    let errors = l.accept_errors();
    assert!(errors >= 2, "the watch tried to accept: {errors} errors");
    assert!(
        errors < 100,
        "a level-triggered watch on a backlog it cannot accept must back off, not spin: {errors} errors"
    );

    drop(exhaustion);
    assert!(
        iterate_until(&ctx, || got.borrow().len() == 1),
        "the pending client is accepted once fds are free"
    );
    let _next = TcpStream::connect_timeout(&addr, BOUND).expect("connect again");
    assert!(
        iterate_until(&ctx, || got.borrow().len() == 2),
        "and so is the next one"
    );
    assert!(l.is_connected());
    drop(pending);
}

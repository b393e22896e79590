//! CommandChannel: round trips through `cat` and `sh -c`, exit statuses
//! and signals as errors, a close that never hangs, shutdown from another
//! thread, non-blocking I/O on a main loop, and PipeChannel (stdio and a pipe pair) basics.

use std::io::IoSliceMut;
use std::thread;
use std::time::{Duration, Instant};

use transit_channel::command::{CommandChannel, PipeChannel};
use transit_channel::{
    io, Channel, Condition, ControlFlow, Error, MainContext, ReadFlags, Shutdown, WatchFds,
};

/// Upper bound for anything a test waits for.
const BOUND: Duration = Duration::from_secs(20);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x2545_f491_u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Write `data` and read everything back, interleaved with non-blocking
/// I/O; stdin is shut down after the last byte.
fn pump(ch: &mut CommandChannel, data: Vec<u8>) -> Vec<u8> {
    ch.set_blocking(false).expect("nonblock");
    let mut out = Vec::with_capacity(data.len());
    let mut sent = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut write_done = false;
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < BOUND, "pump did not finish");
        let mut progress = false;
        if !write_done {
            match ch.writev(
                &[std::io::IoSlice::new(&data[sent..])],
                &[],
                Default::default(),
            ) {
                Ok(n) => {
                    sent += n;
                    progress = true;
                }
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("write: {e}"),
            }
            if sent == data.len() {
                ch.shutdown(Shutdown::Write).expect("close stdin");
                write_done = true;
            }
        }
        match ch.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()) {
            Ok(0) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                progress = true;
            }
            Err(Error::WouldBlock) => {}
            Err(e) => panic!("read: {e}"),
        }
        if !progress {
            let cond = if write_done {
                Condition::IN
            } else {
                Condition::IN | Condition::OUT
            };
            io::wait_blocking(&ch.watch_source(), cond, Some(BOUND)).expect("wait");
        }
    }
}

#[test]
fn cat_round_trip_64_mib_is_identical() {
    let mut ch = CommandChannel::spawn(&["cat"]).expect("spawn cat");
    assert_eq!(ch.name(), "exec:cat");
    let data = pattern(64 << 20, 1);
    let got = pump(&mut ch, data.clone());
    assert_eq!(got.len(), data.len());
    assert!(got == data, "cat returned different bytes");
    ch.close().expect("cat exits 0");
}

#[test]
fn shell_command_transforms_the_stream() {
    let mut ch = CommandChannel::spawn_shell("tr a-z A-Z").expect("spawn");
    let got = pump(&mut ch, b"hello, shell".to_vec());
    assert_eq!(got, b"HELLO, SHELL");
    ch.close().expect("exit 0");
}

#[test]
fn exit_status_3_is_reported_by_close() {
    let mut ch = CommandChannel::spawn_shell("cat >/dev/null; exit 3").expect("spawn");
    io::write_all(&mut ch, b"input").expect("write");
    let err = ch.close().expect_err("must fail").to_string();
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(
        err.contains("exec:cat >/dev/null; exit 3"),
        "names the command: {err}"
    );
    assert_eq!(ch.exit_status().and_then(|s| s.code()), Some(3));
}

#[test]
fn exit_status_3_is_reported_by_a_read_at_eof() {
    let mut ch = CommandChannel::spawn_shell("echo partial; exit 3").expect("spawn");
    let mut buf = [0u8; 8];
    io::read_all(&mut ch, &mut buf).expect("output");
    assert_eq!(&buf, b"partial\n");
    let err = ch
        .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
        .expect_err("EOF of a failed command is an error")
        .to_string();
    assert!(err.contains("exited with status 3"), "{err}");
}

#[test]
fn death_by_signal_is_reported() {
    let mut ch = CommandChannel::spawn_shell("kill -9 $$").expect("spawn");
    let err = ch.close().expect_err("must fail").to_string();
    assert!(err.contains("killed by signal 9 (SIGKILL)"), "{err}");
}

#[test]
fn child_ignoring_eof_and_sigterm_is_killed_within_the_timeouts() {
    let mut ch =
        CommandChannel::spawn_shell("trap '' TERM; while :; do sleep 1; done").expect("spawn");
    ch.set_close_timeout(Duration::from_millis(300));
    ch.set_kill_timeout(Duration::from_millis(300));
    // Let the shell install its trap.
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let err = ch.close().expect_err("must fail").to_string();
    // Bounded (SIGKILL after 0.6 s); no speed assertion beyond "no hang".
    assert!(start.elapsed() < BOUND);
    assert!(err.contains("sent SIGKILL"), "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
}

#[test]
fn child_ignoring_eof_but_not_sigterm_dies_of_sigterm() {
    let mut ch = CommandChannel::spawn(&["sleep", "30"]).expect("spawn");
    ch.set_close_timeout(Duration::from_millis(100));
    let err = ch.close().expect_err("must fail").to_string();
    assert!(err.contains("sent SIGTERM"), "{err}");
    assert!(err.contains("killed by signal 15 (SIGTERM)"), "{err}");
}

/// True while `pid` runs (not gone, not a zombie).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[test]
fn close_ends_what_the_shell_started_not_only_the_shell() {
    // sh waits for its child; a SIGTERM to sh alone would leave sleep
    // running as an orphan.
    let mut ch = CommandChannel::spawn_shell("sleep 30 & echo $!; wait").expect("spawn");
    ch.set_close_timeout(Duration::from_millis(100));
    ch.set_kill_timeout(Duration::from_millis(500));
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 32 {
        io::read_all(&mut ch, &mut b).expect("the child's pid");
        line.push(b[0]);
    }
    let pid: u32 = String::from_utf8_lossy(&line)
        .trim()
        .parse()
        .expect("a pid");
    assert!(running(pid), "sleep {pid} runs");
    let err = ch.close().expect_err("killed").to_string();
    assert!(err.contains("SIGTERM"), "{err}");
    let start = Instant::now();
    while running(pid) && start.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(20));
    }
    let left = running(pid);
    if left {
        // SAFETY: kill has no memory effects; clean up the orphan.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(
        !left,
        "sleep {pid} outlived close: the signal reached only sh"
    );
}

#[test]
fn the_close_timeout_counts_from_when_stdin_closed() {
    let mut ch = CommandChannel::spawn(&["sleep", "30"]).expect("spawn");
    ch.set_close_timeout(Duration::from_secs(2));
    ch.shutdown(Shutdown::Write).expect("close stdin");
    // A caller that spends the close timeout elsewhere (draining stdout)
    // before it closes: the command has had its 2 s already.
    thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    let err = ch.close().expect_err("killed").to_string();
    assert!(err.contains("sent SIGTERM"), "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "close waited another close timeout: {:?}",
        start.elapsed()
    );
}

#[test]
fn write_to_a_dead_child_is_an_error_not_sigpipe() {
    let mut ch = CommandChannel::spawn_shell("exit 0").expect("spawn");
    let start = Instant::now();
    let r = loop {
        match io::write_all(&mut ch, &[0u8; 65536]) {
            Ok(()) if start.elapsed() < BOUND => continue,
            other => break other,
        }
    };
    let err = r.expect_err("writes must fail").to_string();
    assert!(
        err.contains("broken pipe") || err.contains("Broken pipe"),
        "{err}"
    );
}

#[test]
fn shutdown_handle_from_another_thread_wakes_a_blocked_reader() {
    let mut ch = CommandChannel::spawn(&["sleep", "30"]).expect("spawn");
    let handle = ch.shutdown_handle().expect("handle");
    let kicker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        handle.shutdown(Shutdown::Both).expect("shutdown");
    });
    let mut buf = [0u8; 4];
    // Blocks until the handle ends the child.
    let r = ch.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
    kicker.join().expect("kicker");
    match r {
        Ok(0) => {}
        Err(e) => assert!(e.to_string().contains("SIGTERM"), "{e}"),
        Ok(n) => panic!("read {n} bytes from sleep"),
    }
    assert!(ch.close().is_err(), "sleep was killed: close says so");
}

#[test]
fn watch_is_an_fd_pair_and_drives_a_main_loop() {
    let mut ch = CommandChannel::spawn_shell("tr a-z A-Z").expect("spawn");
    assert!(matches!(ch.watch_source().fds, WatchFds::Pair { .. }));
    ch.set_blocking(false).expect("nonblock");
    io::write_all(&mut ch, b"main loop").expect("write");
    ch.shutdown(Shutdown::Write).expect("eof to tr");
    let ctx = MainContext::new().expect("context");
    let got = std::rc::Rc::new(std::cell::RefCell::new((Vec::new(), false)));
    let g = got.clone();
    let ws = ch.watch_source();
    let mut ch2 = ch;
    ctx.add_watch(&ws, Condition::IN, move |_| {
        let mut buf = [0u8; 64];
        loop {
            match ch2.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty()) {
                Ok(0) => {
                    g.borrow_mut().1 = true;
                    let _ = ch2.close();
                    return ControlFlow::Remove;
                }
                Ok(n) => g.borrow_mut().0.extend_from_slice(&buf[..n]),
                Err(Error::WouldBlock) => return ControlFlow::Continue,
                Err(e) => panic!("read: {e}"),
            }
        }
    });
    let start = Instant::now();
    while !got.borrow().1 {
        assert!(start.elapsed() < BOUND, "loop did not finish");
        ctx.iteration(true);
    }
    assert_eq!(got.borrow().0, b"MAIN LOOP");
}

#[test]
fn missing_program_is_a_spawn_error_naming_it() {
    let err = CommandChannel::spawn(&["/nonexistent/transit-no-such-program"])
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("transit-no-such-program"), "{err}");
    assert!(err.contains("spawn"), "{err}");
}

#[test]
fn stdio_channel_duplicates_fds_0_and_1() {
    let mut ch = PipeChannel::stdio().expect("stdio");
    assert_eq!(ch.name(), "stdio:");
    match ch.watch_source().fds {
        WatchFds::Pair { read, write } => {
            assert!(read > 2 && write > 2, "duplicates, not fds 0/1");
            assert_ne!(read, write);
        }
        other => panic!("{other:?}"),
    }
    ch.close().expect("close");
    // The process' own stdout still works after close.
    // SAFETY: fcntl F_GETFD only queries fd 1.
    assert!(unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0);
}

/// A command the shell cannot find ends with status 127, and the error
/// says what that means.
#[test]
fn a_missing_command_is_named_as_not_found() {
    let mut ch = CommandChannel::spawn_shell("transit-no-such-command-xyz").unwrap();
    let _ = ch.shutdown(transit_channel::Shutdown::Write);
    let mut buf = [0u8; 16];
    while let Ok(n) = ch.readv(
        &mut [std::io::IoSliceMut::new(&mut buf)],
        None,
        transit_channel::ReadFlags::empty(),
    ) {
        if n == 0 {
            break;
        }
    }
    let err = ch.close().unwrap_err().to_string();
    assert!(err.contains("status 127 (command not found"), "{err}");
}

/// A command's end is typed: its exit status travels in the error
/// (`Error::exit_status`), from close, from a read at end of file and from
/// a write to a command that exited, so callers never read the text.
#[test]
fn a_commands_exit_status_is_in_the_error() {
    let mut ch = CommandChannel::spawn_shell("cat >/dev/null; exit 3").expect("spawn");
    io::write_all(&mut ch, b"input").expect("write");
    let e = ch.close().expect_err("must fail");
    assert_eq!(e.exit_status().and_then(|s| s.code()), Some(3), "{e:?}");

    let mut ch = CommandChannel::spawn_shell("exit 4").expect("spawn");
    let mut buf = [0u8; 8];
    let e = ch
        .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
        .expect_err("EOF of a failed command is an error");
    assert_eq!(e.exit_status().and_then(|s| s.code()), Some(4), "{e:?}");

    let mut ch = CommandChannel::spawn_shell("kill -9 $$").expect("spawn");
    let e = ch.close().expect_err("must fail");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(e.exit_status().and_then(|s| s.signal()), Some(9), "{e:?}");

    // A write that meets the closed stdin of a command that exits carries
    // its status too (the write waits a moment for the exit), every time.
    for _ in 0..20 {
        let mut ch = CommandChannel::spawn_shell("exit 3").expect("spawn");
        let start = Instant::now();
        let e = loop {
            match io::write_all(&mut ch, &[0u8; 65536]) {
                Ok(()) if start.elapsed() < BOUND => continue,
                other => break other.expect_err("writes must fail"),
            }
        };
        assert_eq!(e.exit_status().and_then(|s| s.code()), Some(3), "{e:?}");
    }
}

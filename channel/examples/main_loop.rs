//! A main-loop program: an fd watch, a timer and a bottom half scheduled
//! from another thread, all dispatched on one `MainContext`.
//!
//! ```text
//! cargo run -p transit-channel --example main_loop
//! ```
//!
//! A worker thread writes three lines into a socket pair and schedules a
//! bottom half after each; the loop reads the socket when it is readable
//! (fd watch), counts the bottom halves, ticks a 10 ms timer, and quits at
//! end of file (or after 5 s, a safety net).

use std::cell::{Cell, RefCell};
use std::io::IoSliceMut;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use transit_channel::{
    io, Channel, Condition, ControlFlow, MainContext, MainLoop, ReadFlags, SocketChannel,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = MainContext::new()?;
    let main_loop = MainLoop::new(&ctx);
    let (ours, mut theirs) = SocketChannel::pair()?;
    let ours = Rc::new(RefCell::new(ours));
    ours.borrow_mut().set_blocking(false)?;

    // Fd watch: read what arrives; at end of file, quit.
    let text = Rc::new(RefCell::new(String::new()));
    let (ch, t, ml) = (ours.clone(), text.clone(), main_loop.clone());
    let ws = ours.borrow().watch_source();
    ctx.add_watch(&ws, Condition::IN, move |_ready| {
        let mut buf = [0u8; 256];
        let r = ch
            .borrow_mut()
            .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty());
        match r {
            Ok(0) => {
                ml.quit();
                ControlFlow::Remove
            }
            Ok(n) => {
                t.borrow_mut().push_str(&String::from_utf8_lossy(&buf[..n]));
                ControlFlow::Continue
            }
            Err(e) if e.is_would_block() => ControlFlow::Continue,
            Err(e) => {
                eprintln!("read: {e}");
                ml.quit();
                ControlFlow::Remove
            }
        }
    });

    // Timer: a tick every 10 ms.
    let ticks = Rc::new(Cell::new(0u32));
    let tk = ticks.clone();
    ctx.timeout_add(Duration::from_millis(10), move || {
        tk.set(tk.get() + 1);
        ControlFlow::Continue
    });

    // Safety net.
    let ml = main_loop.clone();
    ctx.timeout_add(Duration::from_secs(5), move || {
        eprintln!("main_loop example: gave up after 5 s");
        ml.quit();
        ControlFlow::Remove
    });

    // A bottom half, scheduled from another thread: it runs on the loop's
    // thread (scheduling it twice before it runs runs it once).
    let halves = Arc::new(AtomicU32::new(0));
    let h = halves.clone();
    let bh = ctx.bottom_half(move || {
        h.fetch_add(1, Ordering::Relaxed);
    });
    let worker = std::thread::spawn(move || {
        for i in 1..=3 {
            io::write_all(&mut theirs, format!("line {i}\n").as_bytes()).expect("write");
            bh.schedule();
            std::thread::sleep(Duration::from_millis(30));
        }
        // Dropping our end closes the socket: end of file for the watch.
    });

    main_loop.run();
    worker.join().expect("worker");
    let lines = text.borrow().lines().count();
    let runs = halves.load(Ordering::Relaxed);
    println!(
        "read {lines} lines, bottom half ran {runs} times, timer ticked {} times",
        ticks.get()
    );
    if lines != 3 || runs == 0 || ticks.get() == 0 {
        return Err("the loop missed an event".into());
    }
    Ok(())
}

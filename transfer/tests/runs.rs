//! Whole runs through the library, as a program embedding transit makes
//! them: a session over TCP between two runtimes (one per thread), and a
//! payload into a `file:` and back out of it; the observer hooks see each
//! run's data phase once.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use transit_channel::main_loop::runtime::Runtime;
use transit_channel::MainContext;
use transit_endpoint::Endpoint;
use transit_multifd::checksum;
use transit_multifd::output::Output;
use transit_transfer::{
    payload, receive, send, Mode, Observer, ReceiveOptions, SendOptions, Watch,
};

/// Records the hooks, and the listening address for the sender.
#[derive(Default)]
struct Record {
    listening: Option<mpsc::Sender<String>>,
    started: u32,
    stopped: u32,
    watch: Option<Watch>,
}

impl Observer for Record {
    fn listening(&mut self, uris: &[String]) {
        if let Some(tx) = &self.listening {
            let _ = tx.send(uris[0].clone());
        }
    }

    fn started(&mut self, _ctx: &MainContext, watch: &Watch) {
        self.started += 1;
        self.watch = Some(watch.clone());
    }

    fn stopped(&mut self, _ctx: &MainContext) {
        self.stopped += 1;
    }
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("transit-transfer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_session_over_tcp_in_two_passes_between_two_runtimes() {
    let (tx, rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let rt = Runtime::new().unwrap();
        let uri = "tcp:127.0.0.1:0";
        let mut opts = ReceiveOptions::new(uri, Endpoint::parse(uri).unwrap());
        opts.checksum = true;
        opts.log = Arc::new(|_: &str| {});
        let mut seen = Record {
            listening: Some(tx),
            ..Record::default()
        };
        let got = receive::receive(&rt, &opts, &mut seen);
        (got, seen.started, seen.stopped)
    });
    let uri = rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let rt = Runtime::new().unwrap();
    let mut opts = SendOptions::new(Endpoint::parse(&uri).unwrap());
    opts.channels = 2;
    opts.passes = 2;
    opts.checksum = true;
    let input = payload::generate(4 << 20, 4096, 0.5, 3, false).unwrap();
    let mut seen = Record::default();
    let sent = send::send(&rt, &opts, input, &mut seen).unwrap();
    assert_eq!((seen.started, seen.stopped), (1, 1));
    let Some(Watch::Session { progress, .. }) = &seen.watch else {
        panic!("a session's watch");
    };
    assert!(
        progress.lock().unwrap().is_some(),
        "filled in by the driver"
    );
    assert!(seen.watch.as_ref().unwrap().total() > 4 << 20, "two passes");

    let (got, started, stopped) = receiver.join().unwrap();
    let got = got.unwrap().expect("the receiving run reports");
    assert_eq!((started, stopped), (1, 1));
    assert_eq!((sent.mode, got.mode), (Mode::Image, Mode::Image));
    assert_eq!((sent.passes, got.passes), (2, 2));
    assert_eq!(got.image_bytes, 4 << 20);
    assert!(got.verified);
    assert!(sent.sha256.is_some());
    assert_eq!(sent.sha256, got.sha256);
    assert!(got.peer.is_some() && sent.peer.is_some());
}

#[test]
fn a_payload_into_a_file_and_back_out() {
    let dir = scratch("file");
    let (image, copy) = (dir.join("image"), dir.join("copy"));
    let rt = Runtime::new().unwrap();

    let mut opts = SendOptions::new(Endpoint::File(image.clone()));
    opts.checksum = true;
    let input = payload::generate(1 << 20, 4096, 0.5, 9, false).unwrap();
    let mut seen = Record::default();
    let sent = send::send(&rt, &opts, input, &mut seen).unwrap();
    assert_eq!((seen.started, seen.stopped), (1, 1));
    let Some(Watch::Copy { copied, .. }) = &seen.watch else {
        panic!("a copy's watch");
    };
    assert_eq!(copied.load(Ordering::Relaxed), 1 << 20);
    assert_eq!(
        (sent.mode, sent.stats.bytes, sent.peer),
        (Mode::Raw, 1 << 20, None)
    );
    assert_eq!(sent.sha256, Some(checksum::of_file(&image).unwrap()));

    let uri = format!("file:{}", image.display());
    let mut opts = ReceiveOptions::new(&uri, Endpoint::parse(&uri).unwrap());
    opts.output = Output::File(copy.clone());
    opts.checksum = true;
    let got = receive::receive(&rt, &opts, &mut ()).unwrap().unwrap();
    assert_eq!(got.peer.as_deref(), Some(uri.as_str()));
    assert_eq!(got.sha256, sent.sha256);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&image).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_the_options_cannot_do_is_a_usage_error() {
    let dir = scratch("usage");
    let rt = Runtime::new().unwrap();
    let opts = SendOptions::new(Endpoint::File(dir.clone()));
    let input = payload::generate(1 << 16, 4096, 0.0, 1, false).unwrap();
    let e = send::send(&rt, &opts, input, &mut ()).unwrap_err();
    assert!(e.is_usage(), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

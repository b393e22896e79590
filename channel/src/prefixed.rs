//! [`Prefixed`]: a channel with bytes already read from it put back in
//! front, for channels that cannot peek.
//!
//! A receiver that must learn what a connection is before it decides
//! where it goes reads its first bytes; over a socket it could peek
//! (`MSG_PEEK`), but TLS, websocket and pipe channels cannot. Reading them
//! and wrapping the channel in a `Prefixed` gives whoever takes the channel
//! next the same bytes, in order, before the channel's own. Writes and
//! everything else go straight to the inner channel.
//!
//! [`sniff`] does the reading: it reads a connection's first bytes, as
//! many as a decider asks for, under a deadline, and returns the channel
//! with them put back and the decider's answer.
//!
//! Limits: the replayed bytes are never peekable and carry no fds (the
//! wrapper's [`Features`] drop `READ_MSG_PEEK` and `FD_PASS`); while bytes
//! are pending the channel reports itself readable.
//!
//! ```
//! use transit_channel::prefixed::Prefixed;
//! use transit_channel::{io, BufferChannel, Channel};
//!
//! let inner = BufferChannel::from_vec(b" world".to_vec());
//! let mut ch = Prefixed::new(b"hello".to_vec(), Box::new(inner));
//! let mut buf = [0u8; 11];
//! io::read_all(&mut ch, &mut buf)?;
//! assert_eq!(&buf, b"hello world");
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::{
    Channel, Condition, Features, FlushOutcome, ReadFlags, Readiness, Result, Shutdown,
    ShutdownHandle, SocketAddress, WatchSource, WriteFlags,
};

/// A channel with bytes already read from it put back in front.
pub struct Prefixed {
    head: Vec<u8>,
    pos: usize,
    inner: Box<dyn Channel>,
}

impl Prefixed {
    /// Replay `head` before `inner`'s bytes.
    pub fn new(head: Vec<u8>, inner: Box<dyn Channel>) -> Prefixed {
        Prefixed {
            head,
            pos: 0,
            inner,
        }
    }

    fn pending(&self) -> bool {
        self.pos < self.head.len()
    }
}

impl Channel for Prefixed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn set_name(&mut self, name: String) {
        self.inner.set_name(name)
    }
    fn features(&self) -> Features {
        self.inner.features() - Features::READ_MSG_PEEK - Features::FD_PASS
    }
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        crate::channel::check_read_request(self, fds.is_some(), flags)?;
        if !self.pending() {
            return self.inner.readv(bufs, None, flags);
        }
        let n = crate::io::scatter(&self.head[self.pos..], bufs);
        self.pos += n;
        if !self.pending() {
            self.head = Vec::new();
            self.pos = 0;
        }
        Ok(n)
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        self.inner.writev(bufs, fds, flags)
    }
    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.inner.set_blocking(blocking)
    }
    fn is_blocking(&self) -> bool {
        self.inner.is_blocking()
    }
    fn close(&mut self) -> Result<()> {
        self.inner.close()
    }
    fn watch_source(&self) -> WatchSource {
        let ws = self.inner.watch_source();
        if self.pending() {
            WatchSource {
                fds: ws.fds,
                ready: Readiness::always(Condition::IN),
                name: ws.name,
            }
        } else {
            ws
        }
    }
    fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        self.inner.shutdown(how)
    }
    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        self.inner.shutdown_handle()
    }
    fn bye(&mut self) -> Result<()> {
        self.inner.bye()
    }
    fn set_delay(&mut self, enabled: bool) -> Result<()> {
        self.inner.set_delay(enabled)
    }
    fn set_cork(&mut self, enabled: bool) -> Result<()> {
        self.inner.set_cork(enabled)
    }
    fn flush(&mut self) -> Result<FlushOutcome> {
        self.inner.flush()
    }
    fn local_address(&self) -> Option<SocketAddress> {
        self.inner.local_address()
    }
    fn peer_address(&self) -> Option<SocketAddress> {
        self.inner.peer_address()
    }
}

/// The most first bytes [`sniff`] reads.
pub const SNIFF_MAX: usize = 64 << 10;

/// Where reading a connection's first bytes stands, as a decider sees
/// them (see [`sniff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head<K> {
    /// The first this many bytes are needed to decide (more than given).
    More(usize),
    /// Decided.
    Done(K),
}

/// Read `ch`'s first bytes until `decide` says what they are, for at most
/// until `deadline`, and put them back in front ([`Prefixed`]). The
/// channel's blocking mode is kept. Errors: [`Error::TimedOut`](crate::Error::TimedOut)
/// at the deadline, [`Error::UnexpectedEof`](crate::Error::UnexpectedEof)
/// if the peer closes first, or the channel's own; the channel is
/// returned with them (the bytes read so far are lost).
#[allow(clippy::type_complexity)]
pub fn sniff<K>(
    mut ch: Box<dyn Channel>,
    mut decide: impl FnMut(&[u8]) -> Head<K>,
    deadline: Instant,
) -> std::result::Result<(Box<dyn Channel>, K), (Box<dyn Channel>, crate::Error)> {
    let mut buf = Vec::new();
    loop {
        let want = match decide(&buf) {
            Head::More(n) if n.max(buf.len() + 1) > SNIFF_MAX => {
                return Err((
                    ch,
                    crate::Error::protocol(
                        "sniff",
                        format!("a decider asked for more than {SNIFF_MAX} first bytes"),
                    ),
                ))
            }
            Head::More(n) => n.max(buf.len() + 1),
            Head::Done(k) => {
                let ch: Box<dyn Channel> = if buf.is_empty() {
                    ch
                } else {
                    Box::new(Prefixed::new(buf, ch))
                };
                return Ok((ch, k));
            }
        };
        let at = buf.len();
        buf.resize(want, 0);
        if let Err(e) = crate::io::read_all_until(&mut *ch, &mut buf[at..], deadline) {
            return Err((ch, e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{io, BufferChannel};

    #[test]
    fn sniff_reads_what_the_decider_asks_and_puts_it_back() {
        let inner = BufferChannel::from_vec(b"ABCDEFGH".to_vec());
        let mut asked = Vec::new();
        let Ok((mut ch, kind)) = sniff(
            Box::new(inner),
            |b: &[u8]| {
                asked.push(b.len());
                match b.len() {
                    0 => Head::More(2),
                    2 if b == b"AB" => Head::More(5),
                    _ => Head::Done(b.len()),
                }
            },
            Instant::now() + std::time::Duration::from_secs(5),
        ) else {
            panic!("sniff failed");
        };
        assert_eq!((kind, asked), (5, vec![0, 2, 5]));
        let mut all = [0u8; 8];
        io::read_all(&mut *ch, &mut all).unwrap();
        assert_eq!(&all, b"ABCDEFGH");
        // The peer closes before the decider is satisfied: a typed end of file.
        let short = BufferChannel::from_vec(b"AB".to_vec());
        let r = sniff(
            Box::new(short),
            |b: &[u8]| {
                if b.len() < 4 {
                    Head::More(4)
                } else {
                    Head::Done(())
                }
            },
            Instant::now() + std::time::Duration::from_secs(5),
        );
        assert!(matches!(r, Err((_, crate::Error::UnexpectedEof { .. }))));
    }

    #[test]
    fn head_then_inner_across_vectors_and_readiness() {
        let inner = BufferChannel::from_vec(b"456789".to_vec());
        let mut ch = Prefixed::new(b"0123".to_vec(), Box::new(inner));
        assert!(ch.watch_source().ready.get().contains(Condition::IN));
        assert!(!ch.features().contains(Features::READ_MSG_PEEK));
        let (mut a, mut b) = ([0u8; 3], [0u8; 7]);
        let n = ch
            .readv(
                &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)],
                None,
                ReadFlags::empty(),
            )
            .unwrap();
        // The put-back bytes come alone, never mixed with the inner's.
        assert_eq!(n, 4);
        assert_eq!(&a, b"012");
        assert_eq!(b[0], b'3');
        let mut rest = [0u8; 6];
        io::read_all(&mut ch, &mut rest).unwrap();
        assert_eq!(&rest, b"456789");
        assert!(ch
            .readv(
                &mut [IoSliceMut::new(&mut rest)],
                Some(&mut Vec::new()),
                ReadFlags::empty()
            )
            .is_err());
    }
}

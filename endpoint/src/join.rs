//! Joining the N+1 runs of an `exec:` command into one multifd session.
//!
//! `transit send exec:COMMAND` in a multifd session (not `--raw`) runs
//! COMMAND once per channel: the main channel and each page channel. Every
//! run first receives a plaintext *join preamble* on its stdin, before any
//! TLS or websocket layer:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `TRJOIN01` |
//! | 16 | session token (random) |
//! | 4 | index, big endian (0 = the main channel) |
//! | 4 | count, big endian (N+1) |
//!
//! At the far end each run is a `transit recv stdio:` process. The one
//! that reads index 0 (the *leader*) listens on the abstract UNIX socket
//! `transit-join-UID-TOKEN`; every other (a *follower*) connects to it
//! and passes its stdin and stdout file descriptors (SCM_RIGHTS) with its
//! index. The leader then owns every channel's pipes and runs the session
//! as if N+1 connections had arrived (no byte is relayed or copied); each
//! follower stays alive until the leader sends it the outcome (one byte:
//! 0 = success), then exits 0, or 1 if the session failed, so the sender
//! sees every command end as the session did.
//!
//! Limits: the far end must be on one host (it is: one ssh target), in one
//! network namespace and run as one user (the leader refuses followers of
//! another uid: SO_PEERCRED). The token is 128 random bits that only
//! travel inside the command's stdin.
//!
//! [`transit_channel::PipeChannel`] is the channel a passed (read fd, write fd) pair
//! becomes in the leader.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use transit_channel::{io as chio, Channel, Condition, SocketAddress, SocketChannel};

/// The most runs one join takes (a multifd session's 256 page channels
/// and its main channel).
pub const MAX_COUNT: u32 = 257;

/// Length of the join preamble.
pub const PREAMBLE_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"TRJOIN01";

/// The session token every run of one `exec:` session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTag {
    /// Random bytes naming the rendezvous.
    pub token: [u8; 16],
}

impl JoinTag {
    /// A new random tag (fails only if the kernel gives no random bytes).
    pub fn new() -> std::io::Result<JoinTag> {
        let mut token = [0u8; 16];
        transit_channel::random::fill(&mut token)?;
        Ok(JoinTag { token })
    }

    fn hex(&self) -> String {
        self.token.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The rendezvous address of this tag (per user).
    fn address(&self) -> SocketAddress {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        SocketAddress::unix_abstract(format!("transit-join-{uid}-{}", self.hex()).into_bytes())
    }
}

/// A decoded preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// The session.
    pub tag: JoinTag,
    /// This run's channel (0 = main).
    pub index: u32,
    /// How many runs the session has.
    pub count: u32,
}

/// Encode a preamble.
pub fn encode(tag: &JoinTag, index: u32, count: u32) -> [u8; PREAMBLE_LEN] {
    let mut b = [0u8; PREAMBLE_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..24].copy_from_slice(&tag.token);
    b[24..28].copy_from_slice(&index.to_be_bytes());
    b[28..32].copy_from_slice(&count.to_be_bytes());
    b
}

/// Decode a preamble; the error says what the bytes were instead.
pub fn decode(b: &[u8; PREAMBLE_LEN]) -> Result<Preamble, String> {
    if &b[..8] != MAGIC {
        return Err(
            "stdin does not start with a transit exec: join preamble; a framed `transit recv stdio:` must be started by `transit send exec:...` (use --raw on both ends for other peers)"
                .into(),
        );
    }
    let mut token = [0u8; 16];
    token.copy_from_slice(&b[8..24]);
    let index = u32::from_be_bytes([b[24], b[25], b[26], b[27]]);
    let count = u32::from_be_bytes([b[28], b[29], b[30], b[31]]);
    if count < 2 || index >= count || count > MAX_COUNT {
        return Err(format!("invalid join preamble: channel {index} of {count}"));
    }
    Ok(Preamble {
        tag: JoinTag { token },
        index,
        count,
    })
}

/// Write the preamble of run `index` of `count`.
pub fn write_preamble(
    ch: &mut dyn Channel,
    tag: &JoinTag,
    index: u32,
    count: u32,
) -> transit_channel::Result<()> {
    chio::write_all(ch, &encode(tag, index, count))
}

/// Read a preamble (blocking, bounded by `timeout`).
pub fn read_preamble(ch: &mut dyn Channel, timeout: Duration) -> Result<Preamble, String> {
    let mut b = [0u8; PREAMBLE_LEN];
    match chio::read_all_until(ch, &mut b, Instant::now() + timeout) {
        Ok(()) => decode(&b),
        Err(e) if e.is_timed_out() => Err(format!(
            "no join preamble on {} within {:.1} s",
            ch.name(),
            timeout.as_secs_f64()
        )),
        Err(transit_channel::Error::UnexpectedEof {
            expected, missing, ..
        }) => Err(format!(
            "{} ended before the join preamble ({} of {PREAMBLE_LEN} bytes)",
            ch.name(),
            expected - missing
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The leader's side of the rendezvous: the followers' control
/// connections, told the outcome at the end.
pub struct Leader {
    followers: Vec<SocketChannel>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Leader({} followers)", self.followers.len())
    }
}

impl Leader {
    /// Tell every follower how the session ended.
    pub fn finish(&mut self, ok: bool) {
        for f in &mut self.followers {
            let _ = chio::write_all(f, &[u8::from(!ok)]);
            let _ = f.close();
        }
        self.followers.clear();
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// The other runs' channels, each with its index.
pub type Joined = Vec<(u32, Box<dyn Channel>)>;

/// Gather the other `count - 1` runs of `tag`: returns their channels
/// (index, channel), in arrival order.
pub fn lead(tag: &JoinTag, count: u32, timeout: Duration) -> Result<(Leader, Joined), String> {
    let addr = tag.address();
    let mut listener = SocketChannel::listen_sync(&addr, count.max(8))
        .map_err(|e| format!("join the exec: runs: listen: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut leader = Leader {
        followers: Vec::new(),
    };
    let mut chans: Joined = Vec::new();
    let mut seen = vec![false; count as usize];
    seen[0] = true;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    while chans.len() + 1 < count as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = chio::wait_blocking(&listener.watch_source(), Condition::IN, Some(left))
            .map_err(|e| format!("join the exec: runs: {e}"))?;
        if ready.is_empty() {
            return Err(format!(
                "only {} of the {count} runs of the exec: command joined within {:.1} s",
                chans.len() + 1,
                timeout.as_secs_f64()
            ));
        }
        let mut c = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.is_would_block() => continue,
            Err(e) => return Err(format!("join the exec: runs: accept: {e}")),
        };
        if peer_uid(c.as_raw_fd()) != Some(uid) {
            let _ = c.close();
            continue;
        }
        let mut idx = [0u8; 4];
        let mut fds = Vec::new();
        let got = chio::readv_full_all(&mut c, &mut [IoSliceMut::new(&mut idx)], Some(&mut fds));
        if got.is_err() || fds.len() != 2 {
            let _ = c.close();
            continue;
        }
        let index = u32::from_be_bytes(idx);
        if index == 0 || index >= count || seen[index as usize] {
            return Err(format!(
                "join the exec: runs: run {index} joined twice or does not belong to a session of {count}"
            ));
        }
        seen[index as usize] = true;
        let mut it = fds.into_iter();
        let (Some(read), Some(write)) = (it.next(), it.next()) else {
            continue;
        };
        chans.push((
            index,
            Box::new(transit_channel::PipeChannel::new(
                format!("stdio: (exec: run {index})"),
                read,
                write,
            )),
        ));
        leader.followers.push(c);
    }
    let _ = listener.close();
    Ok((leader, chans))
}

fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given;
    // `fd` is an open socket owned by the caller.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// A follower: hand this process' stdin and stdout to the leader of `tag`
/// and wait for the outcome. `Ok(true)`: the session succeeded.
pub fn follow(tag: &JoinTag, index: u32, timeout: Duration) -> Result<bool, String> {
    let addr = tag.address();
    let deadline = Instant::now() + timeout;
    let mut c = loop {
        match SocketChannel::connect_sync(&addr) {
            Ok(c) => break c,
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "exec: run {index}: the run with the main channel did not appear within {:.1} s ({e})",
                        timeout.as_secs_f64()
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    // SAFETY: fds 0 and 1 are open for the life of the process (stdio);
    // the borrows end with this call.
    let (fd0, fd1) = unsafe { (BorrowedFd::borrow_raw(0), BorrowedFd::borrow_raw(1)) };
    chio::writev_full_all(
        &mut c,
        &mut [IoSlice::new(&index.to_be_bytes())],
        &[fd0, fd1],
    )
    .map_err(|e| format!("exec: run {index}: pass stdin and stdout: {e}"))?;
    let mut status = [0u8; 1];
    match chio::read_all_eof(&mut c, &mut status) {
        Ok(true) => Ok(status[0] == 0),
        Ok(false) => Ok(false),
        Err(e) => Err(format!("exec: run {index}: wait for the outcome: {e}")),
    }
}

/// What this run of an `exec:` command is, once joined ([`join`]).
pub enum Role {
    /// The run with the main channel: every run's channel, the main one
    /// first; tell the others the outcome with [`Leader::finish`].
    Leader(Leader, Vec<Box<dyn Channel>>),
    /// Another run: its channel went to the leader; the session's outcome
    /// (`true`: it succeeded).
    Follower {
        /// This run's index.
        index: u32,
        /// The outcome the leader sent.
        ok: bool,
    },
}

/// Join this run (whose channel is `ch`, its stdin and stdout) to the
/// others of its `exec:` command: read the preamble, then lead (gather
/// the other runs' channels) or follow (hand ours over, wait for the
/// outcome), each step within `timeout`. Blocks: run it on a worker.
pub fn join(mut ch: Box<dyn Channel>, timeout: Duration) -> Result<Role, String> {
    let pre = read_preamble(&mut *ch, timeout)?;
    if pre.index != 0 {
        drop(ch);
        let ok = follow(&pre.tag, pre.index, timeout)?;
        return Ok(Role::Follower {
            index: pre.index,
            ok,
        });
    }
    let (leader, others) = lead(&pre.tag, pre.count, timeout)?;
    let mut chans = vec![ch];
    chans.extend(others.into_iter().map(|(_, c)| c));
    Ok(Role::Leader(leader, chans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preambles_round_trip_and_refuse_garbage() {
        let tag = JoinTag::new().unwrap();
        let b = encode(&tag, 2, 5);
        assert_eq!(
            decode(&b),
            Ok(Preamble {
                tag,
                index: 2,
                count: 5
            })
        );
        assert!(decode(&[0u8; PREAMBLE_LEN])
            .unwrap_err()
            .contains("join preamble"));
        assert!(decode(&encode(&tag, 5, 5)).is_err());
    }

    #[test]
    fn followers_hand_their_fds_to_the_leader() {
        // A follower in a thread stands in for a second process: the fds it
        // passes are this process' fds 0 and 1, which the leader wraps.
        let tag = JoinTag::new().unwrap();
        let t = tag;
        let follower = std::thread::spawn(move || follow(&t, 1, Duration::from_secs(10)));
        let (mut leader, chans) = lead(&tag, 2, Duration::from_secs(10)).unwrap();
        assert_eq!(chans.len(), 1);
        assert_eq!(chans[0].0, 1);
        leader.finish(true);
        assert_eq!(follower.join().unwrap(), Ok(true));
    }
}

//! [`Verbs`] on rdma-core (librdmacm + libibverbs through `rdma-sys`):
//! connection setup over rdma_cm, one reliable-connected queue pair per
//! channel, one completion queue for both directions with a completion
//! channel, and an epoll fd that merges the completion channel with the
//! connection's CM event channel (so a disconnect wakes the channel too).
//!
//! Before anything else, [`check_device`] makes connect and listen fail at
//! once when the machine has no RDMA device.
//!
//! Only the no-device path runs in CI (no RDMA hardware there); everything
//! else here needs a device (or soft-RoCE, `rdma link add ... type rxe`).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::ptr;
use std::time::{Duration, Instant};

use rdma_sys::{
    ibv_access_flags, ibv_ack_cq_events, ibv_alloc_pd, ibv_comp_channel, ibv_cq,
    ibv_create_comp_channel, ibv_create_cq, ibv_dealloc_pd, ibv_dereg_mr, ibv_destroy_comp_channel,
    ibv_destroy_cq, ibv_free_device_list, ibv_get_cq_event, ibv_get_device_list, ibv_modify_qp,
    ibv_mr, ibv_pd, ibv_poll_cq, ibv_post_recv, ibv_post_send, ibv_qp_attr, ibv_qp_attr_mask,
    ibv_qp_init_attr, ibv_qp_state, ibv_qp_type, ibv_recv_wr, ibv_reg_mr, ibv_req_notify_cq,
    ibv_send_flags, ibv_send_wr, ibv_sge, ibv_wc, ibv_wc_status, ibv_wr_opcode, rdma_accept,
    rdma_ack_cm_event, rdma_bind_addr, rdma_cm_event, rdma_cm_event_type as ev, rdma_cm_id,
    rdma_conn_param, rdma_connect, rdma_create_event_channel, rdma_create_id, rdma_create_qp,
    rdma_destroy_event_channel, rdma_destroy_id, rdma_destroy_qp, rdma_disconnect,
    rdma_event_channel, rdma_get_cm_event, rdma_get_src_port, rdma_listen, rdma_migrate_id,
    rdma_port_space, rdma_reject, rdma_resolve_addr, rdma_resolve_route,
};

use super::engine::Engine;
use super::verbs::{
    Completion, ConnParams, Limits, MemKey, PostError, Sge, Verbs, WcKind, WcStatus, SEND_BIT,
};
use super::{RdmaChannel, RdmaConfig};
use crate::address::SocketAddress;
use crate::error::{Error, Result};

/// Private data magic: ASCII `TRDM`.
const MAGIC: u32 = 0x5452_444d;
/// Bytes of private data we send: magic, version, ring depth, slot size.
const PRIVATE_LEN: usize = 16;
/// Completions per `ibv_poll_cq` call.
const WC_BATCH: usize = 32;

fn no_device(name: &str, detail: impl std::fmt::Display) -> Error {
    Error::os(
        name,
        "find an RDMA device",
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no RDMA device was found ({detail})"),
        ),
    )
}

/// Fail at once unless the machine has at least one RDMA device.
pub(crate) fn check_device(name: &str) -> Result<()> {
    if !Path::new("/sys/class/infiniband").exists() {
        return Err(no_device(
            name,
            "/sys/class/infiniband does not exist: the kernel has no RDMA support loaded",
        ));
    }
    let mut n: libc::c_int = 0;
    // SAFETY: `n` is a valid out-pointer; the list is freed below.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        return Err(no_device(
            name,
            format!("ibv_get_device_list: {}", io::Error::last_os_error()),
        ));
    }
    // SAFETY: `list` came from ibv_get_device_list and is freed once.
    unsafe { ibv_free_device_list(list) };
    if n <= 0 {
        return Err(no_device(
            name,
            "ibv_get_device_list returned an empty list",
        ));
    }
    Ok(())
}

fn os(name: &str, op: impl std::fmt::Display) -> Error {
    Error::last_os(name, op)
}

fn resolve(name: &str, addr: &SocketAddress, passive: bool) -> Result<SocketAddr> {
    let SocketAddress::Inet { host, port } = addr else {
        return Err(Error::Address {
            input: addr.to_string(),
            expected: "rdma:HOST:PORT".into(),
        });
    };
    let host = match host.as_str() {
        "" if passive => "0.0.0.0",
        "" => "localhost",
        h => h,
    };
    (host, *port)
        .to_socket_addrs()
        .map_err(|e| Error::os(name, format!("resolve {host}"), e))?
        .next()
        .ok_or_else(|| {
            Error::os(
                name,
                format!("resolve {host}"),
                io::Error::new(io::ErrorKind::NotFound, "no address"),
            )
        })
}

fn set_nonblocking(name: &str, fd: RawFd) -> Result<()> {
    // SAFETY: fcntl on an fd we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(os(name, "make an RDMA fd non-blocking"));
    }
    Ok(())
}

fn millis(d: Duration) -> libc::c_int {
    libc::c_int::try_from(d.as_millis()).unwrap_or(libc::c_int::MAX)
}

/// A CM event, copied out before it is acknowledged.
struct CmEvent {
    kind: u32,
    status: i32,
    id: *mut rdma_cm_id,
    private: Vec<u8>,
}

/// Take one CM event from a non-blocking channel, waiting up to `timeout`
/// (`None`: forever).
fn next_event(
    name: &str,
    ch: *mut rdma_event_channel,
    timeout: Option<Duration>,
    stage: &str,
) -> Result<CmEvent> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut evp: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: `ch` is a live event channel; `evp` is a valid out-pointer.
        if unsafe { rdma_get_cm_event(ch, &mut evp) } == 0 && !evp.is_null() {
            // SAFETY: librdmacm returned a valid event; we copy what we need
            // and acknowledge it exactly once.
            let out = unsafe {
                let e = &*evp;
                let conn = e.param.conn;
                let private = if conn.private_data.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(
                        conn.private_data.cast::<u8>(),
                        usize::from(conn.private_data_len),
                    )
                    .to_vec()
                };
                let out = CmEvent {
                    kind: e.event,
                    status: e.status,
                    id: e.id,
                    private,
                };
                rdma_ack_cm_event(evp);
                out
            };
            return Ok(out);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::os(name, format!("{stage}: rdma_get_cm_event"), err));
        }
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(Error::os(
                        name,
                        stage,
                        io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
                    ));
                }
                millis(d - now).max(1)
            }
        };
        // SAFETY: `ch` is live; its fd stays open while we poll it.
        let fd = unsafe { (*ch).fd };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

fn expect_event(
    name: &str,
    ch: *mut rdma_event_channel,
    want: u32,
    timeout: Duration,
    stage: &str,
) -> Result<CmEvent> {
    let e = next_event(name, ch, Some(timeout), stage)?;
    if e.kind != want {
        // SAFETY: rdma_event_str returns a static string for any value.
        let what = unsafe { std::ffi::CStr::from_ptr(rdma_sys::rdma_event_str(e.kind)) };
        return Err(Error::os(
            name,
            stage,
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{} (status {})", what.to_string_lossy(), e.status),
            ),
        ));
    }
    Ok(e)
}

fn encode_params(p: ConnParams) -> [u8; PRIVATE_LEN] {
    let mut b = [0u8; PRIVATE_LEN];
    b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&p.version.to_be_bytes());
    b[8..12].copy_from_slice(&p.ring_depth.to_be_bytes());
    b[12..16].copy_from_slice(&p.slot_size.to_be_bytes());
    b
}

fn decode_params(b: &[u8]) -> Option<ConnParams> {
    if b.len() < PRIVATE_LEN {
        return None;
    }
    let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (w(0) == MAGIC).then(|| ConnParams {
        version: w(4),
        ring_depth: w(8),
        slot_size: w(12),
    })
}

/// The sockaddr an id is bound or connected to.
fn id_addr(id: *mut rdma_cm_id, peer: bool) -> Option<SocketAddress> {
    // SAFETY: `id` is live; the route's address storage is plain data.
    let storage = unsafe {
        if peer {
            (*id).route.addr.dst_addr_union.dst_storage
        } else {
            (*id).route.addr.src_addr_union.src_storage
        }
    };
    let len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a sockaddr_storage of the full size is a valid argument.
    let sa = unsafe { socket2::SockAddr::new(storage, len) };
    sa.as_socket().map(SocketAddress::from)
}

/// One connection's verbs objects.
struct Conn {
    ch: *mut rdma_event_channel,
    id: *mut rdma_cm_id,
    pd: *mut ibv_pd,
    comp: *mut ibv_comp_channel,
    cq: *mut ibv_cq,
    epoll: Option<OwnedFd>,
    mrs: Vec<*mut ibv_mr>,
    limits: Limits,
    /// Connect (true) or accept (false) in `establish`.
    active: bool,
    /// The peer's parameters from its connect request (passive side).
    request: Option<ConnParams>,
    timeout: Duration,
    connected: bool,
    name: String,
    wcs: Vec<ibv_wc>,
}

// SAFETY: libibverbs and librdmacm objects may be used from any thread; a
// Conn is only used through the engine's mutex, one thread at a time.
unsafe impl Send for Conn {}

impl Conn {
    fn new(name: &str, ch: *mut rdma_event_channel, id: *mut rdma_cm_id, cfg: &RdmaConfig) -> Conn {
        Conn {
            ch,
            id,
            pd: ptr::null_mut(),
            comp: ptr::null_mut(),
            cq: ptr::null_mut(),
            epoll: None,
            mrs: Vec::new(),
            limits: Limits {
                max_send_wr: cfg.send_depth,
                max_recv_wr: cfg.ring_depth,
            },
            active: true,
            request: None,
            timeout: cfg.connect_timeout,
            connected: false,
            name: name.to_owned(),
            // SAFETY: ibv_wc is plain data; all-zero is a valid value.
            wcs: (0..WC_BATCH)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
        }
    }

    /// Protection domain, completion channel and queue, queue pair, and the
    /// epoll fd over the completion and CM channels.
    fn build(&mut self) -> Result<()> {
        let name = self.name.clone();
        // SAFETY: `id` is live and bound to a device after address
        // resolution (or a connect request), so `verbs` is set.
        let ctx = unsafe { (*self.id).verbs };
        if ctx.is_null() {
            return Err(no_device(&name, "the address is not on an RDMA device"));
        }
        // SAFETY: valid device context.
        self.pd = unsafe { ibv_alloc_pd(ctx) };
        if self.pd.is_null() {
            return Err(os(&name, "allocate a protection domain"));
        }
        // SAFETY: valid device context.
        self.comp = unsafe { ibv_create_comp_channel(ctx) };
        if self.comp.is_null() {
            return Err(os(&name, "create a completion channel"));
        }
        // SAFETY: `comp` is live.
        let comp_fd = unsafe { (*self.comp).fd };
        set_nonblocking(&name, comp_fd)?;
        let cqe = (self.limits.max_send_wr + self.limits.max_recv_wr) as libc::c_int;
        // SAFETY: valid context and completion channel.
        self.cq = unsafe { ibv_create_cq(ctx, cqe, ptr::null_mut(), self.comp, 0) };
        if self.cq.is_null() {
            return Err(os(
                &name,
                format!("create a completion queue of {cqe} entries"),
            ));
        }
        // SAFETY: all-zero is a valid ibv_qp_init_attr; fields set below.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = self.cq;
        attr.recv_cq = self.cq;
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 1;
        attr.cap.max_send_wr = self.limits.max_send_wr;
        attr.cap.max_recv_wr = self.limits.max_recv_wr;
        attr.cap.max_send_sge = 2;
        attr.cap.max_recv_sge = 1;
        // SAFETY: live id, pd and a valid attr.
        if unsafe { rdma_create_qp(self.id, self.pd, &mut attr) } != 0 {
            return Err(os(
                &name,
                format!(
                    "create a queue pair ({} send, {} receive work requests)",
                    self.limits.max_send_wr, self.limits.max_recv_wr
                ),
            ));
        }
        // SAFETY: epoll_create1 has no memory preconditions.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(os(&name, "create an epoll fd"));
        }
        // SAFETY: `ep` was just created and is owned by nothing else.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: `ch` is live.
        let cm_fd = unsafe { (*self.ch).fd };
        set_nonblocking(&name, cm_fd)?;
        for fd in [comp_fd, cm_fd] {
            let mut e = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: valid epoll fd, fd and event.
            if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut e) } < 0 {
                return Err(os(&name, "watch the completion channel"));
            }
        }
        self.epoll = Some(ep);
        Ok(())
    }

    fn qp_to_error(&mut self) {
        // SAFETY: `id` is live; its qp is set once built.
        let qp = unsafe { (*self.id).qp };
        if qp.is_null() {
            return;
        }
        // SAFETY: all-zero is a valid ibv_qp_attr; only the state is used.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
        // SAFETY: live qp and attr.
        unsafe {
            ibv_modify_qp(
                qp,
                &mut attr,
                ibv_qp_attr_mask::IBV_QP_STATE.0 as libc::c_int,
            )
        };
    }
}

fn io_err(rc: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(if rc > 0 { rc } else { libc::EIO })
}

impl Verbs for Conn {
    fn limits(&self) -> Limits {
        self.limits
    }

    unsafe fn register(&mut self, addr: *const u8, len: usize) -> io::Result<MemKey> {
        // SAFETY: `pd` is live; the caller keeps the memory allocated while
        // registered. Local write access is needed for receive buffers.
        let mr = unsafe {
            ibv_reg_mr(
                self.pd,
                addr.cast_mut().cast(),
                len,
                ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as libc::c_int,
            )
        };
        if mr.is_null() {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("ibv_reg_mr of {len} bytes: {e} (locked-memory limit? see ulimit -l)"),
            ));
        }
        self.mrs.push(mr);
        // SAFETY: `mr` is a live registration.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        Ok(MemKey {
            lkey,
            rkey,
            handle: mr as u64,
        })
    }

    fn deregister(&mut self, key: MemKey) {
        if let Some(pos) = self.mrs.iter().position(|m| *m as u64 == key.handle) {
            let mr = self.mrs.swap_remove(pos);
            // SAFETY: a live registration of ours, deregistered once.
            unsafe { ibv_dereg_mr(mr) };
        }
    }

    fn post_recv(&mut self, wr_id: u64, sge: Sge) -> std::result::Result<(), PostError> {
        let mut s = ibv_sge {
            addr: sge.addr,
            length: sge.len,
            lkey: sge.lkey,
        };
        let mut wr = ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut s,
            num_sge: 1,
        };
        let mut bad: *mut ibv_recv_wr = ptr::null_mut();
        // SAFETY: live qp; `wr` and `s` outlive the call (the verbs copy
        // them); the buffer is registered (engine).
        let rc = unsafe { ibv_post_recv((*self.id).qp, &mut wr, &mut bad) };
        match rc {
            0 => Ok(()),
            libc::ENOMEM => Err(PostError::QueueFull),
            rc => Err(PostError::Failed(io_err(rc))),
        }
    }

    fn post_send(&mut self, wr_id: u64, sges: &[Sge]) -> std::result::Result<(), PostError> {
        let mut list = [ibv_sge {
            addr: 0,
            length: 0,
            lkey: 0,
        }; 2];
        for (d, s) in list.iter_mut().zip(sges) {
            *d = ibv_sge {
                addr: s.addr,
                length: s.len,
                lkey: s.lkey,
            };
        }
        // SAFETY: all-zero is a valid ibv_send_wr (null pointers, zero
        // unions); fields set below.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = list.as_mut_ptr();
        wr.num_sge = sges.len().min(2) as libc::c_int;
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        let mut bad: *mut ibv_send_wr = ptr::null_mut();
        // SAFETY: live qp; `wr` and `list` outlive the call.
        let rc = unsafe { ibv_post_send((*self.id).qp, &mut wr, &mut bad) };
        match rc {
            0 => Ok(()),
            libc::ENOMEM => Err(PostError::QueueFull),
            rc => Err(PostError::Failed(io_err(rc))),
        }
    }

    fn poll_cq(&mut self, out: &mut [Option<Completion>]) -> io::Result<usize> {
        let max = out.len().min(self.wcs.len()) as libc::c_int;
        // SAFETY: live cq; `wcs` has room for `max` entries.
        let n = unsafe { ibv_poll_cq(self.cq, max, self.wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(io::Error::other("ibv_poll_cq failed"));
        }
        for (wc, slot) in self.wcs.iter().zip(out.iter_mut()).take(n as usize) {
            let kind = if wc.wr_id & SEND_BIT != 0 {
                WcKind::Send
            } else {
                WcKind::Recv
            };
            let status = match wc.status {
                ibv_wc_status::IBV_WC_SUCCESS => WcStatus::Success,
                ibv_wc_status::IBV_WC_WR_FLUSH_ERR => WcStatus::Flushed,
                ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR => WcStatus::RnrRetryExceeded,
                ibv_wc_status::IBV_WC_RETRY_EXC_ERR => WcStatus::RetryExceeded,
                s => {
                    // SAFETY: ibv_wc_status_str returns a static string.
                    let what = unsafe { std::ffi::CStr::from_ptr(rdma_sys::ibv_wc_status_str(s)) };
                    WcStatus::Other(format!(
                        "{} (vendor error {:#x})",
                        what.to_string_lossy(),
                        wc.vendor_err
                    ))
                }
            };
            *slot = Some(Completion {
                wr_id: wc.wr_id,
                kind,
                status,
                byte_len: wc.byte_len,
            });
        }
        Ok(n as usize)
    }

    fn arm(&mut self) -> io::Result<()> {
        // SAFETY: live cq.
        let rc = unsafe { ibv_req_notify_cq(self.cq, 0) };
        if rc != 0 {
            return Err(io_err(rc));
        }
        Ok(())
    }

    fn ack_events(&mut self) -> io::Result<()> {
        loop {
            let mut cq: *mut ibv_cq = ptr::null_mut();
            let mut ctx: *mut libc::c_void = ptr::null_mut();
            // SAFETY: live, non-blocking completion channel; valid
            // out-pointers. Each event is acknowledged at once.
            if unsafe { ibv_get_cq_event(self.comp, &mut cq, &mut ctx) } != 0 {
                break;
            }
            // SAFETY: `cq` was returned with the event.
            unsafe { ibv_ack_cq_events(cq, 1) };
        }
        while let Ok(e) = next_event(&self.name, self.ch, Some(Duration::ZERO), "") {
            if matches!(
                e.kind,
                ev::RDMA_CM_EVENT_DISCONNECTED | ev::RDMA_CM_EVENT_DEVICE_REMOVAL
            ) {
                // Flush every posted work request: the engine sees the
                // disconnect as flushed completions.
                self.qp_to_error();
            }
        }
        Ok(())
    }

    fn completion_fd(&self) -> RawFd {
        self.epoll.as_ref().map_or(-1, |e| e.as_raw_fd())
    }

    fn establish(&mut self, local: ConnParams) -> io::Result<ConnParams> {
        let private = encode_params(local);
        // SAFETY: all-zero is a valid rdma_conn_param; fields set below.
        let mut param: rdma_conn_param = unsafe { std::mem::zeroed() };
        param.private_data = private.as_ptr().cast();
        param.private_data_len = PRIVATE_LEN as u8;
        param.responder_resources = 1;
        param.initiator_depth = 1;
        param.retry_count = 7;
        // Credits guarantee a posted receive; a few RNR retries cover a
        // slow peer without hiding a protocol bug forever.
        param.rnr_retry_count = 6;
        let to_io = |e: Error| io::Error::other(e.to_string());
        if self.active {
            // SAFETY: live id with a queue pair; `param` and `private`
            // outlive the call (librdmacm copies the private data).
            if unsafe { rdma_connect(self.id, &mut param) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let e = expect_event(
                &self.name,
                self.ch,
                ev::RDMA_CM_EVENT_ESTABLISHED,
                self.timeout,
                "connect",
            )
            .map_err(to_io)?;
            self.connected = true;
            decode_params(&e.private).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer accepted without transit's connection parameters",
                )
            })
        } else {
            let peer = self.request.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "no connection request")
            })?;
            // SAFETY: as for rdma_connect.
            if unsafe { rdma_accept(self.id, &mut param) } != 0 {
                return Err(io::Error::last_os_error());
            }
            expect_event(
                &self.name,
                self.ch,
                ev::RDMA_CM_EVENT_ESTABLISHED,
                self.timeout,
                "accept",
            )
            .map_err(to_io)?;
            self.connected = true;
            Ok(peer)
        }
    }

    fn disconnect(&mut self) {
        if self.connected {
            self.connected = false;
            // SAFETY: live, connected id. This also moves the qp to ERR.
            unsafe { rdma_disconnect(self.id) };
        }
        self.qp_to_error();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: every object below was created by this Conn and is
        // destroyed once, in dependency order (qp, mrs, cq, channel, pd,
        // id, event channel). All CQ and CM events were acknowledged when
        // taken.
        unsafe {
            if !self.id.is_null() && !(*self.id).qp.is_null() {
                rdma_destroy_qp(self.id);
            }
            for mr in self.mrs.drain(..) {
                ibv_dereg_mr(mr);
            }
            if !self.cq.is_null() {
                ibv_destroy_cq(self.cq);
            }
            if !self.comp.is_null() {
                ibv_destroy_comp_channel(self.comp);
            }
            if !self.pd.is_null() {
                ibv_dealloc_pd(self.pd);
            }
            if !self.id.is_null() {
                rdma_destroy_id(self.id);
            }
            if !self.ch.is_null() {
                rdma_destroy_event_channel(self.ch);
            }
        }
    }
}

fn event_channel(name: &str) -> Result<*mut rdma_event_channel> {
    // SAFETY: no preconditions; the result is checked.
    let ch = unsafe { rdma_create_event_channel() };
    if ch.is_null() {
        return Err(os(name, "create an rdma_cm event channel"));
    }
    Ok(ch)
}

/// Connect to `addr` (blocking, each stage bounded by `connect_timeout`).
pub(crate) fn connect(addr: &SocketAddress, cfg: &RdmaConfig) -> Result<RdmaChannel> {
    let name = super::format_address(addr);
    cfg.validate(&name)?;
    check_device(&name)?;
    let target = resolve(&name, addr, false)?;
    let ch = event_channel(&name)?;
    let mut conn = Conn::new(&name, ch, ptr::null_mut(), cfg);
    // SAFETY: `ch` is live (owned by `conn` now).
    set_nonblocking(&name, unsafe { (*ch).fd })?;
    let mut id: *mut rdma_cm_id = ptr::null_mut();
    // SAFETY: live channel; `id` is a valid out-pointer.
    if unsafe { rdma_create_id(ch, &mut id, ptr::null_mut(), rdma_port_space::RDMA_PS_TCP) } != 0 {
        return Err(os(&name, "create an rdma_cm id"));
    }
    conn.id = id;
    let sa = socket2::SockAddr::from(target);
    let ms = millis(cfg.connect_timeout);
    // SAFETY: live id; `sa` outlives the call and holds a valid sockaddr.
    if unsafe { rdma_resolve_addr(id, ptr::null_mut(), sa.as_ptr().cast_mut().cast(), ms) } != 0 {
        return Err(os(&name, format!("resolve the RDMA address of {target}")));
    }
    expect_event(
        &name,
        ch,
        ev::RDMA_CM_EVENT_ADDR_RESOLVED,
        cfg.connect_timeout,
        "resolve address",
    )?;
    // SAFETY: live id with a resolved address.
    if unsafe { rdma_resolve_route(id, ms) } != 0 {
        return Err(os(&name, format!("resolve the RDMA route to {target}")));
    }
    expect_event(
        &name,
        ch,
        ev::RDMA_CM_EVENT_ROUTE_RESOLVED,
        cfg.connect_timeout,
        "resolve route",
    )?;
    conn.build()?;
    let local = id_addr(id, false);
    let engine = Engine::new(name, Box::new(conn), cfg)?;
    RdmaChannel::from_engine(engine, cfg, local, Some(addr.clone()))
}

/// A listening rdma_cm id.
pub(crate) struct Listener {
    ch: *mut rdma_event_channel,
    id: *mut rdma_cm_id,
    host: String,
    accepted: u64,
}

// SAFETY: the listener's objects are used by one thread at a time (through
// `&mut self`); librdmacm allows that from any thread.
unsafe impl Send for Listener {}

impl Listener {
    pub(crate) fn listen(name: &str, addr: &SocketAddress) -> Result<Listener> {
        check_device(name)?;
        let bind = resolve(name, addr, true)?;
        let ch = event_channel(name)?;
        let mut l = Listener {
            ch,
            id: ptr::null_mut(),
            host: match addr {
                SocketAddress::Inet { host, .. } => host.clone(),
                _ => String::new(),
            },
            accepted: 0,
        };
        // SAFETY: live channel.
        set_nonblocking(name, unsafe { (*ch).fd })?;
        // SAFETY: live channel; valid out-pointer.
        if unsafe { rdma_create_id(ch, &mut l.id, ptr::null_mut(), rdma_port_space::RDMA_PS_TCP) }
            != 0
        {
            return Err(os(name, "create an rdma_cm id"));
        }
        let sa = socket2::SockAddr::from(bind);
        // SAFETY: live id; `sa` holds a valid sockaddr for the call.
        if unsafe { rdma_bind_addr(l.id, sa.as_ptr().cast_mut().cast()) } != 0 {
            return Err(os(name, format!("bind {bind}")));
        }
        // SAFETY: live, bound id.
        if unsafe { rdma_listen(l.id, 64) } != 0 {
            return Err(os(name, format!("listen on {bind}")));
        }
        Ok(l)
    }

    pub(crate) fn local_address(&self) -> Option<SocketAddress> {
        // SAFETY: live, bound id.
        let port = u16::from_be(unsafe { rdma_get_src_port(self.id) });
        Some(SocketAddress::inet(self.host.clone(), port))
    }

    pub(crate) fn accept(&mut self, name: &str, cfg: &RdmaConfig) -> Result<RdmaChannel> {
        loop {
            let e = next_event(name, self.ch, None, "accept")?;
            if e.kind != ev::RDMA_CM_EVENT_CONNECT_REQUEST {
                continue;
            }
            let Some(peer_params) = decode_params(&e.private) else {
                // Not a transit peer.
                // SAFETY: `e.id` is the new, live request id; reject then
                // destroy it once.
                unsafe {
                    rdma_reject(e.id, ptr::null(), 0);
                    rdma_destroy_id(e.id);
                }
                continue;
            };
            self.accepted += 1;
            let cname = format!("{name}#{}", self.accepted);
            let ch = event_channel(&cname)?;
            let mut conn = Conn::new(&cname, ch, e.id, cfg);
            conn.active = false;
            conn.request = Some(peer_params);
            // SAFETY: live request id and channel: the id's later events go
            // to the connection's own channel.
            if unsafe { rdma_migrate_id(e.id, ch) } != 0 {
                return Err(os(&cname, "move the connection to its event channel"));
            }
            conn.build()?;
            let (local, peer) = (id_addr(e.id, false), id_addr(e.id, true));
            let engine = Engine::new(cname, Box::new(conn), cfg)?;
            return RdmaChannel::from_engine(engine, cfg, local, peer);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: created by `listen`, destroyed once; events were acked.
        unsafe {
            if !self.id.is_null() {
                rdma_destroy_id(self.id);
            }
            rdma_destroy_event_channel(self.ch);
        }
    }
}

//! transit-net-listener: [`NetListener`], a server socket set that listens on
//! every address of a name and hands clients to a callback on the transit
//! main loop or to a synchronous caller (QEMU's `QIONetListener`).
//!
//! # What it does
//!
//! * [`NetListener::open_sync`] resolves the address with the process-wide
//!   [`Resolver`] (listen semantics) and listens on **every** address it
//!   yields: `tcp::PORT` is `0.0.0.0` and `::`, `tcp:localhost:PORT` is
//!   `127.0.0.1` and `::1`. An IPv6 socket is first made dual-stack; when
//!   that collides with an IPv4 socket on the same port it is retried with
//!   `IPV6_V6ONLY`. With port 0 the first socket gets a port from the kernel
//!   and the others reuse it, so all addresses share one [`port`]; if that
//!   port is taken on another address, the whole set is retried with a new
//!   kernel port. The call succeeds when at least one address listens (the
//!   first error is reported only if all fail), except that a wildcard
//!   address whose port another socket holds (`EADDRINUSE`) fails the
//!   whole call: `tcp::PORT` asked for both families, and listening on one
//!   alone would leave the other family's clients to whoever holds the
//!   port. It may be repeated to add more addresses; [`add`] adopts a
//!   socket that already listens.
//! * [`set_client_func`] installs one read watch per listening socket on a
//!   [`MainContext`]; on readiness the listener accepts (the listening
//!   sockets are non-blocking) until the backlog is empty, up to 64 clients
//!   per wakeup so a flood cannot starve the loop, and calls the callback
//!   with each client. Accepted clients are blocking, as in QEMU; a
//!   consumer that wants them non-blocking says so. Replacing or clearing the callback removes the old
//!   watches.
//! * [`wait_client`] accepts synchronously on any of the sockets with an
//!   optional timeout. Clients accepted in the same pass beyond the first
//!   are queued for the next call (QEMU closes them), and a callback
//!   installed later receives queued clients first.
//! * [`disconnect`] removes the watches, closes every socket, unlinks the
//!   UNIX socket paths this listener created, and closes queued clients.
//!   Dropping the listener does the same.
//!
//! # Accept errors never kill the listener
//!
//! A failed accept is counted ([`accept_errors`]) and logged to stderr at
//! most once per second per kind of error. Errors about one connection
//! (`ECONNABORTED`, `EPROTO`, `EINTR`, ...) move on to the next one. Errors
//! that would repeat at once (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, and
//! anything unexpected) would turn a level-triggered watch into a busy loop,
//! since the pending connection stays in the backlog; so the watches are
//! disarmed and re-armed by a 100 ms timer on the same context, and accepting
//! resumes by itself once fds are free again. [`wait_client`] returns such
//! an error to its caller, keeping the listener intact.
//!
//! # Threads
//!
//! A listener belongs to the thread that made it (it is not `Send`): the
//! watches live on a [`MainContext`], which is bound to one thread. Open a
//! listener on the thread that will accept on it. The accepted
//! [`SocketChannel`]s are `Send` and may go anywhere.
//!
//! # Example
//!
//! ```
//! use std::cell::RefCell;
//! use std::net::TcpStream;
//! use std::rc::Rc;
//! use std::time::Duration;
//! use transit_channel::main_loop::MainContext;
//! use transit_channel::SocketAddress;
//! use transit_net_listener::NetListener;
//!
//! let ctx = MainContext::new()?;
//! let mut listener = NetListener::with_name("incoming");
//! listener.open_sync(&"tcp:localhost:0".parse::<SocketAddress>()?, 16)?;
//! let port = listener.port().expect("a TCP port");
//!
//! // On the main loop:
//! let clients = Rc::new(RefCell::new(Vec::new()));
//! let sink = clients.clone();
//! listener.set_client_func(&ctx, move |client| sink.borrow_mut().push(client));
//! let _a = TcpStream::connect(("127.0.0.1", port))?;
//! while clients.borrow().is_empty() {
//!     ctx.iteration(true);
//! }
//!
//! // Or synchronously, without a main loop:
//! listener.clear_client_func();
//! let _b = TcpStream::connect(("127.0.0.1", port))?;
//! let client = listener.wait_client(Some(Duration::from_secs(5)))?;
//! assert!(client.name().starts_with("incoming"));
//! # use transit_channel::Channel;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`port`]: NetListener::port
//! [`add`]: NetListener::add
//! [`set_client_func`]: NetListener::set_client_func
//! [`wait_client`]: NetListener::wait_client
//! [`disconnect`]: NetListener::disconnect
//! [`accept_errors`]: NetListener::accept_errors

mod accept_errors;
mod open;
mod poll;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};
use std::time::Duration;

use transit_channel::main_loop::{ControlFlow, MainContext, SourceId};
use transit_channel::socket::SocketChannel;
use transit_channel::{Channel, Condition, Error, Resolver, Result, SocketAddress, WatchFds};

use accept_errors::{AcceptErrors, Verdict, REARM_DELAY};

/// The most clients one watch wakeup accepts before yielding to the loop.
const MAX_ACCEPTS_PER_WAKEUP: usize = 64;

/// The default name of a listener.
const DEFAULT_NAME: &str = "net-listener";

/// The client callback.
type ClientFn = Box<dyn FnMut(SocketChannel)>;

/// Listening sockets on every address of a name; see the
/// [crate docs](crate).
#[doc(alias = "QIONetListener")]
pub struct NetListener {
    inner: Rc<RefCell<Inner>>,
}

/// One listening socket.
struct Listening {
    sock: SocketChannel,
}

/// The installed callback and its watches.
struct ClientWatch {
    ctx: MainContext,
    /// The callback; taken out while it runs, so a callback that replaces
    /// itself (or runs the loop recursively) never meets a borrowed cell.
    func: Rc<RefCell<Option<ClientFn>>>,
    /// One watch per listening socket while armed; empty while disarmed.
    watches: Vec<SourceId>,
    /// The re-arm timer while disarmed after an accept error.
    rearm: Option<SourceId>,
    /// The idle source delivering queued clients, if one is scheduled.
    flush: Option<SourceId>,
}

struct Inner {
    name: String,
    sockets: Vec<Listening>,
    connected: bool,
    /// Clients accepted but not yet handed out.
    queue: VecDeque<SocketChannel>,
    client: Option<ClientWatch>,
    errors: AcceptErrors,
}

impl fmt::Debug for NetListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("NetListener")
            .field("name", &inner.name)
            .field("connected", &inner.connected)
            .field(
                "addresses",
                &inner
                    .sockets
                    .iter()
                    .map(|l| l.sock.local_address())
                    .collect::<Vec<_>>(),
            )
            .field("queued", &inner.queue.len())
            .field("client_func", &inner.client.is_some())
            .finish()
    }
}

impl Default for NetListener {
    fn default() -> NetListener {
        NetListener::new()
    }
}

impl NetListener {
    /// A listener with no sockets, named `net-listener`.
    #[doc(alias = "qio_net_listener_new")]
    pub fn new() -> NetListener {
        NetListener::with_name(DEFAULT_NAME)
    }

    /// A listener named `name`; the name prefixes every socket's name and
    /// every error.
    #[doc(alias = "qio_net_listener_set_name")]
    pub fn with_name(name: impl Into<String>) -> NetListener {
        NetListener {
            inner: Rc::new(RefCell::new(Inner {
                name: name.into(),
                sockets: Vec::new(),
                connected: false,
                queue: VecDeque::new(),
                client: None,
                errors: AcceptErrors::default(),
            })),
        }
    }

    /// The listener's name.
    pub fn name(&self) -> String {
        self.inner.borrow().name.clone()
    }

    /// Listen on every address `addr` resolves to, with `backlog` pending
    /// connections each. See the [crate docs](crate) for the rules.
    #[doc(alias = "qio_net_listener_open_sync")]
    pub fn open_sync(&mut self, addr: &SocketAddress, backlog: u32) -> Result<()> {
        let name = self.name();
        let resolved = Resolver::global()
            .lookup_sync(addr)
            .map_err(|e| rename(e, &name))?;
        let opened = open::listen_all(&name, addr, &resolved, backlog)?;
        for sock in opened {
            self.add(sock)?;
        }
        Ok(())
    }

    /// Adopt a socket that already listens (anything else is
    /// [`Error::Unsupported`]). It is made non-blocking and renamed after
    /// the listener. Closing it on disconnect unlinks its
    /// UNIX path if the socket itself bound that path.
    #[doc(alias = "qio_net_listener_add")]
    pub fn add(&mut self, mut sock: SocketChannel) -> Result<()> {
        let name = self.name();
        if !sock.is_listener() {
            return Err(Error::unsupported(
                &name,
                "adopting a socket that is not listening",
            ));
        }
        let local = sock
            .local_address()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "(unknown address)".into());
        sock.set_name(format!("{name} listen {local}"));
        sock.set_blocking(false)?;
        let idx = {
            let mut inner = self.inner.borrow_mut();
            inner.sockets.push(Listening { sock });
            inner.connected = true;
            inner.sockets.len() - 1
        };
        // A callback already installed watches the new socket too.
        let armed = {
            let inner = self.inner.borrow();
            inner.client.as_ref().is_some_and(|c| c.rearm.is_none())
        };
        if armed {
            let id = add_watch(&self.inner, idx);
            if let (Some(id), Some(c)) = (id, self.inner.borrow_mut().client.as_mut()) {
                c.watches.push(id);
            }
        }
        Ok(())
    }

    /// Call `func` with every client accepted on `ctx`'s thread while that
    /// context is iterated, replacing (and unwatching) any previous
    /// callback. Clients already queued by [`wait_client`](Self::wait_client)
    /// are delivered first, from an idle callback.
    #[doc(alias = "qio_net_listener_set_client_func")]
    pub fn set_client_func(
        &mut self,
        ctx: &MainContext,
        func: impl FnMut(SocketChannel) + 'static,
    ) {
        self.clear_client_func();
        {
            let mut inner = self.inner.borrow_mut();
            inner.client = Some(ClientWatch {
                ctx: ctx.clone(),
                func: Rc::new(RefCell::new(Some(Box::new(func)))),
                watches: Vec::new(),
                rearm: None,
                flush: None,
            });
        }
        arm(&self.inner);
        schedule_flush(&self.inner);
    }

    /// Remove the callback and its watches; clients that arrive from now on
    /// wait in the backlog for [`wait_client`](Self::wait_client) or a new
    /// callback.
    pub fn clear_client_func(&mut self) {
        let old = self.inner.borrow_mut().client.take();
        if let Some(old) = old {
            remove_sources(&old);
        }
    }

    /// Accept one client synchronously from any of the sockets, waiting at
    /// most `timeout` (forever if `None`). A queued client is returned at
    /// once. On timeout the error is [`Error::Os`] with
    /// `io::ErrorKind::TimedOut`; an accept error that would repeat at once
    /// (`EMFILE`, ...) is returned too, and the listener stays usable.
    #[doc(alias = "qio_net_listener_wait_client")]
    pub fn wait_client(&mut self, timeout: Option<Duration>) -> Result<SocketChannel> {
        let deadline = poll::deadline_after(timeout);
        loop {
            let fds = {
                let mut inner = self.inner.borrow_mut();
                if let Some(client) = inner.queue.pop_front() {
                    return Ok(client);
                }
                if inner.sockets.is_empty() {
                    return Err(Error::closed(&inner.name));
                }
                inner
                    .sockets
                    .iter()
                    .map(|l| listening_fd(&l.sock))
                    .collect::<Vec<_>>()
            };
            let ready = poll::wait_readable(&fds, deadline)
                .map_err(|e| Error::os(&self.name(), "wait for a client", e))?;
            if ready.is_empty() {
                let name = self.name();
                return Err(Error::Os {
                    channel: name,
                    op: "wait for a client".into(),
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no client within {:?}", timeout.unwrap_or_default()),
                    ),
                });
            }
            let mut inner = self.inner.borrow_mut();
            let mut fatal = None;
            for idx in ready {
                let (accepted, err) = inner.accept_batch(idx);
                inner.queue.extend(accepted);
                if let Some(e) = err {
                    fatal.get_or_insert(e);
                }
            }
            if let Some(client) = inner.queue.pop_front() {
                return Ok(client);
            }
            if let Some(e) = fatal {
                return Err(e);
            }
            // Only transient errors (the connection went away): wait again.
        }
    }

    /// Remove the watches, close every listening socket, unlink the UNIX
    /// paths this listener bound and close queued clients. The listener
    /// may be opened again afterwards.
    #[doc(alias = "qio_net_listener_disconnect")]
    pub fn disconnect(&mut self) {
        if let Some(client) = self.inner.borrow_mut().client.as_mut() {
            remove_sources(client);
            client.watches.clear();
            client.rearm = None;
            client.flush = None;
        }
        let (sockets, queue) = {
            let mut inner = self.inner.borrow_mut();
            inner.connected = false;
            (
                std::mem::take(&mut inner.sockets),
                std::mem::take(&mut inner.queue),
            )
        };
        drop(queue);
        for Listening { mut sock } in sockets {
            // Closing a UNIX listener it bound unlinks the path (checking
            // it is still the same socket file).
            let _ = sock.close();
        }
    }

    /// True after a successful open or add, until [`disconnect`](Self::disconnect).
    #[doc(alias = "qio_net_listener_is_connected")]
    pub fn is_connected(&self) -> bool {
        self.inner.borrow().connected
    }

    /// The local address of every listening socket, in listening order.
    pub fn local_addresses(&self) -> Vec<SocketAddress> {
        self.inner
            .borrow()
            .sockets
            .iter()
            .filter_map(|l| l.sock.local_address())
            .collect()
    }

    /// The local address of socket `n` (QEMU's `get_local_address`).
    #[doc(alias = "qio_net_listener_get_local_address")]
    pub fn local_address(&self, n: usize) -> Option<SocketAddress> {
        self.inner
            .borrow()
            .sockets
            .get(n)
            .and_then(|l| l.sock.local_address())
    }

    /// How many sockets listen.
    pub fn num_sockets(&self) -> usize {
        self.inner.borrow().sockets.len()
    }

    /// The TCP port of the first inet socket (the real one after port 0).
    pub fn port(&self) -> Option<u16> {
        self.local_addresses().into_iter().find_map(|a| match a {
            SocketAddress::Inet { port, .. } => Some(port),
            _ => None,
        })
    }

    /// How many accepts failed since the listener was made.
    pub fn accept_errors(&self) -> u64 {
        self.inner.borrow().errors.total()
    }
}

impl Drop for NetListener {
    fn drop(&mut self) {
        self.disconnect();
        self.clear_client_func();
    }
}

impl Inner {
    /// Accept from socket `idx` until it would block, up to
    /// [`MAX_ACCEPTS_PER_WAKEUP`] clients. Returns the clients and, if
    /// accepting must pause, the error that says why.
    fn accept_batch(&mut self, idx: usize) -> (Vec<SocketChannel>, Option<Error>) {
        let mut clients = Vec::new();
        let Some(listening) = self.sockets.get_mut(idx) else {
            return (clients, None);
        };
        for _ in 0..MAX_ACCEPTS_PER_WAKEUP {
            match listening.sock.accept() {
                Ok(mut client) => {
                    if let Err(e) = client.set_blocking(true) {
                        // Unusual, and about this client only: drop it.
                        self.errors.note(&e);
                        continue;
                    }
                    let peer = client
                        .peer_address()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "(unknown peer)".into());
                    client.set_name(format!("{} client {peer}", self.name));
                    clients.push(client);
                }
                Err(e) if e.is_would_block() => break,
                Err(e) => {
                    // The socket's name starts with the listener's.
                    self.errors.note(&e);
                    if accept_errors::verdict(&e) == Verdict::Backoff {
                        return (clients, Some(e));
                    }
                }
            }
        }
        (clients, None)
    }
}

/// The fd to poll for a listening socket.
fn listening_fd(sock: &SocketChannel) -> i32 {
    match sock.watch_source().fds {
        WatchFds::One(fd) => fd,
        WatchFds::Pair { read, .. } => read,
        WatchFds::None => -1,
    }
}

/// Replace the channel name in an error with the listener's.
fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::Os { op, source, .. } => Error::Os {
            channel: name.to_owned(),
            op,
            source,
        },
        other => other,
    }
}

/// Remove every source a callback installed.
fn remove_sources(c: &ClientWatch) {
    for id in &c.watches {
        c.ctx.remove(*id);
    }
    if let Some(id) = c.rearm {
        c.ctx.remove(id);
    }
    if let Some(id) = c.flush {
        c.ctx.remove(id);
    }
}

/// Install a watch on every listening socket.
fn arm(inner: &Rc<RefCell<Inner>>) {
    let n = inner.borrow().sockets.len();
    let ids: Vec<SourceId> = (0..n).filter_map(|idx| add_watch(inner, idx)).collect();
    if let Some(c) = inner.borrow_mut().client.as_mut() {
        c.watches = ids;
        c.rearm = None;
    }
}

/// Remove the watches and re-arm them after [`REARM_DELAY`].
fn disarm(inner: &Rc<RefCell<Inner>>) {
    let weak = Rc::downgrade(inner);
    let mut guard = inner.borrow_mut();
    let Some(c) = guard.client.as_mut() else {
        return;
    };
    if c.rearm.is_some() {
        return;
    }
    for id in c.watches.drain(..) {
        c.ctx.remove(id);
    }
    let func = Rc::downgrade(&c.func);
    let id = c.ctx.timeout_add(REARM_DELAY, move || {
        if let Some(inner) = weak.upgrade() {
            if same_callback(&inner, &func) {
                arm(&inner);
            }
        }
        ControlFlow::Remove
    });
    c.rearm = Some(id);
}

/// True if the installed callback is still the one `func` points at.
fn same_callback(inner: &Rc<RefCell<Inner>>, func: &Weak<RefCell<Option<ClientFn>>>) -> bool {
    let guard = inner.borrow();
    match (guard.client.as_ref(), func.upgrade()) {
        (Some(c), Some(f)) => Rc::ptr_eq(&c.func, &f),
        _ => false,
    }
}

/// Watch socket `idx` of the installed callback.
fn add_watch(inner: &Rc<RefCell<Inner>>, idx: usize) -> Option<SourceId> {
    let guard = inner.borrow();
    let c = guard.client.as_ref()?;
    let ws = guard.sockets.get(idx)?.sock.watch_source();
    let weak = Rc::downgrade(inner);
    let func = Rc::downgrade(&c.func);
    let id = c.ctx.add_watch(&ws, Condition::IN, move |_cond| {
        let Some(inner) = weak.upgrade() else {
            return ControlFlow::Remove;
        };
        if !same_callback(&inner, &func) {
            return ControlFlow::Remove;
        }
        let (clients, err) = inner.borrow_mut().accept_batch(idx);
        if err.is_some() {
            disarm(&inner);
        }
        deliver(&inner, clients);
        // `disarm` removed this watch if it had to; otherwise keep it.
        ControlFlow::Continue
    });
    Some(id)
}

/// Hand `clients` to the current callback, or queue them if there is none
/// (or it is running already).
fn deliver(inner: &Rc<RefCell<Inner>>, clients: Vec<SocketChannel>) {
    let mut clients = clients.into_iter();
    while let Some(client) = clients.next() {
        let slot = inner.borrow().client.as_ref().map(|c| c.func.clone());
        let func = slot.as_ref().and_then(|s| s.borrow_mut().take());
        match (slot, func) {
            (Some(slot), Some(mut func)) => {
                func(client);
                let mut cell = slot.borrow_mut();
                if cell.is_none() {
                    *cell = Some(func);
                }
            }
            _ => {
                let mut guard = inner.borrow_mut();
                guard.queue.push_back(client);
                guard.queue.extend(clients);
                drop(guard);
                schedule_flush(inner);
                return;
            }
        }
    }
}

/// Deliver queued clients from an idle callback, if a callback is set and
/// anything is queued.
fn schedule_flush(inner: &Rc<RefCell<Inner>>) {
    let weak = Rc::downgrade(inner);
    let mut guard = inner.borrow_mut();
    if guard.queue.is_empty() {
        return;
    }
    let Some(c) = guard.client.as_mut() else {
        return;
    };
    if c.flush.is_some() {
        return;
    }
    let func = Rc::downgrade(&c.func);
    let id = c.ctx.idle_add(move || {
        let Some(inner) = weak.upgrade() else {
            return ControlFlow::Remove;
        };
        if !same_callback(&inner, &func) {
            return ControlFlow::Remove;
        }
        let queued: Vec<SocketChannel> = {
            let mut guard = inner.borrow_mut();
            if let Some(c) = guard.client.as_mut() {
                c.flush = None;
            }
            guard.queue.drain(..).collect()
        };
        deliver(&inner, queued);
        ControlFlow::Remove
    });
    c.flush = Some(id);
}

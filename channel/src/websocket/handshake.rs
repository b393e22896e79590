//! The HTTP upgrade (RFC 6455 section 4) as a resumable state machine.

use std::cell::RefCell;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::Instant;

use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::{client, derive_accept_key, server};
use tungstenite::http::{self, HeaderValue};

use super::{Role, WebSocketChannel, WebSocketConfig, SUBPROTOCOL};
use crate::channel::{Channel, Condition, ReadFlags, WatchSource, WriteFlags};
use crate::error::{Cause, Error, Result};
use crate::io::wait_blocking;
use crate::main_loop::{ControlFlow, MainContext, SourceId};
use crate::null::NullChannel;

/// Bytes read from the peer per call while looking for the header end.
const READ_CHUNK: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Sending `out[out_pos..]` (the request, the answer or a refusal).
    Write,
    /// Reading the peer's HTTP header into `inbuf`.
    Read,
    Done,
    Failed,
}

/// A WebSocket upgrade in progress; see the [module documentation](super).
///
/// Made by [`WebSocketChannel::client`] or [`WebSocketChannel::server`];
/// finished by [`handshake_blocking`](Self::handshake_blocking),
/// [`handshake_task`](Self::handshake_task), or by calling
/// [`advance`](Self::advance) until it returns `Ok(())` and then
/// [`into_channel`](Self::into_channel).
pub struct WebSocketHandshake {
    name: String,
    inner: Box<dyn Channel>,
    role: Role,
    config: WebSocketConfig,
    stage: Stage,
    inbuf: Vec<u8>,
    /// End of the HTTP header in `inbuf`; what follows is frame data.
    header_end: usize,
    out: Vec<u8>,
    out_pos: usize,
    /// Client: the `Sec-WebSocket-Accept` we expect.
    accept_key: String,
    /// Server: the request path we serve.
    expected_path: String,
    /// Server: the error to report once the refusal is written.
    refusal: Option<String>,
    failed: Option<String>,
    protocol: Option<String>,
}

impl std::fmt::Debug for WebSocketHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketHandshake")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl WebSocketChannel {
    /// Start a client handshake over `inner`: `GET path` with `Host: host`
    /// (for example `127.0.0.1:4444`, see
    /// [`WebSocketUrl::host_header`](super::WebSocketUrl::host_header)),
    /// offering the `binary` subprotocol.
    ///
    /// Fails only if `host` or `path` cannot go into an HTTP request.
    pub fn client(
        inner: Box<dyn Channel>,
        host: &str,
        path: &str,
        config: WebSocketConfig,
    ) -> Result<WebSocketHandshake> {
        let name = format!("ws://{host}{path} ({})", inner.name());
        let bad = |e: &dyn std::fmt::Display| {
            Error::protocol(&name, format_args!("cannot build the upgrade request: {e}"))
        };
        if !path.starts_with('/') {
            return Err(bad(&"the path must start with '/'"));
        }
        let key = client::generate_key();
        let request = http::Request::builder()
            .method("GET")
            .uri(path)
            .header("Host", host)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", key.as_str())
            .header("Sec-WebSocket-Protocol", SUBPROTOCOL)
            .body(())
            .map_err(|e| bad(&e))?;
        let (out, key) = client::generate_request(request).map_err(|e| bad(&e))?;
        let mut hs = WebSocketHandshake::new(name, inner, Role::Client, config);
        hs.accept_key = derive_accept_key(key.as_bytes());
        hs.out = out;
        hs.stage = Stage::Write;
        Ok(hs)
    }

    /// Start a server handshake over `inner` (an accepted connection) that
    /// serves requests for `expected_path` (for example `/`).
    pub fn server(
        inner: Box<dyn Channel>,
        expected_path: &str,
        config: WebSocketConfig,
    ) -> WebSocketHandshake {
        let name = format!("ws server {expected_path} ({})", inner.name());
        let mut hs = WebSocketHandshake::new(name, inner, Role::Server, config);
        hs.expected_path = expected_path.to_owned();
        hs.stage = Stage::Read;
        hs
    }
}

impl WebSocketHandshake {
    fn new(
        name: String,
        inner: Box<dyn Channel>,
        role: Role,
        config: WebSocketConfig,
    ) -> WebSocketHandshake {
        WebSocketHandshake {
            name,
            inner,
            role,
            config: config.normalized(),
            stage: Stage::Read,
            inbuf: Vec::new(),
            header_end: 0,
            out: Vec::new(),
            out_pos: 0,
            accept_key: String::new(),
            expected_path: String::new(),
            refusal: None,
            failed: None,
            protocol: None,
        }
    }

    /// The handshake's name (used in its errors).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the upgrade succeeded.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// What [`advance`](Self::advance) waits for after `WouldBlock`:
    /// `IN` while reading the peer's header, `OUT` while writing ours.
    pub fn interest(&self) -> Condition {
        match self.stage {
            Stage::Read => Condition::IN,
            _ => Condition::OUT,
        }
    }

    /// The inner channel's watch (to wait for [`interest`](Self::interest)).
    pub fn watch_source(&self) -> WatchSource {
        self.inner.watch_source()
    }

    /// Make as much progress as the inner channel allows: `Ok(())` when the
    /// upgrade is complete, [`Error::WouldBlock`] when the inner channel is
    /// non-blocking and not ready (wait for [`interest`](Self::interest) on
    /// [`watch_source`](Self::watch_source) and call again), any other error
    /// when the upgrade failed (later calls repeat it).
    pub fn advance(&mut self) -> Result<()> {
        loop {
            match self.stage {
                Stage::Done => return Ok(()),
                Stage::Failed => {
                    let msg = self.failed.clone().unwrap_or_default();
                    return Err(Error::layer(
                        &self.name,
                        msg,
                        Cause::WebSocket { close_code: None },
                    ));
                }
                Stage::Write => {
                    while self.out_pos < self.out.len() {
                        let r = self.inner.writev(
                            &[IoSlice::new(&self.out[self.out_pos..])],
                            &[],
                            WriteFlags::empty(),
                        );
                        match r {
                            Ok(0) => return Err(self.fail_msg(
                                "the connection accepted no bytes during the websocket handshake"
                                    .into(),
                            )),
                            Ok(n) => self.out_pos += n,
                            Err(Error::WouldBlock) => return Err(Error::WouldBlock),
                            Err(e) => return Err(self.fail_err(e)),
                        }
                    }
                    if let Some(msg) = self.refusal.take() {
                        return Err(self.fail_msg(msg));
                    }
                    self.stage = match self.role {
                        Role::Client => Stage::Read,
                        Role::Server => Stage::Done,
                    };
                }
                Stage::Read => {
                    let old = self.inbuf.len();
                    self.inbuf.resize(old + READ_CHUNK, 0);
                    let r = self.inner.readv(
                        &mut [std::io::IoSliceMut::new(&mut self.inbuf[old..])],
                        None,
                        ReadFlags::empty(),
                    );
                    let n = match r {
                        Ok(n) => n,
                        Err(e) => {
                            self.inbuf.truncate(old);
                            return match e {
                                Error::WouldBlock => Err(Error::WouldBlock),
                                e => Err(self.fail_err(e)),
                            };
                        }
                    };
                    self.inbuf.truncate(old + n);
                    if n == 0 {
                        let what = match self.role {
                            Role::Client => "response",
                            Role::Server => "upgrade request",
                        };
                        return Err(self.fail_msg(format!(
                            "the peer closed the connection during the websocket handshake \
                             ({old} bytes of its {what} arrived)"
                        )));
                    }
                    let from = old.saturating_sub(3);
                    if let Some(i) = find_header_end(&self.inbuf[from..]) {
                        self.header_end = from + i;
                        if self.header_end > self.config.max_handshake_size {
                            self.too_big()?;
                            continue;
                        }
                        match self.role {
                            Role::Client => self.check_response()?,
                            Role::Server => self.answer_request(),
                        }
                    } else if self.inbuf.len() > self.config.max_handshake_size {
                        self.too_big()?;
                    }
                }
            }
        }
    }

    fn too_big(&mut self) -> Result<()> {
        let max = self.config.max_handshake_size;
        match self.role {
            Role::Client => Err(self.fail_msg(format!(
                "the server's handshake response exceeds {max} bytes"
            ))),
            Role::Server => {
                self.refuse(
                    431,
                    "Request Header Fields Too Large",
                    format!("upgrade request header exceeds {max} bytes"),
                );
                Ok(())
            }
        }
    }

    fn fail_msg(&mut self, msg: String) -> Error {
        self.stage = Stage::Failed;
        self.failed = Some(msg.clone());
        Error::layer(&self.name, msg, Cause::WebSocket { close_code: None })
    }

    fn fail_err(&mut self, e: Error) -> Error {
        self.stage = Stage::Failed;
        self.failed = Some(format!("websocket handshake failed: {e}"));
        e
    }

    /// Server: queue an HTTP error answer; the handshake fails with `msg`
    /// once it is written.
    fn refuse(&mut self, code: u16, phrase: &str, msg: String) {
        let body = format!("{msg}\n");
        self.out = format!(
            "HTTP/1.1 {code} {phrase}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nSec-WebSocket-Version: 13\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        self.out_pos = 0;
        self.refusal = Some(format!(
            "refused the websocket upgrade with {code} {phrase}: {msg}"
        ));
        self.stage = Stage::Write;
    }

    /// Server: check the request and queue the 101 answer or a refusal.
    fn answer_request(&mut self) {
        let head = &self.inbuf[..self.header_end];
        let req = match server::Request::try_parse(head) {
            Ok(Some((_, req))) => req,
            Ok(None) => {
                return self.refuse(400, "Bad Request", "incomplete upgrade request".into());
            }
            Err(e) => {
                let first = first_line(head);
                return self.refuse(
                    400,
                    "Bad Request",
                    format!("malformed upgrade request {first:?}: {e}"),
                );
            }
        };
        let path = req.uri().path();
        if path != self.expected_path {
            let msg = format!(
                "no websocket endpoint at path {path:?} (this server serves {:?})",
                self.expected_path
            );
            return self.refuse(404, "Not Found", msg);
        }
        if req.headers().get("Host").is_none() {
            return self.refuse(
                400,
                "Bad Request",
                "upgrade request without a Host header".into(),
            );
        }
        let mut response = match server::create_response(&req) {
            Ok(r) => r,
            Err(e) => {
                return self.refuse(400, "Bad Request", format!("invalid upgrade request: {e}"));
            }
        };
        let key_len = req
            .headers()
            .get("Sec-WebSocket-Key")
            .map_or(0, |k| k.as_bytes().len());
        if key_len != 24 {
            return self.refuse(
                400,
                "Bad Request",
                format!(
                    "Sec-WebSocket-Key has {key_len} characters, expected 24 (base64 of 16 bytes)"
                ),
            );
        }
        if let Some(offer) = req.headers().get("Sec-WebSocket-Protocol") {
            let offer = String::from_utf8_lossy(offer.as_bytes()).into_owned();
            if !offer.split(',').any(|p| p.trim() == SUBPROTOCOL) {
                return self.refuse(
                    400,
                    "Bad Request",
                    format!(
                        "the client offered websocket subprotocols {offer:?}; this server speaks only {SUBPROTOCOL:?}"
                    ),
                );
            }
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
            self.protocol = Some(SUBPROTOCOL.to_owned());
        }
        let mut out = Vec::with_capacity(256);
        if let Err(e) = server::write_response(&mut out, &response) {
            return self.refuse(
                500,
                "Internal Server Error",
                format!("cannot format the upgrade response: {e}"),
            );
        }
        self.out = out;
        self.out_pos = 0;
        self.stage = Stage::Write;
    }

    /// Client: check the server's answer.
    fn check_response(&mut self) -> Result<()> {
        let head = &self.inbuf[..self.header_end];
        let resp = match client::Response::try_parse(head) {
            Ok(Some((_, r))) => r,
            Ok(None) => return Err(self.fail_msg("incomplete websocket handshake response".into())),
            Err(e) => {
                let first = first_line(head);
                return Err(self.fail_msg(format!(
                    "malformed websocket handshake response {first:?}: {e}"
                )));
            }
        };
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let body = &self.inbuf[self.header_end..];
            let body = String::from_utf8_lossy(&body[..body.len().min(200)]);
            // The server's text: escaped before it enters our error.
            let body = crate::peer_text::escape(body.trim());
            let msg = format!(
                "the server refused the websocket upgrade: {}{}",
                resp.status(),
                if body.is_empty() {
                    String::new()
                } else {
                    format!(": {body}")
                }
            );
            return Err(self.fail_msg(msg));
        }
        let h = resp.headers();
        let has = |name: &str, token: &str| {
            h.get(name).is_some_and(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(token))
            })
        };
        if !has("Upgrade", "websocket") {
            return Err(
                self.fail_msg("websocket handshake response lacks Upgrade: websocket".into())
            );
        }
        if !has("Connection", "upgrade") {
            return Err(
                self.fail_msg("websocket handshake response lacks Connection: Upgrade".into())
            );
        }
        if h.get("Sec-WebSocket-Accept").map(|v| v.as_bytes()) != Some(self.accept_key.as_bytes()) {
            return Err(self.fail_msg(
                "websocket handshake response has a wrong Sec-WebSocket-Accept key".into(),
            ));
        }
        if let Some(p) = h.get("Sec-WebSocket-Protocol") {
            if p.as_bytes() != SUBPROTOCOL.as_bytes() {
                let p = String::from_utf8_lossy(p.as_bytes()).into_owned();
                return Err(self.fail_msg(format!(
                    "the server chose websocket subprotocol {p:?}; we offered only {SUBPROTOCOL:?}"
                )));
            }
            self.protocol = Some(SUBPROTOCOL.to_owned());
        }
        if h.get("Sec-WebSocket-Extensions").is_some() {
            return Err(
                self.fail_msg("the server chose a websocket extension, but we offered none".into())
            );
        }
        self.stage = Stage::Done;
        Ok(())
    }

    /// The channel, once [`advance`](Self::advance) returned `Ok(())`.
    pub fn into_channel(mut self) -> Result<WebSocketChannel> {
        self.take_channel()
    }

    /// Move the finished handshake's parts into a channel (leaves `self`
    /// with a closed placeholder inner channel).
    fn take_channel(&mut self) -> Result<WebSocketChannel> {
        if self.stage != Stage::Done {
            return Err(Error::protocol(
                &self.name,
                "the websocket handshake is not complete",
            ));
        }
        let name = self.name.clone();
        let tail = self.inbuf.split_off(self.header_end);
        let inner = std::mem::replace(&mut self.inner, Box::new(NullChannel::new()));
        self.stage = Stage::Failed;
        self.failed = Some("the channel was already taken from this handshake".into());
        Ok(WebSocketChannel::new(
            name,
            inner,
            self.role,
            self.config.clone(),
            &tail,
            self.protocol.take(),
        ))
    }

    /// Run the handshake to the end, waiting on the inner channel's fds when
    /// it is non-blocking, for at most
    /// [`WebSocketConfig::handshake_timeout`].
    ///
    /// A blocking inner channel is switched to non-blocking mode for the
    /// handshake (so the timeout holds) and back afterwards.
    pub fn handshake_blocking(mut self) -> Result<WebSocketChannel> {
        let deadline = self
            .config
            .handshake_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let restore = deadline.is_some() && self.inner.is_blocking();
        if restore {
            self.inner.set_blocking(false)?;
        }
        let r = self.drive_until(deadline);
        match r {
            Ok(mut ch) if restore => {
                ch.set_blocking(true)?;
                Ok(ch)
            }
            r => r,
        }
    }

    fn drive_until(&mut self, deadline: Option<Instant>) -> Result<WebSocketChannel> {
        loop {
            match self.advance() {
                Ok(()) => return self.take_channel(),
                Err(Error::WouldBlock) => {}
                Err(e) => return Err(e),
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.timed_out());
                    }
                    Some(left)
                }
                None => None,
            };
            wait_blocking(&self.inner.watch_source(), self.interest(), left)?;
        }
    }

    fn timed_out(&mut self) -> Error {
        let t = self.config.handshake_timeout.unwrap_or_default();
        let what = match (self.role, self.stage) {
            (Role::Client, Stage::Read) => "waiting for the server's response",
            (Role::Server, Stage::Read) => "waiting for the client's upgrade request",
            _ => "sending our half",
        };
        self.fail_msg(format!(
            "websocket handshake timed out after {:.1} s {what}",
            t.as_secs_f64()
        ))
    }

    /// Run the handshake on `ctx`: watches on the inner channel drive it,
    /// and `done` runs on the context's thread with the channel or the
    /// error (also after [`WebSocketConfig::handshake_timeout`]). The
    /// returned handle cancels it; `done` never runs after a cancel.
    pub fn handshake_task(
        self,
        ctx: &MainContext,
        done: impl FnOnce(Result<WebSocketChannel>) + 'static,
    ) -> HandshakeTask {
        let timeout = self.config.handshake_timeout;
        let state = Rc::new(RefCell::new(TaskState {
            ctx: ctx.clone(),
            hs: Some(self),
            done: Some(Box::new(done)),
            watch: None,
            timer: None,
        }));
        if let Some(t) = timeout {
            let st = Rc::clone(&state);
            let id = ctx.timeout_add(t, move || {
                st.borrow_mut().timer = None;
                let err = match st.borrow_mut().hs.as_mut() {
                    Some(hs) => hs.timed_out(),
                    None => return ControlFlow::Remove,
                };
                finish(&st, Err(err));
                ControlFlow::Remove
            });
            state.borrow_mut().timer = Some(id);
        }
        // The first watch fires at once if the inner channel is ready; `done`
        // never runs before this returns.
        TaskState::arm(&state);
        HandshakeTask { state }
    }
}

type DoneFn = Box<dyn FnOnce(Result<WebSocketChannel>)>;

struct TaskState {
    ctx: MainContext,
    hs: Option<WebSocketHandshake>,
    done: Option<DoneFn>,
    watch: Option<(SourceId, Condition)>,
    timer: Option<SourceId>,
}

impl TaskState {
    /// Advance; on `WouldBlock` make sure a watch for the current interest
    /// is armed. Returns whether the calling watch (if any) stays.
    fn step(state: &Rc<RefCell<TaskState>>) -> ControlFlow {
        let result = {
            let mut st = state.borrow_mut();
            let Some(hs) = st.hs.as_mut() else {
                return ControlFlow::Remove;
            };
            match hs.advance() {
                Err(Error::WouldBlock) => None,
                Ok(()) => Some(Ok(())),
                Err(e) => Some(Err(e)),
            }
        };
        match result {
            None => TaskState::arm(state),
            Some(r) => {
                let r = r.and_then(|()| {
                    let hs = state.borrow_mut().hs.take();
                    match hs {
                        Some(hs) => hs.into_channel(),
                        None => unreachable_state(),
                    }
                });
                finish(state, r);
                ControlFlow::Remove
            }
        }
    }

    /// Keep the watch that matches the handshake's interest; replace it if
    /// the interest changed.
    fn arm(state: &Rc<RefCell<TaskState>>) -> ControlFlow {
        let (ws, cond, ctx, old) = {
            let st = state.borrow();
            let Some(hs) = st.hs.as_ref() else {
                return ControlFlow::Remove;
            };
            let cond = hs.interest();
            if let Some((_, c)) = st.watch {
                if c == cond {
                    return ControlFlow::Continue;
                }
            }
            (hs.watch_source(), cond, st.ctx.clone(), st.watch)
        };
        let st2 = Rc::clone(state);
        let id = ctx.add_watch(&ws, cond, move |_| TaskState::step(&st2));
        state.borrow_mut().watch = Some((id, cond));
        if let Some((old, _)) = old {
            ctx.remove(old);
        }
        // The calling watch (if it was `old`) is already removed; a new
        // one carries on.
        ControlFlow::Continue
    }
}

fn unreachable_state() -> Result<WebSocketChannel> {
    Err(Error::protocol(
        "websocket handshake",
        "handshake state lost",
    ))
}

/// Remove the sources and run `done` once.
fn finish(state: &Rc<RefCell<TaskState>>, result: Result<WebSocketChannel>) {
    let (done, ctx, watch, timer) = {
        let mut st = state.borrow_mut();
        st.hs = None;
        (
            st.done.take(),
            st.ctx.clone(),
            st.watch.take(),
            st.timer.take(),
        )
    };
    if let Some((id, _)) = watch {
        ctx.remove(id);
    }
    if let Some(id) = timer {
        ctx.remove(id);
    }
    if let Some(done) = done {
        done(result);
    }
}

/// A handshake running on a main context; see
/// [`WebSocketHandshake::handshake_task`].
pub struct HandshakeTask {
    state: Rc<RefCell<TaskState>>,
}

impl std::fmt::Debug for HandshakeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeTask")
            .field("running", &self.is_running())
            .finish()
    }
}

impl HandshakeTask {
    /// True until `done` ran or the task was cancelled.
    pub fn is_running(&self) -> bool {
        self.state.borrow().done.is_some()
    }

    /// Stop: remove the watches and timer and drop the handshake (closing
    /// the inner channel). `done` will not run. No-op once finished.
    pub fn cancel(&self) {
        let (ctx, watch, timer, hs) = {
            let mut st = self.state.borrow_mut();
            st.done = None;
            (
                st.ctx.clone(),
                st.watch.take(),
                st.timer.take(),
                st.hs.take(),
            )
        };
        if let Some((id, _)) = watch {
            ctx.remove(id);
        }
        if let Some(id) = timer {
            ctx.remove(id);
        }
        if let Some(mut hs) = hs {
            let _ = hs.inner.close();
        }
    }
}

/// Offset just past the first `\r\n\r\n` in `buf`.
fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The first line of `head`, for error messages.
fn first_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = &line[..line.len().min(120)];
    String::from_utf8_lossy(line).trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn header_end_found_across_chunks() {
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n\r\nxyz"), Some(18));
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n"), None);
    }
}

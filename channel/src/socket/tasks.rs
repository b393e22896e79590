//! Connect and listen as [`Task`]s: name resolution and a blocking
//! `connect` run on a worker thread, the result arrives on the context's
//! thread (QEMU's `qio_channel_socket_connect_async`).

use crate::address::SocketAddress;
use crate::error::Result;
use crate::main_loop::MainContext;
use crate::task::{Task, TaskHandle};

use super::SocketChannel;

impl SocketChannel {
    /// Connect to `addr` on a worker thread; `done` runs on `ctx`'s thread
    /// with the connected channel or the error.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use transit_channel::main_loop::MainContext;
    /// use transit_channel::{Channel, SocketAddress, SocketChannel};
    ///
    /// let ctx = MainContext::new()?;
    /// let listener = SocketChannel::listen_sync(&"tcp:127.0.0.1:0".parse()?, 1)?;
    /// let addr = listener.local_address().expect("bound");
    /// let got = Rc::new(RefCell::new(None));
    /// let slot = got.clone();
    /// SocketChannel::connect_task(&ctx, addr, move |r| *slot.borrow_mut() = Some(r));
    /// while got.borrow().is_none() {
    ///     ctx.iteration(true);
    /// }
    /// assert!(got.borrow_mut().take().unwrap().is_ok());
    /// # Ok::<(), transit_channel::Error>(())
    /// ```
    #[doc(alias = "qio_channel_socket_connect_async")]
    pub fn connect_task(
        ctx: &MainContext,
        addr: SocketAddress,
        done: impl FnOnce(Result<SocketChannel>) + 'static,
    ) -> TaskHandle {
        let name = format!("connect {addr}");
        Task::run_in_thread(
            ctx,
            &name,
            move |_| SocketChannel::connect_sync(&addr),
            done,
        )
    }

    /// Listen on `addr` on a worker thread (the name may need a lookup);
    /// `done` runs on `ctx`'s thread with the listening channel.
    #[doc(alias = "qio_channel_socket_listen_async")]
    pub fn listen_task(
        ctx: &MainContext,
        addr: SocketAddress,
        backlog: u32,
        done: impl FnOnce(Result<SocketChannel>) + 'static,
    ) -> TaskHandle {
        let name = format!("listen {addr}");
        Task::run_in_thread(
            ctx,
            &name,
            move |_| SocketChannel::listen_sync(&addr, backlog),
            done,
        )
    }
}

//! A fault-injecting TCP proxy between one edge and the hub: the edge's
//! configuration names the proxy's port, and the proxy forwards each
//! connection to the hub's port until told to break it.
//!
//! Faults: [`Proxy::drop_all`] closes every connection (FIN),
//! [`Proxy::reset_all`] aborts them (RST); [`Proxy::set`] with
//! [`Mode::Stalled`] holds every byte in both directions (connections stay
//! open, new ones are accepted and held too) and with [`Mode::Cut`] closes
//! every connection and refuses new ones, until [`Mode::Open`] again.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Open,
    Stalled,
    Cut,
}

#[derive(Debug, Clone, Copy)]
struct State {
    mode: Mode,
    /// Bumped to end every connection made before.
    epoch: u64,
    /// Whether connections ended by the last bump are reset rather than
    /// closed.
    reset: bool,
}

/// One proxy, serving until the runtime it was started on shuts down.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    state: watch::Sender<State>,
}

impl Proxy {
    /// Listens on a port of the system's choosing on `runtime` and forwards
    /// to `upstream`.
    pub(crate) fn start(runtime: &tokio::runtime::Runtime, upstream: SocketAddr) -> Self {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, rx) = watch::channel(State {
            mode: Mode::Open,
            epoch: 0,
            reset: false,
        });
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let rx = rx.clone();
                tokio::spawn(connection(client, upstream, rx));
            }
        });
        Self { addr, state }
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.state.send_modify(|s| {
            if mode == Mode::Cut {
                s.epoch += 1;
                s.reset = false;
            }
            s.mode = mode;
        });
    }

    pub(crate) fn mode(&self) -> Mode {
        self.state.borrow().mode
    }

    pub(crate) fn drop_all(&self) {
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.reset = false;
        });
    }

    pub(crate) fn reset_all(&self) {
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.reset = true;
        });
    }
}

/// Forwards one connection until either end closes it or the proxy ends it.
async fn connection(mut client: TcpStream, upstream: SocketAddr, mut rx: watch::Receiver<State>) {
    let State { mode, epoch, .. } = *rx.borrow_and_update();
    if mode == Mode::Cut {
        abort(&client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // The hub is down: the edge sees its connection closed.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        tokio::select! {
            _ = pump(cr, sw, rx.clone()) => false,
            _ = pump(sr, cw, rx.clone()) => false,
            reset = ended(&mut rx, epoch) => reset,
        }
    };
    if reset {
        abort(&client);
        abort(&server);
    }
}

/// Makes the socket's close an RST.
fn abort(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// Resolves when the proxy ends connections of `epoch`: with whether to
/// reset them.
async fn ended(rx: &mut watch::Receiver<State>, epoch: u64) -> bool {
    loop {
        {
            let s = *rx.borrow_and_update();
            if s.epoch != epoch {
                return s.reset;
            }
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// Copies bytes one way, holding them while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    mut rx: watch::Receiver<State>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while rx.borrow_and_update().mode == Mode::Stalled {
            if rx.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

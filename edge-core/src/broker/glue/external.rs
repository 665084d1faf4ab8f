//! [`external::Client`](crate::broker::external::Client) on monoio: connect,
//! read into the client, write what it produces, keepalive, reconnect after a
//! delay. Runs on the calling thread (timer enabled, as for
//! [`serve`](crate::broker::serve)).

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::broker::proto::{Client, ExternalConfig, LocalMessage, PublishError};

const READ_BUF: usize = 16 * 1024;
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Shared {
    client: RefCell<Client>,
    /// Wakes the writer (bytes to send) and the reader (link closing).
    writer: RefCell<Option<Waker>>,
    reader: RefCell<Option<Waker>>,
    local: RefCell<Option<Waker>>,
    /// Set to end the current link.
    closing: RefCell<bool>,
    start: Instant,
}

/// The external-broker client shared with the rest of the edge.
#[derive(Debug, Clone)]
pub struct ClientHandle(Rc<Shared>);

fn wake(w: &RefCell<Option<Waker>>) {
    let w = w.borrow_mut().take();
    if let Some(w) = w {
        w.wake();
    }
}

impl ClientHandle {
    pub fn new(cfg: ExternalConfig) -> Self {
        ClientHandle(Rc::new(Shared {
            client: RefCell::new(Client::new(cfg)),
            writer: RefCell::new(None),
            reader: RefCell::new(None),
            local: RefCell::new(None),
            closing: RefCell::new(false),
            start: Instant::now(),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.0.start.elapsed().as_millis() as u64
    }

    /// Connected to the broker and subscribed to the edge's topics.
    pub fn is_subscribed(&self) -> bool {
        self.0.client.borrow().is_subscribed()
    }

    /// Publishes through the external broker (queued while disconnected).
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: u8,
    ) -> Result<(), PublishError> {
        let now = self.now_ms();
        let r = self.0.client.borrow_mut().publish(topic, payload, qos, now);
        wake(&self.0.writer);
        r
    }

    /// The next message received on the edge's topics.
    pub async fn next_local(&self) -> LocalMessage {
        poll_fn(|cx| match self.0.client.borrow_mut().poll_local() {
            Some(m) => Poll::Ready(m),
            None => {
                *self.0.local.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn close_link(&self) {
        *self.0.closing.borrow_mut() = true;
        wake(&self.0.reader);
        wake(&self.0.writer);
    }
}

/// Keeps a connection to the external broker, forever.
pub async fn run(handle: ClientHandle) {
    let (address, delay) = {
        let c = handle.0.client.borrow();
        (
            c.config().address.clone(),
            Duration::from_millis(c.config().reconnect_ms),
        )
    };
    loop {
        if let Ok(stream) = TcpStream::connect(address.as_str()).await {
            let _ = stream.set_nodelay(true);
            link(&handle, stream).await;
        }
        monoio::time::sleep(delay).await;
    }
}

async fn link(handle: &ClientHandle, stream: TcpStream) {
    *handle.0.closing.borrow_mut() = false;
    handle.0.client.borrow_mut().handle_link_up(handle.now_ms());
    let (mut rd, mut wr) = stream.into_split();
    let writer = monoio::spawn({
        let h = handle.clone();
        async move {
            loop {
                let next = poll_fn(|cx| {
                    if *h.0.closing.borrow() {
                        return Poll::Ready(None);
                    }
                    match h.0.client.borrow_mut().poll_transmit() {
                        Some(b) => Poll::Ready(Some(b)),
                        None => {
                            *h.0.writer.borrow_mut() = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    }
                })
                .await;
                let Some(bytes) = next else { break };
                if wr.write_all(bytes).await.0.is_err() {
                    h.close_link();
                    break;
                }
            }
            let _ = wr.shutdown().await;
        }
    });
    let timer = monoio::spawn({
        let h = handle.clone();
        async move {
            while !*h.0.closing.borrow() {
                let now = h.now_ms();
                let next = h.0.client.borrow().poll_timeout();
                let wait = next.map_or(TICK, |d| {
                    Duration::from_millis(d.saturating_sub(now)).min(TICK)
                });
                monoio::time::sleep(wait).await;
                let now = h.now_ms();
                let r = h.0.client.borrow_mut().handle_timeout(now);
                match r {
                    Ok(()) => wake(&h.0.writer),
                    Err(_) => h.close_link(),
                }
            }
        }
    });
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        buf.clear();
        let closed = poll_fn(|cx| {
            if *handle.0.closing.borrow() {
                Poll::Ready(())
            } else {
                *handle.0.reader.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let (res, b) = monoio::select! {
            r = rd.read(buf) => r,
            _ = closed => break,
        };
        buf = b;
        let n = match res {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        let r = handle
            .0
            .client
            .borrow_mut()
            .handle_bytes(&buf[..n], handle.now_ms());
        wake(&handle.0.writer);
        wake(&handle.0.local);
        if r.is_err() {
            break;
        }
    }
    handle.close_link();
    handle.0.client.borrow_mut().handle_link_down();
    let _ = writer.await;
    let _ = timer.await;
}

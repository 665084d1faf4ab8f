//! The embedded broker on monoio: one reader task and one writer task per
//! connection around the shared [`Broker`], and a timer task.
//!
//! Everything runs on the calling thread; the runtime must have its timer
//! enabled (`RuntimeBuilder::<FusionDriver>::new().enable_timer()`).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

use crate::broker::proto::{Broker, ConnId, LocalMessage};

/// Bytes read per socket read.
const READ_BUF: usize = 4 * 1024;
/// The timer task looks at the broker's deadlines at least this often.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct Outq {
    chunks: VecDeque<(Vec<u8>, bool)>,
    waker: Option<Waker>,
    /// The broker closed the connection: the reader stops too.
    closed: bool,
    reader: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    broker: RefCell<Broker>,
    conns: RefCell<HashMap<ConnId, Rc<RefCell<Outq>>>>,
    local: RefCell<Option<Waker>>,
    start: Instant,
}

/// The broker shared by the connection tasks and the rest of the edge
/// (DeviceTwin), on one thread. Cloning gives another handle to it.
#[derive(Debug, Clone)]
pub struct BrokerHandle(Rc<Shared>);

impl BrokerHandle {
    pub fn new(broker: Broker) -> Self {
        BrokerHandle(Rc::new(Shared {
            broker: RefCell::new(broker),
            conns: RefCell::new(HashMap::new()),
            local: RefCell::new(None),
            start: Instant::now(),
        }))
    }

    /// Milliseconds since the handle was made: the broker's clock.
    pub fn now_ms(&self) -> u64 {
        self.0.start.elapsed().as_millis() as u64
    }

    /// Runs `f` on the broker, then sends what it produced.
    pub fn with<R>(&self, f: impl FnOnce(&mut Broker) -> R) -> R {
        let r = f(&mut self.0.broker.borrow_mut());
        self.flush();
        r
    }

    /// The next message on a topic the edge subscribes to.
    pub async fn next_local(&self) -> LocalMessage {
        poll_fn(|cx| match self.0.broker.borrow_mut().poll_local() {
            Some(m) => Poll::Ready(m),
            None => {
                *self.0.local.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Hands the broker's transmits to the writer tasks.
    fn flush(&self) {
        loop {
            let t = self.0.broker.borrow_mut().poll_transmit();
            let Some(t) = t else { break };
            let q = self.0.conns.borrow().get(&t.conn).cloned();
            match q {
                Some(q) => {
                    let mut q = q.borrow_mut();
                    q.chunks.push_back((t.bytes, t.close));
                    if let Some(w) = q.waker.take() {
                        w.wake();
                    }
                }
                None => self.0.broker.borrow_mut().handle_sent(t.conn),
            }
        }
        // A message for the edge may have arrived: let its reader look.
        let waker = self.0.local.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Serves MQTT clients on `listener`, forever. A failed accept (out of file
/// descriptors…) is logged and retried after a short pause.
pub async fn serve(listener: TcpListener, handle: BrokerHandle) {
    monoio::spawn(timer(handle.clone()));
    let mut next = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "MQTT accept failed");
                monoio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next += 1;
        let id = ConnId(next);
        let now = handle.now_ms();
        if !handle.0.broker.borrow_mut().handle_connect(id, now) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        monoio::spawn(connection(handle.clone(), stream, id));
    }
}

async fn timer(handle: BrokerHandle) {
    loop {
        let now = handle.now_ms();
        let next = handle.0.broker.borrow().poll_timeout();
        let wait = next.map_or(TICK, |d| {
            Duration::from_millis(d.saturating_sub(now)).min(TICK)
        });
        monoio::time::sleep(wait).await;
        let now = handle.now_ms();
        handle.with(|b| b.handle_timeout(now));
    }
}

async fn connection(handle: BrokerHandle, stream: TcpStream, id: ConnId) {
    let q = Rc::new(RefCell::new(Outq::default()));
    handle.0.conns.borrow_mut().insert(id, q.clone());
    let (mut rd, mut wr) = stream.into_split();
    let writer = monoio::spawn({
        let (handle, q) = (handle.clone(), q.clone());
        async move {
            loop {
                let next = poll_fn(|cx| {
                    let mut q = q.borrow_mut();
                    match q.chunks.pop_front() {
                        Some(c) => Poll::Ready(Some(c)),
                        None if q.closed => Poll::Ready(None),
                        None => {
                            q.waker = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    }
                })
                .await;
                let Some((bytes, close)) = next else { break };
                let ok = bytes.is_empty() || wr.write_all(bytes).await.0.is_ok();
                if close || !ok {
                    let _ = wr.shutdown().await;
                    break;
                }
                handle.0.broker.borrow_mut().handle_sent(id);
                handle.flush();
            }
            let mut q = q.borrow_mut();
            q.closed = true;
            if let Some(w) = q.reader.take() {
                w.wake();
            }
        }
    });
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        buf.clear();
        let closed = poll_fn(|cx| {
            let mut q = q.borrow_mut();
            if q.closed {
                Poll::Ready(())
            } else {
                q.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let (res, b) = monoio::select! {
            r = rd.read(buf) => r,
            _ = closed => break,
        };
        buf = b;
        match res {
            Ok(n) if n > 0 => {
                let now = handle.now_ms();
                handle.with(|br| br.handle_bytes(id, &buf[..n], now));
            }
            _ => break,
        }
    }
    let now = handle.now_ms();
    handle.with(|b| b.handle_disconnect(id, now));
    {
        let mut q = q.borrow_mut();
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
    let _ = writer.await;
    handle.0.conns.borrow_mut().remove(&id);
}

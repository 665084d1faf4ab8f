//! The tasks of one connection: its handshake on the shard the kernel chose,
//! the hand-off to the owning shard, and its loop there.
//!
//! A connection's loop writes what is ready in one send, then waits for
//! either readable bytes or a wake-up. glommio reads are readiness-based, so
//! an idle connection holds no read buffer: the shard's one buffer is lent
//! to whichever connection is readable.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use hub_core::ConnId;
use schema::{FrameDecoder, FrameView};

use crate::shard::{Notify, Shard};
use crate::tls::Session;

/// What the accepting shard learned about a connection.
#[derive(Debug)]
pub struct Accepted {
    pub session: Session,
    /// The node proven by the certificate (TLS) or claimed in `Hello`
    /// (plaintext port).
    pub node: String,
    pub tls: bool,
    /// Plaintext bytes read before the hand-off (plaintext port).
    pub early: Vec<u8>,
}

/// A connection moving to the shard that owns its node, with everything the
/// accepting shard learned.
#[derive(Debug)]
pub struct Handoff {
    pub fd: OwnedFd,
    pub accepted: Accepted,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake deadline passed")]
    Timeout,
    #[error("connection closed during the handshake")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Session(#[from] crate::tls::SessionError),
    #[error("the client certificate names no node")]
    NoIdentity,
}

/// Completes a TLS handshake on `stream`, within `deadline`.
pub async fn tls_handshake(
    stream: &mut TcpStream,
    mut session: Session,
    deadline: Duration,
) -> Result<Accepted, HandshakeError> {
    let handshake = async {
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::new();
        let mut plain = Vec::new();
        while session.is_handshaking() {
            session.poll_transmit(&mut out)?;
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            if !session.is_handshaking() {
                break;
            }
            let n = futures_lite::io::AsyncReadExt::read(stream, &mut buf).await?;
            if n == 0 {
                return Err(HandshakeError::Closed);
            }
            if let Err(e) = session.handle_received(&buf[..n], &mut plain) {
                // Tell the client why (an alert), then give up.
                let _ = session.poll_transmit(&mut out);
                let _ = stream.write_all(&out).await;
                return Err(e.into());
            }
        }
        // The server's last flight, if any.
        session.poll_transmit(&mut out)?;
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        // Plaintext that came with the client's Finished (its Hello) goes
        // to the owning shard, before whatever the session still buffers.
        let node = session.peer_node_id().ok_or(HandshakeError::NoIdentity)?;
        Ok(Accepted {
            session,
            node,
            tls: true,
            early: plain,
        })
    };
    with_deadline(handshake, deadline).await
}

/// On the plaintext port: reads until the first frame and returns the node
/// its `Hello` claims (or `None` if it is not a `Hello`, which the hub then
/// refuses), with the bytes read.
pub async fn plain_handshake(
    stream: &mut TcpStream,
    deadline: Duration,
    max_frame_bytes: u32,
) -> Result<(Option<String>, Vec<u8>), HandshakeError> {
    let handshake = async {
        let mut decoder = FrameDecoder::new(schema::DecoderConfig {
            max_frame_bytes,
            ..schema::DecoderConfig::default()
        });
        let mut early = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = futures_lite::io::AsyncReadExt::read(stream, &mut buf).await?;
            if n == 0 {
                return Err(HandshakeError::Closed);
            }
            early.extend_from_slice(&buf[..n]);
            decoder.handle_bytes(&buf[..n]);
            match decoder.poll_frame() {
                Ok(None) => continue,
                Ok(Some(FrameView::Hello(h))) => {
                    return Ok((h.node_id().map(str::to_owned), early));
                }
                Ok(Some(_)) | Err(_) => return Ok((None, early)),
            }
        }
    };
    with_deadline(handshake, deadline).await
}

async fn with_deadline<T>(
    work: impl Future<Output = Result<T, HandshakeError>>,
    deadline: Duration,
) -> Result<T, HandshakeError> {
    futures_lite::future::or(work, async {
        glommio::timer::sleep(deadline).await;
        Err(HandshakeError::Timeout)
    })
    .await
}

enum Wait {
    Read(std::io::Result<usize>),
    Wake,
}

/// The loop of connection `id` on its owning shard, until it closes.
pub async fn run(shard: Rc<RefCell<Shard>>, id: ConnId, mut stream: TcpStream, notify: Rc<Notify>) {
    let mut sending = Vec::new();
    loop {
        let (close, taken) = {
            let mut s = shard.borrow_mut();
            let Some(c) = s.conns.get_mut(&id) else {
                break;
            };
            std::mem::swap(&mut sending, &mut c.out);
            (c.close, c.taken.take())
        };
        if !sending.is_empty() {
            if let Some(taken) = taken {
                shard
                    .borrow()
                    .m()
                    .route_latency_down
                    .record(taken.elapsed(), 1);
            }
            // One send for everything that was ready.
            if let Err(e) = stream.write_all(&sending).await {
                tracing::debug!(conn = id, "write failed: {e}");
                break;
            }
            let s = shard.borrow();
            crate::metrics::ShardMetrics::add(&s.m().sends, 1);
            crate::metrics::ShardMetrics::add(&s.m().bytes_out, sending.len() as u64);
            sending.clear();
            if sending.capacity() > 256 << 10 {
                sending = Vec::new();
            }
            continue;
        }
        if close {
            let _ = stream.close().await;
            break;
        }
        let read = std::future::poll_fn(|cx| {
            let mut buf = std::mem::take(&mut shard.borrow_mut().read_buf);
            let r = Pin::new(&mut stream).poll_read(cx, &mut buf);
            let mut s = shard.borrow_mut();
            if let Poll::Ready(Ok(n)) = r
                && n > 0
            {
                s.handle_received(id, &buf[..n]);
            }
            s.read_buf = buf;
            r.map(Wait::Read)
        });
        let woken = async {
            notify.notified().await;
            Wait::Wake
        };
        match futures_lite::future::or(read, woken).await {
            Wait::Read(Ok(0)) => break,
            Wait::Read(Err(e)) => {
                tracing::debug!(conn = id, "read failed: {e}");
                break;
            }
            Wait::Read(Ok(_)) | Wait::Wake => {}
        }
    }
    shard.borrow_mut().handle_lost(id);
}

/// Sets the socket options of an adopted connection.
pub fn prepare(stream: &TcpStream, write_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(write_timeout));
}

/// Runs the accepted, handshaken `stream` here if this shard owns its node;
/// otherwise returns it ready to hand to the owner.
pub fn route(
    shard: &Rc<RefCell<Shard>>,
    stream: TcpStream,
    accepted: Accepted,
) -> Option<(usize, Handoff)> {
    let (owner, here) = {
        let s = shard.borrow();
        (s.owner(&accepted.node), s.index)
    };
    if owner == here {
        start(shard, stream, accepted);
        return None;
    }
    match crate::fd::detach(stream) {
        Ok(fd) => Some((owner, Handoff { fd, accepted })),
        Err(e) => {
            tracing::warn!("hand-off of a connection failed: {e}");
            None
        }
    }
}

/// Adopts a connection on this shard and spawns its loop.
pub fn start(shard: &Rc<RefCell<Shard>>, stream: TcpStream, accepted: Accepted) {
    let identity = accepted.tls.then_some(accepted.node.as_str());
    let (id, notify) = shard
        .borrow_mut()
        .adopt(accepted.session, identity, &accepted.early);
    glommio::spawn_local(run(shard.clone(), id, stream, notify)).detach();
}

//! The transport of the link to cloudhub: TLS 1.3 over TCP on monoio, with
//! the node's client certificate. The protocol itself is
//! `hub_core::link::Link`, driven by [`crate::daemon`].
//!
//! A connection is split: a reader task forwards whatever arrives as
//! [`Input::Bytes`] (or [`Input::Lost`]) to the daemon's channel, tagged
//! with the connection's generation so input from an abandoned connection
//! is ignored; the daemon owns the write half and writes each `Transmit` in
//! one send.

use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream as TlsStream, TlsConnector};
use rustls::pki_types::ServerName;
use schema::Message;

use crate::config::EdgeHub;
use crate::tls::client_config;

/// Time allowed for TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read per receive.
const READ_BUF: usize = 64 << 10;

/// What the daemon's loop receives from its tasks.
#[derive(Debug)]
pub enum Input {
    /// Bytes received on connection `generation`.
    Bytes { generation: u64, bytes: Vec<u8> },
    /// Connection `generation` ended (EOF or error).
    Lost { generation: u64, detail: String },
    /// Upstream messages to write to the outbox and send (from DeviceTwin,
    /// the EventBus, …).
    Upstream(Vec<Message>),
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TLS files: {0}")]
    Files(#[from] crate::tls::TlsFilesError),
    #[error("bad server name {0}")]
    ServerName(String),
    #[error("connect to {server}: {detail}")]
    Io { server: String, detail: String },
    #[error("connect to {server}: timed out")]
    Timeout { server: String },
}

/// An open connection: the write half, and the reader task's stop signal
/// (dropping the connection stops the reader and closes the socket).
#[derive(Debug)]
pub struct Connection {
    pub generation: u64,
    writer: OwnedWriteHalf<TlsStream<TcpStream>>,
    _stop_reader: oneshot::Sender<()>,
}

impl Connection {
    /// Connects to cloudhub and starts the reader task.
    pub async fn open(
        hub: &EdgeHub,
        generation: u64,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Result<Self, ConnectError> {
        let server = hub.server.clone();
        let config = client_config(
            &hub.tls_ca_file,
            &hub.tls_cert_file,
            &hub.tls_private_key_file,
        )?;
        let name = ServerName::try_from(hub.server_name())
            .map_err(|_| ConnectError::ServerName(hub.server_name()))?;
        let io = |e: std::io::Error| ConnectError::Io {
            server: server.clone(),
            detail: e.to_string(),
        };
        let connect = async {
            let tcp = TcpStream::connect(server.as_str()).await.map_err(io)?;
            tcp.set_nodelay(true).map_err(io)?;
            TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| ConnectError::Io {
                    server: server.clone(),
                    detail: e.to_string(),
                })
        };
        let stream = monoio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ConnectError::Timeout {
                server: server.clone(),
            })??;
        let (reader, writer) = stream.into_split();
        let (stop, stopped) = oneshot::channel();
        monoio::spawn(read_loop(reader, generation, inputs, stopped));
        Ok(Self {
            generation,
            writer,
            _stop_reader: stop,
        })
    }

    /// Writes `bytes` (whole frames) in one send.
    pub async fn send(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        let (result, _) = self.writer.write_all(bytes).await;
        result.map(|_| ())?;
        self.writer.flush().await
    }

    /// Sends TLS close_notify and shuts the socket down; the reader stops.
    pub async fn close(mut self) {
        let _ = monoio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
    }
}

async fn read_loop(
    mut reader: OwnedReadHalf<TlsStream<TcpStream>>,
    generation: u64,
    inputs: mpsc::UnboundedSender<Input>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        // The daemon abandoning the connection drops the sender; the read
        // is then cancelled and the socket closes with the last half.
        let (result, b) = monoio::select! {
            r = reader.read(buf) => r,
            _ = &mut stopped => return,
        };
        buf = b;
        let input = match result {
            Ok(0) => Input::Lost {
                generation,
                detail: "closed by the cloud".to_owned(),
            },
            Ok(n) => Input::Bytes {
                generation,
                bytes: buf[..n].to_vec(),
            },
            Err(e) => Input::Lost {
                generation,
                detail: e.to_string(),
            },
        };
        let end = matches!(input, Input::Lost { .. });
        if inputs.unbounded_send(input).is_err() || end {
            return;
        }
        buf.clear();
    }
}

//! DNS over TCP (RFC 7766): a task per connection, answering with the same
//! handler and the same one-pass writer as UDP.
//!
//! Until this module, TCP went through hickory-server's `Server`, which
//! answers through hickory's message builder and encoder. On this
//! project's 2-core test host that path cost about 12 µs per query against
//! Knot's 9 (`scripts/bench-dns.sh --tcp`), a quarter of it in hickory's
//! encoding and a little more in turning ready-made answers back into
//! records for it.
//!
//! A connection's queries are answered in the order they arrive; replies
//! are flushed once no further query is waiting in the connection's
//! buffer, so pipelined queries share writes. A connection idle for
//! [`IDLE_TIMEOUT`] is closed; past [`MAX_CONNECTIONS`], new ones are
//! closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::handler::DnsHandler;
use super::message::Encoder;
use super::udp::answer;

/// How long an idle connection (or a query half sent) is kept open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// DNS over TCP being served.
pub struct TcpServer {
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl TcpServer {
    /// Accepts connections on `listener` and answers them with `handler`.
    pub fn start(handler: DnsHandler, listener: TcpListener) -> Self {
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept(handler, listener, stopped));
        Self { stop, accept }
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
    }
}

async fn accept(handler: DnsHandler, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "too many DNS TCP connections; closing a new one");
                        continue;
                    };
                    let handler = handler.clone();
                    connections.spawn(async move {
                        connection(&handler, stream, peer).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of file descriptors, usually: wait rather than spin.
                    tracing::warn!(%error, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Answers one connection until the client closes it, it idles, or it
/// sends something that is not a DNS message.
async fn connection(handler: &DnsHandler, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(4096, reader);
    let mut writer = BufWriter::with_capacity(16 * 1024, writer);
    let mut encoder = Encoder::new();
    let mut query = Vec::with_capacity(512);
    let mut reply = Vec::with_capacity(4096);
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(IDLE_TIMEOUT, reader.read_u16()).await else {
            break;
        };
        query.resize(usize::from(len), 0);
        match tokio::time::timeout(IDLE_TIMEOUT, reader.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        if !answer(
            handler,
            &mut encoder,
            &query,
            peer,
            Protocol::Tcp,
            &mut reply,
        ) {
            // Not a query: nothing sensible can follow on this stream.
            break;
        }
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            break;
        };
        if writer.write_all(&reply_len.to_be_bytes()).await.is_err()
            || writer.write_all(&reply).await.is_err()
        {
            break;
        }
        if reader.buffer().is_empty() && writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.flush().await;
}

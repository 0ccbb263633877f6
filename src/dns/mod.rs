//! The DNS server: hickory-server transport, our handler, the registry zone
//! and static zones.

pub mod answer;
pub mod handler;
pub mod names;
pub mod registry_zone;
pub mod wire;
pub mod zones;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use handler::DnsHandler;

/// How long an idle TCP connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Tries at finding a port free for both UDP and TCP when asked for port 0.
const PORT_TRIES: usize = 32;
/// UDP receive buffer asked for. The default (about 208 KiB) holds only a few
/// hundred queries, so a burst drops some; NSD asks for 2 MiB for the same
/// reason. The kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// A UDP socket and a TCP listener on the same address and port.
pub struct DnsListeners {
    /// Bound UDP socket.
    pub udp: UdpSocket,
    /// Bound TCP listener.
    pub tcp: TcpListener,
}

impl DnsListeners {
    /// The address both are bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Binds UDP and TCP on `addr`. With port 0, picks one port free for both,
/// since a client that is told to retry over TCP retries on the same port.
pub async fn bind(addr: SocketAddr) -> io::Result<DnsListeners> {
    let mut last_error = None;
    for _ in 0..PORT_TRIES {
        let udp = bind_udp(addr)?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok(DnsListeners { udp, tcp }),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// A non-blocking UDP socket on `addr` with a large receive buffer.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!(%error, "could not enlarge the UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Starts serving `handler` on `listeners`.
pub fn serve(handler: DnsHandler, listeners: DnsListeners) -> Server<DnsHandler> {
    let mut server = Server::new(handler);
    server.register_socket(listeners.udp);
    server.register_listener(listeners.tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    server
}

//! The DNS server: UDP threads and TCP tasks of our own, the handler, the
//! registry zone and static zones.

pub mod answer;
pub mod handler;
pub mod message;
pub mod names;
pub mod registry_zone;
pub mod tcp;
pub mod udp;
pub mod wire;
pub mod zones;

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use handler::DnsHandler;

/// Tries at finding a port free for both UDP and TCP when asked for port 0.
const PORT_TRIES: usize = 32;
/// UDP receive buffer asked for. The default (about 208 KiB) holds only a few
/// hundred queries, so a burst drops some; NSD asks for 2 MiB for the same
/// reason. The kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// UDP sockets and a TCP listener on the same address and port.
pub struct DnsListeners {
    /// UDP sockets, one per thread: copies of one socket or, with
    /// `reuseport`, sockets of their own on one port (`SO_REUSEPORT`), over
    /// which the kernel spreads datagrams by source address and port.
    pub udp: Vec<std::net::UdpSocket>,
    /// Bound TCP listener.
    pub tcp: TcpListener,
}

impl DnsListeners {
    /// The address all are bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Binds UDP for `udp_threads` threads (at least one) and a TCP listener
/// on `addr`. With port 0, picks one port free for both, since a client
/// that is told to retry over TCP retries on the same port.
///
/// By default the threads share one socket: whichever of them is running
/// takes the next query. With `reuseport` each has a socket of its own on
/// the port (`SO_REUSEPORT`), and the kernel hands each client to one of
/// them; that spares the threads one socket's lock, but a client whose
/// thread is not running waits for it. On this project's 2-core host, with
/// the load generator on the same cores, one shared socket had the lower
/// tail latency (README, "Command line").
pub async fn bind(
    addr: SocketAddr,
    udp_threads: usize,
    reuseport: bool,
) -> io::Result<DnsListeners> {
    let mut last_error = None;
    for _ in 0..PORT_TRIES {
        let first = bind_udp(addr)?;
        let bound = first.local_addr()?;
        let tcp = match TcpListener::bind(bound).await {
            Ok(tcp) => tcp,
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut udp = vec![first];
        for _ in 1..udp_threads.max(1) {
            let next = if reuseport {
                bind_udp(bound)?
            } else {
                udp[0].try_clone()?
            };
            udp.push(next);
        }
        return Ok(DnsListeners { udp, tcp });
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// A UDP socket on `addr` with a large receive buffer, open to more
/// sockets on the same port from this user (`SO_REUSEPORT`).
fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!(%error, "could not enlarge the UDP receive buffer");
    }
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// DNS being served: UDP on threads, TCP on tasks.
pub struct DnsServer {
    /// The UDP threads.
    udp: udp::UdpServer,
    /// TCP.
    tcp: tcp::TcpServer,
}

impl DnsServer {
    /// Stops answering: UDP threads return, TCP connections are closed.
    pub async fn shutdown(self) {
        self.tcp.stop().await;
        let udp = self.udp;
        let _ = tokio::task::spawn_blocking(move || udp.stop()).await;
    }
}

/// Starts serving `handler` on `listeners`.
pub fn serve(handler: DnsHandler, listeners: DnsListeners) -> io::Result<DnsServer> {
    let udp = udp::UdpServer::start(&handler, listeners.udp)?;
    let tcp = tcp::TcpServer::start(handler, listeners.tcp);
    Ok(DnsServer { udp, tcp })
}

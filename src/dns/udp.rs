//! The UDP fast path: OS threads reading one socket (or, with
//! `--dns-reuseport`, a socket each), each in a plain receive → answer →
//! send loop, in batches.
//!
//! hickory's `Server` spawns a task for every datagram and sends the reply
//! back through a channel to the socket's task; on a small machine that
//! costs more than answering. Here a query is decoded with hickory-proto,
//! answered by the same [`DnsHandler::respond`] that TCP uses, and encoded
//! into a buffer the thread keeps, with no task, channel or lock between
//! the datagram and its reply.
//!
//! One `recvmmsg` takes every datagram waiting, up to [`BATCH`] (it waits
//! only for the first), and one `sendmmsg` sends their replies: under load
//! the system calls, and the wake-ups between them, are shared by the batch.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, LowerQuery, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use super::answer::Answer;
use super::handler::{DnsHandler, Incoming, Response, payload_limit};
use super::message::{Encoder, HEADER_LEN};

/// Largest datagram read. Queries are small; a longer one is cut by the
/// kernel and then fails to decode (FORMERR).
const RECV_BUFFER: usize = 4096;
/// Most datagrams taken, and replies sent, by one system call.
const BATCH: usize = 16;
/// How often an idle thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The running UDP threads.
pub struct UdpServer {
    /// Set to ask the threads to return.
    stop: Arc<AtomicBool>,
    /// One per socket.
    threads: Vec<JoinHandle<()>>,
}

impl UdpServer {
    /// Starts one thread per socket, each answering with `handler`.
    pub fn start(handler: &DnsHandler, sockets: Vec<UdpSocket>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(sockets.len());
        for (n, socket) in sockets.into_iter().enumerate() {
            socket.set_nonblocking(false)?;
            socket.set_read_timeout(Some(STOP_POLL))?;
            let handler = handler.clone();
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{n}"))
                    .spawn(move || serve(&handler, &socket, &stop))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the threads and waits for them (at most one poll interval).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// The loop of one thread.
fn serve(handler: &DnsHandler, socket: &UdpSocket, stop: &AtomicBool) {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

    let fd = socket.as_raw_fd();
    let mut queries: Box<[[u8; RECV_BUFFER]; BATCH]> = vec![[0u8; RECV_BUFFER]; BATCH]
        .into_boxed_slice()
        .try_into()
        .expect("BATCH buffers");
    let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut replies = Replies::new();
    let mut encoder = Encoder::new();
    while !stop.load(Ordering::Relaxed) {
        received.clear();
        // The buffers are lent to the kernel for the call only, through an
        // array on the stack: nothing is allocated per batch.
        let got = {
            let mut slices = queries.each_mut().map(|q| [IoSliceMut::new(&mut q[..])]);
            recvmmsg(
                fd,
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )
            .map(|messages| {
                received
                    .extend(messages.map(|m| (m.bytes, m.address.as_ref().and_then(socket_addr))));
            })
        };
        match got {
            Ok(()) => {}
            // The read timeout: time to look at the stop flag.
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(error) => {
                // ICMP errors from earlier sends surface here; they are
                // about someone else's reply, not this socket.
                tracing::debug!(%error, "UDP receive failed");
                continue;
            }
        }
        replies.clear();
        for (query, &(len, src)) in queries.iter().zip(&received) {
            let Some(src) = src else { continue };
            let out = replies.next_buffer();
            if answer(
                handler,
                &mut encoder,
                &query[..len],
                src,
                Protocol::Udp,
                out,
            ) {
                replies.push(src);
            }
        }
        replies.send(fd);
    }
}

/// A batch of replies and where they go.
struct Replies {
    buffers: Vec<Vec<u8>>,
    to: Vec<Option<nix::sys::socket::SockaddrStorage>>,
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Replies {
    fn new() -> Self {
        Self {
            buffers: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            to: Vec::with_capacity(BATCH),
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }

    fn clear(&mut self) {
        self.to.clear();
    }

    /// The buffer for the next reply.
    fn next_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffers[self.to.len()]
    }

    /// Keeps the reply just written, for `to`.
    fn push(&mut self, to: SocketAddr) {
        self.to.push(Some(to.into()));
    }

    /// Sends every reply kept, skipping one the kernel refuses.
    fn send(&mut self, fd: std::os::fd::RawFd) {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmmsg};
        let mut start = 0;
        while start < self.to.len() {
            // On the stack, as for receiving: nothing allocated per batch.
            let waiting = &self.buffers[start..self.to.len()];
            let slices: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|i| [IoSlice::new(waiting.get(i).map_or(&[], |b| &b[..]))]);
            let none: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                fd,
                &mut self.headers,
                &slices[..waiting.len()],
                &self.to[start..],
                none,
                MsgFlags::empty(),
            ) {
                Ok(sent) => start += sent.count().max(1),
                Err(error) => {
                    tracing::debug!(%error, "UDP send failed");
                    start += 1;
                }
            }
        }
    }
}

/// A socket address from the kernel's form.
fn socket_addr(addr: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// Writes the reply to the message `packet` from `src` (over `protocol`)
/// into `out`. Returns false when nothing must be sent: too short to be a
/// query, a response (never answer those: reflection), or from port 0.
pub fn answer(
    handler: &DnsHandler,
    encoder: &mut Encoder,
    packet: &[u8],
    src: SocketAddr,
    protocol: Protocol,
    out: &mut Vec<u8>,
) -> bool {
    let tcp = protocol != Protocol::Udp;
    if src.port() == 0 {
        return false;
    }
    let mut decoder = BinDecoder::new(packet);
    let Ok(header) = Header::read(&mut decoder) else {
        return false;
    };
    if header.metadata.message_type == MessageType::Response {
        return false;
    }
    // The common shape is decoded in place; anything else goes through
    // hickory's whole-message decoding, which copies the datagram.
    let plain = Plain::read(&mut decoder, &header);
    let whole;
    let (metadata, queries, edns, question) = match &plain {
        Some(plain) => (
            &header.metadata,
            std::slice::from_ref(&plain.query),
            plain.edns.as_ref(),
            &packet[HEADER_LEN..plain.question_end],
        ),
        None => {
            whole = match Request::from_bytes(packet.to_vec(), src, protocol) {
                Ok(request) => request,
                Err(error) => {
                    tracing::debug!(%error, %src, "undecodable query");
                    error_reply(encoder, &header.metadata, ResponseCode::FormErr, tcp, out);
                    return true;
                }
            };
            (
                &whole.metadata,
                whole.queries.queries(),
                whole.edns.as_ref(),
                whole.queries.as_bytes(),
            )
        }
    };
    let request = Incoming {
        metadata,
        queries,
        edns,
        src: src.ip(),
        tcp,
    };
    let Response {
        metadata,
        edns,
        answer,
    } = handler.respond(&request);
    encoder.write(
        out,
        &metadata,
        question,
        u16::try_from(request.queries.len()).unwrap_or(u16::MAX),
        request.queries.first().map(|q| q.original().name()),
        &answer,
        edns.as_ref(),
        payload_limit(tcp, edns.as_ref()),
    );
    true
}

/// A query of the common shape, decoded without copying the datagram: one
/// question, nothing in the answer and authority sections, and at most one
/// additional record, an OPT. Each part is read with hickory's own decoder,
/// so what is accepted, and how, is what hickory's whole-message decoding
/// would accept.
struct Plain {
    query: LowerQuery,
    /// Where the question ends in the datagram.
    question_end: usize,
    edns: Option<Edns>,
}

impl Plain {
    /// `None` when the query has another shape or does not decode: hickory's
    /// decoding then answers it, or says what is wrong.
    fn read(decoder: &mut BinDecoder<'_>, header: &Header) -> Option<Self> {
        let counts = &header.counts;
        if counts.queries != 1
            || counts.answers != 0
            || counts.authorities != 0
            || counts.additionals > 1
        {
            return None;
        }
        let query = LowerQuery::read(decoder).ok()?;
        let question_end = decoder.index();
        let edns = if counts.additionals == 1 {
            let record = Record::read(decoder).ok()?;
            // The two forms hickory's decoding takes for an OPT record.
            if !matches!(record.data, RData::OPT(_) | RData::Update0(RecordType::OPT)) {
                return None;
            }
            Some(Edns::from(&record))
        } else {
            None
        };
        Some(Self {
            query,
            question_end,
            edns,
        })
    }
}

/// A reply with only a header: `code`, and the request's id and flags.
fn error_reply(
    encoder: &mut Encoder,
    request: &Metadata,
    code: ResponseCode,
    tcp: bool,
    out: &mut Vec<u8>,
) {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = code;
    let limit = payload_limit(tcp, None);
    encoder.write(
        out,
        &metadata,
        &[],
        0,
        None,
        &Answer::default(),
        None,
        limit,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Queries of many shapes, as clients send them.
    fn queries() -> Vec<Vec<u8>> {
        let names = [
            "web.service.internal.",
            "_web._tcp.service.internal.",
            "WeB.SeRvIcE.InTeRnAl.",
            "internal.",
            ".",
            "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.internal.",
        ];
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::TXT,
            RecordType::ANY,
            RecordType::SOA,
            RecordType::OPT,
            RecordType::AXFR,
        ];
        let mut out = Vec::new();
        for (n, name) in names.iter().enumerate() {
            for (t, &qtype) in types.iter().enumerate() {
                for edns in 0..5 {
                    let mut message = Message::query();
                    message.metadata.id = (n * 100 + t * 10 + edns) as u16;
                    message.metadata.recursion_desired = edns % 2 == 0;
                    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
                    if edns > 0 {
                        let mut e = Edns::new();
                        e.set_max_payload([0, 512, 1232, 4096, 100][edns]);
                        e.set_dnssec_ok(edns == 3);
                        e.set_version(u8::from(edns == 4));
                        if edns == 2 {
                            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                                "192.0.2.0".parse().unwrap(),
                                24,
                                0,
                            )));
                        }
                        message.set_edns(e);
                    }
                    out.push(message.to_vec().unwrap());
                }
            }
        }
        out
    }

    /// What each decoding makes of `packet`: the common-shape decoding must
    /// agree with hickory's whole-message decoding wherever it decodes.
    fn agree(packet: &[u8]) -> bool {
        let mut decoder = BinDecoder::new(packet);
        let Ok(header) = Header::read(&mut decoder) else {
            return false;
        };
        let Some(plain) = Plain::read(&mut decoder, &header) else {
            return false;
        };
        let src = "192.0.2.1:5353".parse().unwrap();
        let whole = Request::from_bytes(packet.to_vec(), src, Protocol::Udp)
            .expect("hickory decodes what the common-shape decoding took");
        // What the handler reads of the header: the response's fields
        // copied from it, and the opcode.
        assert_eq!(
            Metadata::response_from_request(&whole.metadata),
            Metadata::response_from_request(&header.metadata)
        );
        assert_eq!(whole.metadata.op_code, header.metadata.op_code);
        assert_eq!(whole.queries.queries(), [plain.query], "{packet:?}");
        assert_eq!(
            whole.queries.as_bytes(),
            &packet[HEADER_LEN..plain.question_end]
        );
        assert_eq!(whole.edns, plain.edns, "{packet:?}");
        true
    }

    #[test]
    fn the_common_shape_decodes_as_hickory_decodes_it() {
        let originals = queries();
        let taken = originals.iter().filter(|p| agree(p)).count();
        assert_eq!(
            taken,
            originals.len(),
            "every plain query takes the fast path"
        );

        // Damaged copies: bytes changed, cut short or lengthened. Whatever
        // the common-shape decoding accepts, hickory must read alike.
        let mut rng = SmallRng::seed_from_u64(5);
        let mut taken = 0;
        for _ in 0..20_000 {
            let mut packet = originals[rng.random_range(0..originals.len())].clone();
            match rng.random_range(0..4) {
                0 => packet.truncate(rng.random_range(0..packet.len())),
                1 => packet.extend((0..rng.random_range(1..8)).map(|_| rng.random::<u8>())),
                _ => {
                    for _ in 0..rng.random_range(1..4) {
                        let at = rng.random_range(0..packet.len());
                        packet[at] = rng.random();
                    }
                }
            }
            taken += usize::from(agree(&packet));
        }
        // Many still decode (a changed id or type), so both paths were
        // compared on them.
        assert!(taken > 1_000, "only {taken} damaged queries decoded");
    }
}

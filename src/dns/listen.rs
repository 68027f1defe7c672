//! The DNS listeners. UDP and TCP are driven here, so that each is bounded
//! (in-flight UDP queries, TCP connections, TCP idle time, TCP frame size)
//! and a cache hit is answered without a trip through a channel; DoT and DoH
//! ride on hickory-server's `Server`. All of them feed the same handler.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::admin::Metrics;
use crate::dns::handler::DnsHandler;

/// The largest DNS message over TCP we read. Queries are small; 16 KiB
/// leaves room for large EDNS options while a client claiming a 64 KiB frame
/// cannot make us hold 64 KiB per connection.
pub const MAX_TCP_QUERY_BYTES: usize = 16 * 1024;

/// A response handler that encodes the response into a buffer which the
/// listener then writes: the same for UDP, TCP and the fuzz target.
#[derive(Clone)]
pub struct Reply {
    buffer: Arc<Mutex<Option<Vec<u8>>>>,
    protocol: Protocol,
    udp_max: u16,
}

impl Reply {
    /// A reply for `protocol`; UDP replies are cut to `udp_max` bytes.
    pub fn new(protocol: Protocol, udp_max: u16) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(None)),
            protocol,
            udp_max,
        }
    }

    /// The encoded response, if one was sent.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.buffer.lock().expect("reply lock").take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // RFC 1035 section 4.2.1 limits UDP to 512 bytes without EDNS; with
        // it, the smaller of the client's size and ours (RFC 6891 6.2.5).
        let max = match self.protocol {
            Protocol::Udp => response
                .edns()
                .map_or(512, |e| e.max_payload().clamp(512, self.udp_max)),
            _ => u16::MAX,
        };
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "cannot encode response; sending SERVFAIL");
                bytes.clear();
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                header.emit(&mut BinEncoder::new(&mut bytes))?;
                ResponseInfo::from(header)
            }
        };
        *self.buffer.lock().expect("reply lock") = Some(bytes);
        Ok(info)
    }
}

/// Parses and answers one message; `None` when nothing is to be sent
/// (shorter than a header, a response, or dropped by the rate limiter).
pub async fn answer(
    handler: &DnsHandler,
    bytes: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    // Shorter than a header: not DNS, nothing to answer.
    let header = Header::read(&mut BinDecoder::new(&bytes)).ok()?;
    let reply = Reply::new(protocol, handler.edns_payload());
    match Request::from_bytes(bytes, src, protocol) {
        Ok(request) => {
            handler
                .handle_request::<_, TokioTime>(&request, reply.clone())
                .await;
            reply.take()
        }
        Err(_) => formerr(header),
    }
}

/// A FORMERR for a message whose header parsed but whose body did not
/// (RFC 1035 section 4.1.1); nothing for one that is itself a response.
fn formerr(header: Header) -> Option<Vec<u8>> {
    if header.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    header.to_bytes().ok()
}

/// Serves one UDP socket until `shutdown`.
pub async fn serve_udp(
    socket: UdpSocket,
    handler: Arc<DnsHandler>,
    max_inflight: usize,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(max_inflight));
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, src) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some
                    // systems; they are not fatal to the socket.
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: shed load rather than queue without bound.
            continue;
        };
        let bytes = buf[..len].to_vec();
        let handler = handler.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(out) = answer(&handler, bytes, src, Protocol::Udp).await
                && let Err(e) = socket.send_to(&out, src).await
            {
                tracing::debug!(error = %e, %src, "udp send error");
            }
        });
    }
}

/// Serves one TCP listener until `shutdown`: at most `max_connections` at
/// once, each closed after `idle` without a complete query (RFC 7766).
pub async fn serve_tcp(
    listener: TcpListener,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    max_connections: usize,
    idle: Duration,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    while let Some((stream, src, permit)) = accept_bounded(&listener, &slots, &shutdown).await {
        let handler = handler.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            metrics.dns_tcp_connections.inc();
            tokio::select! {
                r = serve_tcp_connection(stream, src, &handler, idle) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %src, "tcp connection closed");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
            metrics.dns_tcp_connections.dec();
        });
    }
}

/// Accepts the next connection that fits in `slots`, closing those over
/// the limit at once; `None` once `shutdown` fires. Shared by the TCP and
/// DoH listeners.
pub async fn accept_bounded(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    loop {
        let (stream, src) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return None,
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => return Some((stream, src, permit)),
            Err(_) => tracing::debug!(%src, "too many connections; closing"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum TcpError {
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("frame of {len} bytes is over the limit of {max}")]
    Oversized { len: usize, max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn serve_tcp_connection(
    mut stream: tokio::net::TcpStream,
    src: SocketAddr,
    handler: &DnsHandler,
    idle: Duration,
) -> Result<(), TcpError> {
    stream.set_nodelay(true)?;
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Err(_) => return Err(TcpError::Idle(idle)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_TCP_QUERY_BYTES {
            return Err(TcpError::Oversized {
                len,
                max: MAX_TCP_QUERY_BYTES,
            });
        }
        let mut msg = vec![0u8; len];
        tokio::time::timeout(idle, stream.read_exact(&mut msg))
            .await
            .map_err(|_| TcpError::Idle(idle))??;
        if let Some(out) = answer(handler, msg, src, Protocol::Tcp).await {
            let mut framed = Vec::with_capacity(out.len() + 2);
            framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
            framed.extend_from_slice(&out);
            stream.write_all(&framed).await?;
        }
    }
}

/// Lets hickory-server's `Server` (DoT, DoH) share the one handler.
pub struct SharedHandler(pub Arc<DnsHandler>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

//! The libp2p side of an edge: the swarm's behaviours and the codec of our
//! own request-response protocols.
//!
//! | protocol | carries |
//! | --- | --- |
//! | `/gridedge/overlay/1` | one overlay packet per request ([`crate::overlay::wire`]), answered by an empty response at once: the core treats the network as lossy datagrams and keeps its own timers |
//! | `/gridedge/hello/1` | the [`Hello`] each side sends on a new connection: where its HTTP gateway is |
//! | `/gridedge/kad/1` | Kademlia (libp2p-kad), to find peers and their addresses from the bootstrap peers |
//! | `/ipfs/id/1.0.0` | identify: listen addresses, fed to Kademlia |
//!
//! Every frame is length-prefixed and bounded before anything is
//! allocated; connections are bounded in all and per peer.

use std::io;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, connection_limits, identify, kad, request_response};
use serde::{Deserialize, Serialize};

use crate::overlay::wire::MAX_PACKET_BYTES;

/// Overlay packets.
pub const OVERLAY_PROTOCOL: StreamProtocol = StreamProtocol::new("/gridedge/overlay/1");
/// The hello exchanged on each new connection.
pub const HELLO_PROTOCOL: StreamProtocol = StreamProtocol::new("/gridedge/hello/1");
/// Our Kademlia: a DHT of gridedge peers only, not the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/gridedge/kad/1");
/// What identify reports as our protocol version.
pub const IDENTIFY_VERSION: &str = "/gridedge/1";

/// Largest hello, bytes: a URL and a version.
pub const MAX_HELLO_BYTES: usize = 4096;

/// What an edge tells each peer it connects to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Where its HTTP gateway serves `/ipfs/<cid>` to other edges.
    pub http: Option<String>,
    /// Where its HTTP proxy serves cached web objects to other edges
    /// (`Cache-Control: only-if-cached`).
    #[serde(default)]
    pub proxy: Option<String>,
}

/// A request-response codec for opaque byte frames: a u32 length, then
/// the bytes, each direction bounded.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_request: usize,
    max_response: usize,
}

impl FrameCodec {
    /// Requests up to `max_request` bytes, responses up to `max_response`.
    pub fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
        }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    max: usize,
) -> io::Result<()> {
    if data.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {max}", data.len()),
        ));
    }
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

/// The behaviours of an edge's swarm.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection bounds, in all and per peer.
    pub limits: connection_limits::Behaviour,
    /// Listen addresses and protocols of each peer.
    pub identify: identify::Behaviour,
    /// Peer discovery.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Overlay packets.
    pub overlay: request_response::Behaviour<FrameCodec>,
    /// Hellos.
    pub hello: request_response::Behaviour<FrameCodec>,
}

/// The swarm's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Established connections in all.
    pub max_connections: u32,
    /// Established connections with one peer.
    pub max_connections_per_peer: u32,
    /// How long a request waits for its response.
    pub request_timeout: Duration,
    /// Streams open at once per connection and protocol.
    pub max_streams: usize,
}

impl Behaviour {
    /// The behaviours for the node with `key`.
    pub fn new(key: &libp2p::identity::Keypair, limits: Limits) -> Self {
        let peer_id = key.public().to_peer_id();
        let limits_behaviour = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(limits.max_connections))
                .with_max_established_per_peer(Some(limits.max_connections_per_peer))
                // Half-open connections cost a handshake each; a burst of
                // them is an attack or a bug, not a workload.
                .with_max_pending_incoming(Some(64))
                .with_max_pending_outgoing(Some(64)),
        );
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_VERSION.into(), key.public())
                .with_agent_version(format!("gridedge/{}", env!("CARGO_PKG_VERSION"))),
        );
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_query_timeout(Duration::from_secs(30));
        // Discovery is what Kademlia is for here; a bootstrap every minute
        // keeps a small edge's view whole as peers come and go.
        kad_config.set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Edges are servers of the DHT from the start: a regional edge on
        // private addresses never gets an external address confirmed.
        kad.set_mode(Some(kad::Mode::Server));
        let rr = request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(limits.max_streams);
        let overlay = request_response::Behaviour::with_codec(
            // The response is empty: a datagram's acknowledgement.
            FrameCodec::new(MAX_PACKET_BYTES, 0),
            [(OVERLAY_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr.clone(),
        );
        let hello = request_response::Behaviour::with_codec(
            FrameCodec::new(MAX_HELLO_BYTES, MAX_HELLO_BYTES),
            [(HELLO_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr,
        );
        Self {
            limits: limits_behaviour,
            identify,
            kad,
            overlay,
            hello,
        }
    }
}

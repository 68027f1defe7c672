//! The overlay on real sockets: one libp2p swarm per edge that carries the
//! overlay core's packets between edges, and the [`Overlay`] handle the
//! rest of the edge uses (status, holders, put, announce, feedback).
//!
//! The driver only moves bytes and timers in and out of the same
//! [`overlay::Node`](crate::overlay::Node) the simulator runs: a packet the
//! node emits becomes one request on `/gridedge/overlay/1` to the peer,
//! a request that arrives is handed to the node, and the node's next
//! timeout is a tokio sleep. It measures nothing the core measures itself
//! (RTTs come from SWIM's probes).
//!
//! Peers are named by libp2p `PeerId` on the wire and by the core's 64-bit
//! [`NodeId`] inside it: the first 8 bytes of the SHA-256 of the PeerId
//! ([`node_id_of`]). The driver keeps the map back (a directory filled from
//! every connection, identify and Kademlia) and refuses a second PeerId
//! whose id collides with a known one. Membership spreads by SWIM, peers'
//! addresses by Kademlia: when the node sends to a member whose PeerId the
//! driver does not know yet, the packet is dropped (SWIM handles loss) and a
//! Kademlia lookup is started, at most one per [`LOOKUP_INTERVAL`].
//!
//! Each new connection starts with a [`Hello`]: where the peer's HTTP
//! gateway is, so a holder that P-Grid names can be fetched from.

pub mod behaviour;
pub mod show;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, noise, request_response, tcp, yamux};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::overlay::pgrid_node::{self, ValueRef};
use crate::overlay::trust::{Feedback, rank_candidates};
use crate::overlay::{self, Event, Load, MemberState, NodeId, OverlayRng};
use behaviour::{Behaviour, BehaviourEvent, Hello, Limits};

/// At most one Kademlia lookup for unknown members per this interval.
pub const LOOKUP_INTERVAL: Duration = Duration::from_secs(2);

/// How often an edge with no live member dials its bootstrap peers again.
/// (Cheap: only a node with no live member dials, and edges that start
/// together find each other in seconds.)
pub const BOOTSTRAP_RETRY: Duration = Duration::from_secs(2);

/// Holders this edge remembers having asked first (for exploration); the
/// oldest are forgotten past this many, and may be explored again.
pub const MAX_EXPLORED: usize = 4096;

/// Commands queued to the driver; more wait (the handle is async).
const COMMAND_QUEUE: usize = 256;

/// Overlay operations (holders, put, announce) in flight at once; more are
/// refused with [`NetError::Busy`].
pub const MAX_OPERATIONS: usize = 1024;

/// How long a caller waits for an overlay operation: P-Grid times out each
/// hop itself; this bounds the whole.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Most peers in the directory: every member of a large overlay fits.
pub const MAX_DIRECTORY: usize = 65_536;

/// Values stored here that the edge should act on, queued; past it they are
/// dropped with a warning (anti-entropy brings them again).
const STORED_QUEUE: usize = 1024;

/// The overlay's settings, validated (see `[overlay]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Where the swarm listens.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, `/ip4/…/tcp/…[/p2p/<peer id>]`.
    pub bootstrap: Vec<Multiaddr>,
    /// The overlay core's preset (SWIM, coordinates, P-Grid timings).
    pub preset: overlay::Preset,
    /// Connection and request bounds.
    pub limits: Limits,
    /// This edge's gateway URL, told to every peer in the hello.
    pub http_url: Option<String>,
    /// This edge's HTTP proxy URL, told to every peer in the hello.
    pub proxy_url: Option<String>,
    /// How many peers of a path keep the blocks of each object put there.
    pub replication: usize,
    /// Whether this edge is one of them when chosen; an edge that only
    /// caches (a laptop) says no.
    pub keep_replicas: bool,
    /// The reputation epoch; `None` means the preset's.
    pub trust_epoch: Option<Duration>,
}

/// Why the overlay could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The node key could not become a libp2p key (local).
    #[error("the node key is not a valid Ed25519 key for libp2p: {0}")]
    Key(String),
    /// The transport could not be set up (local).
    #[error("cannot set up the libp2p transport: {0}")]
    Transport(String),
    /// A listen address could not be bound (local: in use, not ours).
    #[error("cannot listen on overlay address {addr}: {message}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// What the transport said.
        message: String,
    },
    /// The driver has stopped (shutting down).
    #[error("the overlay is stopped")]
    Stopped,
    /// Too many operations in flight (local; retry later).
    #[error("too many overlay operations in flight (at most {max})")]
    Busy {
        /// The bound.
        max: usize,
    },
    /// Every peer asked at some hop timed out (peers).
    #[error("no peer answered the P-Grid lookup")]
    LookupFailed,
    /// The operation did not finish in time (peers).
    #[error("the overlay did not answer within {0:?}")]
    Timeout(Duration),
}

/// The core's id of a libp2p peer.
pub fn node_id_of(peer: &PeerId) -> NodeId {
    let digest = Sha256::digest(peer.to_bytes());
    NodeId(u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")))
}

/// The P-Grid key of a content name: the SHA-256 of its binary CID.
pub fn content_key(cid: &crate::content::Cid) -> [u8; 32] {
    Sha256::digest(cid.to_bytes()).into()
}

/// A peer that holds an object, as `holders` ranks them.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// Its id in the core.
    pub node: NodeId,
    /// Its gateway.
    pub http: String,
    /// Its HTTP proxy, if it runs one.
    pub proxy: Option<String>,
    /// Predicted RTT, ms, if its coordinate is known.
    pub rtt_ms: Option<f64>,
    /// Its load, from its last packet.
    pub load: Load,
}

/// A value stored at this edge as a responsible peer, which this edge is
/// one of the `replication` peers of the path to keep the object of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The key.
    pub key: [u8; 32],
    /// The value (a CID's text for content).
    pub value: ValueRef,
}

/// The address of a proxy URL as edges announce theirs in the hello
/// (`http://ip:port`).
pub fn proxy_socket(url: &str) -> Option<std::net::SocketAddr> {
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// What `gridedge status` and `gridedge peers` show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This node's core id.
    pub node_id: String,
    /// Its libp2p id.
    pub peer_id: String,
    /// Where it listens.
    pub listen: Vec<String>,
    /// Its gateway.
    pub http: Option<String>,
    /// SWIM incarnation.
    pub incarnation: u32,
    /// Lifeguard local health, 0 is healthy.
    pub health: u32,
    /// Its coordinate: position (ms), height (ms) and error.
    pub coordinate: CoordinateView,
    /// P-Grid.
    pub pgrid: PGridView,
    /// Known members other than this node.
    pub members: Vec<MemberView>,
    /// Packets the driver moved and dropped.
    pub counters: Counters,
}

/// A coordinate for display.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordinateView {
    /// Euclidean position, ms.
    pub position_ms: Vec<f64>,
    /// Height, ms.
    pub height_ms: f64,
    /// Moving relative error.
    pub error: f64,
}

/// This node's P-Grid state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PGridView {
    /// Its path, as bits (`ε` for the root).
    pub path: String,
    /// References per level, as core ids.
    pub refs: Vec<Vec<String>>,
    /// Known replicas.
    pub replicas: Vec<String>,
    /// Keys stored here.
    pub keys: usize,
    /// Exchanges run.
    pub exchanges: u64,
}

/// One member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    /// Core id.
    pub node_id: String,
    /// libp2p id, if known.
    pub peer_id: Option<String>,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// SWIM incarnation.
    pub incarnation: u32,
    /// Predicted RTT, ms.
    pub rtt_ms: Option<f64>,
    /// Requests in flight there.
    pub requests_in_flight: u32,
    /// Bytes per second it serves.
    pub served_bytes_per_s: u64,
    /// Reputation: `unknown`, `good` or `bad`.
    pub standing: String,
    /// This edge's own recent dealings with it were bad (wrong hashes,
    /// timeouts): it is skipped as a holder and a next hop.
    #[serde(default)]
    pub locally_bad: bool,
    /// Its gateway, from its hello.
    pub http: Option<String>,
    /// Whether a connection is open.
    pub connected: bool,
}

/// Driver counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Packets dropped: the destination's PeerId was not known yet.
    pub dropped_unknown_peer: u64,
    /// Packets that failed to decode.
    pub decode_errors: u64,
    /// Requests that failed (timeouts, closed connections).
    pub send_failures: u64,
}

enum Command {
    Status(oneshot::Sender<Status>),
    Holders {
        key: [u8; 32],
        also: Vec<NodeId>,
        reply: oneshot::Sender<Result<Vec<Holder>, NetError>>,
    },
    Put {
        key: [u8; 32],
        value: ValueRef,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Announce {
        key: [u8; 32],
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Record {
        node: NodeId,
        feedback: Feedback,
    },
}

/// The handle to the running overlay.
#[derive(Clone)]
pub struct Overlay {
    tx: mpsc::Sender<Command>,
    node_id: NodeId,
    /// The addresses of live members' proxies, from their hellos.
    member_proxies: Arc<parking_lot::RwLock<HashSet<IpAddr>>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// The running overlay: its handle, the values it stores for the edge to
/// act on, and the driver task.
pub struct Started {
    /// The handle.
    pub overlay: Overlay,
    /// Values stored here that this edge keeps the object of.
    pub stored: mpsc::Receiver<Stored>,
    /// The driver; it ends when the shutdown token is cancelled.
    pub task: tokio::task::JoinHandle<()>,
}

impl Overlay {
    /// Starts the swarm with the node's Ed25519 `secret`, listening on the
    /// configured addresses (bound before this returns, so a taken port is
    /// an error here), and joins through the bootstrap peers.
    pub async fn start(
        config: NetConfig,
        secret: [u8; 32],
        shutdown: CancellationToken,
    ) -> Result<Started, NetError> {
        let mut secret = secret;
        let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
            .map_err(|e| NetError::Key(e.to_string()))?;
        let peer_id = key.public().to_peer_id();
        let limits = config.limits;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetError::Transport(e.to_string()))?
            .with_behaviour(|key| Behaviour::new(key, limits))
            .map_err(|e| NetError::Transport(e.to_string()))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(Duration::from_secs(120))
                    // Every stream names one protocol the peer speaks, so
                    // the opener sends at once instead of waiting a round
                    // trip for the peer to confirm it (multistream-select
                    // V1). Without this each overlay packet cost 1.5 RTTs
                    // and SWIM measured RTTs three times too long.
                    .with_substream_upgrade_protocol_override(
                        libp2p::core::upgrade::Version::V1Lazy,
                    )
            })
            .build();
        let mut listening = Vec::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?;
            // The bind itself happens as the swarm is polled: wait for this
            // listener's address or its error.
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::NewListenAddr {
                        listener_id,
                        address,
                    } => {
                        listening.push(address);
                        if listener_id == id {
                            break;
                        }
                    }
                    SwarmEvent::ListenerClosed {
                        listener_id,
                        reason,
                        ..
                    } if listener_id == id => {
                        return Err(NetError::Listen {
                            addr: addr.clone(),
                            message: match reason {
                                Err(e) => e.to_string(),
                                Ok(()) => "closed".into(),
                            },
                        });
                    }
                    SwarmEvent::ListenerError { listener_id, error } if listener_id == id => {
                        return Err(NetError::Listen {
                            addr: addr.clone(),
                            message: error.to_string(),
                        });
                    }
                    _ => {}
                }
            }
        }
        let node_id = node_id_of(&peer_id);
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let now = Instant::now();
        let mut core = overlay::Config::preset(config.preset);
        if let Some(epoch) = config.trust_epoch {
            core.trust_epoch = Some(epoch);
        }
        let mut node = overlay::Node::new(node_id, core, OverlayRng::from_seed(seed), now);
        // Reputation epochs are slotted by the wall clock, so edges run
        // them together; a clock before 1970 runs none.
        if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            node.set_wall_clock(now, since.as_millis() as u64);
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (stored_tx, stored) = mpsc::channel(STORED_QUEUE);
        tracing::info!(
            %peer_id,
            node = %node_id,
            listen = ?listening,
            bootstrap = config.bootstrap.len(),
            "overlay: listening"
        );
        let mut driver = Driver {
            swarm,
            node,
            me: node_id,
            peer_id,
            listening,
            http: config.http_url.clone(),
            proxy: config.proxy_url.clone(),
            replication: config.replication.max(1),
            keep_replicas: config.keep_replicas,
            member_proxies: Arc::default(),
            directory: HashMap::new(),
            peers: BTreeMap::new(),
            connected: HashSet::new(),
            ops: HashMap::new(),
            stored: stored_tx,
            counters: Counters::default(),
            last_lookup: None,
            want_lookup: false,
            explored: VecDeque::new(),
            explored_set: HashSet::new(),
        };
        let member_proxies = driver.member_proxies.clone();
        driver.bootstrap(&config.bootstrap);
        let task = tokio::spawn(driver.run(rx, config.bootstrap.clone(), shutdown));
        Ok(Started {
            overlay: Overlay {
                tx,
                node_id,
                member_proxies,
            },
            stored,
            task,
        })
    }

    /// This node's core id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| NetError::Stopped)?;
        match tokio::time::timeout(OPERATION_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(NetError::Stopped),
            Err(_) => Err(NetError::Timeout(OPERATION_TIMEOUT)),
        }
    }

    /// The node's state, members and P-Grid.
    pub async fn status(&self) -> Result<Status, NetError> {
        self.ask(Command::Status).await
    }

    /// The peers that hold `key`'s object, best first (by reputation, then
    /// predicted RTT stretched by load), this node left out, each with a
    /// gateway to fetch from; `also` are ranked with them (a hint: the
    /// origin a stored value names).
    pub async fn holders(&self, key: [u8; 32], also: &[NodeId]) -> Result<Vec<Holder>, NetError> {
        let also = also.to_vec();
        self.ask(|reply| Command::Holders { key, also, reply })
            .await?
    }

    /// Stores `value` under `key` at the responsible peers.
    pub async fn put(&self, key: [u8; 32], value: ValueRef) -> Result<(), NetError> {
        self.ask(|reply| Command::Put { key, value, reply }).await?
    }

    /// Registers this edge as a holder of `key`'s object for a while.
    pub async fn announce(&self, key: [u8; 32]) -> Result<(), NetError> {
        self.ask(|reply| Command::Announce { key, reply }).await?
    }

    /// Whether `ip` is the address of a live member's proxy (an edge of
    /// the overlay that may ask this one's cache).
    pub fn is_member_proxy(&self, ip: IpAddr) -> bool {
        self.member_proxies
            .read()
            .contains(&crate::config::canonical(ip))
    }

    /// Reports how a transfer from `node` went (reputation feedback).
    /// Dropped when the driver's queue is full: feedback is advisory.
    pub fn record(&self, node: NodeId, feedback: Feedback) {
        let _ = self.tx.try_send(Command::Record { node, feedback });
    }
}

/// What the driver knows of a peer.
#[derive(Debug, Clone, Default)]
struct PeerEntry {
    /// Its gateway, from its hello.
    http: Option<String>,
    /// Its proxy, from its hello.
    proxy: Option<String>,
}

enum Operation {
    Holders(oneshot::Sender<Result<Vec<Holder>, NetError>>, Vec<NodeId>),
    Done(oneshot::Sender<Result<(), NetError>>),
}

impl Operation {
    /// Whether the caller gave up waiting.
    fn abandoned(&self) -> bool {
        match self {
            Operation::Holders(reply, _) => reply.is_closed(),
            Operation::Done(reply) => reply.is_closed(),
        }
    }
}

struct Driver {
    swarm: Swarm<Behaviour>,
    node: overlay::Node,
    me: NodeId,
    peer_id: PeerId,
    listening: Vec<Multiaddr>,
    http: Option<String>,
    proxy: Option<String>,
    replication: usize,
    keep_replicas: bool,
    /// Shared with the handles: see [`Overlay::is_member_proxy`].
    member_proxies: Arc<parking_lot::RwLock<HashSet<IpAddr>>>,
    /// Core id to libp2p id.
    directory: HashMap<NodeId, PeerId>,
    /// What we know of each peer, by libp2p id (ordered, for status).
    peers: BTreeMap<PeerId, PeerEntry>,
    connected: HashSet<PeerId>,
    ops: HashMap<u64, Operation>,
    stored: mpsc::Sender<Stored>,
    counters: Counters,
    last_lookup: Option<Instant>,
    want_lookup: bool,
    /// Holders already ranked first once (exploration), oldest first.
    explored: VecDeque<NodeId>,
    explored_set: HashSet<NodeId>,
}

impl Driver {
    fn bootstrap(&mut self, peers: &[Multiaddr]) {
        for addr in peers {
            let mut bare = addr.clone();
            if let Some(Protocol::P2p(peer)) = bare.iter().last() {
                bare.pop();
                self.swarm.behaviour_mut().kad.add_address(&peer, bare);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "overlay: cannot dial bootstrap peer");
            }
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        bootstrap: Vec<Multiaddr>,
        shutdown: CancellationToken,
    ) {
        let mut retry = tokio::time::interval(BOOTSTRAP_RETRY);
        retry.tick().await;
        loop {
            let wake = self
                .node
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(command) = commands.recv() => self.on_command(command),
                _ = tokio::time::sleep_until(wake.into()) => {
                    self.node.handle_timeout(Instant::now());
                }
                _ = retry.tick() => {
                    // Alone: the bootstrap peers were down when we started,
                    // or everyone we knew has gone. Try them again.
                    if !bootstrap.is_empty() && self.node.live_members().next().is_none() {
                        self.bootstrap(&bootstrap);
                    }
                }
            }
            self.drain();
        }
        // Tell the others we leave; the packets go out while the swarm is
        // polled a little longer.
        self.node.leave(Instant::now());
        self.drain();
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let event = self.swarm.select_next_some().await;
                self.on_swarm_event(event);
            }
        })
        .await;
        tracing::info!("overlay: stopped");
    }

    /// Moves what the node produced: packets to peers, events to callers.
    fn drain(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            match self.directory.get(&t.to) {
                Some(peer) => {
                    self.counters.packets_out += 1;
                    self.swarm
                        .behaviour_mut()
                        .overlay
                        .send_request(peer, t.payload);
                }
                None => {
                    self.counters.dropped_unknown_peer += 1;
                    self.want_lookup = true;
                }
            }
        }
        while let Some(event) = self.node.poll_event() {
            self.on_node_event(event);
        }
        if self.want_lookup
            && self
                .last_lookup
                .is_none_or(|at| at.elapsed() >= LOOKUP_INTERVAL)
        {
            self.want_lookup = false;
            self.last_lookup = Some(Instant::now());
            // A random key walks the DHT and meets peers along the way.
            self.swarm
                .behaviour_mut()
                .kad
                .get_closest_peers(PeerId::random());
        }
    }

    /// Learns `peer`'s core id; refuses one that collides with another
    /// peer's.
    fn learn(&mut self, peer: PeerId) -> Option<NodeId> {
        let node = node_id_of(&peer);
        if node == self.me && peer != self.peer_id {
            tracing::warn!(%peer, "overlay: peer id collides with ours; ignored");
            return None;
        }
        match self.directory.get(&node) {
            Some(known) if *known != peer => {
                tracing::warn!(%peer, %known, node = %node, "overlay: core id collision; the newer peer is ignored");
                return None;
            }
            Some(_) => {}
            None => {
                if self.directory.len() >= MAX_DIRECTORY {
                    return None;
                }
                self.directory.insert(node, peer);
                self.peers.insert(peer, PeerEntry::default());
            }
        }
        Some(node)
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                self.connected.insert(peer_id);
                let Some(node) = self.learn(peer_id) else {
                    return;
                };
                if num_established.get() == 1 {
                    let bytes = self.hello();
                    self.swarm
                        .behaviour_mut()
                        .hello
                        .send_request(&peer_id, bytes);
                }
                if self.node.member(node).is_none() {
                    // A peer we met but SWIM does not know: join through it
                    // (a push-pull), which is how the bootstrap works.
                    self.node.join(Instant::now(), &[node]);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "overlay: dial failed");
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listening.contains(&address) => {
                self.listening.push(address);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocol_version == behaviour::IDENTIFY_VERSION => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) => {
                if let Some(node) = self.learn(peer)
                    && self.node.member(node).is_none()
                {
                    // Kademlia found a peer SWIM has not heard of: meet it.
                    let _ = self.swarm.dial(peer);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Overlay(event)) => self.on_overlay(event),
            SwarmEvent::Behaviour(BehaviourEvent::Hello(event)) => self.on_hello(event),
            _ => {}
        }
    }

    fn on_overlay(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .overlay
                    .send_response(channel, Vec::new());
                let Some(from) = self.learn(peer) else {
                    return;
                };
                self.counters.packets_in += 1;
                if let Err(e) = self.node.handle_message(Instant::now(), from, &request) {
                    self.counters.decode_errors += 1;
                    tracing::debug!(%peer, error = %e, "overlay: malformed packet dropped");
                    self.node
                        .record(Instant::now(), from, Feedback::FalseAnswer);
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.counters.send_failures += 1;
                tracing::trace!(%peer, %error, "overlay: packet not delivered");
            }
            _ => {}
        }
    }

    /// This edge's hello, encoded.
    fn hello(&self) -> Vec<u8> {
        let hello = Hello {
            http: self.http.clone(),
            proxy: self.proxy.clone(),
        };
        serde_json::to_vec(&hello).expect("a hello serializes")
    }

    fn on_hello(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let (peer, bytes) = match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let bytes = self.hello();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .hello
                    .send_response(channel, bytes);
                (peer, request)
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => (peer, response),
            _ => return,
        };
        match serde_json::from_slice::<Hello>(&bytes) {
            Ok(hello) => {
                if self.learn(peer).is_some()
                    && let Some(entry) = self.peers.get_mut(&peer)
                {
                    entry.http = hello.http.filter(|url| url.len() <= 512);
                    entry.proxy = hello.proxy.filter(|url| url.len() <= 512);
                    self.refresh_member_proxies();
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "overlay: malformed hello"),
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        if self.ops.len() >= MAX_OPERATIONS {
            // A P-Grid operation may outlive its caller's patience; its
            // slot is freed once the caller is gone.
            self.ops.retain(|_, op| !op.abandoned());
        }
        if self.ops.len() >= MAX_OPERATIONS {
            match command {
                Command::Holders { reply, .. } => {
                    let _ = reply.send(Err(NetError::Busy {
                        max: MAX_OPERATIONS,
                    }));
                    return;
                }
                Command::Put { reply, .. } | Command::Announce { reply, .. } => {
                    let _ = reply.send(Err(NetError::Busy {
                        max: MAX_OPERATIONS,
                    }));
                    return;
                }
                Command::Status(_) | Command::Record { .. } => {}
            }
        }
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Record { node, feedback } => self.node.record(now, node, feedback),
            Command::Holders { key, also, reply } => {
                let id = self.node.holders(now, key);
                self.ops.insert(id, Operation::Holders(reply, also));
            }
            Command::Put { key, value, reply } => {
                let id = self.node.put(now, key, value);
                self.ops.insert(id, Operation::Done(reply));
            }
            Command::Announce { key, reply } => {
                let id = self.node.announce(now, key);
                self.ops.insert(id, Operation::Done(reply));
            }
        }
    }

    fn on_node_event(&mut self, event: Event) {
        match event {
            Event::Membership(m) => {
                tracing::info!(event = ?m, "overlay: membership");
                self.refresh_member_proxies();
            }
            Event::PGrid(pgrid_node::Event::Done { id, answer }) => match self.ops.remove(&id) {
                Some(Operation::Holders(reply, mut also)) => {
                    also.extend_from_slice(&answer.holders);
                    let _ = reply.send(Ok(self.rank(&also)));
                }
                Some(Operation::Done(reply)) => {
                    let _ = reply.send(Ok(()));
                }
                None => {}
            },
            Event::PGrid(pgrid_node::Event::Failed { id }) => match self.ops.remove(&id) {
                Some(Operation::Holders(reply, _)) => {
                    let _ = reply.send(Err(NetError::LookupFailed));
                }
                Some(Operation::Done(reply)) => {
                    let _ = reply.send(Err(NetError::LookupFailed));
                }
                None => {}
            },
            Event::PGrid(pgrid_node::Event::Stored { key, value }) => {
                if self.keep_replicas
                    && self.keeps(&key)
                    && self.stored.try_send(Stored { key, value }).is_err()
                {
                    tracing::warn!("overlay: stored values queue full; one dropped");
                }
            }
            Event::PGrid(pgrid_node::Event::PathChanged { path }) => {
                tracing::info!(%path, "overlay: P-Grid path changed");
            }
        }
    }

    /// Whether this node is one of the `replication` peers of its path
    /// that keep the object under `key`: the first by rendezvous hash of
    /// key and id, over this node and the replicas it knows, so replicas
    /// choose alike without a message.
    fn keeps(&self, key: &[u8; 32]) -> bool {
        let weight = |id: NodeId| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(key);
            h.update(id.0.to_be_bytes());
            h.finalize().into()
        };
        let mut set: Vec<NodeId> = self.node.pgrid().peer().replicas().to_vec();
        set.push(self.me);
        set.sort_by_key(|&id| weight(id));
        set.iter().take(self.replication).any(|&id| id == self.me)
    }

    fn rank(&mut self, holders: &[NodeId]) -> Vec<Holder> {
        let now = Instant::now();
        let mut seen = HashSet::new();
        let mut candidates: Vec<_> = holders
            .iter()
            .filter(|&&h| h != self.me && seen.insert(h))
            .filter(|h| self.http_of(**h).is_some())
            .map(|&h| self.node.candidate(now, h))
            .collect();
        rank_candidates(&mut candidates);
        // Exploration: a holder that ranks behind known ones would never be
        // asked, so it could never earn a standing, good or bad. The first
        // time a holder this edge never asked appears among usable
        // candidates, it is asked first, once; what it serves is verified,
        // so a bad one costs one retry and gets rated, and a good one
        // earns the standing that ranks it from then on.
        if let Some(pos) = candidates
            .iter()
            .position(|c| !self.explored_set.contains(&c.peer))
        {
            let new = candidates.remove(pos);
            self.explored_set.insert(new.peer);
            self.explored.push_back(new.peer);
            if self.explored.len() > MAX_EXPLORED
                && let Some(old) = self.explored.pop_front()
            {
                self.explored_set.remove(&old);
            }
            candidates.insert(0, new);
        }
        tracing::debug!(
            named = ?holders,
            ranked = ?candidates.iter().map(|c| c.peer).collect::<Vec<_>>(),
            "overlay: holders ranked"
        );
        candidates
            .into_iter()
            .filter_map(|c| {
                Some(Holder {
                    node: c.peer,
                    http: self.http_of(c.peer)?.to_owned(),
                    proxy: self
                        .directory
                        .get(&c.peer)
                        .and_then(|p| self.peers.get(p))
                        .and_then(|e| e.proxy.clone()),
                    rtt_ms: self
                        .node
                        .estimate_rtt_to(c.peer)
                        .map(|d| d.as_secs_f64() * 1000.0),
                    load: c.load,
                })
            })
            .collect()
    }

    /// Recomputes the addresses of live members' proxies.
    fn refresh_member_proxies(&self) {
        let ips: HashSet<IpAddr> = self
            .node
            .live_members()
            .filter_map(|n| self.peers.get(self.directory.get(&n)?)?.proxy.as_deref())
            .filter_map(proxy_socket)
            .map(|a| crate::config::canonical(a.ip()))
            .collect();
        *self.member_proxies.write() = ips;
    }

    fn http_of(&self, node: NodeId) -> Option<&str> {
        let peer = self.directory.get(&node)?;
        self.peers.get(peer)?.http.as_deref()
    }

    fn status(&self) -> Status {
        let coord = self.node.coordinates().global;
        let pgrid = self.node.pgrid();
        let ids = |v: &[NodeId]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let mut members: Vec<MemberView> = Vec::new();
        let mut seen = HashSet::new();
        let listed = self
            .node
            .live_members()
            .chain(self.directory.keys().copied())
            .collect::<Vec<_>>();
        for node in listed {
            if node == self.me || !seen.insert(node) {
                continue;
            }
            let Some((state, incarnation)) = self.node.member(node) else {
                continue;
            };
            let peer = self.directory.get(&node);
            let info = self.node.peer(node);
            members.push(MemberView {
                node_id: node.to_string(),
                peer_id: peer.map(ToString::to_string),
                state: match state {
                    MemberState::Alive => "alive",
                    MemberState::Suspect => "suspect",
                    MemberState::Dead => "dead",
                    MemberState::Left => "left",
                }
                .into(),
                incarnation,
                rtt_ms: self
                    .node
                    .estimate_rtt_to(node)
                    .map(|d| d.as_secs_f64() * 1000.0),
                requests_in_flight: info.map_or(0, |i| i.load.requests_in_flight),
                served_bytes_per_s: info.map_or(0, |i| i.load.served_bytes_per_s),
                standing: match pgrid.standing(node) {
                    crate::overlay::trust::Standing::Unknown => "unknown",
                    crate::overlay::trust::Standing::Good(_) => "good",
                    crate::overlay::trust::Standing::Bad => "bad",
                }
                .into(),
                locally_bad: self.node.candidate(Instant::now(), node).locally_bad,
                http: self.http_of(node).map(str::to_owned),
                connected: peer.is_some_and(|p| self.connected.contains(p)),
            });
        }
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let peer = pgrid.peer();
        Status {
            node_id: self.me.to_string(),
            peer_id: self.peer_id.to_string(),
            listen: self
                .listening
                .iter()
                .map(|a| format!("{a}/p2p/{}", self.peer_id))
                .collect(),
            http: self.http.clone(),
            incarnation: self.node.incarnation(),
            health: self.node.health_score(),
            coordinate: CoordinateView {
                position_ms: coord.vec.to_vec(),
                height_ms: coord.height_ms,
                error: coord.error,
            },
            pgrid: PGridView {
                path: peer.path().to_string(),
                refs: (0..peer.path().len()).map(|l| ids(peer.refs(l))).collect(),
                replicas: ids(peer.replicas()),
                keys: pgrid.stored_keys(),
                exchanges: pgrid.exchange_count(),
            },
            members,
            counters: Counters {
                decode_errors: self.node.decode_errors(),
                ..self.counters.clone()
            },
        }
    }
}

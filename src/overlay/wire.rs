//! The wire format of overlay packets: versioned, bounded, never panics.
//!
//! One packet is one frame on the transport (a libp2p request-response
//! message, or one simulated datagram):
//!
//! ```text
//! version u8 | kind u8 | load (in_flight u32, served_bytes_per_s u64)
//!            | message body | piggyback count u16 | updates
//! ```
//!
//! All integers are big-endian, floats are IEEE-754 bits. Every count is
//! checked against a limit and against the bytes left before anything is
//! allocated, every coordinate, share and score is checked for range, and
//! trailing bytes are an error, so a packet has exactly one encoding. A
//! decoder of a given version refuses both other versions and unknown
//! message kinds, so an old peer drops a kind it does not know cleanly.
//!
//! Kinds, one byte, in ranges by component:
//!
//! | kinds | component | messages |
//! | --- | --- | --- |
//! | 1-6 | SWIM ([`super::swim`]) | ping, indirect ping, ack, nack, push-pull, gossip |
//! | 16-21 | P-Grid ([`super::pgrid_node`]) | query, reply, replicate, exchange, exchange reply, announced (a holder copied to a replica) |
//! | 32-40 | trust ([`super::trust`]) | report, row request, row reply, scores, standing query, standing answer, power offer, agreements, liars |
//!
//! The body is a [`Body`] that wraps one component's own message enum,
//! not one flat enum of every kind. [`Swim`](super::swim::Swim) emits SWIM
//! [`Message`]s only, [`PGridNode`](super::pgrid_node::PGridNode) its
//! [`pgrid_node::Message`], the trust core its [`trust::Message`], and the
//! simulator passes the latter two around as values; the
//! [`Node`](super::Node) reads the load and piggyback of every packet and
//! hands the body to its component, as a hierarchical state machine would
//! (for now it has only SWIM, and drops the other bodies). Folding P-Grid
//! and trust variants into SWIM's enum would make `Swim`'s output type
//! admit messages it never sends, and make every match on it name them.
//! On the wire it is still one kind byte, so every kind rides in the same
//! framing and carries the sender's load and piggybacked membership
//! updates, whichever component it is for.

use super::coord::{Coordinate, DIM, PeerCoord};
use super::load::Load;
use super::pgrid::{MAX_PATH_BITS, Path, PeerState};
use super::pgrid_node::{
    self, Answer, MAX_EXCHANGE_KEYS, MAX_SYNC_ENTRIES, MAX_VALUES_PER_KEY, Op, ValueRef,
};
use super::swim::MemberState;
use super::trust::{self, RowEntry, Standing, TrustRow};
use super::{Incarnation, NodeId};

/// The wire version this code speaks.
pub const VERSION: u8 = 2;

/// Largest packet accepted or produced. A push-pull of the largest member
/// table (13 bytes per member) fits; everything else is far smaller.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Most members in one push-pull state exchange. Equal to the default
/// `max_members`; a larger table is sent truncated (anti-entropy repairs
/// the rest over the following exchanges).
pub const MAX_PUSH_PULL_MEMBERS: usize = 65_536;

/// Most piggybacked updates in one packet. The byte budget
/// (`max_piggyback_bytes`) normally stops well before this.
pub const MAX_PIGGYBACK: usize = 255;

/// Longest P-Grid query path: a peer drops a query whose path is longer
/// than `2 * maxl + 2` and appends itself before forwarding or answering,
/// so a query or reply on the wire has at most `2 * maxl + 3` peers, and
/// `maxl` is at most [`MAX_PATH_BITS`] (64).
pub const MAX_QUERY_PATH: usize = 2 * MAX_PATH_BITS as usize + 3;

/// Largest value reference, bytes: a value names where an object is (a
/// CID is under 100 bytes, a URL key a few hundred); 1 KiB holds any
/// sensible one and keeps the largest replication batch near 300 KB.
pub const MAX_VALUE_REF_BYTES: usize = 1024;

/// Most values in one answer: a peer stores at most
/// [`MAX_VALUES_PER_KEY`] under a key and answers with them.
pub const MAX_ANSWER_VALUES: usize = MAX_VALUES_PER_KEY;

/// Most holders in one answer: the responsible peer, its replicas (16 by
/// default, `max_replicas`) and the registered holders (16 per key), 33
/// at the defaults; 256 leaves room for larger replica sets.
pub const MAX_ANSWER_HOLDERS: usize = 256;

/// Most entries in one replication batch: [`MAX_SYNC_ENTRIES`], plus the
/// rest of the key that reached it (a batch is cut after a whole key).
pub const MAX_REPLICATE_ENTRIES: usize = MAX_SYNC_ENTRIES + MAX_VALUES_PER_KEY;

/// Most references per level in an exchanged routing state: `refmax` is 8
/// by default; 64 leaves room for a larger setting.
pub const MAX_STATE_REFS: usize = 64;

/// Most replicas in an exchanged routing state (`max_replicas`, 16 by
/// default).
pub const MAX_STATE_REPLICAS: usize = 256;

/// Most peers an exchange reply asks the initiator to meet (the
/// recursion picks one per meeting).
pub const MAX_MEET: usize = 8;

/// Most entries in a trust row (a report or a look-ahead walk row): rows
/// hold `max_row` entries, 32 by default; 256 leaves room for a larger
/// setting, at 24 bytes an entry (6 KiB).
pub const MAX_ROW_ENTRIES: usize = 256;

/// Most scores in one batch of a walk round: 4,096 entries of 16 bytes is
/// 64 KiB, well under [`MAX_PACKET_BYTES`] and quick to send; a manager
/// with more for one destination splits them over several messages of
/// the same round.
pub const MAX_SCORES: usize = 4096;

/// Most peers in one standing query or answer: a reader asks about the
/// candidates of one choice (a routing level's references, a key's
/// holders and replicas), a few dozen.
pub const MAX_STANDING_PEERS: usize = 256;

/// Most candidates in one power-node offer: the power nodes of an epoch
/// (`power_nodes`, 16 by default) are the most a manager need offer; 64
/// leaves room for a larger setting.
pub const MAX_POWER_OFFER: usize = 64;

/// Errors from decoding a packet. Every one is the sending peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet is larger than [`MAX_PACKET_BYTES`].
    #[error("packet of {len} bytes exceeds {max}")]
    TooLarge {
        /// The limit.
        max: usize,
        /// The packet's length.
        len: usize,
    },
    /// The packet ended in the middle of a field.
    #[error("packet truncated")]
    Truncated,
    /// The packet is of a wire version we do not speak.
    #[error("unsupported wire version {version}")]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The message kind byte is unknown.
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// A piggybacked update has an unknown tag.
    #[error("unknown update tag {tag}")]
    UnknownUpdate {
        /// The tag byte received.
        tag: u8,
    },
    /// A member state byte is unknown.
    #[error("unknown member state {state}")]
    UnknownState {
        /// The state byte received.
        state: u8,
    },
    /// A boolean or flag byte is neither 0 nor 1.
    #[error("invalid flag byte {value}")]
    InvalidFlag {
        /// The byte received.
        value: u8,
    },
    /// A list is longer than its limit.
    #[error("list of {len} items exceeds {max}")]
    TooManyItems {
        /// The limit.
        max: usize,
        /// The announced count.
        len: usize,
    },
    /// A coordinate is not finite or out of range.
    #[error("invalid coordinate")]
    InvalidCoordinate,
    /// A byte string (a P-Grid value reference) is longer than its limit.
    #[error("value of {len} bytes exceeds {max}")]
    ValueTooLong {
        /// The limit.
        max: usize,
        /// The announced length.
        len: usize,
    },
    /// A P-Grid query's operation byte is unknown.
    #[error("unknown P-Grid operation {op}")]
    UnknownOp {
        /// The byte received.
        op: u8,
    },
    /// A standing's tag byte is unknown.
    #[error("unknown standing tag {tag}")]
    UnknownStanding {
        /// The byte received.
        tag: u8,
    },
    /// A trust share is not a finite number in `[0, 1]`.
    #[error("trust share not in [0, 1]")]
    InvalidShare,
    /// A trust score is not finite or is negative.
    #[error("trust score not finite and non-negative")]
    InvalidScore,
    /// A P-Grid path is longer than 64 bits or has bits past its length.
    #[error("invalid P-Grid path")]
    InvalidPath,
    /// Bytes remain after the packet.
    #[error("{len} trailing bytes")]
    TrailingBytes {
        /// How many bytes remain.
        len: usize,
    },
}

/// Errors from encoding a packet. These are local bugs: the node never
/// builds a packet over its limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A list is longer than its limit.
    #[error("list of {len} items exceeds {max}")]
    TooManyItems {
        /// The limit.
        max: usize,
        /// The list's length.
        len: usize,
    },
    /// A byte string (a P-Grid value reference) is longer than its limit;
    /// the edge must refuse such a value before it reaches P-Grid.
    #[error("value of {len} bytes exceeds {max}")]
    ValueTooLong {
        /// The limit.
        max: usize,
        /// The value's length.
        len: usize,
    },
    /// A trust share is not a finite number in `[0, 1]`.
    #[error("trust share not in [0, 1]")]
    InvalidShare,
    /// A trust score is not finite or is negative.
    #[error("trust score not finite and non-negative")]
    InvalidScore,
    /// The encoded packet is larger than [`MAX_PACKET_BYTES`].
    #[error("packet of {len} bytes exceeds {max}")]
    TooLarge {
        /// The limit.
        max: usize,
        /// The packet's length.
        len: usize,
    },
}

/// One gossip update about a member (SWIM section 4.1: piggybacked on
/// every packet rather than multicast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// `id` is alive at `incarnation` (a join, or a refutation).
    Alive {
        /// The member.
        id: NodeId,
        /// Its incarnation.
        incarnation: Incarnation,
    },
    /// `from` suspects `id` at `incarnation`.
    Suspect {
        /// The member.
        id: NodeId,
        /// The incarnation suspected.
        incarnation: Incarnation,
        /// Who suspects it; distinct senders are independent confirmations.
        from: NodeId,
    },
    /// `from` declares `id` dead at `incarnation`; `from == id` is a leave.
    Dead {
        /// The member.
        id: NodeId,
        /// The incarnation declared dead.
        incarnation: Incarnation,
        /// Who declares it.
        from: NodeId,
    },
}

impl Update {
    /// The member the update is about.
    pub fn id(&self) -> NodeId {
        match *self {
            Update::Alive { id, .. } | Update::Suspect { id, .. } | Update::Dead { id, .. } => id,
        }
    }

    /// Bytes this update takes on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Update::Alive { .. } => 1 + 8 + 4,
            Update::Suspect { .. } | Update::Dead { .. } => 1 + 8 + 4 + 8,
        }
    }
}

/// One member's state in a push-pull exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberEntry {
    /// The member.
    pub id: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its state as the sender sees it.
    pub state: MemberState,
}

/// Anti-entropy: the sender's whole member table (memberlist push-pull).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushPull {
    /// The sender is joining; the receiver answers even if busy.
    pub join: bool,
    /// This is the answer to a push-pull; do not answer again.
    pub reply: bool,
    /// The member table, at most [`MAX_PUSH_PULL_MEMBERS`].
    pub members: Vec<MemberEntry>,
}

/// The body of a packet.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// A direct probe of `target` (SWIM section 3.1).
    Ping {
        /// Echoed in the ack.
        seq: u32,
        /// The probed member; a ping meant for someone else is dropped.
        target: NodeId,
    },
    /// Ask the receiver to probe `target` for us (SWIM `ping-req`).
    IndirectPing {
        /// Echoed in the forwarded ack or nack.
        seq: u32,
        /// The member to probe.
        target: NodeId,
        /// Send a nack if the target does not answer (Lifeguard 4.1: a
        /// missing nack tells the prober that it is the slow one).
        want_nack: bool,
    },
    /// The answer to a ping; carries the sender's coordinates, so every
    /// probe round trip is also a coordinate sample.
    Ack {
        /// The ping's sequence number.
        seq: u32,
        /// The acking node's coordinates.
        coord: Option<PeerCoord>,
    },
    /// An indirect probe's target did not answer in time.
    Nack {
        /// The indirect ping's sequence number.
        seq: u32,
    },
    /// Full state exchange.
    PushPull(PushPull),
    /// Nothing but piggybacked updates (a gossip round).
    Gossip,
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Ping { .. } => 1,
            Message::IndirectPing { .. } => 2,
            Message::Ack { .. } => 3,
            Message::Nack { .. } => 4,
            Message::PushPull(_) => 5,
            Message::Gossip => 6,
        }
    }
}

/// The body of a packet: one component's message (see the module doc for
/// why it wraps the components' own enums).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Body {
    /// Membership and failure detection, kinds 1 to 6.
    Swim(Message),
    /// A P-Grid query, reply, replication batch, exchange or copied holder
    /// registration, kinds 16 to 21.
    PGrid(pgrid_node::Message),
    /// A reputation message, kinds 32 to 38.
    Trust(trust::Message),
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Swim(m) => m.kind(),
            Body::PGrid(pgrid_node::Message::Query { .. }) => 16,
            Body::PGrid(pgrid_node::Message::Reply { .. }) => 17,
            Body::PGrid(pgrid_node::Message::Replicate { .. }) => 18,
            Body::PGrid(pgrid_node::Message::Exchange { .. }) => 19,
            Body::PGrid(pgrid_node::Message::ExchangeReply { .. }) => 20,
            Body::PGrid(pgrid_node::Message::Announced { .. }) => 21,
            Body::Trust(m) => match m {
                trust::Message::Report { .. } => 32,
                trust::Message::RowRequest { .. } => 33,
                trust::Message::RowReply { .. } => 34,
                trust::Message::Scores { .. } => 35,
                trust::Message::StandingQuery { .. } => 36,
                trust::Message::StandingAnswer { .. } => 37,
                trust::Message::PowerOffer { .. } => 38,
                trust::Message::Agreements { .. } => 39,
                trust::Message::Liars { .. } => 40,
            },
        }
    }
}

impl From<Message> for Body {
    fn from(m: Message) -> Self {
        Body::Swim(m)
    }
}

impl From<pgrid_node::Message> for Body {
    fn from(m: pgrid_node::Message) -> Self {
        Body::PGrid(m)
    }
}

impl From<trust::Message> for Body {
    fn from(m: trust::Message) -> Self {
        Body::Trust(m)
    }
}

/// One overlay packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// The sender's load, on every packet.
    pub load: Load,
    /// The body.
    pub message: Body,
    /// Piggybacked membership updates, at most [`MAX_PIGGYBACK`].
    pub piggyback: Vec<Update>,
}

impl Packet {
    /// Encodes the packet.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        check_count(self.piggyback.len(), MAX_PIGGYBACK)?;
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        out.push(self.message.kind());
        out.extend_from_slice(&self.load.requests_in_flight.to_be_bytes());
        out.extend_from_slice(&self.load.served_bytes_per_s.to_be_bytes());
        match &self.message {
            Body::Swim(m) => put_swim(&mut out, m)?,
            Body::PGrid(m) => put_pgrid(&mut out, m)?,
            Body::Trust(m) => put_trust(&mut out, m)?,
        }
        out.extend_from_slice(&(self.piggyback.len() as u16).to_be_bytes());
        for u in &self.piggyback {
            put_update(&mut out, u);
        }
        if out.len() > MAX_PACKET_BYTES {
            return Err(EncodeError::TooLarge {
                max: MAX_PACKET_BYTES,
                len: out.len(),
            });
        }
        Ok(out)
    }

    /// Decodes a packet; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
        if bytes.len() > MAX_PACKET_BYTES {
            return Err(DecodeError::TooLarge {
                max: MAX_PACKET_BYTES,
                len: bytes.len(),
            });
        }
        let mut r = Reader { buf: bytes };
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let kind = r.u8()?;
        let load = Load {
            requests_in_flight: r.u32()?,
            served_bytes_per_s: r.u64()?,
        };
        let message = match kind {
            1..=6 => Body::Swim(r.swim(kind)?),
            16..=21 => Body::PGrid(r.pgrid(kind)?),
            32..=40 => Body::Trust(r.trust(kind)?),
            kind => return Err(DecodeError::UnknownKind { kind }),
        };
        let count = r.u16()? as usize;
        if count > MAX_PIGGYBACK {
            return Err(DecodeError::TooManyItems {
                max: MAX_PIGGYBACK,
                len: count,
            });
        }
        let mut piggyback = Vec::with_capacity(count.min(r.buf.len() / 13));
        for _ in 0..count {
            piggyback.push(r.update()?);
        }
        if !r.buf.is_empty() {
            return Err(DecodeError::TrailingBytes { len: r.buf.len() });
        }
        Ok(Packet {
            load,
            message,
            piggyback,
        })
    }
}

fn check_count(len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::TooManyItems { max, len });
    }
    Ok(())
}

/// A list's length as the u16 that precedes it, checked against `max`
/// (every `max` of the new kinds fits a u16).
fn put_count(out: &mut Vec<u8>, len: usize, max: usize) -> Result<(), EncodeError> {
    check_count(len, max)?;
    out.extend_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

fn put_swim(out: &mut Vec<u8>, m: &Message) -> Result<(), EncodeError> {
    match m {
        Message::Ping { seq, target } => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&target.0.to_be_bytes());
        }
        Message::IndirectPing {
            seq,
            target,
            want_nack,
        } => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&target.0.to_be_bytes());
            out.push(u8::from(*want_nack));
        }
        Message::Ack { seq, coord } => {
            out.extend_from_slice(&seq.to_be_bytes());
            match coord {
                None => out.push(0),
                Some(pc) => {
                    out.push(if pc.local.is_some() { 2 } else { 1 });
                    put_coord(out, &pc.global);
                    if let Some((cluster, local)) = &pc.local {
                        out.extend_from_slice(&cluster.0.to_be_bytes());
                        put_coord(out, local);
                    }
                }
            }
        }
        Message::Nack { seq } => out.extend_from_slice(&seq.to_be_bytes()),
        Message::PushPull(pp) => {
            check_count(pp.members.len(), MAX_PUSH_PULL_MEMBERS)?;
            out.push(u8::from(pp.join) | (u8::from(pp.reply) << 1));
            out.extend_from_slice(&(pp.members.len() as u32).to_be_bytes());
            out.reserve(pp.members.len() * 13);
            for m in &pp.members {
                out.extend_from_slice(&m.id.0.to_be_bytes());
                out.extend_from_slice(&m.incarnation.to_be_bytes());
                out.push(m.state as u8);
            }
        }
        Message::Gossip => {}
    }
    Ok(())
}

// P-Grid bodies:
//
//   query      key [32] | op | path
//   reply      key [32] | answer | path
//   replicate  count u16 | (key [32] | value)*
//
//   op      1 put + value | 2 get | 3 holders | 4 announce
//   value   len u16 | bytes
//   path    count u16 | id u64*
//   answer  values count u16 | value* | holders count u16 | id u64*
//           | flags u8 (1: answered_by follows, 2: from_cache) | [id u64]

fn put_pgrid(out: &mut Vec<u8>, m: &pgrid_node::Message) -> Result<(), EncodeError> {
    match m {
        pgrid_node::Message::Query { key, op, path } => {
            out.extend_from_slice(key);
            match op {
                Op::Put(value) => {
                    out.push(1);
                    put_value(out, value)?;
                }
                Op::Get => out.push(2),
                Op::Holders => out.push(3),
                Op::Announce => out.push(4),
            }
            put_ids(out, path, MAX_QUERY_PATH)?;
        }
        pgrid_node::Message::Reply { key, answer, path } => {
            out.extend_from_slice(key);
            put_count(out, answer.values.len(), MAX_ANSWER_VALUES)?;
            for v in &answer.values {
                put_value(out, v)?;
            }
            put_ids(out, &answer.holders, MAX_ANSWER_HOLDERS)?;
            out.push(u8::from(answer.answered_by.is_some()) | (u8::from(answer.from_cache) << 1));
            if let Some(by) = answer.answered_by {
                out.extend_from_slice(&by.0.to_be_bytes());
            }
            put_ids(out, path, MAX_QUERY_PATH)?;
        }
        pgrid_node::Message::Replicate { entries } => {
            put_count(out, entries.len(), MAX_REPLICATE_ENTRIES)?;
            for (key, value) in entries {
                out.extend_from_slice(key);
                put_value(out, value)?;
            }
        }
        pgrid_node::Message::Exchange { depth, state, keys } => {
            out.push(*depth);
            put_state(out, state)?;
            put_count(out, keys.len(), MAX_EXCHANGE_KEYS)?;
            for k in keys {
                out.extend_from_slice(&k.to_be_bytes());
            }
        }
        pgrid_node::Message::ExchangeReply { basis, state, meet } => {
            put_path(out, basis);
            put_state(out, state)?;
            put_ids(out, meet, MAX_MEET)?;
        }
        pgrid_node::Message::Announced { key, holder } => {
            out.extend_from_slice(key);
            out.extend_from_slice(&holder.0.to_be_bytes());
        }
    }
    Ok(())
}

//   path    len u8 | bits u64 (bits past len zero)
//   state   path | per level of the path: refs count u16 | id u64*
//           | replicas count u16 | id u64*
fn put_path(out: &mut Vec<u8>, path: &Path) {
    out.push(path.len());
    out.extend_from_slice(&path.bits().to_be_bytes());
}

fn put_state(out: &mut Vec<u8>, state: &PeerState) -> Result<(), EncodeError> {
    if state.refs.len() != usize::from(state.path.len()) {
        return Err(EncodeError::TooManyItems {
            max: usize::from(state.path.len()),
            len: state.refs.len(),
        });
    }
    put_path(out, &state.path);
    for level in &state.refs {
        put_ids(out, level, MAX_STATE_REFS)?;
    }
    put_ids(out, &state.replicas, MAX_STATE_REPLICAS)
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) -> Result<(), EncodeError> {
    if value.len() > MAX_VALUE_REF_BYTES {
        return Err(EncodeError::ValueTooLong {
            max: MAX_VALUE_REF_BYTES,
            len: value.len(),
        });
    }
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

fn put_ids(out: &mut Vec<u8>, ids: &[NodeId], max: usize) -> Result<(), EncodeError> {
    put_count(out, ids.len(), max)?;
    for id in ids {
        out.extend_from_slice(&id.0.to_be_bytes());
    }
    Ok(())
}

// Trust bodies:
//
//   report           epoch u32 | count u16 | (id u64 | good f64 | bad f64)*
//   row request      epoch u32
//   row reply        epoch u32 | count u16 | (id u64 | share f64)*
//   scores           epoch u32 | round u16 | count u16 | (id u64 | score f64)*
//   standing query   count u16 | id u64*
//   standing answer  count u16 | (id u64 | standing)*
//   power offer      epoch u32 | count u16 | (id u64 | score f64)*
//
//   standing  0 unknown | 1 good + score f64 | 2 bad
//
// Shares are finite and in [0, 1]; scores finite and non-negative.

fn put_trust(out: &mut Vec<u8>, m: &trust::Message) -> Result<(), EncodeError> {
    match m {
        trust::Message::Report { epoch, row } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            put_count(out, row.entries.len(), MAX_ROW_ENTRIES)?;
            for e in &row.entries {
                out.extend_from_slice(&e.peer.0.to_be_bytes());
                put_share(out, e.good)?;
                put_share(out, e.bad)?;
            }
        }
        trust::Message::RowRequest { epoch } => out.extend_from_slice(&epoch.to_be_bytes()),
        trust::Message::RowReply { epoch, row } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            put_count(out, row.len(), MAX_ROW_ENTRIES)?;
            for &(peer, share) in row {
                out.extend_from_slice(&peer.0.to_be_bytes());
                put_share(out, share)?;
            }
        }
        trust::Message::Scores {
            epoch,
            round,
            scores,
        } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&round.to_be_bytes());
            put_scores(out, scores, MAX_SCORES)?;
        }
        trust::Message::StandingQuery { peers } => put_ids(out, peers, MAX_STANDING_PEERS)?,
        trust::Message::StandingAnswer { standings } => {
            put_count(out, standings.len(), MAX_STANDING_PEERS)?;
            for &(peer, standing) in standings {
                out.extend_from_slice(&peer.0.to_be_bytes());
                match standing {
                    Standing::Unknown => out.push(0),
                    Standing::Good(score) => {
                        out.push(1);
                        put_score(out, score)?;
                    }
                    Standing::Bad => out.push(2),
                }
            }
        }
        trust::Message::PowerOffer { epoch, candidates } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            put_scores(out, candidates, MAX_POWER_OFFER)?;
        }
        trust::Message::Agreements { epoch, entries } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            put_count(out, entries.len(), MAX_SCORES)?;
            for &(rater, peer, agreed) in entries {
                out.extend_from_slice(&rater.0.to_be_bytes());
                out.extend_from_slice(&peer.0.to_be_bytes());
                out.push(u8::from(agreed));
            }
        }
        trust::Message::Liars { epoch, raters } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            put_ids(out, raters, MAX_SCORES)?;
        }
    }
    Ok(())
}

fn put_share(out: &mut Vec<u8>, x: f64) -> Result<(), EncodeError> {
    if !valid_share(x) {
        return Err(EncodeError::InvalidShare);
    }
    out.extend_from_slice(&x.to_bits().to_be_bytes());
    Ok(())
}

fn put_score(out: &mut Vec<u8>, x: f64) -> Result<(), EncodeError> {
    if !valid_score(x) {
        return Err(EncodeError::InvalidScore);
    }
    out.extend_from_slice(&x.to_bits().to_be_bytes());
    Ok(())
}

fn put_scores(out: &mut Vec<u8>, scores: &[(NodeId, f64)], max: usize) -> Result<(), EncodeError> {
    put_count(out, scores.len(), max)?;
    for &(peer, score) in scores {
        out.extend_from_slice(&peer.0.to_be_bytes());
        put_score(out, score)?;
    }
    Ok(())
}

/// A share of a rater's weight: a finite number in `[0, 1]` (NaN fails
/// both comparisons).
fn valid_share(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

/// A score: finite and not negative (`-0.0` is zero, and keeps its bits).
fn valid_score(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn put_coord(out: &mut Vec<u8>, c: &Coordinate) {
    for x in c.vec {
        out.extend_from_slice(&x.to_bits().to_be_bytes());
    }
    for x in [c.height_ms, c.error, c.adjustment_ms] {
        out.extend_from_slice(&x.to_bits().to_be_bytes());
    }
}

fn put_update(out: &mut Vec<u8>, u: &Update) {
    match *u {
        Update::Alive { id, incarnation } => {
            out.push(1);
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&incarnation.to_be_bytes());
        }
        Update::Suspect {
            id,
            incarnation,
            from,
        }
        | Update::Dead {
            id,
            incarnation,
            from,
        } => {
            out.push(if matches!(u, Update::Suspect { .. }) {
                2
            } else {
                3
            });
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&incarnation.to_be_bytes());
            out.extend_from_slice(&from.0.to_be_bytes());
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidFlag { value }),
        }
    }
    fn state(&mut self) -> Result<MemberState, DecodeError> {
        let state = self.u8()?;
        MemberState::from_u8(state).ok_or(DecodeError::UnknownState { state })
    }
    fn coord(&mut self) -> Result<Coordinate, DecodeError> {
        let mut vec = [0.0; DIM];
        for x in &mut vec {
            *x = self.f64()?;
        }
        let c = Coordinate {
            vec,
            height_ms: self.f64()?,
            error: self.f64()?,
            adjustment_ms: self.f64()?,
        };
        if !c.is_valid() {
            return Err(DecodeError::InvalidCoordinate);
        }
        Ok(c)
    }
    /// A u16 count of items of at least `item_bytes` each, checked
    /// against `max` and against the bytes left, before anything is
    /// allocated for them.
    fn count(&mut self, max: usize, item_bytes: usize) -> Result<usize, DecodeError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(DecodeError::TooManyItems { max, len });
        }
        if self.buf.len() < len * item_bytes {
            return Err(DecodeError::Truncated);
        }
        Ok(len)
    }
    fn id(&mut self) -> Result<NodeId, DecodeError> {
        Ok(NodeId(self.u64()?))
    }
    fn ids(&mut self, max: usize) -> Result<Vec<NodeId>, DecodeError> {
        let len = self.count(max, 8)?;
        (0..len).map(|_| self.id()).collect()
    }
    fn key(&mut self) -> Result<[u8; 32], DecodeError> {
        self.take()
    }
    fn value(&mut self) -> Result<ValueRef, DecodeError> {
        let len = self.u16()? as usize;
        if len > MAX_VALUE_REF_BYTES {
            return Err(DecodeError::ValueTooLong {
                max: MAX_VALUE_REF_BYTES,
                len,
            });
        }
        let (head, rest) = self
            .buf
            .split_at_checked(len)
            .ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(head.to_vec())
    }
    fn share(&mut self) -> Result<f64, DecodeError> {
        let x = self.f64()?;
        valid_share(x).then_some(x).ok_or(DecodeError::InvalidShare)
    }
    fn score(&mut self) -> Result<f64, DecodeError> {
        let x = self.f64()?;
        valid_score(x).then_some(x).ok_or(DecodeError::InvalidScore)
    }
    fn scores(&mut self, max: usize) -> Result<Vec<(NodeId, f64)>, DecodeError> {
        let len = self.count(max, 16)?;
        (0..len).map(|_| Ok((self.id()?, self.score()?))).collect()
    }

    fn swim(&mut self, kind: u8) -> Result<Message, DecodeError> {
        Ok(match kind {
            1 => Message::Ping {
                seq: self.u32()?,
                target: self.id()?,
            },
            2 => Message::IndirectPing {
                seq: self.u32()?,
                target: self.id()?,
                want_nack: self.flag()?,
            },
            3 => {
                let seq = self.u32()?;
                let coord = match self.u8()? {
                    0 => None,
                    flag @ (1 | 2) => {
                        let global = self.coord()?;
                        let local = if flag == 2 {
                            Some((self.id()?, self.coord()?))
                        } else {
                            None
                        };
                        Some(PeerCoord { global, local })
                    }
                    value => return Err(DecodeError::InvalidFlag { value }),
                };
                Message::Ack { seq, coord }
            }
            4 => Message::Nack { seq: self.u32()? },
            5 => {
                let flags = self.u8()?;
                if flags > 3 {
                    return Err(DecodeError::InvalidFlag { value: flags });
                }
                let len = self.u32()? as usize;
                if len > MAX_PUSH_PULL_MEMBERS {
                    return Err(DecodeError::TooManyItems {
                        max: MAX_PUSH_PULL_MEMBERS,
                        len,
                    });
                }
                // Check the length against the bytes present before
                // allocating, so a lying count cannot make us reserve memory.
                if self.buf.len() < len * 13 {
                    return Err(DecodeError::Truncated);
                }
                let mut members = Vec::with_capacity(len);
                for _ in 0..len {
                    members.push(MemberEntry {
                        id: self.id()?,
                        incarnation: self.u32()?,
                        state: self.state()?,
                    });
                }
                Message::PushPull(PushPull {
                    join: flags & 1 != 0,
                    reply: flags & 2 != 0,
                    members,
                })
            }
            6 => Message::Gossip,
            kind => return Err(DecodeError::UnknownKind { kind }),
        })
    }

    fn pgrid(&mut self, kind: u8) -> Result<pgrid_node::Message, DecodeError> {
        Ok(match kind {
            16 => {
                let key = self.key()?;
                let op = match self.u8()? {
                    1 => Op::Put(self.value()?),
                    2 => Op::Get,
                    3 => Op::Holders,
                    4 => Op::Announce,
                    op => return Err(DecodeError::UnknownOp { op }),
                };
                let path = self.ids(MAX_QUERY_PATH)?;
                pgrid_node::Message::Query { key, op, path }
            }
            17 => {
                let key = self.key()?;
                let len = self.count(MAX_ANSWER_VALUES, 2)?;
                let values = (0..len).map(|_| self.value()).collect::<Result<_, _>>()?;
                let holders = self.ids(MAX_ANSWER_HOLDERS)?;
                let flags = self.u8()?;
                if flags > 3 {
                    return Err(DecodeError::InvalidFlag { value: flags });
                }
                let answered_by = if flags & 1 != 0 {
                    Some(self.id()?)
                } else {
                    None
                };
                let answer = Answer {
                    values,
                    holders,
                    answered_by,
                    from_cache: flags & 2 != 0,
                };
                let path = self.ids(MAX_QUERY_PATH)?;
                pgrid_node::Message::Reply { key, answer, path }
            }
            18 => {
                let len = self.count(MAX_REPLICATE_ENTRIES, 32 + 2)?;
                let entries = (0..len)
                    .map(|_| Ok((self.key()?, self.value()?)))
                    .collect::<Result<_, DecodeError>>()?;
                pgrid_node::Message::Replicate { entries }
            }
            19 => {
                let depth = self.u8()?;
                let state = self.peer_state()?;
                let len = self.count(MAX_EXCHANGE_KEYS, 8)?;
                let keys = (0..len).map(|_| self.u64()).collect::<Result<_, _>>()?;
                pgrid_node::Message::Exchange { depth, state, keys }
            }
            20 => {
                let basis = self.path()?;
                let state = self.peer_state()?;
                let meet = self.ids(MAX_MEET)?;
                pgrid_node::Message::ExchangeReply { basis, state, meet }
            }
            21 => {
                let key = self.key()?;
                let holder = NodeId(self.u64()?);
                pgrid_node::Message::Announced { key, holder }
            }
            kind => return Err(DecodeError::UnknownKind { kind }),
        })
    }

    fn path(&mut self) -> Result<Path, DecodeError> {
        let len = self.u8()?;
        let bits = self.u64()?;
        let path = Path::of_key(bits, len);
        // One encoding per path: no bits past its length, no length past
        // the trie's.
        if len > MAX_PATH_BITS || path.bits() != bits {
            return Err(DecodeError::InvalidPath);
        }
        Ok(path)
    }

    fn peer_state(&mut self) -> Result<PeerState, DecodeError> {
        let path = self.path()?;
        let refs = (0..path.len())
            .map(|_| self.ids(MAX_STATE_REFS))
            .collect::<Result<_, _>>()?;
        let replicas = self.ids(MAX_STATE_REPLICAS)?;
        Ok(PeerState {
            path,
            refs,
            replicas,
        })
    }

    fn trust(&mut self, kind: u8) -> Result<trust::Message, DecodeError> {
        Ok(match kind {
            32 => {
                let epoch = self.u32()?;
                let len = self.count(MAX_ROW_ENTRIES, 24)?;
                let entries = (0..len)
                    .map(|_| {
                        Ok(RowEntry {
                            peer: self.id()?,
                            good: self.share()?,
                            bad: self.share()?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?;
                trust::Message::Report {
                    epoch,
                    row: TrustRow { entries },
                }
            }
            33 => trust::Message::RowRequest { epoch: self.u32()? },
            34 => {
                let epoch = self.u32()?;
                let len = self.count(MAX_ROW_ENTRIES, 16)?;
                let row = (0..len)
                    .map(|_| Ok((self.id()?, self.share()?)))
                    .collect::<Result<_, DecodeError>>()?;
                trust::Message::RowReply { epoch, row }
            }
            35 => trust::Message::Scores {
                epoch: self.u32()?,
                round: self.u16()?,
                scores: self.scores(MAX_SCORES)?,
            },
            36 => trust::Message::StandingQuery {
                peers: self.ids(MAX_STANDING_PEERS)?,
            },
            37 => {
                let len = self.count(MAX_STANDING_PEERS, 9)?;
                let standings = (0..len)
                    .map(|_| {
                        let peer = self.id()?;
                        let standing = match self.u8()? {
                            0 => Standing::Unknown,
                            1 => Standing::Good(self.score()?),
                            2 => Standing::Bad,
                            tag => return Err(DecodeError::UnknownStanding { tag }),
                        };
                        Ok((peer, standing))
                    })
                    .collect::<Result<_, DecodeError>>()?;
                trust::Message::StandingAnswer { standings }
            }
            38 => trust::Message::PowerOffer {
                epoch: self.u32()?,
                candidates: self.scores(MAX_POWER_OFFER)?,
            },
            39 => {
                let epoch = self.u32()?;
                let len = self.count(MAX_SCORES, 17)?;
                let entries = (0..len)
                    .map(|_| Ok((self.id()?, self.id()?, self.flag()?)))
                    .collect::<Result<_, DecodeError>>()?;
                trust::Message::Agreements { epoch, entries }
            }
            40 => trust::Message::Liars {
                epoch: self.u32()?,
                raters: self.ids(MAX_SCORES)?,
            },
            kind => return Err(DecodeError::UnknownKind { kind }),
        })
    }

    fn update(&mut self) -> Result<Update, DecodeError> {
        let tag = self.u8()?;
        let id = NodeId(self.u64()?);
        let incarnation = self.u32()?;
        match tag {
            1 => Ok(Update::Alive { id, incarnation }),
            2 => Ok(Update::Suspect {
                id,
                incarnation,
                from: NodeId(self.u64()?),
            }),
            3 => Ok(Update::Dead {
                id,
                incarnation,
                from: NodeId(self.u64()?),
            }),
            tag => Err(DecodeError::UnknownUpdate { tag }),
        }
    }
}

/// The body of the cargo-fuzz target for this decoder (`fuzz/`): decoding
/// arbitrary bytes must not panic, and whatever decodes must re-encode to
/// the same bytes (the encoding is canonical).
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(packet) = Packet::decode(data) {
        let again = packet.encode().expect("a decoded packet is within limits");
        // NaN payloads are rejected on decode, so float bits round-trip.
        assert_eq!(again, data, "decode/encode is not canonical");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn coord() -> impl Strategy<Value = Coordinate> {
        (
            prop::array::uniform5(-1000.0f64..1000.0),
            0.0f64..500.0,
            0.0f64..1.5,
            -50.0f64..50.0,
        )
            .prop_map(|(vec, height_ms, error, adjustment_ms)| Coordinate {
                vec,
                height_ms,
                error,
                adjustment_ms,
            })
    }

    fn node_id() -> impl Strategy<Value = NodeId> {
        any::<u64>().prop_map(NodeId)
    }

    fn state() -> impl Strategy<Value = MemberState> {
        prop_oneof![
            Just(MemberState::Alive),
            Just(MemberState::Suspect),
            Just(MemberState::Dead),
            Just(MemberState::Left),
        ]
    }

    fn update() -> impl Strategy<Value = Update> {
        prop_oneof![
            (node_id(), any::<u32>())
                .prop_map(|(id, incarnation)| Update::Alive { id, incarnation }),
            (node_id(), any::<u32>(), node_id()).prop_map(|(id, incarnation, from)| {
                Update::Suspect {
                    id,
                    incarnation,
                    from,
                }
            }),
            (node_id(), any::<u32>(), node_id()).prop_map(|(id, incarnation, from)| {
                Update::Dead {
                    id,
                    incarnation,
                    from,
                }
            }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u32>(), node_id()).prop_map(|(seq, target)| Message::Ping { seq, target }),
            (any::<u32>(), node_id(), any::<bool>()).prop_map(|(seq, target, want_nack)| {
                Message::IndirectPing {
                    seq,
                    target,
                    want_nack,
                }
            }),
            (
                any::<u32>(),
                prop::option::of((coord(), prop::option::of((node_id(), coord()))))
            )
                .prop_map(|(seq, c)| Message::Ack {
                    seq,
                    coord: c.map(|(global, local)| PeerCoord { global, local }),
                }),
            any::<u32>().prop_map(|seq| Message::Nack { seq }),
            (
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec(
                    (node_id(), any::<u32>(), state()).prop_map(|(id, incarnation, state)| {
                        MemberEntry {
                            id,
                            incarnation,
                            state,
                        }
                    }),
                    0..50
                )
            )
                .prop_map(|(join, reply, members)| Message::PushPull(PushPull {
                    join,
                    reply,
                    members
                })),
            Just(Message::Gossip),
        ]
    }

    fn key() -> impl Strategy<Value = [u8; 32]> {
        any::<[u8; 32]>()
    }

    /// Value references, mostly short (as CIDs are), sometimes at the limit.
    fn value() -> impl Strategy<Value = ValueRef> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..48),
            1 => prop::collection::vec(any::<u8>(), MAX_VALUE_REF_BYTES..=MAX_VALUE_REF_BYTES),
        ]
    }

    fn path() -> impl Strategy<Value = Vec<NodeId>> {
        prop::collection::vec(node_id(), 0..=MAX_QUERY_PATH)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            value().prop_map(Op::Put),
            Just(Op::Get),
            Just(Op::Holders),
            Just(Op::Announce),
        ]
    }

    fn answer() -> impl Strategy<Value = Answer> {
        (
            prop::collection::vec(value(), 0..=MAX_ANSWER_VALUES),
            prop::collection::vec(node_id(), 0..40),
            prop::option::of(node_id()),
            any::<bool>(),
        )
            .prop_map(|(values, holders, answered_by, from_cache)| Answer {
                values,
                holders,
                answered_by,
                from_cache,
            })
    }

    fn pgrid_message() -> impl Strategy<Value = pgrid_node::Message> {
        prop_oneof![
            (key(), op(), path()).prop_map(|(key, op, path)| pgrid_node::Message::Query {
                key,
                op,
                path
            }),
            (key(), answer(), path()).prop_map(|(key, answer, path)| {
                pgrid_node::Message::Reply { key, answer, path }
            }),
            prop::collection::vec((key(), value()), 0..20)
                .prop_map(|entries| pgrid_node::Message::Replicate { entries }),
            (key(), node_id())
                .prop_map(|(key, holder)| pgrid_node::Message::Announced { key, holder }),
            (
                any::<u8>(),
                peer_state(),
                prop::collection::vec(any::<u64>(), 0..50)
            )
                .prop_map(|(depth, state, keys)| pgrid_node::Message::Exchange {
                    depth,
                    state,
                    keys
                }),
            (
                trie_path(),
                peer_state(),
                prop::collection::vec(any::<u64>(), 0..8)
            )
                .prop_map(|(basis, state, meet)| pgrid_node::Message::ExchangeReply {
                    basis,
                    state,
                    meet: meet.into_iter().map(NodeId).collect(),
                }),
        ]
    }

    fn trie_path() -> impl Strategy<Value = Path> {
        (any::<u64>(), 0..=MAX_PATH_BITS).prop_map(|(bits, len)| Path::of_key(bits, len))
    }

    fn peer_state() -> impl Strategy<Value = PeerState> {
        (0..=8u8, any::<u64>())
            .prop_flat_map(|(len, bits)| {
                (
                    Just(Path::of_key(bits, len)),
                    prop::collection::vec(
                        prop::collection::vec(any::<u64>().prop_map(NodeId), 0..4),
                        usize::from(len),
                    ),
                    prop::collection::vec(any::<u64>().prop_map(NodeId), 0..6),
                )
            })
            .prop_map(|(path, refs, replicas)| PeerState {
                path,
                refs,
                replicas,
            })
    }

    /// Shares in `[0, 1]`, the ends and `-0.0` included.
    fn share() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..=1.0,
            1 => prop_oneof![Just(0.0), Just(1.0), Just(-0.0), Just(f64::MIN_POSITIVE)],
        ]
    }

    /// Finite non-negative scores, the extremes included.
    fn score() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..1e6,
            1 => prop_oneof![Just(0.0), Just(-0.0), Just(f64::MAX), Just(1e-300)],
        ]
    }

    fn standing() -> impl Strategy<Value = Standing> {
        prop_oneof![
            Just(Standing::Unknown),
            Just(Standing::Bad),
            score().prop_map(Standing::Good),
        ]
    }

    fn scored(max: usize) -> impl Strategy<Value = Vec<(NodeId, f64)>> {
        prop::collection::vec((node_id(), score()), 0..=max)
    }

    fn trust_message() -> impl Strategy<Value = trust::Message> {
        prop_oneof![
            (
                any::<u32>(),
                prop::collection::vec(
                    (node_id(), share(), share()).prop_map(|(peer, good, bad)| RowEntry {
                        peer,
                        good,
                        bad
                    }),
                    0..40
                )
            )
                .prop_map(|(epoch, entries)| trust::Message::Report {
                    epoch,
                    row: TrustRow { entries },
                }),
            any::<u32>().prop_map(|epoch| trust::Message::RowRequest { epoch }),
            (
                any::<u32>(),
                prop::collection::vec((node_id(), share()), 0..40)
            )
                .prop_map(|(epoch, row)| trust::Message::RowReply { epoch, row }),
            (any::<u32>(), any::<u16>(), scored(60)).prop_map(|(epoch, round, scores)| {
                trust::Message::Scores {
                    epoch,
                    round,
                    scores,
                }
            }),
            prop::collection::vec(node_id(), 0..40)
                .prop_map(|peers| trust::Message::StandingQuery { peers }),
            prop::collection::vec((node_id(), standing()), 0..40)
                .prop_map(|standings| trust::Message::StandingAnswer { standings }),
            (any::<u32>(), scored(MAX_POWER_OFFER)).prop_map(|(epoch, candidates)| {
                trust::Message::PowerOffer { epoch, candidates }
            }),
            (
                any::<u32>(),
                prop::collection::vec((node_id(), node_id(), any::<bool>()), 0..40)
            )
                .prop_map(|(epoch, entries)| trust::Message::Agreements { epoch, entries }),
            (any::<u32>(), prop::collection::vec(node_id(), 0..40))
                .prop_map(|(epoch, raters)| trust::Message::Liars { epoch, raters }),
        ]
    }

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            message().prop_map(Body::Swim),
            pgrid_message().prop_map(Body::PGrid),
            trust_message().prop_map(Body::Trust),
        ]
    }

    proptest! {
        #[test]
        fn every_packet_round_trips(
            in_flight in any::<u32>(),
            rate in any::<u64>(),
            message in body(),
            piggyback in prop::collection::vec(update(), 0..40),
        ) {
            let p = Packet {
                load: Load { requests_in_flight: in_flight, served_bytes_per_s: rate },
                message,
                piggyback,
            };
            let bytes = p.encode().unwrap();
            prop_assert_eq!(Packet::decode(&bytes).unwrap(), p);
            fuzz_decode(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
            fuzz_decode(&data);
        }

        #[test]
        fn mutated_packets_never_panic(
            message in body(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let p = Packet { load: Load::default(), message, piggyback: vec![] };
            let mut bytes = p.encode().unwrap();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] ^= b;
            }
            fuzz_decode(&bytes);
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut bytes = Packet {
            load: Load::default(),
            message: Body::Swim(Message::Gossip),
            piggyback: vec![],
        }
        .encode()
        .unwrap();
        bytes[0] = 9;
        assert_eq!(
            Packet::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { version: 9 })
        );
        bytes[0] = VERSION;
        bytes.push(0);
        assert_eq!(
            Packet::decode(&bytes),
            Err(DecodeError::TrailingBytes { len: 1 })
        );
        // A push-pull announcing 4 billion members but carrying none.
        let mut pp = vec![VERSION, 5];
        pp.extend_from_slice(&[0; 12]);
        pp.push(0);
        pp.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Packet::decode(&pp),
            Err(DecodeError::TooManyItems { .. })
        ));
        assert!(matches!(
            Packet::decode(&vec![0; MAX_PACKET_BYTES + 1]),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    fn packet(body: impl Into<Body>) -> Packet {
        Packet {
            load: Load::default(),
            message: body.into(),
            piggyback: vec![],
        }
    }

    /// A packet of `kind` from the given body bytes, with no piggyback.
    fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![VERSION, kind];
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(body);
        out.extend_from_slice(&0u16.to_be_bytes());
        out
    }

    fn round_trips(p: &Packet) {
        let bytes = p.encode().unwrap();
        assert!(bytes.len() <= MAX_PACKET_BYTES);
        assert_eq!(Packet::decode(&bytes).as_ref(), Ok(p));
        fuzz_decode(&bytes);
    }

    #[test]
    fn every_list_at_its_limit_fits_and_one_more_is_refused() {
        let ids = |n: usize| (0..n as u64).map(NodeId).collect::<Vec<_>>();
        let big = vec![0xab; MAX_VALUE_REF_BYTES];
        let scores = |n: usize| ids(n).into_iter().map(|p| (p, 1.0)).collect::<Vec<_>>();
        let at_limit: Vec<(Body, Body, usize)> = vec![
            (
                pgrid_node::Message::Query {
                    key: [1; 32],
                    op: Op::Put(big.clone()),
                    path: ids(MAX_QUERY_PATH),
                }
                .into(),
                pgrid_node::Message::Query {
                    key: [1; 32],
                    op: Op::Get,
                    path: ids(MAX_QUERY_PATH + 1),
                }
                .into(),
                MAX_QUERY_PATH,
            ),
            (
                pgrid_node::Message::Reply {
                    key: [2; 32],
                    answer: Answer {
                        values: vec![big.clone(); MAX_ANSWER_VALUES],
                        holders: ids(MAX_ANSWER_HOLDERS),
                        answered_by: Some(NodeId(7)),
                        from_cache: true,
                    },
                    path: ids(MAX_QUERY_PATH),
                }
                .into(),
                pgrid_node::Message::Reply {
                    key: [2; 32],
                    answer: Answer {
                        holders: ids(MAX_ANSWER_HOLDERS + 1),
                        ..Answer::default()
                    },
                    path: vec![],
                }
                .into(),
                MAX_ANSWER_HOLDERS,
            ),
            (
                pgrid_node::Message::Replicate {
                    entries: vec![([3; 32], big.clone()); MAX_REPLICATE_ENTRIES],
                }
                .into(),
                pgrid_node::Message::Replicate {
                    entries: vec![([3; 32], vec![]); MAX_REPLICATE_ENTRIES + 1],
                }
                .into(),
                MAX_REPLICATE_ENTRIES,
            ),
            (
                trust::Message::Report {
                    epoch: 1,
                    row: TrustRow {
                        entries: ids(MAX_ROW_ENTRIES)
                            .into_iter()
                            .map(|peer| RowEntry {
                                peer,
                                good: 1.0 / MAX_ROW_ENTRIES as f64,
                                bad: 0.0,
                            })
                            .collect(),
                    },
                }
                .into(),
                trust::Message::Report {
                    epoch: 1,
                    row: TrustRow {
                        entries: vec![
                            RowEntry {
                                peer: NodeId(1),
                                good: 0.0,
                                bad: 0.0
                            };
                            MAX_ROW_ENTRIES + 1
                        ],
                    },
                }
                .into(),
                MAX_ROW_ENTRIES,
            ),
            (
                trust::Message::RowReply {
                    epoch: 2,
                    row: scores(MAX_ROW_ENTRIES),
                }
                .into(),
                trust::Message::RowReply {
                    epoch: 2,
                    row: scores(MAX_ROW_ENTRIES + 1),
                }
                .into(),
                MAX_ROW_ENTRIES,
            ),
            (
                trust::Message::Scores {
                    epoch: 3,
                    round: 9,
                    scores: scores(MAX_SCORES),
                }
                .into(),
                trust::Message::Scores {
                    epoch: 3,
                    round: 9,
                    scores: scores(MAX_SCORES + 1),
                }
                .into(),
                MAX_SCORES,
            ),
            (
                trust::Message::StandingQuery {
                    peers: ids(MAX_STANDING_PEERS),
                }
                .into(),
                trust::Message::StandingQuery {
                    peers: ids(MAX_STANDING_PEERS + 1),
                }
                .into(),
                MAX_STANDING_PEERS,
            ),
            (
                trust::Message::StandingAnswer {
                    standings: ids(MAX_STANDING_PEERS)
                        .into_iter()
                        .map(|p| (p, Standing::Good(f64::MAX)))
                        .collect(),
                }
                .into(),
                trust::Message::StandingAnswer {
                    standings: vec![(NodeId(1), Standing::Bad); MAX_STANDING_PEERS + 1],
                }
                .into(),
                MAX_STANDING_PEERS,
            ),
            (
                trust::Message::PowerOffer {
                    epoch: 4,
                    candidates: scores(MAX_POWER_OFFER),
                }
                .into(),
                trust::Message::PowerOffer {
                    epoch: 4,
                    candidates: scores(MAX_POWER_OFFER + 1),
                }
                .into(),
                MAX_POWER_OFFER,
            ),
        ];
        // (The decoder's side of the same limits is the next test.)
        for (ok, over, max) in at_limit {
            round_trips(&packet(ok.clone()));
            let len = max + 1;
            assert_eq!(
                packet(over).encode(),
                Err(EncodeError::TooManyItems { max, len }),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn counts_over_their_limit_are_refused_before_reading_the_items() {
        let count = |n: usize| (n as u16).to_be_bytes();
        let key = [0u8; 32];
        let cases: Vec<(u8, Vec<u8>, usize)> = vec![
            // query: key, op get, path count
            (
                16,
                [&key[..], &[2], &count(MAX_QUERY_PATH + 1)].concat(),
                MAX_QUERY_PATH,
            ),
            // reply: key, values count
            (
                17,
                [&key[..], &count(MAX_ANSWER_VALUES + 1)].concat(),
                MAX_ANSWER_VALUES,
            ),
            // reply: key, no values, holders count
            (
                17,
                [&key[..], &count(0), &count(MAX_ANSWER_HOLDERS + 1)].concat(),
                MAX_ANSWER_HOLDERS,
            ),
            (
                18,
                count(MAX_REPLICATE_ENTRIES + 1).to_vec(),
                MAX_REPLICATE_ENTRIES,
            ),
            (
                32,
                [&[0; 4][..], &count(MAX_ROW_ENTRIES + 1)].concat(),
                MAX_ROW_ENTRIES,
            ),
            (
                34,
                [&[0; 4][..], &count(MAX_ROW_ENTRIES + 1)].concat(),
                MAX_ROW_ENTRIES,
            ),
            (
                35,
                [&[0; 6][..], &count(MAX_SCORES + 1)].concat(),
                MAX_SCORES,
            ),
            (
                36,
                count(MAX_STANDING_PEERS + 1).to_vec(),
                MAX_STANDING_PEERS,
            ),
            (
                37,
                count(MAX_STANDING_PEERS + 1).to_vec(),
                MAX_STANDING_PEERS,
            ),
            (
                38,
                [&[0; 4][..], &count(MAX_POWER_OFFER + 1)].concat(),
                MAX_POWER_OFFER,
            ),
        ];
        for (kind, body, max) in cases {
            assert_eq!(
                Packet::decode(&raw(kind, &body)),
                Err(DecodeError::TooManyItems { max, len: max + 1 }),
                "kind {kind}"
            );
            // A count within the limit but with no items behind it is
            // truncated, found before anything is allocated for it.
            let mut lying = raw(kind, &body);
            let at = lying.len() - 4;
            lying[at..at + 2].copy_from_slice(&count(max));
            lying.truncate(at + 2);
            assert_eq!(
                Packet::decode(&lying),
                Err(DecodeError::Truncated),
                "kind {kind}"
            );
        }
    }

    #[test]
    fn bad_numbers_tags_and_values_are_refused() {
        let id = 5u64.to_be_bytes();
        let f = |x: f64| x.to_bits().to_be_bytes();
        let one = 1u16.to_be_bytes();
        let epoch = [0u8; 4];
        for bad in [f64::NAN, -f64::NAN, f64::INFINITY, -0.5, 1.5, f64::MIN] {
            let report = [&epoch[..], &one, &id, &f(0.5), &f(bad)].concat();
            assert_eq!(
                Packet::decode(&raw(32, &report)),
                Err(DecodeError::InvalidShare),
                "{bad}"
            );
            let reply = [&epoch[..], &one, &id, &f(bad)].concat();
            assert_eq!(
                Packet::decode(&raw(34, &reply)),
                Err(DecodeError::InvalidShare),
                "{bad}"
            );
            let row = TrustRow {
                entries: vec![RowEntry {
                    peer: NodeId(5),
                    good: bad,
                    bad: 0.0,
                }],
            };
            assert_eq!(
                packet(trust::Message::Report { epoch: 0, row }).encode(),
                Err(EncodeError::InvalidShare)
            );
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e-300, -1.0] {
            let scores = [&epoch[..], &[0, 0], &one, &id, &f(bad)].concat();
            assert_eq!(
                Packet::decode(&raw(35, &scores)),
                Err(DecodeError::InvalidScore),
                "{bad}"
            );
            let offer = [&epoch[..], &one, &id, &f(bad)].concat();
            assert_eq!(
                Packet::decode(&raw(38, &offer)),
                Err(DecodeError::InvalidScore),
                "{bad}"
            );
            let good = [&one[..], &id, &[1], &f(bad)].concat();
            assert_eq!(
                Packet::decode(&raw(37, &good)),
                Err(DecodeError::InvalidScore),
                "{bad}"
            );
            let answer = trust::Message::StandingAnswer {
                standings: vec![(NodeId(5), Standing::Good(bad))],
            };
            assert_eq!(packet(answer).encode(), Err(EncodeError::InvalidScore));
        }
        let standing = [&one[..], &id, &[3]].concat();
        assert_eq!(
            Packet::decode(&raw(37, &standing)),
            Err(DecodeError::UnknownStanding { tag: 3 })
        );
        let key = [0u8; 32];
        let query = [&key[..], &[9], &[0, 0]].concat();
        assert_eq!(
            Packet::decode(&raw(16, &query)),
            Err(DecodeError::UnknownOp { op: 9 })
        );
        let long = ((MAX_VALUE_REF_BYTES + 1) as u16).to_be_bytes();
        let put = [
            &key[..],
            &[1],
            &long,
            &vec![0; MAX_VALUE_REF_BYTES + 1],
            &[0, 0],
        ]
        .concat();
        assert_eq!(
            Packet::decode(&raw(16, &put)),
            Err(DecodeError::ValueTooLong {
                max: MAX_VALUE_REF_BYTES,
                len: MAX_VALUE_REF_BYTES + 1
            })
        );
        let too_long = pgrid_node::Message::Replicate {
            entries: vec![(key, vec![0; MAX_VALUE_REF_BYTES + 1])],
        };
        assert_eq!(
            packet(too_long).encode(),
            Err(EncodeError::ValueTooLong {
                max: MAX_VALUE_REF_BYTES,
                len: MAX_VALUE_REF_BYTES + 1
            })
        );
        // A reply's flags byte: answered_by (1) and from_cache (2) only.
        let reply = [&key[..], &[0, 0, 0, 0], &[4], &[0, 0]].concat();
        assert_eq!(
            Packet::decode(&raw(17, &reply)),
            Err(DecodeError::InvalidFlag { value: 4 })
        );
        for kind in [0, 7, 15, 22, 31, 41, 255] {
            assert_eq!(
                Packet::decode(&raw(kind, &[])),
                Err(DecodeError::UnknownKind { kind })
            );
        }
        // Trailing bytes after a new kind's body.
        let mut bytes = packet(trust::Message::RowRequest { epoch: 3 })
            .encode()
            .unwrap();
        bytes.push(0);
        assert_eq!(
            Packet::decode(&bytes),
            Err(DecodeError::TrailingBytes { len: 1 })
        );
    }

    #[test]
    fn new_kinds_carry_load_and_piggyback() {
        let p = Packet {
            load: Load {
                requests_in_flight: 3,
                served_bytes_per_s: 1 << 40,
            },
            message: Body::Trust(trust::Message::StandingQuery {
                peers: vec![NodeId(1), NodeId(2)],
            }),
            piggyback: vec![Update::Alive {
                id: NodeId(9),
                incarnation: 4,
            }],
        };
        round_trips(&p);
    }

    /// One real packet of each kind, written to `fuzz/seeds/overlay_wire/`.
    fn seeds() -> Vec<(&'static str, Packet)> {
        let key = *b"gridedge seed key for the fuzzer";
        let cid = b"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".to_vec();
        let path = vec![NodeId(0x11), NodeId(0x22), NodeId(0x33)];
        let with_update = |message: Body| Packet {
            load: Load {
                requests_in_flight: 2,
                served_bytes_per_s: 125_000,
            },
            message,
            piggyback: vec![Update::Suspect {
                id: NodeId(0x44),
                incarnation: 7,
                from: NodeId(0x11),
            }],
        };
        let coord = |x: f64| Coordinate {
            vec: std::array::from_fn(|i| x * (i as f64 + 1.0)),
            height_ms: 1.5,
            error: 0.25,
            adjustment_ms: -0.5,
        };
        let members = vec![
            MemberEntry {
                id: NodeId(0x11),
                incarnation: 3,
                state: MemberState::Alive,
            },
            MemberEntry {
                id: NodeId(0x44),
                incarnation: 7,
                state: MemberState::Suspect,
            },
            MemberEntry {
                id: NodeId(0x55),
                incarnation: 1,
                state: MemberState::Dead,
            },
        ];
        vec![
            (
                "ping",
                packet(Message::Ping {
                    seq: 41,
                    target: NodeId(0x22),
                }),
            ),
            (
                "ping_piggyback",
                with_update(
                    Message::Ping {
                        seq: 42,
                        target: NodeId(0x22),
                    }
                    .into(),
                ),
            ),
            (
                "ack_none",
                packet(Message::Ack {
                    seq: 41,
                    coord: None,
                }),
            ),
            (
                "ack_global",
                packet(Message::Ack {
                    seq: 41,
                    coord: Some(PeerCoord {
                        global: coord(12.0),
                        local: None,
                    }),
                }),
            ),
            (
                "ack_pharos",
                packet(Message::Ack {
                    seq: 41,
                    coord: Some(PeerCoord {
                        global: coord(12.0),
                        local: Some((NodeId(0x33), coord(-2.0))),
                    }),
                }),
            ),
            (
                "indirect_ping",
                packet(Message::IndirectPing {
                    seq: 43,
                    target: NodeId(0x22),
                    want_nack: true,
                }),
            ),
            ("nack", packet(Message::Nack { seq: 43 })),
            ("gossip", with_update(Message::Gossip.into())),
            (
                "push_pull_join",
                packet(Message::PushPull(PushPull {
                    join: true,
                    reply: false,
                    members,
                })),
            ),
            (
                "push_pull_reply_empty",
                packet(Message::PushPull(PushPull {
                    join: false,
                    reply: true,
                    members: vec![],
                })),
            ),
            (
                "pgrid_query_put",
                packet(pgrid_node::Message::Query {
                    key,
                    op: Op::Put(cid.clone()),
                    path: path.clone(),
                }),
            ),
            (
                "pgrid_query_holders",
                with_update(
                    pgrid_node::Message::Query {
                        key,
                        op: Op::Holders,
                        path: path[..1].to_vec(),
                    }
                    .into(),
                ),
            ),
            (
                "pgrid_reply",
                packet(pgrid_node::Message::Reply {
                    key,
                    answer: Answer {
                        values: vec![cid.clone(), b"https://example.org/a".to_vec()],
                        holders: vec![NodeId(0x33), NodeId(0x55)],
                        answered_by: Some(NodeId(0x33)),
                        from_cache: true,
                    },
                    path: path.clone(),
                }),
            ),
            (
                "pgrid_replicate",
                packet(pgrid_node::Message::Replicate {
                    entries: vec![(key, cid.clone()), ([0xff; 32], vec![])],
                }),
            ),
            (
                "trust_report",
                packet(trust::Message::Report {
                    epoch: 12,
                    row: TrustRow {
                        entries: vec![
                            RowEntry {
                                peer: NodeId(0x11),
                                good: 0.5,
                                bad: 0.0,
                            },
                            RowEntry {
                                peer: NodeId(0x22),
                                good: 0.125,
                                bad: 0.375,
                            },
                        ],
                    },
                }),
            ),
            (
                "trust_row_request",
                packet(trust::Message::RowRequest { epoch: 12 }),
            ),
            (
                "trust_row_reply",
                packet(trust::Message::RowReply {
                    epoch: 12,
                    row: vec![(NodeId(0x11), 0.75), (NodeId(0x33), 0.25)],
                }),
            ),
            (
                "trust_scores",
                with_update(
                    trust::Message::Scores {
                        epoch: 12,
                        round: 3,
                        scores: vec![(NodeId(0x11), 0.001), (NodeId(0x22), 0.0)],
                    }
                    .into(),
                ),
            ),
            (
                "trust_standing_query",
                packet(trust::Message::StandingQuery {
                    peers: path.clone(),
                }),
            ),
            (
                "trust_standing_answer",
                packet(trust::Message::StandingAnswer {
                    standings: vec![
                        (NodeId(0x11), Standing::Good(1.5)),
                        (NodeId(0x22), Standing::Bad),
                        (NodeId(0x33), Standing::Unknown),
                    ],
                }),
            ),
            (
                "trust_agreements",
                packet(trust::Message::Agreements {
                    epoch: 12,
                    entries: vec![
                        (NodeId(0x11), NodeId(0x22), true),
                        (NodeId(0x33), NodeId(0x22), false),
                    ],
                }),
            ),
            (
                "trust_liars",
                packet(trust::Message::Liars {
                    epoch: 12,
                    raters: vec![NodeId(0x33)],
                }),
            ),
            (
                "trust_power_offer",
                packet(trust::Message::PowerOffer {
                    epoch: 12,
                    candidates: vec![(NodeId(0x11), 4.0), (NodeId(0x33), 2.5)],
                }),
            ),
        ]
    }

    #[test]
    fn fuzz_seeds_decode() {
        for (name, p) in seeds() {
            let bytes = p.encode().unwrap();
            assert_eq!(Packet::decode(&bytes).as_ref(), Ok(&p), "{name}");
            // `GRIDEDGE_WRITE_FUZZ_SEEDS=1 cargo test --lib overlay::wire`
            // refreshes the committed seeds of the new kinds.
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/overlay_wire");
            if std::env::var_os("GRIDEDGE_WRITE_FUZZ_SEEDS").is_some() {
                std::fs::write(format!("{dir}/{name}"), &bytes).unwrap();
            }
        }
        // Every committed seed is a valid packet of this version, so a
        // change of the format that strands them fails here.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/overlay_wire");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(Packet::decode(&bytes).is_ok(), "{}", path.display());
            fuzz_decode(&bytes);
        }
    }
}

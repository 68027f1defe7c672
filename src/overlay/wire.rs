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
//! checked against a limit before anything is allocated, every coordinate is
//! checked for range, and trailing bytes are an error, so a packet has
//! exactly one encoding. A decoder of a given version refuses both other
//! versions and unknown message kinds: new kinds (P-Grid exchanges, trust
//! reports) get new kind bytes, and an old peer drops them cleanly.

use super::coord::{Coordinate, DIM, PeerCoord};
use super::load::Load;
use super::swim::MemberState;
use super::{Incarnation, NodeId};

/// The wire version this code speaks.
pub const VERSION: u8 = 1;

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

/// One overlay packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// The sender's load, on every packet.
    pub load: Load,
    /// The body.
    pub message: Message,
    /// Piggybacked membership updates, at most [`MAX_PIGGYBACK`].
    pub piggyback: Vec<Update>,
}

impl Packet {
    /// Encodes the packet.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.piggyback.len() > MAX_PIGGYBACK {
            return Err(EncodeError::TooManyItems {
                max: MAX_PIGGYBACK,
                len: self.piggyback.len(),
            });
        }
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        out.push(self.message.kind());
        out.extend_from_slice(&self.load.requests_in_flight.to_be_bytes());
        out.extend_from_slice(&self.load.served_bytes_per_s.to_be_bytes());
        match &self.message {
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
                        put_coord(&mut out, &pc.global);
                        if let Some((cluster, local)) = &pc.local {
                            out.extend_from_slice(&cluster.0.to_be_bytes());
                            put_coord(&mut out, local);
                        }
                    }
                }
            }
            Message::Nack { seq } => out.extend_from_slice(&seq.to_be_bytes()),
            Message::PushPull(pp) => {
                if pp.members.len() > MAX_PUSH_PULL_MEMBERS {
                    return Err(EncodeError::TooManyItems {
                        max: MAX_PUSH_PULL_MEMBERS,
                        len: pp.members.len(),
                    });
                }
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
        out.extend_from_slice(&(self.piggyback.len() as u16).to_be_bytes());
        for u in &self.piggyback {
            put_update(&mut out, u);
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
            1 => Message::Ping {
                seq: r.u32()?,
                target: NodeId(r.u64()?),
            },
            2 => Message::IndirectPing {
                seq: r.u32()?,
                target: NodeId(r.u64()?),
                want_nack: r.flag()?,
            },
            3 => {
                let seq = r.u32()?;
                let coord = match r.u8()? {
                    0 => None,
                    flag @ (1 | 2) => {
                        let global = r.coord()?;
                        let local = if flag == 2 {
                            Some((NodeId(r.u64()?), r.coord()?))
                        } else {
                            None
                        };
                        Some(PeerCoord { global, local })
                    }
                    value => return Err(DecodeError::InvalidFlag { value }),
                };
                Message::Ack { seq, coord }
            }
            4 => Message::Nack { seq: r.u32()? },
            5 => {
                let flags = r.u8()?;
                if flags > 3 {
                    return Err(DecodeError::InvalidFlag { value: flags });
                }
                let len = r.u32()? as usize;
                if len > MAX_PUSH_PULL_MEMBERS {
                    return Err(DecodeError::TooManyItems {
                        max: MAX_PUSH_PULL_MEMBERS,
                        len,
                    });
                }
                // Check the length against the bytes present before
                // allocating, so a lying count cannot make us reserve memory.
                if r.buf.len() < len * 13 {
                    return Err(DecodeError::Truncated);
                }
                let mut members = Vec::with_capacity(len);
                for _ in 0..len {
                    members.push(MemberEntry {
                        id: NodeId(r.u64()?),
                        incarnation: r.u32()?,
                        state: r.state()?,
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
            prop::array::uniform2(-1000.0f64..1000.0),
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

    proptest! {
        #[test]
        fn every_packet_round_trips(
            in_flight in any::<u32>(),
            rate in any::<u64>(),
            message in message(),
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
            message in message(),
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
            message: Message::Gossip,
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
}

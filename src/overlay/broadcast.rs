//! The piggyback queue: membership updates waiting to ride on packets.
//!
//! SWIM section 4.1 disseminates updates by piggybacking them on probe
//! packets instead of multicasting. Each update is sent at most
//! `λ * ceil(log10(N + 1))` times, which suffices for it to reach every
//! member with high probability (the epidemic bound of SWIM 4.1). Updates
//! sent fewer times go first, and among those the newest, as memberlist's
//! `TransmitLimitedQueue` does. A newer update about a member replaces the
//! queued one, so the queue never holds more than one entry per member.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::NodeId;
use super::wire::Update;

#[derive(Clone, Debug)]
struct Entry {
    update: Update,
    transmits: u32,
    seq: u64,
}

/// Queue of updates with a retransmit limit, bounded in length.
#[derive(Clone, Debug)]
pub struct BroadcastQueue {
    by_id: BTreeMap<NodeId, Entry>,
    order: BTreeSet<(u32, Reverse<u64>, NodeId)>,
    next_seq: u64,
    max_len: usize,
    dropped: u64,
}

/// The retransmit limit `mult * ceil(log10(n + 1))` (memberlist
/// `retransmitLimit`).
pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n as f64) + 1.0).log10().ceil() as u32;
    mult * scale.max(1)
}

impl BroadcastQueue {
    /// An empty queue holding at most `max_len` updates; beyond that, those
    /// already sent the most times are dropped (anti-entropy recovers them).
    pub fn new(max_len: usize) -> Self {
        Self {
            by_id: BTreeMap::new(),
            order: BTreeSet::new(),
            next_seq: 0,
            max_len: max_len.max(1),
            dropped: 0,
        }
    }

    /// Number of queued updates.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Forgets every queued update.
    pub fn clear(&mut self) {
        self.by_id.clear();
        self.order.clear();
    }

    /// Updates dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queues `update`, replacing any queued update about the same member.
    pub fn push(&mut self, update: Update) {
        let id = update.id();
        if let Some(old) = self.by_id.remove(&id) {
            self.order.remove(&(old.transmits, Reverse(old.seq), id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(
            id,
            Entry {
                update,
                transmits: 0,
                seq,
            },
        );
        self.order.insert((0, Reverse(seq), id));
        while self.by_id.len() > self.max_len {
            if let Some((_, _, worst)) = self.order.pop_last() {
                self.by_id.remove(&worst);
                self.dropped += 1;
            }
        }
    }

    /// Takes updates for one packet: at most `max_count`, at most
    /// `max_bytes` in total, each counted as one more transmission and
    /// forgotten after `limit` transmissions.
    pub fn take(&mut self, max_bytes: usize, max_count: usize, limit: u32) -> Vec<Update> {
        let mut out = Vec::new();
        let mut left = max_bytes;
        let mut sent = Vec::new();
        for &(transmits, seq, id) in &self.order {
            if out.len() >= max_count || left < 13 {
                break;
            }
            let entry = &self.by_id[&id];
            let len = entry.update.encoded_len();
            if len > left {
                continue;
            }
            left -= len;
            out.push(entry.update);
            sent.push((transmits, seq, id));
        }
        for key in sent {
            self.order.remove(&key);
            let (transmits, seq, id) = key;
            if transmits + 1 >= limit {
                self.by_id.remove(&id);
            } else {
                if let Some(e) = self.by_id.get_mut(&id) {
                    e.transmits = transmits + 1;
                }
                self.order.insert((transmits + 1, seq, id));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(id: u64, incarnation: u32) -> Update {
        Update::Alive {
            id: NodeId(id),
            incarnation,
        }
    }

    #[test]
    fn limit_formula() {
        assert_eq!(retransmit_limit(4, 0), 4);
        assert_eq!(retransmit_limit(4, 9), 4);
        assert_eq!(retransmit_limit(4, 99), 8);
        assert_eq!(retransmit_limit(4, 10_000), 20);
    }

    #[test]
    fn fewest_transmits_then_newest_first_and_limited() {
        let mut q = BroadcastQueue::new(100);
        q.push(alive(1, 0));
        q.push(alive(2, 0));
        assert_eq!(q.take(13, 10, 3), vec![alive(2, 0)]);
        assert_eq!(q.take(13, 10, 3), vec![alive(1, 0)]);
        q.push(alive(1, 1)); // replaces, and resets the count
        assert_eq!(q.len(), 2);
        assert_eq!(q.take(1000, 10, 3), vec![alive(1, 1), alive(2, 0)]);
        q.take(1000, 10, 3);
        assert_eq!(q.take(1000, 10, 3), vec![alive(1, 1)]);
        assert!(q.is_empty());
    }

    #[test]
    fn bounded() {
        let mut q = BroadcastQueue::new(3);
        for i in 0..5 {
            q.push(alive(i, 0));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
    }
}

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
use std::collections::BTreeMap;

use super::OverlayRng;
use super::idmap::{IdMap, id_map};
use super::wire::Update;

/// Where an update stands in the sending order: fewest transmissions
/// first, then newest (highest push number) first. Push numbers are
/// unique, so a key names one entry.
type Key = (u32, Reverse<u64>);

/// Queue of updates with a retransmit limit, bounded in length.
///
/// The updates live in two ordered maps by encoded size, `alive` (13 bytes)
/// and `accusations` (`suspect` and `dead`, 21 bytes), merged by key when a
/// packet is filled: once the byte budget left is under 21 bytes, no
/// accusation fits any more, and the rest of them is never walked (a
/// single map made every packet scan thousands of queued accusations that
/// could not fit). The key of each member's entry is kept by id.
#[derive(Clone, Debug)]
pub struct BroadcastQueue {
    by_id: IdMap<Key>,
    alive: BTreeMap<Key, Update>,
    accusations: BTreeMap<Key, Update>,
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

/// The smallest encoded update (`alive`): with less budget left, nothing
/// more fits.
const MIN_UPDATE_LEN: usize = 13;

impl BroadcastQueue {
    /// An empty queue holding at most `max_len` updates; beyond that, those
    /// already sent the most times are dropped (anti-entropy recovers them).
    /// `rng` keys the index by member.
    pub fn new(max_len: usize, rng: &mut OverlayRng) -> Self {
        Self {
            by_id: id_map(rng),
            alive: BTreeMap::new(),
            accusations: BTreeMap::new(),
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
        self.alive.clear();
        self.accusations.clear();
    }

    /// Updates dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn map_of(&mut self, update: &Update) -> &mut BTreeMap<Key, Update> {
        match update {
            Update::Alive { .. } => &mut self.alive,
            Update::Suspect { .. } | Update::Dead { .. } => &mut self.accusations,
        }
    }

    fn remove_key(&mut self, key: Key) -> Option<Update> {
        self.alive
            .remove(&key)
            .or_else(|| self.accusations.remove(&key))
    }

    /// Queues `update`, replacing any queued update about the same member.
    pub fn push(&mut self, update: Update) {
        let id = update.id();
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = (0, Reverse(seq));
        if let Some(old) = self.by_id.insert(id, key) {
            self.remove_key(old);
        }
        self.map_of(&update).insert(key, update);
        while self.by_id.len() > self.max_len {
            // The worst entry: most transmissions, then oldest.
            let worst = match (
                self.alive.last_key_value(),
                self.accusations.last_key_value(),
            ) {
                (Some((a, _)), Some((b, _))) => (*a).max(*b),
                (Some((a, _)), None) => *a,
                (None, Some((b, _))) => *b,
                (None, None) => break,
            };
            if let Some(u) = self.remove_key(worst) {
                self.by_id.remove(&u.id());
                self.dropped += 1;
            }
        }
    }

    /// Takes updates for one packet: at most `max_count`, at most
    /// `max_bytes` in total, each counted as one more transmission and
    /// forgotten after `limit` transmissions.
    pub fn take(&mut self, max_bytes: usize, max_count: usize, limit: u32) -> Vec<Update> {
        let mut out: Vec<Update> = Vec::new();
        let mut sent: Vec<Key> = Vec::new();
        let mut left = max_bytes;
        let mut alive = self.alive.iter().peekable();
        let mut accusations = self.accusations.iter().peekable();
        // Every update of one map has the same encoded length, and the
        // budget only shrinks: once the head of a map does not fit, none
        // of the rest will, so that map is done.
        let mut accusations_fit = true;
        while out.len() < max_count && left >= MIN_UPDATE_LEN {
            let a = alive.peek().map(|(k, _)| **k);
            let b = if accusations_fit {
                accusations.peek().map(|(k, _)| **k)
            } else {
                None
            };
            let (key, update) = match (a, b) {
                (Some(a), Some(b)) if b < a => match accusations.next() {
                    Some((k, u)) => (*k, *u),
                    None => break,
                },
                (Some(_), _) => match alive.next() {
                    Some((k, u)) => (*k, *u),
                    None => break,
                },
                (None, Some(_)) => match accusations.next() {
                    Some((k, u)) => (*k, *u),
                    None => break,
                },
                (None, None) => break,
            };
            let len = update.encoded_len();
            if len > left {
                if matches!(update, Update::Alive { .. }) {
                    break;
                }
                accusations_fit = false;
                continue;
            }
            left -= len;
            out.push(update);
            sent.push(key);
        }
        for (key, update) in sent.into_iter().zip(&out) {
            let (transmits, seq) = key;
            let map = self.map_of(update);
            map.remove(&key);
            let id = update.id();
            if transmits + 1 >= limit {
                self.by_id.remove(&id);
            } else {
                let next = (transmits + 1, seq);
                self.map_of(update).insert(next, *update);
                if let Some(k) = self.by_id.get_mut(&id) {
                    *k = next;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::NodeId;
    use rand::SeedableRng;

    fn queue(max_len: usize) -> BroadcastQueue {
        BroadcastQueue::new(max_len, &mut OverlayRng::seed_from_u64(1))
    }

    fn suspect(id: u64) -> Update {
        Update::Suspect {
            id: NodeId(id),
            incarnation: 0,
            from: NodeId(99),
        }
    }

    #[test]
    fn accusations_that_do_not_fit_are_skipped_for_alive_ones() {
        let mut q = queue(100);
        q.push(alive(1, 0));
        q.push(suspect(2));
        q.push(alive(3, 0));
        q.push(suspect(4));
        // 30 bytes: suspect 4 (21), then alive 3 (13) does not fit either.
        assert_eq!(q.take(30, 10, 5), vec![suspect(4)]);
        // 34 bytes: alive 3 (13), then suspect 2 (21).
        assert_eq!(q.take(34, 10, 5), vec![alive(3, 0), suspect(2)]);
        // 20 bytes: no accusation fits; alive 1 does.
        assert_eq!(q.take(20, 10, 5), vec![alive(1, 0)]);
        // Equal transmits now: newest first.
        assert_eq!(
            q.take(1000, 10, 5),
            vec![suspect(4), alive(3, 0), suspect(2), alive(1, 0)]
        );
    }

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
        let mut q = queue(100);
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
        let mut q = queue(3);
        for i in 0..5 {
            q.push(alive(i, 0));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
    }
}

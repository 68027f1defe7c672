//! The simulated network: a virtual clock, a latency model, loss, slow
//! nodes, crashes and partitions, all driven by one seed.
//!
//! [`Network`] runs N [`Node`]s in one thread. It only moves bytes and
//! timers (STYLE.md, "drivers are thin"): every packet a node emits is
//! delivered to its destination after the one-way delay of the link (half
//! the RTT), unless lost; every timer fires at the time the node asked for.
//! Events are ordered by (time, insertion number), so a run is a pure
//! function of its seed. Time is a `base` `Instant` plus virtual nanoseconds;
//! the base is only an origin, never compared with the wall clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::matrix::{LatencyMatrix, Placement};
use crate::overlay::{Config, Event, Node, NodeId, OverlayRng};

/// The latency model: one or more matrices replayed in order, and where
/// each node sits on them.
#[derive(Clone, Debug)]
pub struct Latency {
    /// The matrices; with more than one, each holds for `slice_period`
    /// in turn and the last one stays (PlanetLab time slices as drifting
    /// truth).
    pub slices: Vec<LatencyMatrix>,
    /// How long each slice holds.
    pub slice_period: Duration,
    /// Nodes on hosts.
    pub placement: Placement,
}

impl Latency {
    /// The RTT between nodes `a` and `b` at virtual time `t`, milliseconds.
    pub fn rtt_ms(&self, t: Duration, a: usize, b: usize) -> f64 {
        let k = if self.slices.len() > 1 && !self.slice_period.is_zero() {
            ((t.as_nanos() / self.slice_period.as_nanos()) as usize).min(self.slices.len() - 1)
        } else {
            0
        };
        self.placement.rtt_ms(&self.slices[k], a, b)
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Timer {
        node: u32,
        generation: u32,
        /// Already held back to the node's next wake-up (slow nodes).
        ready: bool,
    },
    Deliver {
        to: u32,
        from: u32,
        payload: Vec<u8>,
        /// Already held back to the node's next wake-up (slow nodes).
        ready: bool,
    },
}

/// Message counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    /// Packets handed to the network.
    pub packets: u64,
    /// Bytes handed to the network.
    pub bytes: u64,
    /// Packets dropped by loss or partition.
    pub lost: u64,
    /// Packets that reached a crashed node.
    pub to_crashed: u64,
}

/// The simulated network and its nodes.
pub struct Network {
    base: Instant,
    now_ns: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Kind)>>,
    insertions: u64,
    nodes: Vec<Option<Node>>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, u32>,
    timer_req: Vec<Option<Instant>>,
    generation: Vec<u32>,
    latency: Latency,
    rng: ChaCha8Rng,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Per node: the longest gap between two wake-ups of a slow node (a
    /// CPU-starved process). Such a node runs only at wake-ups, spaced by
    /// gaps drawn uniformly in `(0, d]`; whatever came due since the last
    /// one (packets, timers) waits for the next and is then handled in the
    /// order it came due, as a busy process drains its socket and timer
    /// queue. So each event is late by less than `d`, and never overtakes
    /// an earlier one: a late ack still beats the timer that would have
    /// failed the probe, if the ack arrived first.
    pub slow: Vec<Duration>,
    /// Per node: the next wake-up of a slow node, virtual nanoseconds.
    wake_ns: Vec<u64>,
    /// Per node: partition group; packets between groups are dropped.
    pub group: Vec<u8>,
    /// Traffic counters since the last reset.
    pub traffic: Traffic,
    /// Packets that failed to decode at their receiver.
    pub decode_errors: u64,
}

impl Network {
    /// A network of nodes `ids` (node i sits at placement i), none started.
    pub fn new(ids: Vec<NodeId>, latency: Latency, seed: u64) -> Self {
        let n = ids.len();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        Self {
            // The only clock read in the simulator: an origin for Instants.
            base: Instant::now(),
            now_ns: 0,
            heap: BinaryHeap::new(),
            insertions: 0,
            nodes: (0..n).map(|_| None).collect(),
            ids,
            index,
            timer_req: vec![None; n],
            generation: vec![0; n],
            latency,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x006e_6574_776f_726b),
            loss: 0.0,
            slow: vec![Duration::ZERO; n],
            wake_ns: vec![0; n],
            group: vec![0; n],
            traffic: Traffic::default(),
            decode_errors: 0,
        }
    }

    /// The virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_ns)
    }

    /// The current virtual time as an `Instant`.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    /// The `Instant` at virtual time `t`.
    pub fn instant(&self, t: Duration) -> Instant {
        self.base + t
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no node slots.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.ids[i]
    }

    /// Index of node `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.index.get(&id).map(|&i| i as usize)
    }

    /// Node `i`, if running.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref()
    }

    /// Node `i`, mutably, if running. Call [`Network::flush`] after
    /// commands so its output is scheduled.
    pub fn node_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.nodes[i].as_mut()
    }

    /// The latency model.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Starts (or restarts) node `i` with `config` and an RNG seeded from
    /// `seed`; the caller then joins or restores it and calls `flush`.
    pub fn start(&mut self, i: usize, config: Config, seed: u64) -> &mut Node {
        let rng = OverlayRng::seed_from_u64(seed);
        let node = Node::new(self.ids[i], config, rng, self.now());
        self.generation[i] = self.generation[i].wrapping_add(1);
        self.timer_req[i] = None;
        self.nodes[i].insert(node)
    }

    /// Crashes node `i`: it stops at once, its state is lost.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.generation[i] = self.generation[i].wrapping_add(1);
        self.timer_req[i] = None;
    }

    fn push(&mut self, at_ns: u64, kind: Kind) {
        self.insertions += 1;
        self.heap.push(Reverse((at_ns, self.insertions, kind)));
    }

    /// When node `i` next runs for an event due at `at_ns` (the event's
    /// time itself, unless the node is slow).
    fn wake_at(&mut self, i: usize, at_ns: u64) -> u64 {
        let d = self.slow[i].as_nanos() as u64;
        if d == 0 {
            return at_ns;
        }
        while self.wake_ns[i] < at_ns {
            self.wake_ns[i] += self.rng.gen_range(1..=d);
        }
        self.wake_ns[i]
    }

    /// Schedules node `i`'s output and its next timer, and hands its events
    /// to `on_event`.
    pub fn flush(&mut self, i: usize, on_event: &mut dyn FnMut(Duration, usize, Event)) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = node.poll_transmit() {
            out.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = node.poll_event() {
            events.push(e);
        }
        let timeout = node.poll_timeout();
        let elapsed = self.elapsed();
        for e in events {
            on_event(elapsed, i, e);
        }
        for t in out {
            self.send(i, t.to, t.payload);
        }
        if let Some(t) = timeout
            && self.timer_req[i].is_none_or(|old| t < old)
        {
            self.timer_req[i] = Some(t);
            let at = t.saturating_duration_since(self.base).as_nanos() as u64;
            let at = at.max(self.now_ns);
            let generation = self.generation[i];
            self.push(
                at,
                Kind::Timer {
                    node: i as u32,
                    generation,
                    ready: false,
                },
            );
        }
    }

    fn send(&mut self, from: usize, to: NodeId, payload: Vec<u8>) {
        self.traffic.packets += 1;
        self.traffic.bytes += payload.len() as u64;
        let Some(to) = self.index_of(to) else {
            self.traffic.lost += 1;
            return;
        };
        if self.group[from] != self.group[to] || self.rng.gen_bool(self.loss) {
            self.traffic.lost += 1;
            return;
        }
        let rtt_ms = self.latency.rtt_ms(self.elapsed(), from, to);
        let one_way_ns = (rtt_ms * 1e6 / 2.0) as u64;
        let at = self.now_ns + one_way_ns.max(1);
        self.push(
            at,
            Kind::Deliver {
                to: to as u32,
                from: from as u32,
                payload,
                ready: false,
            },
        );
    }

    /// Runs every event up to virtual time `until`.
    pub fn run_until(
        &mut self,
        until: Duration,
        on_event: &mut dyn FnMut(Duration, usize, Event),
    ) -> u64 {
        let until_ns = until.as_nanos() as u64;
        let mut processed = 0;
        while let Some(Reverse((at, _, _))) = self.heap.peek() {
            if *at > until_ns {
                break;
            }
            let Some(Reverse((at, _, kind))) = self.heap.pop() else {
                break;
            };
            self.now_ns = at;
            processed += 1;
            // A slow node's event waits for its next wake-up, queued behind
            // the events that came due before it (insertion order breaks
            // ties in the heap).
            let kind = match kind {
                Kind::Timer {
                    node,
                    generation,
                    ready: false,
                } => {
                    let wake = self.wake_at(node as usize, at);
                    let kind = Kind::Timer {
                        node,
                        generation,
                        ready: true,
                    };
                    if wake > at {
                        self.push(wake, kind);
                        continue;
                    }
                    kind
                }
                Kind::Deliver {
                    to,
                    from,
                    payload,
                    ready: false,
                } => {
                    let wake = self.wake_at(to as usize, at);
                    let kind = Kind::Deliver {
                        to,
                        from,
                        payload,
                        ready: true,
                    };
                    if wake > at {
                        self.push(wake, kind);
                        continue;
                    }
                    kind
                }
                ready => ready,
            };
            let now = self.now();
            match kind {
                Kind::Timer {
                    node, generation, ..
                } => {
                    let i = node as usize;
                    if generation != self.generation[i] {
                        continue;
                    }
                    let Some(n) = self.nodes[i].as_mut() else {
                        continue;
                    };
                    if self.timer_req[i].is_some_and(|t| t <= now) {
                        self.timer_req[i] = None;
                    }
                    n.handle_timeout(now);
                    self.flush(i, on_event);
                }
                Kind::Deliver {
                    to, from, payload, ..
                } => {
                    let i = to as usize;
                    let from_id = self.ids[from as usize];
                    let Some(n) = self.nodes[i].as_mut() else {
                        self.traffic.to_crashed += 1;
                        continue;
                    };
                    if n.handle_message(now, from_id, &payload).is_err() {
                        self.decode_errors += 1;
                    }
                    self.flush(i, on_event);
                }
            }
        }
        self.now_ns = self.now_ns.max(until_ns);
        processed
    }
}

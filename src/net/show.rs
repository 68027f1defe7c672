//! What `gridedge status` and `gridedge peers` print: the overlay's
//! [`Status`] from the admin API, as tables.

use std::fmt::Write;

use super::Status;

/// `gridedge status`: this node, its coordinate, its P-Grid path and
/// references, and a count of members by state.
pub fn render_status(s: &Status) -> String {
    let mut out = String::new();
    let count = |state: &str| s.members.iter().filter(|m| m.state == state).count();
    let _ = writeln!(out, "node       {} (peer {})", s.node_id, s.peer_id);
    for addr in &s.listen {
        let _ = writeln!(out, "listen     {addr}");
    }
    let _ = writeln!(out, "gateway    {}", s.http.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "members    {} alive, {} suspect, {} dead, {} left",
        count("alive"),
        count("suspect"),
        count("dead"),
        count("left")
    );
    let _ = writeln!(
        out,
        "swim       incarnation {}, health {}",
        s.incarnation, s.health
    );
    let position: Vec<String> = s
        .coordinate
        .position_ms
        .iter()
        .map(|x| format!("{x:.1}"))
        .collect();
    let _ = writeln!(
        out,
        "coordinate [{}] height {:.1} ms, error {:.2}",
        position.join(", "),
        s.coordinate.height_ms,
        s.coordinate.error
    );
    let _ = writeln!(
        out,
        "p-grid     path {}, {} keys, {} exchanges, {} replicas",
        s.pgrid.path,
        s.pgrid.keys,
        s.pgrid.exchanges,
        s.pgrid.replicas.len()
    );
    for (level, refs) in s.pgrid.refs.iter().enumerate() {
        let _ = writeln!(out, "  level {level:<2} {}", refs.join(" "));
    }
    if !s.pgrid.replicas.is_empty() {
        let _ = writeln!(out, "  replicas {}", s.pgrid.replicas.join(" "));
    }
    let c = &s.counters;
    let _ = writeln!(
        out,
        "packets    {} in, {} out, {} to unknown peers dropped, {} malformed, {} failed sends",
        c.packets_in, c.packets_out, c.dropped_unknown_peer, c.decode_errors, c.send_failures
    );
    out
}

/// `gridedge peers`: one line per member.
pub fn render_peers(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16}  {:<7}  {:>5}  {:>8}  {:>6}  {:>10}  {:<7}  {:<4}  gateway",
        "node", "state", "inc", "rtt ms", "reqs", "bytes/s", "trust", "conn"
    );
    for m in &s.members {
        let rtt = m.rtt_ms.map_or_else(|| "-".into(), |r| format!("{r:.1}"));
        let _ = writeln!(
            out,
            "{:<16}  {:<7}  {:>5}  {:>8}  {:>6}  {:>10}  {:<7}  {:<4}  {}",
            m.node_id,
            m.state,
            m.incarnation,
            rtt,
            m.requests_in_flight,
            m.served_bytes_per_s,
            if m.locally_bad { "bad*" } else { &m.standing },
            if m.connected { "yes" } else { "no" },
            m.http.as_deref().unwrap_or("-")
        );
    }
    out
}

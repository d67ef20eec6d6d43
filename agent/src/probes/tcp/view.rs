//! The TCP probe in `agent attach`: the process's connects by outcome, their
//! latency, the busiest destinations, and its retransmits and resets.

use super::aggregate::{Outcome, PeerKind};
use super::peer_counts::Shared;
use crate::attach::snapshot::Snapshot;
use crate::attach::view::{clip, duration};
use crate::probes::AttachView;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Tcp {
    pub connects: u64,
    pub interval_connects: u64,
    /// Every outcome (success, refused, timed_out, unreachable, aborted, other_error).
    pub by_outcome: BTreeMap<&'static str, u64>,
    /// Latency of successful connects, in ns.
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Most connects first.
    pub destinations: Vec<Destination>,
    /// Segments retransmitted on the process's sockets (those it connected).
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Destination {
    pub destination: String,
    pub outcome: &'static str,
    pub count: u64,
}

/// Fills `Snapshot::tcp`.
pub(super) struct TcpView {
    shared: Shared,
    last: u64,
}

impl TcpView {
    pub(super) fn new(shared: Shared) -> Self {
        TcpView { shared, last: 0 }
    }
}

impl AttachView for TcpView {
    fn fill(&mut self, snap: &mut Snapshot, _secs: f64) {
        let agg = self.shared.read();
        let connects: u64 = Outcome::ALL.iter().map(|&o| agg.count(o)).sum();
        let interval_connects = connects.saturating_sub(self.last);
        self.last = connects;
        let mut destinations: Vec<Destination> = agg
            .by_destination()
            .into_iter()
            .map(|(d, o, n)| Destination {
                destination: d.to_string(),
                outcome: o.label(),
                count: n,
            })
            .collect();
        destinations.sort_by_key(|d| std::cmp::Reverse(d.count));
        snap.tcp = Some(Tcp {
            connects,
            interval_connects,
            by_outcome: Outcome::ALL
                .iter()
                .map(|&o| (o.label(), agg.count(o)))
                .collect(),
            p50_ns: agg.host().latency.quantile_ns(0.5),
            p99_ns: agg.host().latency.quantile_ns(0.99),
            max_ns: agg.host().latency.max_ns(),
            destinations,
            retransmits: agg.peer_count(PeerKind::Retransmit),
            resets_sent: agg.peer_count(PeerKind::ResetSent),
            resets_received: agg.peer_count(PeerKind::ResetReceived),
        });
    }
}

pub(super) fn render(out: &mut String, s: &Snapshot) {
    let Some(t) = &s.tcp else { return };
    out.push('\n');
    let failures: Vec<String> = t
        .by_outcome
        .iter()
        .filter(|&(&o, &n)| o != "success" && n > 0)
        .map(|(o, n)| format!("{o} {n}"))
        .collect();
    let head = format!(
        "TCP CONNECTS  {}  ok {}  failed: {}",
        t.connects,
        t.by_outcome.get("success").copied().unwrap_or(0),
        if failures.is_empty() {
            "none".to_string()
        } else {
            failures.join(", ")
        }
    );
    let _ = writeln!(out, "{}", clip(&head));
    let _ = writeln!(
        out,
        "retransmits {}  resets sent {}  received {}",
        t.retransmits, t.resets_sent, t.resets_received
    );
    if t.connects == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "latency  p50 {}  p99 {}  max {}",
        duration(t.p50_ns),
        duration(t.p99_ns),
        duration(t.max_ns)
    );
    let _ = writeln!(
        out,
        "{:<47} {:<12} {:>8}",
        "DESTINATION", "OUTCOME", "COUNT"
    );
    for d in t.destinations.iter().take(5) {
        let dest: String = d.destination.chars().take(47).collect();
        let _ = writeln!(out, "{dest:<47} {:<12} {:>8}", d.outcome, d.count);
    }
}

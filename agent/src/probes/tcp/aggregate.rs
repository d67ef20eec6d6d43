//! TCP connect aggregate: latency of successful connects, connects by
//! outcome, and by destination behind a series budget; retransmits and
//! resets by destination behind the same budget.

use crate::by_slot::BySlot;
use crate::histogram::LatencyHistogram;
use crate::k8s::Slot;
use agent_common::tcp::{ConnectEvent, TCP_ESTABLISHED};
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};

/// How a connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    /// The peer answered with a reset (ECONNREFUSED).
    Refused,
    /// The kernel gave up retransmitting the SYN (ETIMEDOUT).
    TimedOut,
    /// ICMP said the host or network is unreachable.
    Unreachable,
    /// Closed before completing with no error reported: the application gave
    /// up first (its own connect timeout, or close()).
    Aborted,
    /// Any other error the kernel reported.
    OtherError,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::Refused,
        Outcome::TimedOut,
        Outcome::Unreachable,
        Outcome::Aborted,
        Outcome::OtherError,
    ];

    pub fn of(ev: &ConnectEvent) -> Outcome {
        if ev.newstate == TCP_ESTABLISHED as u32 {
            return Outcome::Success;
        }
        if ev.error == agent_common::tcp::ERROR_UNKNOWN {
            return Outcome::OtherError;
        }
        match ev.error as i32 {
            0 => Outcome::Aborted,
            libc::ECONNREFUSED => Outcome::Refused,
            libc::ETIMEDOUT => Outcome::TimedOut,
            libc::EHOSTUNREACH | libc::ENETUNREACH => Outcome::Unreachable,
            _ => Outcome::OtherError,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Refused => "refused",
            Outcome::TimedOut => "timed_out",
            Outcome::Unreachable => "unreachable",
            Outcome::Aborted => "aborted",
            Outcome::OtherError => "other_error",
        }
    }
}

/// `ip:port` of the destination; IPv4-mapped addresses print as IPv4.
pub fn destination(ev: &ConnectEvent) -> String {
    address(Ipv6Addr::from(ev.daddr), ev.dport)
}

/// `ip:port` as the connect metrics label it.
pub fn address(v6: Ipv6Addr, port: u16) -> String {
    let ip = v6
        .to_ipv4_mapped()
        .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4);
    SocketAddr::new(ip, port).to_string()
}

/// What happened to a flow, besides its connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKind {
    Retransmit,
    ResetSent,
    ResetReceived,
}

/// Per destination: connects by outcome, retransmits, resets.
#[derive(Debug, Default)]
struct DestStats {
    outcomes: HashMap<Outcome, u64>,
    peer: HashMap<PeerKind, u64>,
}

/// Latency and outcomes of one container's connects (or the host's).
#[derive(Debug)]
pub struct ConnectStats {
    /// Successful connects only: a failure's duration is not a connect latency.
    pub latency: LatencyHistogram,
    pub outcomes: HashMap<Outcome, u64>,
}

impl ConnectStats {
    fn new(precision: u8) -> Self {
        ConnectStats {
            latency: LatencyHistogram::new(precision),
            outcomes: HashMap::new(),
        }
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }
}

/// Where destinations past the budget are counted.
const OTHER: &str = "other";
/// Retransmits and resets whose peer could not be read.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug)]
pub struct TcpAggregate {
    /// Per container label set; the host's keeps HDR percentiles.
    by_slot: BySlot<ConnectStats>,
    /// Per destination, by outcome, node-wide (per container as well would
    /// multiply two budgets). Admission is sticky (a destination is never
    /// demoted, so its counters stay monotonic); past the budget, new
    /// destinations are folded into "other".
    destinations: HashMap<String, DestStats>,
    budget: usize,
    folded: u64,
    /// Destinations admitted since `take_admitted` (for the kernel's map).
    admitted: Vec<String>,
    /// Retransmits and resets, node-wide (or the target's in `--pid` mode).
    peer_totals: HashMap<PeerKind, u64>,
}

impl TcpAggregate {
    pub fn new(precision: u8, budget: usize) -> Self {
        let mut by_slot = BySlot::default();
        by_slot.entry(Slot::HOST, || ConnectStats::new(precision));
        TcpAggregate {
            by_slot,
            destinations: HashMap::new(),
            budget,
            folded: 0,
            admitted: Vec::new(),
            peer_totals: HashMap::new(),
        }
    }

    /// Changes the budget for destinations not seen yet; admitted ones stay.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
    }

    pub fn record(&mut self, ev: &ConnectEvent, slot: Slot) {
        let outcome = Outcome::of(ev);
        let stats = self.by_slot.entry(slot, || ConnectStats::new(0));
        if outcome == Outcome::Success {
            stats.latency.record(ev.latency_ns);
        }
        *stats.outcomes.entry(outcome).or_default() += 1;
        *self
            .admit(destination(ev), 1)
            .outcomes
            .entry(outcome)
            .or_default() += 1;
    }

    /// `n` retransmits or resets with their peer (`None`: the kernel's
    /// record had no address we could read, counted under "unknown").
    pub fn record_peer(&mut self, kind: PeerKind, peer: Option<String>, n: u64) {
        *self.peer_totals.entry(kind).or_default() += n;
        let dest = peer.unwrap_or_else(|| UNKNOWN.into());
        *self.admit(dest, n).peer.entry(kind).or_default() += n;
    }

    /// `n` retransmits or resets the kernel counted under "other" itself,
    /// to destinations it was told were past the budget.
    pub fn record_folded(&mut self, kind: PeerKind, n: u64) {
        *self.peer_totals.entry(kind).or_default() += n;
        self.folded += n;
        let other = self.destinations.entry(OTHER.into()).or_default();
        *other.peer.entry(kind).or_default() += n;
    }

    /// Destinations admitted (not "other" or "unknown"), not counting those
    /// two: they take no place in the budget.
    fn admitted_count(&self) -> usize {
        self.destinations.len()
            - [OTHER, UNKNOWN]
                .iter()
                .filter(|d| self.destinations.contains_key(**d))
                .count()
    }

    /// Whether a new destination would be folded into "other" now.
    pub fn budget_spent(&self) -> bool {
        self.admitted_count() >= self.budget
    }

    /// Destinations admitted since the last call.
    pub fn take_admitted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.admitted)
    }

    /// The stats of the destination of `n` observations, or "other"'s once
    /// the budget is spent.
    fn admit(&mut self, dest: String, n: u64) -> &mut DestStats {
        let known = self.destinations.contains_key(&dest) || dest == UNKNOWN || dest == OTHER;
        let dest = if known {
            dest
        } else if !self.budget_spent() {
            self.admitted.push(dest.clone());
            dest
        } else {
            self.folded += n;
            OTHER.into()
        };
        self.destinations.entry(dest).or_default()
    }

    /// Retransmits or resets of one kind, over every destination.
    pub fn peer_count(&self, kind: PeerKind) -> u64 {
        self.peer_totals.get(&kind).copied().unwrap_or(0)
    }

    /// (destination, kind, count), sorted.
    pub fn peer_by_destination(&self) -> Vec<(&str, PeerKind, u64)> {
        let mut v: Vec<_> = self
            .destinations
            .iter()
            .flat_map(|(d, s)| s.peer.iter().map(move |(&k, &n)| (d.as_str(), k, n)))
            .collect();
        v.sort();
        v
    }

    /// Connects with this outcome, over every container and the host.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.by_slot.iter().map(|(_, s)| s.count(outcome)).sum()
    }

    /// The host's stats: everything when attribution is off (attach mode).
    pub fn host(&self) -> &ConnectStats {
        self.by_slot.host().expect("made in new()")
    }

    pub fn by_slot(&self) -> &BySlot<ConnectStats> {
        &self.by_slot
    }

    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// (destination, outcome, count), sorted.
    pub fn by_destination(&self) -> Vec<(&str, Outcome, u64)> {
        let mut v: Vec<_> = self
            .destinations
            .iter()
            .flat_map(|(d, s)| s.outcomes.iter().map(move |(&o, &n)| (d.as_str(), o, n)))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::tcp::{AF_INET, AF_INET6, TCP_CLOSE};

    fn ev(newstate: i32, error: i32, daddr: [u8; 16], dport: u16) -> ConnectEvent {
        ConnectEvent {
            latency_ns: 50_000,
            newstate: newstate as u32,
            error: error as u32,
            family: AF_INET,
            dport,
            daddr,
            ..Default::default()
        }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets()
    }

    #[test]
    fn outcomes() {
        let d = v4([127, 0, 0, 1]);
        assert_eq!(Outcome::of(&ev(TCP_ESTABLISHED, 0, d, 1)), Outcome::Success);
        assert_eq!(
            Outcome::of(&ev(TCP_CLOSE, libc::ECONNREFUSED, d, 1)),
            Outcome::Refused
        );
        assert_eq!(
            Outcome::of(&ev(TCP_CLOSE, libc::ETIMEDOUT, d, 1)),
            Outcome::TimedOut
        );
        assert_eq!(
            Outcome::of(&ev(TCP_CLOSE, libc::EHOSTUNREACH, d, 1)),
            Outcome::Unreachable
        );
        assert_eq!(Outcome::of(&ev(TCP_CLOSE, 0, d, 1)), Outcome::Aborted);
        assert_eq!(
            Outcome::of(&ev(TCP_CLOSE, libc::EPROTO, d, 1)),
            Outcome::OtherError
        );
        assert_eq!(
            Outcome::of(&ev(TCP_CLOSE, -1, d, 1)),
            Outcome::OtherError,
            "unknown (no BTF)"
        );
    }

    #[test]
    fn destinations_print_v4_and_v6() {
        assert_eq!(
            destination(&ev(1, 0, v4([10, 1, 2, 3]), 443)),
            "10.1.2.3:443"
        );
        let mut e = ev(1, 0, Ipv6Addr::LOCALHOST.octets(), 8080);
        e.family = AF_INET6;
        assert_eq!(destination(&e), "[::1]:8080");
    }

    #[test]
    fn budget_folds_new_destinations_and_counts_them() {
        let mut a = TcpAggregate::new(2, 2);
        for port in [1, 2, 1, 3, 4, 2] {
            a.record(
                &ev(TCP_ESTABLISHED, 0, v4([127, 0, 0, 1]), port),
                Slot::HOST,
            );
        }
        a.record(
            &ev(TCP_CLOSE, libc::ECONNREFUSED, v4([127, 0, 0, 1]), 3),
            Slot::HOST,
        );
        let by = a.by_destination();
        assert_eq!(
            by,
            vec![
                ("127.0.0.1:1", Outcome::Success, 2),
                ("127.0.0.1:2", Outcome::Success, 2),
                ("other", Outcome::Success, 2),
                ("other", Outcome::Refused, 1),
            ]
        );
        assert_eq!(a.folded(), 3);
        assert_eq!(a.count(Outcome::Success), 6);
        assert_eq!(a.host().latency.count(), 6, "only successes are latencies");
    }

    #[test]
    fn retransmits_and_resets_share_the_destination_budget() {
        let mut a = TcpAggregate::new(2, 1);
        a.record(&ev(TCP_ESTABLISHED, 0, v4([127, 0, 0, 1]), 1), Slot::HOST);
        a.record_peer(PeerKind::Retransmit, Some("127.0.0.1:1".into()), 1);
        a.record_peer(PeerKind::Retransmit, Some("127.0.0.1:2".into()), 1);
        a.record_peer(PeerKind::ResetSent, None, 1);
        a.record_peer(PeerKind::ResetReceived, Some("127.0.0.1:1".into()), 1);
        assert_eq!(
            a.peer_by_destination(),
            vec![
                ("127.0.0.1:1", PeerKind::Retransmit, 1),
                ("127.0.0.1:1", PeerKind::ResetReceived, 1),
                ("other", PeerKind::Retransmit, 1),
                ("unknown", PeerKind::ResetSent, 1),
            ]
        );
        assert_eq!(a.folded(), 1, "unknown is not folded");
        assert_eq!(a.peer_count(PeerKind::Retransmit), 2);
        assert_eq!(
            a.by_destination(),
            vec![("127.0.0.1:1", Outcome::Success, 1)]
        );
    }

    #[test]
    fn a_raised_budget_admits_new_destinations_and_keeps_the_old() {
        let mut a = TcpAggregate::new(2, 1);
        for port in [1, 2] {
            a.record(
                &ev(TCP_ESTABLISHED, 0, v4([127, 0, 0, 1]), port),
                Slot::HOST,
            );
        }
        a.set_budget(2);
        a.record(&ev(TCP_ESTABLISHED, 0, v4([127, 0, 0, 1]), 3), Slot::HOST);
        let dests: Vec<&str> = a.by_destination().iter().map(|d| d.0).collect();
        assert_eq!(dests, ["127.0.0.1:1", "127.0.0.1:3", "other"]);
        assert_eq!(a.folded(), 1);
    }

    #[test]
    fn admissions_are_handed_out_once_and_kernel_counts_add_up() {
        let mut a = TcpAggregate::new(2, 2);
        a.record(&ev(TCP_ESTABLISHED, 0, v4([127, 0, 0, 1]), 1), Slot::HOST);
        a.record_peer(PeerKind::ResetSent, Some("127.0.0.1:2".into()), 1);
        a.record_peer(PeerKind::ResetSent, None, 1);
        assert_eq!(a.take_admitted(), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(a.take_admitted().is_empty());
        assert!(a.budget_spent(), "unknown takes no place");
        // What the kernel counted: on an admitted key, and folded.
        a.record_peer(PeerKind::ResetSent, Some("127.0.0.1:2".into()), 40);
        a.record_folded(PeerKind::ResetSent, 100);
        a.record_peer(PeerKind::ResetSent, Some("127.0.0.1:3".into()), 5);
        assert!(a.take_admitted().is_empty(), "folded, not admitted");
        assert_eq!(
            a.peer_by_destination(),
            vec![
                ("127.0.0.1:2", PeerKind::ResetSent, 41),
                ("other", PeerKind::ResetSent, 105),
                ("unknown", PeerKind::ResetSent, 1),
            ]
        );
        assert_eq!(a.folded(), 105);
        assert_eq!(a.peer_count(PeerKind::ResetSent), 147);
        a.set_budget(3);
        assert!(!a.budget_spent());
    }
}

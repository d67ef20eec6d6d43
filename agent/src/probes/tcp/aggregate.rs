//! TCP connect aggregate: latency of successful connects, connects by
//! outcome, and by destination behind a series budget.

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
    let v6 = Ipv6Addr::from(ev.daddr);
    let ip = v6
        .to_ipv4_mapped()
        .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4);
    SocketAddr::new(ip, ev.dport).to_string()
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

#[derive(Debug)]
pub struct TcpAggregate {
    /// Per container label set; the host's keeps HDR percentiles.
    by_slot: BySlot<ConnectStats>,
    /// Per destination, by outcome, node-wide (per container as well would
    /// multiply two budgets). Admission is sticky (a destination is never
    /// demoted, so its counters stay monotonic); past the budget, new
    /// destinations are folded into "other".
    destinations: HashMap<String, HashMap<Outcome, u64>>,
    budget: usize,
    folded: u64,
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
        let mut dest = destination(ev);
        // "other" itself takes no place in the budget (it may be raised later).
        let admitted =
            self.destinations.len() - usize::from(self.destinations.contains_key("other"));
        if !self.destinations.contains_key(&dest) && admitted >= self.budget {
            self.folded += 1;
            dest = "other".into();
        }
        *self
            .destinations
            .entry(dest)
            .or_default()
            .entry(outcome)
            .or_default() += 1;
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
            .flat_map(|(d, o)| o.iter().map(move |(&o, &n)| (d.as_str(), o, n)))
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
}

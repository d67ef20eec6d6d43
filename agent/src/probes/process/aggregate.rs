//! Process counts per container slot: execs, forks, exits by how they ended,
//! and a lifetime histogram.

use crate::by_slot::BySlot;
use crate::k8s::Slot;
use std::collections::BTreeMap;

/// Signals that get their own `code` label; any other is "other".
const SIGNALS: [(i32, &str); 18] = [
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGSYS, "SIGSYS"),
];

/// Distinct `code` labels: "0", "nonzero", the named signals, "other".
pub(super) const EXIT_LABELS: u64 = SIGNALS.len() as u64 + 3;

/// The `code` label of a wait status (`task->exit_code`): "0", "nonzero",
/// or the name of the signal that killed it.
pub(crate) fn exit_label(code: u32) -> &'static str {
    let signal = (code & 0x7f) as i32;
    if signal == 0 {
        return if (code >> 8) & 0xff == 0 {
            "0"
        } else {
            "nonzero"
        };
    }
    SIGNALS
        .iter()
        .find(|(n, _)| *n == signal)
        .map_or("other", |(_, name)| name)
}

/// Upper bounds of the lifetime buckets, seconds (1 ms to a day; +Inf added).
pub(super) const LIFETIME_BOUNDS: [f64; 12] = [
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0, 21600.0, 86400.0,
];

/// Process lifetimes (fork to exit).
#[derive(Debug, Default, Clone)]
pub(super) struct Lifetime {
    /// Non-cumulative; the last is +Inf.
    pub buckets: [u64; LIFETIME_BOUNDS.len() + 1],
    pub count: u64,
    pub sum_ns: u128,
}

impl Lifetime {
    fn record(&mut self, ns: u64) {
        let secs = ns as f64 / 1e9;
        let i = LIFETIME_BOUNDS.partition_point(|&b| b < secs);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    /// (upper bound, non-cumulative count), as `encode_histogram` takes them.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        LIFETIME_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().copied())
            .collect()
    }
}

/// One container's (or the host's) processes.
#[derive(Debug, Default, Clone)]
pub(super) struct ProcessStats {
    pub execs: u64,
    pub forks: u64,
    /// By `exit_label`.
    pub exits: BTreeMap<&'static str, u64>,
    pub lifetime: Lifetime,
}

#[derive(Debug, Default)]
pub(super) struct ProcessAggregate {
    by_slot: BySlot<ProcessStats>,
}

impl ProcessAggregate {
    pub fn exec(&mut self, slot: Slot) {
        self.by_slot.entry(slot, ProcessStats::default).execs += 1;
    }

    pub fn fork(&mut self, slot: Slot) {
        self.by_slot.entry(slot, ProcessStats::default).forks += 1;
    }

    pub fn exit(&mut self, slot: Slot, code: u32, lifetime_ns: u64) {
        let s = self.by_slot.entry(slot, ProcessStats::default);
        *s.exits.entry(exit_label(code)).or_default() += 1;
        s.lifetime.record(lifetime_ns);
    }

    pub fn by_slot(&self) -> impl Iterator<Item = (Slot, &ProcessStats)> {
        self.by_slot.iter()
    }

    /// Every slot's counts added up (attach mode's view).
    pub fn total(&self) -> ProcessStats {
        let mut t = ProcessStats::default();
        for (_, s) in self.by_slot() {
            t.execs += s.execs;
            t.forks += s.forks;
            for (code, n) in &s.exits {
                *t.exits.entry(code).or_default() += n;
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_labels_from_wait_status() {
        assert_eq!(exit_label(0), "0");
        assert_eq!(exit_label(3 << 8), "nonzero");
        assert_eq!(exit_label(255 << 8), "nonzero");
        assert_eq!(exit_label(libc::SIGKILL as u32), "SIGKILL");
        // Core dumped: bit 7 set beside the signal.
        assert_eq!(exit_label(libc::SIGSEGV as u32 | 0x80), "SIGSEGV");
        assert_eq!(exit_label(libc::SIGWINCH as u32), "other");
        assert_eq!(exit_label(40), "other");
    }

    #[test]
    fn lifetimes_fall_in_right_inclusive_buckets() {
        let mut l = Lifetime::default();
        l.record(1_000_000); // exactly 1 ms: the first bucket
        l.record(1_000_001);
        l.record(200_000 * 1_000_000_000); // past a day
        assert_eq!(l.buckets[0], 1);
        assert_eq!(l.buckets[1], 1);
        assert_eq!(l.buckets[LIFETIME_BOUNDS.len()], 1);
        assert_eq!(l.count, 3);
        let b = l.buckets_seconds();
        assert_eq!(b.len(), LIFETIME_BOUNDS.len() + 1);
        assert!(b.last().unwrap().0.is_infinite());
    }

    #[test]
    fn totals_add_up_slots() {
        let mut a = ProcessAggregate::default();
        let other = Slot {
            index: 1,
            generation: 0,
        };
        a.exec(Slot::HOST);
        a.exec(other);
        a.fork(other);
        a.exit(Slot::HOST, 0, 5);
        a.exit(other, libc::SIGKILL as u32, 5);
        let t = a.total();
        assert_eq!((t.execs, t.forks), (2, 1));
        assert_eq!(t.exits["0"], 1);
        assert_eq!(t.exits["SIGKILL"], 1);
    }
}

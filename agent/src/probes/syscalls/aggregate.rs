//! The syscall aggregate: per syscall number, a latency histogram and errors by
//! errno. Known numbers live in a dense table; unknown numbers (any value a
//! program passes to syscall(2)) are kept as numbers up to a budget, past which
//! they are folded into one `other` series and the fold is counted.

use crate::by_slot::BySlot;
use crate::histogram::LatencyHistogram;
use crate::k8s::Slot;
use agent_common::syscalls::SyscallRecord;
use std::collections::HashMap;

/// Numbers below this get a slot in the dense table when they name a
/// syscall (x86_64 uses < 470); every other number is unknown, whatever
/// its size, and counts against the budget: an unprivileged process can
/// call syscall(2) with any number, and each would be a series.
const DENSE: usize = 1024;

/// `KNOWN[n]`: number n names a syscall.
fn known() -> &'static [bool; DENSE] {
    static KNOWN: std::sync::LazyLock<[bool; DENSE]> = std::sync::LazyLock::new(|| {
        let mut known = [false; DENSE];
        for &(id, _) in super::syscall_table::NAMES {
            if let Some(k) = known.get_mut(id as usize) {
                *k = true;
            }
        }
        known
    });
    &KNOWN
}

#[derive(Debug, Clone)]
pub struct SyscallStats {
    pub latency: LatencyHistogram,
    /// (errno, count), few entries per syscall: a linear scan beats a map.
    pub errors: Vec<(u16, u64)>,
}

impl SyscallStats {
    fn new(precision: u8) -> Self {
        SyscallStats {
            latency: LatencyHistogram::new(precision),
            errors: Vec::new(),
        }
    }

    #[inline]
    fn record(&mut self, rec: &SyscallRecord) {
        self.latency.record(rec.latency_ns());
        let errno = rec.errno();
        if errno != 0 {
            match self.errors.iter_mut().find(|(e, _)| *e == errno) {
                Some((_, n)) => *n += 1,
                None => self.errors.push((errno, 1)),
            }
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.iter().map(|&(_, n)| n).sum()
    }
}

/// Which series a syscall number is reported under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallKey {
    Id(u32),
    /// Unknown numbers beyond the budget.
    Other,
}

#[derive(Debug)]
pub struct SyscallAggregate {
    precision: u8,
    known: &'static [bool; DENSE],
    dense: Vec<Option<Box<SyscallStats>>>,
    sparse: HashMap<u32, SyscallStats>,
    sparse_budget: usize,
    other: Option<SyscallStats>,
    /// Events recorded under `other` because the budget was spent.
    folded_events: u64,
}

impl SyscallAggregate {
    /// `sparse_budget`: distinct unknown numbers kept as their own series.
    pub fn new(precision: u8, sparse_budget: usize) -> Self {
        SyscallAggregate {
            precision,
            known: known(),
            dense: (0..DENSE).map(|_| None).collect(),
            sparse: HashMap::new(),
            sparse_budget,
            other: None,
            folded_events: 0,
        }
    }

    /// Changes the budget for numbers not seen yet; series already kept stay.
    pub fn set_budget(&mut self, sparse_budget: usize) {
        self.sparse_budget = sparse_budget;
    }

    #[inline]
    pub fn record(&mut self, rec: &SyscallRecord) {
        let precision = self.precision;
        let id = rec.id as usize;
        let stats = if id < DENSE && self.known[id] {
            self.dense[id].get_or_insert_with(|| Box::new(SyscallStats::new(precision)))
        } else if self.sparse.contains_key(&rec.id) || self.sparse.len() < self.sparse_budget {
            self.sparse
                .entry(rec.id)
                .or_insert_with(|| SyscallStats::new(precision))
        } else {
            self.folded_events += 1;
            self.other
                .get_or_insert_with(|| SyscallStats::new(precision))
        };
        stats.record(rec);
    }

    /// Every series with at least one event, in a stable order.
    pub fn series(&self) -> Vec<(SyscallKey, &SyscallStats)> {
        let mut out: Vec<(SyscallKey, &SyscallStats)> = self
            .dense
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.as_deref().map(|s| (SyscallKey::Id(id as u32), s)))
            .collect();
        let mut sparse: Vec<_> = self
            .sparse
            .iter()
            .map(|(&id, s)| (SyscallKey::Id(id), s))
            .collect();
        sparse.sort_by_key(|&(k, _)| k);
        out.extend(sparse);
        out.extend(self.other.as_ref().map(|s| (SyscallKey::Other, s)));
        out
    }

    #[cfg(test)]
    pub fn get(&self, id: u32) -> Option<&SyscallStats> {
        match self.dense.get(id as usize) {
            Some(slot) if self.known[id as usize] => slot.as_deref(),
            _ => self.sparse.get(&id),
        }
    }

    pub fn folded_events(&self) -> u64 {
        self.folded_events
    }
}

/// Syscall aggregates per container. The host's keeps HDR percentiles (the
/// attach view reads them); containers' export exact buckets only.
pub type SyscallsBySlot = BySlot<SyscallAggregate>;

impl SyscallsBySlot {
    /// Creates the host entry, so the host has series even before events.
    pub fn with_host(precision: u8, unknown_budget: usize) -> Self {
        let mut s = BySlot::default();
        s.entry(Slot::HOST, || {
            SyscallAggregate::new(precision, unknown_budget)
        });
        s
    }

    #[inline]
    pub fn record(&mut self, slot: Slot, rec: &SyscallRecord) {
        let budget = self.host().map_or(0, |h| h.sparse_budget);
        self.entry(slot, || SyscallAggregate::new(0, budget))
            .record(rec);
    }

    /// A new unknown-syscall budget for every slot (new series only).
    pub fn set_budget(&mut self, budget: usize) {
        for a in self.values_mut() {
            a.set_budget(budget);
        }
    }

    /// Events folded into syscall="other", over every slot.
    pub fn folded_events(&self) -> u64 {
        self.iter().map(|(_, a)| a.folded_events()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each series' key and its number of events.
    fn counts(a: &SyscallAggregate) -> Vec<(SyscallKey, u64)> {
        a.series()
            .into_iter()
            .map(|(k, s)| (k, s.latency.count()))
            .collect()
    }

    fn rec(id: u32, latency_ns: u64, errno: u16) -> SyscallRecord {
        SyscallRecord::new(latency_ns, id, errno, 0)
    }

    #[test]
    fn counts_latency_and_errors_per_syscall() {
        let mut a = SyscallAggregate::new(2, 4);
        a.record(&rec(110, 100, 0));
        a.record(&rec(110, 300, 0));
        a.record(&rec(81, 50, 9));
        a.record(&rec(81, 70, 9));
        a.record(&rec(81, 70, 2));
        let getppid = a.get(110).unwrap();
        assert_eq!(getppid.latency.count(), 2);
        assert_eq!(getppid.latency.sum_ns(), 400);
        assert_eq!(getppid.error_count(), 0);
        let fchdir = a.get(81).unwrap();
        assert_eq!(fchdir.errors, vec![(9, 2), (2, 1)]);
        assert_eq!(a.series().len(), 2);
    }

    #[test]
    fn unknown_numbers_below_1024_count_against_the_budget_too() {
        let mut a = SyscallAggregate::new(2, 2);
        // 110 is getppid; 600, 700 and 1000 name nothing on x86_64.
        for id in [110, 600, 700, 1000, 1000, 110] {
            a.record(&rec(id, 1, 0));
        }
        let keys = counts(&a);
        assert_eq!(
            keys,
            vec![
                (SyscallKey::Id(110), 2),
                (SyscallKey::Id(600), 1),
                (SyscallKey::Id(700), 1),
                (SyscallKey::Other, 2)
            ]
        );
        assert_eq!(a.folded_events(), 2);
    }

    #[test]
    fn unknown_numbers_are_kept_then_folded_and_counted() {
        let mut a = SyscallAggregate::new(2, 2);
        for id in [5000, 6000, 5000, 7000, 8000, u32::MAX] {
            a.record(&rec(id, 1, 0));
        }
        let keys = counts(&a);
        assert_eq!(
            keys,
            vec![
                (SyscallKey::Id(5000), 2),
                (SyscallKey::Id(6000), 1),
                (SyscallKey::Other, 3)
            ]
        );
        assert_eq!(a.folded_events(), 3);
        // Nothing is lost: every event is in some series.
        assert_eq!(
            a.series()
                .iter()
                .map(|(_, s)| s.latency.count())
                .sum::<u64>(),
            6
        );
    }

    #[test]
    fn by_slot_keeps_containers_apart_and_drops_retired_generations() {
        let c = Slot {
            index: 2,
            generation: 0,
        };
        let mut s = SyscallsBySlot::with_host(2, 4);
        s.record(Slot::HOST, &rec(110, 1, 0));
        s.record(c, &rec(110, 1, 0));
        s.record(c, &rec(110, 1, 0));
        assert_eq!(s.host().unwrap().get(110).unwrap().latency.count(), 1);
        assert_eq!(s.get(c).unwrap().get(110).unwrap().latency.count(), 2);
        assert_eq!(s.iter().count(), 2);
        // Slot 2 retired and reused: the old data is not the new set's.
        let reused = Slot {
            index: 2,
            generation: 1,
        };
        assert!(s.get(reused).is_none());
        s.record(reused, &rec(110, 1, 0));
        assert_eq!(s.get(reused).unwrap().get(110).unwrap().latency.count(), 1);
        assert!(s.get(c).is_none());
    }

    #[test]
    fn a_new_budget_applies_to_new_numbers_only() {
        let mut a = SyscallAggregate::new(2, 2);
        for id in [5000, 6000] {
            a.record(&rec(id, 1, 0));
        }
        a.set_budget(1);
        a.record(&rec(5000, 1, 0)); // kept: never demoted
        a.record(&rec(7000, 1, 0)); // folded: over the new budget
        a.set_budget(4);
        a.record(&rec(8000, 1, 0)); // room again
        let keys: Vec<_> = a.series().into_iter().map(|(k, _)| k).collect();
        use SyscallKey::{Id, Other};
        assert_eq!(keys, [Id(5000), Id(6000), Id(8000), Other]);
        assert_eq!(a.folded_events(), 1);
    }

    #[test]
    fn known_numbers_need_no_budget_and_unknown_ones_do() {
        let mut a = SyscallAggregate::new(2, 0);
        a.record(&rec(462, 1, 0)); // mseal
        a.record(&rec(1023, 1, 0));
        a.record(&rec(1024, 1, 0));
        assert!(a.get(462).is_some());
        assert!(a.get(1023).is_none());
        let keys: Vec<_> = a.series().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [SyscallKey::Id(462), SyscallKey::Other]);
        assert_eq!(a.folded_events(), 2);
    }
}

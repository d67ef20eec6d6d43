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

/// Distinct errnos one syscall series keeps; later ones count under errno
/// "other" (key [`ERRNO_OTHER`]), so one series has at most this + 1 error
/// series whatever the process does.
pub const ERRNO_BUDGET: usize = 16;

/// The errno key of the folded `errno="other"` series (0 is never an errno).
pub const ERRNO_OTHER: u16 = 0;

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

    /// Returns whether the errno was folded into `errno="other"`.
    #[inline]
    fn record(&mut self, rec: &SyscallRecord) -> bool {
        self.latency.record(rec.latency_ns());
        let errno = rec.errno();
        if errno == 0 {
            return false;
        }
        if let Some((_, n)) = self.errors.iter_mut().find(|(e, _)| *e == errno) {
            *n += 1;
            return false;
        }
        let kept = self
            .errors
            .iter()
            .filter(|(e, _)| *e != ERRNO_OTHER)
            .count();
        let (key, folded) = if kept < ERRNO_BUDGET {
            (errno, false)
        } else {
            (ERRNO_OTHER, true)
        };
        match self.errors.iter_mut().find(|(e, _)| *e == key) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((key, 1)),
        }
        folded
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
    /// Distinct syscalls (named or not) kept as their own series, when
    /// bounded: containers' aggregates are (`--container-syscall-budget`),
    /// the host's is not.
    kept_budget: Option<usize>,
    kept: usize,
    other: Option<SyscallStats>,
    /// Events recorded under `other` (syscall or errno) because a budget was spent.
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
            kept_budget: None,
            kept: 0,
            other: None,
            folded_events: 0,
        }
    }

    /// Also bounds the distinct syscalls, named ones included, to `budget`.
    pub fn bounded(mut self, budget: usize) -> Self {
        self.kept_budget = Some(budget);
        self
    }

    fn has_room(&self) -> bool {
        self.kept_budget.is_none_or(|b| self.kept < b)
    }

    /// Changes the budget for numbers not seen yet; series already kept stay.
    pub fn set_budget(&mut self, sparse_budget: usize) {
        self.sparse_budget = sparse_budget;
    }

    #[inline]
    pub fn record(&mut self, rec: &SyscallRecord) {
        let precision = self.precision;
        let id = rec.id as usize;
        let known = id < DENSE && self.known[id];
        let room = self.has_room();
        let stats = if known && (room || self.dense[id].is_some()) {
            let slot = &mut self.dense[id];
            if slot.is_none() {
                self.kept += 1;
            }
            slot.get_or_insert_with(|| Box::new(SyscallStats::new(precision)))
        } else if !known
            && (self.sparse.contains_key(&rec.id)
                || (room && self.sparse.len() < self.sparse_budget))
        {
            self.sparse.entry(rec.id).or_insert_with(|| {
                self.kept += 1;
                SyscallStats::new(precision)
            })
        } else {
            self.folded_events += 1;
            self.other
                .get_or_insert_with(|| SyscallStats::new(precision))
        };
        if stats.record(rec) {
            self.folded_events += 1;
        }
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
/// attach view reads them) and every named syscall; containers' export exact
/// buckets only, for at most `container_budget` distinct syscalls each.
#[derive(Debug)]
pub struct SyscallsBySlot {
    slots: BySlot<SyscallAggregate>,
    unknown_budget: usize,
    container_budget: usize,
}

impl std::ops::Deref for SyscallsBySlot {
    type Target = BySlot<SyscallAggregate>;
    fn deref(&self) -> &Self::Target {
        &self.slots
    }
}

impl SyscallsBySlot {
    /// Creates the host entry, so the host has series even before events.
    pub fn with_host(precision: u8, unknown_budget: usize, container_budget: usize) -> Self {
        let mut slots = BySlot::default();
        slots.entry(Slot::HOST, || {
            SyscallAggregate::new(precision, unknown_budget)
        });
        SyscallsBySlot {
            slots,
            unknown_budget,
            container_budget,
        }
    }

    #[inline]
    pub fn record(&mut self, slot: Slot, rec: &SyscallRecord) {
        let (unknown, bound) = (self.unknown_budget, self.container_budget);
        self.slots
            .entry(slot, || SyscallAggregate::new(0, unknown).bounded(bound))
            .record(rec);
    }

    /// New budgets for every slot (new series only).
    pub fn set_budgets(&mut self, unknown: usize, container: usize) {
        self.unknown_budget = unknown;
        self.container_budget = container;
        for a in self.slots.values_mut() {
            a.set_budget(unknown);
            if a.kept_budget.is_some() {
                a.kept_budget = Some(container);
            }
        }
    }

    /// Events folded into syscall="other" or errno="other", over every slot.
    pub fn folded_events(&self) -> u64 {
        self.slots.iter().map(|(_, a)| a.folded_events()).sum()
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
        let mut s = SyscallsBySlot::with_host(2, 4, 8);
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

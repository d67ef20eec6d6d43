//! Run-queue latency per container (attribution on). The kernel keeps a
//! per-CPU histogram per cgroup (agent-ebpf/src/sched.rs, RUNQ_CGROUP_HIST);
//! at each scrape we take what each cgroup's totals grew by since the last
//! one into its label set's histogram. A gone cgroup gets no more updates
//! (it is empty), so once attribution reports it gone its last growth is
//! taken and its map entry deleted.

use crate::by_slot::BySlot;
use crate::k8s::{Attribution, GoneFeed, Labels, Slot};
use agent_common::sched::RunqHist;
use aya::maps::{MapData, PerCpuHashMap};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(super) struct CgroupRunq {
    map: Mutex<PerCpuHashMap<MapData, u32, RunqHist>>,
    attribution: Arc<Attribution>,
    gone: GoneFeed,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each cgroup's totals at the last scrape.
    last: HashMap<u32, RunqHist>,
    by_slot: BySlot<RunqHist>,
}

impl CgroupRunq {
    pub(super) fn new(
        map: PerCpuHashMap<MapData, u32, RunqHist>,
        attribution: Arc<Attribution>,
    ) -> Self {
        CgroupRunq {
            map: Mutex::new(map),
            gone: attribution.track_gone(),
            attribution,
            state: Mutex::default(),
        }
    }

    /// Brings the per-slot histograms up to date and returns one labelled
    /// histogram per live label set; `node` (the node-wide map: waits the
    /// per-cgroup map had no room for) counts as the host's.
    pub(super) fn series(&self, node: RunqHist) -> Vec<(Labels, RunqHist)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Taken before the map is read: a gone cgroup's entry read below is
        // final. Gone cgroups keep the slot they had (the resolver may have
        // dropped them already).
        let gone: HashMap<u32, Slot> = self
            .attribution
            .lock()
            .take_gone(self.gone)
            .into_iter()
            .collect();
        // Read without the resolver's lock: the drains need it, and reading
        // the map is a syscall per entry.
        let totals: Vec<(u32, RunqHist)> = map
            .iter()
            .filter_map(Result::ok)
            .map(|(cgroup, per_cpu)| (cgroup, sum(per_cpu.iter())))
            .collect();
        let State { last, by_slot } = &mut *st;
        let mut resolver = self.attribution.lock();
        for (cgroup, total) in totals {
            let prev = last.insert(cgroup, total).unwrap_or(RunqHist::ZERO);
            let slot = gone
                .get(&cgroup)
                .copied()
                .unwrap_or_else(|| resolver.slot(cgroup));
            add_growth(by_slot.entry(slot, || RunqHist::ZERO), &total, &prev);
        }
        drop(resolver);
        for cgroup in gone.keys() {
            last.remove(cgroup);
            let _ = map.remove(cgroup);
        }
        // The host always has a series, even before any host cgroup's wait.
        by_slot.entry(Slot::HOST, || RunqHist::ZERO);
        let labeler = self.attribution.labeler();
        by_slot
            .iter()
            .filter_map(|(slot, h)| {
                let mut h = *h;
                if slot == Slot::HOST {
                    add_growth(&mut h, &node, &RunqHist::ZERO);
                }
                Some((labeler.labels(slot)?, h))
            })
            .collect()
    }
}

/// Sum of per-CPU histograms.
pub(super) fn sum<'a>(per_cpu: impl Iterator<Item = &'a RunqHist>) -> RunqHist {
    let mut total = RunqHist::ZERO;
    for h in per_cpu {
        for (t, v) in total.buckets.iter_mut().zip(h.buckets) {
            *t += v;
        }
        total.count += h.count;
        total.sum_ns += h.sum_ns;
    }
    total
}

/// `into += now - before`, per field (the kernel's counters only grow).
pub(crate) fn add_growth(into: &mut RunqHist, now: &RunqHist, before: &RunqHist) {
    for ((i, n), b) in into.buckets.iter_mut().zip(now.buckets).zip(before.buckets) {
        *i += n.saturating_sub(b);
    }
    into.count += now.count.saturating_sub(before.count);
    into.sum_ns += now.sum_ns.saturating_sub(before.sum_ns);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_added_per_field() {
        let mut before = RunqHist::ZERO;
        before.buckets[3] = 5;
        before.count = 5;
        before.sum_ns = 50;
        let mut now = before;
        now.buckets[3] = 7;
        now.buckets[0] = 1;
        now.count = 8;
        now.sum_ns = 81;
        let mut into = RunqHist::ZERO;
        into.count = 100;
        add_growth(&mut into, &now, &before);
        assert_eq!(
            (into.buckets[3], into.buckets[0], into.count, into.sum_ns),
            (2, 1, 103, 31)
        );
        assert_eq!(sum([now, before].iter()).count, 13);
    }
}

//! The block probe's rows per container label set. The kernel keeps totals
//! per (device, operation, cgroup); at each read we add what each key grew
//! by since the last one to its label set's (device, operation) row, so a
//! label set sums its cgroups and outlives them. Each label set names a
//! bounded number of (device, operation) rows; later ones are folded into
//! one `device="other",op="other"` row and counted. A gone cgroup's keys are
//! deleted from the kernel's map once their last growth is taken (the map is
//! preallocated and would otherwise fill as containers come and go).

use crate::by_slot::BySlot;
use crate::k8s::{Attribution, GoneFeed, Slot};
use crate::probes::sched::add_growth;
use agent_common::block::{BlockHist, BlockKey, HIST_ENTRIES, OP_OTHER};
use std::collections::HashMap;
use std::sync::Arc;

/// (device, operation) rows a container label set names, the folded row
/// included: a container reads, writes and flushes on a disk or two.
pub(crate) const CONTAINER_ROWS: usize = 8;
/// The host's: every key the kernel's map holds without attribution.
pub(crate) const HOST_ROWS: usize = HIST_ENTRIES as usize;

/// The dev_t of the folded row (no real device has it: majors are 12 bits).
pub(crate) const DEV_OTHER: u32 = u32::MAX;

/// A label set's histograms by (dev, op).
pub(crate) type SlotRows = HashMap<(u32, u32), BlockHist>;

/// Growth of the kernel's totals, by label set.
#[derive(Default)]
pub(super) struct Rows {
    /// Each key's totals at the last read.
    last: HashMap<BlockKey, BlockHist>,
    by_slot: BySlot<SlotRows>,
    /// Completions counted in a folded row.
    folded: u64,
}

/// Container attribution as the block probe uses it: the resolver, and its
/// own list of gone cgroups.
pub(super) struct Attributed {
    pub attribution: Arc<Attribution>,
    pub gone: GoneFeed,
}

impl Rows {
    /// Adds the growth of `totals` (the kernel's map, CPUs summed) to each
    /// key's label set (the host's without attribution) and returns the keys
    /// of gone cgroups, which the caller deletes from the map.
    pub(super) fn update(
        &mut self,
        totals: Vec<(BlockKey, BlockHist)>,
        attributed: Option<&Attributed>,
    ) -> Vec<BlockKey> {
        // Taken before resolving: a gone cgroup keeps the slot it had (the
        // resolver may have dropped it already).
        let gone: HashMap<u32, Slot> = attributed
            .map(|a| a.attribution.lock().take_gone(a.gone).into_iter().collect())
            .unwrap_or_default();
        let mut resolver = attributed.map(|a| a.attribution.lock());
        let mut delete = Vec::new();
        for (key, total) in totals {
            let prev = self.last.insert(key, total).unwrap_or(BlockHist::ZERO);
            let slot = match (gone.get(&key.cgroup), resolver.as_mut()) {
                (Some(&slot), _) => {
                    delete.push(key);
                    slot
                }
                (None, Some(r)) => r.slot(key.cgroup),
                (None, None) => Slot::HOST,
            };
            self.add(slot, key, &total, &prev);
        }
        for key in &delete {
            self.last.remove(key);
        }
        delete
    }

    /// Adds a key's growth to its row in `slot`: its own (device, op) row
    /// while the label set names fewer than its budget's pairs (all rows
    /// but the folded one), else the folded row.
    fn add(&mut self, slot: Slot, key: BlockKey, total: &BlockHist, prev: &BlockHist) {
        let budget = if slot == Slot::HOST {
            HOST_ROWS
        } else {
            CONTAINER_ROWS
        };
        let rows = self.by_slot.entry(slot, SlotRows::new);
        let own = (key.dev, key.op);
        let row = if rows.contains_key(&own) || rows.len() < budget - 1 {
            own
        } else {
            self.folded += total.device.count.saturating_sub(prev.device.count);
            (DEV_OTHER, OP_OTHER)
        };
        grow(rows.entry(row).or_insert(BlockHist::ZERO), total, prev);
    }

    /// Every label set's rows, by slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Slot, &SlotRows)> {
        self.by_slot.iter()
    }

    pub(super) fn folded(&self) -> u64 {
        self.folded
    }
}

/// `into += now - before`, per field (the kernel's counters only grow).
fn grow(into: &mut BlockHist, now: &BlockHist, before: &BlockHist) {
    add_growth(&mut into.queue, &now.queue, &before.queue);
    add_growth(&mut into.device, &now.device, &before.device);
    for ((i, n), b) in into.size.iter_mut().zip(now.size).zip(before.size) {
        *i += n.saturating_sub(b);
    }
    into.size_sum += now.size_sum.saturating_sub(before.size_sum);
}

/// Sum of per-CPU histograms.
pub(super) fn sum<'a>(per_cpu: impl Iterator<Item = &'a BlockHist>) -> BlockHist {
    let mut t = BlockHist::ZERO;
    for h in per_cpu {
        grow(&mut t, h, &BlockHist::ZERO);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(n: u64) -> BlockHist {
        let mut h = BlockHist::ZERO;
        h.device.count = n;
        h.device.buckets[2] = n;
        h.queue.count = n;
        h.size[3] = n;
        h.size_sum = 4096 * n;
        h
    }

    fn key(dev: u32, op: u32) -> BlockKey {
        BlockKey { dev, op, cgroup: 0 }
    }

    #[test]
    fn cpus_sum_per_field() {
        let mut a = BlockHist::ZERO;
        a.queue.buckets[1] = 2;
        a.queue.count = 2;
        a.device.count = 3;
        a.device.sum_ns = 30;
        a.size[3] = 3;
        a.size_sum = 12288;
        let t = sum([a, a].iter());
        assert_eq!(
            (
                t.queue.buckets[1],
                t.queue.count,
                t.device.count,
                t.device.sum_ns
            ),
            (4, 4, 6, 60)
        );
        assert_eq!((t.size[3], t.size_sum), (6, 24576));
    }

    #[test]
    fn growth_accumulates_across_reads() {
        let mut r = Rows::default();
        r.update(vec![(key(7, 0), hist(3))], None);
        r.update(vec![(key(7, 0), hist(5))], None);
        let (slot, rows) = r.iter().next().unwrap();
        assert_eq!(slot, Slot::HOST);
        let h = rows[&(7, 0)];
        assert_eq!(
            (h.device.count, h.device.buckets[2], h.size_sum),
            (5, 5, 5 * 4096)
        );
        assert_eq!(r.folded(), 0);
    }

    #[test]
    fn a_container_names_seven_pairs_then_folds_and_counts() {
        let mut r = Rows::default();
        let pod = Slot {
            index: 1,
            generation: 0,
        };
        for dev in 0..5 {
            for op in [0, 1] {
                r.add(pod, key(dev, op), &hist(2), &BlockHist::ZERO);
            }
        }
        // A pair it names keeps its row, past the budget too.
        r.add(pod, key(0, 0), &hist(3), &hist(2));
        let rows = r.iter().find(|(s, _)| *s == pod).unwrap().1;
        assert_eq!(rows.len(), CONTAINER_ROWS);
        assert_eq!(rows[&(0, 0)].device.count, 3);
        assert_eq!(rows[&(DEV_OTHER, OP_OTHER)].device.count, 3 * 2);
        assert_eq!(r.folded(), 3 * 2);
    }

    #[test]
    fn the_host_names_every_key_the_map_can_hold() {
        let mut r = Rows::default();
        let keys = (0..HIST_ENTRIES).map(|d| (key(d, 0), hist(1))).collect();
        r.update(keys, None);
        let (_, rows) = r.iter().next().unwrap();
        assert_eq!(rows.len(), HOST_ROWS, "named rows and the folded one");
        assert_eq!(r.folded(), 1, "the last key's completion");
        assert_eq!(rows[&(DEV_OTHER, OP_OTHER)].device.count, 1);
    }
}

//! OOM kills by container slot and victim command, behind a command budget.

use crate::by_slot::BySlot;
use crate::k8s::Slot;
use std::collections::{BTreeMap, HashSet};

/// Distinct victim commands exported by name; later ones count as "other".
/// Kills are rare, so this bounds what a process naming itself at random
/// can add, not what normal use needs.
pub(super) const COMMAND_BUDGET: usize = 64;

#[derive(Debug, Default)]
pub(super) struct OomAggregate {
    kills: BySlot<BTreeMap<String, u64>>,
    /// Commands admitted under their own name (sticky, so counters stay monotonic).
    admitted: HashSet<String>,
    folded: u64,
}

impl OomAggregate {
    pub fn record(&mut self, slot: Slot, command: &str) {
        let name = if self.admitted.contains(command) {
            command.to_string()
        } else if self.admitted.len() < COMMAND_BUDGET {
            self.admitted.insert(command.to_string());
            command.to_string()
        } else {
            self.folded += 1;
            "other".to_string()
        };
        *self
            .kills
            .entry(slot, BTreeMap::new)
            .entry(name)
            .or_default() += 1;
    }

    pub fn by_slot(&self) -> impl Iterator<Item = (Slot, &BTreeMap<String, u64>)> {
        self.kills.iter()
    }

    pub fn folded(&self) -> u64 {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_past_the_budget_fold_into_other() {
        let mut agg = OomAggregate::default();
        for i in 0..COMMAND_BUDGET + 3 {
            agg.record(Slot::HOST, &format!("c{i}"));
        }
        agg.record(Slot::HOST, "c0");
        let (_, host) = agg.by_slot().next().unwrap();
        assert_eq!(host["c0"], 2);
        assert_eq!(host["other"], 3);
        assert_eq!(host.len(), COMMAND_BUDGET + 1);
        assert_eq!(agg.folded(), 3);
    }
}

//! The run-queue probe in `agent attach`: the process's waits for a CPU as
//! runqlat draws them, over the exported buckets.

use super::Runq;
use crate::attach::snapshot::Snapshot;
use crate::attach::view::{BAR, bound, duration};
use crate::probes::AttachView;
use agent_common::sched::RunqHist;
use serde::Serialize;
use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Runqueue {
    /// Waits measured since attach, and their total.
    pub count: u64,
    pub sum_ns: u64,
    pub interval_count: u64,
    /// Non-cumulative counts since attach; the last bucket has `le_ns: null` (+Inf).
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Bucket {
    pub le_ns: Option<u64>,
    pub count: u64,
}

/// Fills `Snapshot::runqueue` (None when the map cannot be read).
pub(super) struct RunqView {
    runq: Arc<Runq>,
    last: u64,
}

impl RunqView {
    pub(super) fn new(runq: Arc<Runq>) -> Self {
        RunqView { runq, last: 0 }
    }
}

impl AttachView for RunqView {
    fn fill(&mut self, snap: &mut Snapshot, _secs: f64) {
        snap.runqueue = self.runq.snapshot().map(|h| {
            let interval_count = h.count.saturating_sub(self.last);
            self.last = h.count;
            runqueue(&h, interval_count)
        });
    }
}

fn runqueue(h: &RunqHist, interval_count: u64) -> Runqueue {
    let bounds = crate::histogram::layout().bounds_ns();
    Runqueue {
        count: h.count,
        sum_ns: h.sum_ns,
        interval_count,
        buckets: h
            .buckets
            .iter()
            .take(bounds.len() + 1) // the bounds, then +Inf
            .enumerate()
            .map(|(i, &count)| Bucket {
                le_ns: bounds.get(i).copied(),
                count,
            })
            .collect(),
    }
}

/// runqlat's log2 histogram, over the exported 1-2.5-5 buckets: rows from the
/// first to the last non-empty bucket, bars scaled to the largest.
pub(super) fn render(out: &mut String, s: &Snapshot) {
    let Some(r) = &s.runqueue else { return };
    out.push('\n');
    let avg = r.sum_ns.checked_div(r.count).unwrap_or(0);
    let _ = writeln!(
        out,
        "RUN QUEUE LATENCY  waits {}  avg {}  (+{} this interval)",
        r.count,
        duration(avg),
        r.interval_count
    );
    let first = r.buckets.iter().position(|b| b.count > 0);
    let last = r.buckets.iter().rposition(|b| b.count > 0);
    let (Some(first), Some(last)) = (first, last) else {
        let _ = writeln!(out, "(no waits yet)");
        return;
    };
    let max = r.buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    let _ = writeln!(out, "{:>19} : {:<8} distribution", "wait", "count");
    for i in first..=last {
        let lo = if i == 0 {
            0
        } else {
            r.buckets[i - 1].le_ns.unwrap_or(0)
        };
        let hi = r.buckets[i].le_ns.map_or("inf".to_string(), bound);
        let label = format!("{} -> {hi}", bound(lo));
        let n = r.buckets[i].count;
        let stars = ((n as u128 * BAR as u128).div_ceil(max as u128)) as usize;
        let _ = writeln!(
            out,
            "{label:>19} : {n:<8} |{:<BAR$}|",
            "*".repeat(stars.min(BAR))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_bounds_then_inf() {
        let mut h = RunqHist::ZERO;
        h.count = 3;
        h.buckets[0] = 3;
        let rq = runqueue(&h, 3);
        assert_eq!(
            rq.buckets.len(),
            agent_common::buckets::DEFAULT_NS.len() + 1
        );
        assert_eq!(rq.buckets[0].count, 3);
        assert_eq!(rq.buckets.last().unwrap().le_ns, None);
    }
}

//! The run-queue latency probe's shared types. `sched_switch` runs hundreds of
//! thousands of times a second on a busy node, so the kernel aggregates in
//! place: per CPU, counts in exactly the buckets the agent exports, plus an
//! exact sum. Nothing is streamed, so nothing can be dropped on the way.

use crate::buckets;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunqHist {
    /// Non-cumulative counts per bucket (the layout's bounds, then +Inf;
    /// slots past that stay 0).
    pub buckets: [u64; buckets::COUNT],
    pub count: u64,
    pub sum_ns: u64,
}

impl RunqHist {
    pub const ZERO: RunqHist = RunqHist {
        buckets: [0; buckets::COUNT],
        count: 0,
        sum_ns: 0,
    };
}

/// Per-cgroup run-queue histograms the kernel keeps with attribution on
/// (preallocated per CPU: a full map sends waits to the node-wide histogram).
pub const CGROUP_HIST_ENTRIES: u32 = 1024;

crate::impl_pod!(RunqHist);

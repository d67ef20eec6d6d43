//! The run-queue latency probe's shared types. `sched_switch` runs hundreds of
//! thousands of times a second on a busy node, so the kernel aggregates in
//! place: per CPU, counts in exactly the buckets the agent exports, plus an
//! exact sum. Nothing is streamed, so nothing can be dropped on the way.

use crate::buckets;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunqHist {
    /// Non-cumulative counts per bucket (`buckets::BOUNDS_NS`, then +Inf).
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

/// Offsets in `struct task_struct` from kernel BTF (no CO-RE in Rust eBPF).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `pid` (the thread id); `tgid` follows it at +4 (checked at startup).
    pub pid: u32,
    pub _pad: u32,
}

crate::impl_pod!(RunqHist, TaskOffsets);

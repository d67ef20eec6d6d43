//! Per-CPU loss counters (indices in `agent_common::counters`). Per-CPU slots are
//! only written by their own CPU with preemption off, so `+=` is race-free.

use aya_ebpf::{macros::map, maps::PerCpuArray};

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(agent_common::counters::COUNT, 0);

#[inline(always)]
pub fn add(index: u32, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        unsafe { *c += n };
    }
}

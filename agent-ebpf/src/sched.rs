//! Run-queue latency (the runqlat algorithm) on raw tracepoints: a thread's
//! wait runs from the moment it becomes runnable (woken, new, or preempted
//! while still runnable) to the moment it is switched in. Raw tracepoints give
//! the task pointers and the real `preempt` flag; pid and tgid are read at
//! offsets from kernel BTF. Aggregated in place per CPU (see agent-common).

use crate::{counters, filter};
use agent_common::buckets;
use agent_common::counters::RUNQ_READ_FAILED;
use agent_common::sched::{RunqHist, TaskOffsets};
use aya_ebpf::{
    Global,
    helpers::{bpf_probe_read_kernel, generated::bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::RawTracePointContext,
};

#[unsafe(no_mangle)]
pub(crate) static TASK_OFFSETS: Global<TaskOffsets> = Global::new(TaskOffsets { pid: 0, _pad: 0 });

/// When each thread became runnable (0: not waiting), indexed by tid.
#[map]
static RUNQ_START: Array<u64> = Array::with_max_entries(32768, 0);

#[map]
static RUNQ_HIST: PerCpuArray<RunqHist> = PerCpuArray::with_max_entries(1, 0);

/// (tid, tgid) of a task_struct pointer.
#[inline(always)]
fn ids(task: *const u8) -> Option<(u32, u32)> {
    let off = TASK_OFFSETS.load().pid as usize;
    match unsafe { bpf_probe_read_kernel(task.add(off) as *const [u32; 2]) } {
        Ok([tid, tgid]) => Some((tid, tgid)),
        Err(_) => {
            counters::add(RUNQ_READ_FAILED, 1);
            None
        }
    }
}

/// The task became runnable now. The idle task (tid 0) never waits.
#[inline(always)]
fn enqueue(task: *const u8) {
    let Some((tid, tgid)) = ids(task) else { return };
    if tid == 0 || !filter::wanted(tgid) {
        return;
    }
    if let Some(slot) = RUNQ_START.get_ptr_mut(tid) {
        unsafe { *slot = bpf_ktime_get_ns() };
    }
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn sched_wakeup(ctx: RawTracePointContext) -> i32 {
    enqueue(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    enqueue(ctx.arg(0));
    0
}

/// sched_switch(bool preempt, prev, next, unsigned int prev_state).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    // Still runnable: preempted (whatever its state says: it was not
    // dequeued), or switched out in TASK_RUNNING (yield, signal pending).
    if preempt & 1 != 0 || prev_state as u32 == 0 {
        enqueue(ctx.arg(1));
    }
    let Some((tid, _)) = ids(ctx.arg(2)) else {
        return 0;
    };
    let Some(slot) = RUNQ_START.get_ptr_mut(tid) else {
        return 0;
    };
    let start = unsafe { *slot };
    if start == 0 {
        return 0; // not tracked: filtered out, or it began waiting before we attached
    }
    unsafe { *slot = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    if now < start {
        return 0;
    }
    let wait = now - start;
    if let Some(h) = RUNQ_HIST.get_ptr_mut(0) {
        let h = unsafe { &mut *h };
        if let Some(b) = h.buckets.get_mut(buckets::index(wait)) {
            *b += 1;
        }
        h.count += 1;
        h.sum_ns += wait;
    }
    0
}

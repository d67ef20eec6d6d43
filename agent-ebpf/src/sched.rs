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
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use core::ptr::read_volatile;

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

/// (tid, tgid) with direct loads: tp_btf arguments are BTF-typed pointers the
/// verifier lets us dereference (at offsets it checks against kernel BTF),
/// which saves a helper call per read.
#[inline(always)]
fn ids_btf(task: *const u8) -> Option<(u32, u32)> {
    let off = TASK_OFFSETS.load().pid as usize;
    unsafe {
        Some((
            read_volatile(task.add(off) as *const u32),
            read_volatile(task.add(off + 4) as *const u32),
        ))
    }
}

/// The task became runnable now. The idle task (tid 0) never waits.
#[inline(always)]
fn enqueue(task: *const u8) {
    enqueue_ids(ids(task));
}

#[inline(always)]
fn enqueue_ids(ids: Option<(u32, u32)>) {
    let Some((tid, tgid)) = ids else { return };
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
    if still_runnable(preempt, prev_state) {
        enqueue(ctx.arg(1));
    }
    switch_in(ids(ctx.arg(2)));
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup_btf(ctx: BtfTracePointContext) -> i32 {
    enqueue_ids(ids_btf(ctx.arg(0)));
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new_btf(ctx: BtfTracePointContext) -> i32 {
    enqueue_ids(ids_btf(ctx.arg(0)));
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    if still_runnable(preempt, prev_state) {
        enqueue_ids(ids_btf(ctx.arg(1)));
    }
    switch_in(ids_btf(ctx.arg(2)));
    0
}

/// Still runnable: preempted (whatever its state says: it was not dequeued),
/// or switched out in TASK_RUNNING (yield, signal pending).
#[inline(always)]
fn still_runnable(preempt: u64, prev_state: u64) -> bool {
    preempt & 1 != 0 || prev_state as u32 == 0
}

/// `next` is switched in: its wait, if we saw it start, ends now.
#[inline(always)]
fn switch_in(ids: Option<(u32, u32)>) {
    let Some((tid, _)) = ids else { return };
    let Some(slot) = RUNQ_START.get_ptr_mut(tid) else {
        return;
    };
    let start = unsafe { *slot };
    if start == 0 {
        return; // not tracked: filtered out, or it began waiting before we attached
    }
    unsafe { *slot = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    if now < start {
        return;
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
}

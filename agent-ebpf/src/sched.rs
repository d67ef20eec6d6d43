//! Run-queue latency (the runqlat algorithm) on raw tracepoints: a thread's
//! wait runs from the moment it becomes runnable (woken, new, or preempted
//! while still runnable) to the moment it is switched in. Raw tracepoints give
//! the task pointers and the real `preempt` flag; pid and tgid are read at
//! offsets from kernel BTF. Aggregated in place per CPU (see agent-common).

use crate::task::{TASK_OFFSETS, cgroup_of};
use crate::{cgroup, counters, filter};
use agent_common::buckets;
use agent_common::counters::{RUNQ_CGROUP_MAP_FULL, RUNQ_READ_FAILED};
use agent_common::sched::RunqHist;
use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_kernel, generated::bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use core::ptr::read_volatile;

/// When each thread became runnable (0: not waiting), indexed by tid (sized
/// to pid_max by the agent; 1 here so an unused probe costs nothing).
#[map]
static RUNQ_START: Array<u64> = Array::with_max_entries(1, 0);

/// Bucket bounds in ns, padded (agent_common::buckets), set by the agent at
/// load (`--latency-buckets`). Read with volatile loads, so the compiler
/// does not fold in these defaults. Shared with the block probe.
#[unsafe(no_mangle)]
pub(crate) static BUCKET_NS: buckets::Padded = buckets::DEFAULT_PADDED;

/// Offset of the task's state (`__state` from 5.14, `state` before) for
/// kernels whose sched_switch has no `prev_state` argument (before 5.18),
/// from kernel BTF; only the `*_task_state` programs read it.
#[unsafe(no_mangle)]
static TASK_STATE_OFFSET: Global<u32> = Global::new(0);

#[map]
static RUNQ_HIST: PerCpuArray<RunqHist> = PerCpuArray::with_max_entries(1, 0);

/// With container attribution: per cgroup (low 32 bits of the id of the task
/// switched in), sized by the agent when attribution is on; 1 entry otherwise.
#[map]
static RUNQ_CGROUP_HIST: PerCpuHashMap<u32, RunqHist> = PerCpuHashMap::with_max_entries(1, 0);

/// (tid, tgid) of a task_struct pointer.
#[inline(always)]
fn ids(task: *const u8) -> Option<(u32, u32)> {
    let ids = crate::task::ids(task);
    if ids.is_none() {
        counters::add(RUNQ_READ_FAILED, 1);
    }
    ids
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
    let next: *const u8 = ctx.arg(2);
    switch_in(ids(next), || cgroup_of(next));
    0
}

/// sched_switch(bool preempt, prev, next) before 5.18: prev's state is read
/// from the task (a 4-byte read: the low half of 5.10's `long state` on
/// little-endian, all of `unsigned int __state` since 5.14).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch_task_state(ctx: RawTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let off = TASK_STATE_OFFSET.load() as usize;
    match unsafe { bpf_probe_read_kernel(prev.add(off) as *const u32) } {
        Ok(state) => {
            if still_runnable(preempt, u64::from(state)) {
                enqueue(prev);
            }
        }
        Err(_) => counters::add(RUNQ_READ_FAILED, 1),
    }
    let next: *const u8 = ctx.arg(2);
    switch_in(ids(next), || cgroup_of(next));
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
    let next: *const u8 = ctx.arg(2);
    switch_in(ids_btf(next), || cgroup_of_btf(next));
    0
}

/// The same before 5.18, with a direct load of prev's state.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_task_state_btf(ctx: BtfTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let off = TASK_STATE_OFFSET.load() as usize;
    let state = unsafe { read_volatile(prev.add(off) as *const u32) };
    if still_runnable(preempt, u64::from(state)) {
        enqueue_ids(ids_btf(prev));
    }
    let next: *const u8 = ctx.arg(2);
    switch_in(ids_btf(next), || cgroup_of_btf(next));
    0
}

/// The same with direct loads (tp_btf: typed pointers; a fault reads 0).
#[inline(always)]
fn cgroup_of_btf(task: *const u8) -> u32 {
    let o = TASK_OFFSETS.load();
    unsafe {
        let css_set = read_volatile(task.add(o.cgroups as usize) as *const *const u8);
        let cgrp = read_volatile(css_set.add(o.dfl_cgrp as usize) as *const *const u8);
        let kn = read_volatile(cgrp.add(o.kn as usize) as *const *const u8);
        read_volatile(kn.add(o.kn_id as usize) as *const u64) as u32
    }
}

/// Still runnable: preempted (whatever its state says: it was not dequeued),
/// or switched out in TASK_RUNNING (yield, signal pending).
#[inline(always)]
fn still_runnable(preempt: u64, prev_state: u64) -> bool {
    preempt & 1 != 0 || prev_state as u32 == 0
}

/// `next` is switched in: its wait, if we saw it start, ends now. `cgroup`
/// is only called with attribution on, and only for a measured wait.
#[inline(always)]
fn switch_in(ids: Option<(u32, u32)>, cgroup: impl FnOnce() -> u32) {
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
    let per_cgroup = if cgroup::enabled() && TASK_OFFSETS.load().kn_id != 0 {
        cgroup_hist(cgroup())
    } else {
        None
    };
    if let Some(h) = per_cgroup.or_else(|| RUNQ_HIST.get_ptr_mut(0)) {
        let h = unsafe { &mut *h };
        let i = buckets::index_by(wait, |i| {
            BUCKET_NS
                .get(i)
                .map_or(u64::MAX, |b| unsafe { read_volatile(b) })
        });
        if let Some(b) = h.buckets.get_mut(i) {
            *b += 1;
        }
        h.count += 1;
        h.sum_ns += wait;
    }
}

/// This CPU's histogram for a cgroup, created on first use; None when the map
/// is full (the wait then counts node-wide, and the overflow is counted).
#[inline(always)]
fn cgroup_hist(cgroup: u32) -> Option<*mut RunqHist> {
    if let Some(h) = RUNQ_CGROUP_HIST.get_ptr_mut(cgroup) {
        return Some(h);
    }
    // EEXIST (another CPU just made it) is fine; anything else is a full map.
    let _ = RUNQ_CGROUP_HIST.insert(cgroup, RunqHist::ZERO, BPF_NOEXIST as u64);
    let h = RUNQ_CGROUP_HIST.get_ptr_mut(cgroup);
    if h.is_none() {
        counters::add(RUNQ_CGROUP_MAP_FULL, 1);
    }
    h
}

//! Following the target's descendants (`attach`, unless `--no-children`;
//! `run --pid --children`): on every fork of a followed process, the child's
//! tgid joins `filter::FOLLOWED`, and leaves it when the process ends. Attached
//! only when following; new threads (same tgid) are already followed.

use crate::task::tgid;
use crate::{counters, filter, process};
use agent_common::counters::FOLLOW_MAP_FULL;
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

/// sched_process_fork(struct task_struct *parent, struct task_struct *child).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let (Some(parent), Some(child)) = (tgid(ctx.arg(0)), tgid(ctx.arg(1))) else {
        return 0;
    };
    if parent != child && filter::wanted(parent) && filter::FOLLOWED.insert(child, 1, 0).is_err() {
        counters::add(FOLLOW_MAP_FULL, 1);
    }
    0
}

/// sched_process_exit: a followed process that ended leaves the map (so the
/// map holds live processes only, and a reused pid is not followed). The
/// agent attaches this after the probes: programs on one tracepoint run in
/// attach order, so the probes still see the exit as followed.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn follow_exit(ctx: RawTracePointContext) -> i32 {
    if let Some(tgid) = process::process_ended(&ctx, ctx.arg::<u64>(0) as *const u8) {
        let _ = filter::FOLLOWED.remove(tgid);
    }
    0
}

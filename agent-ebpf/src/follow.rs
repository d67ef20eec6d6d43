//! Following the target's descendants (`attach --children`): on every fork of
//! a followed process, the child's tgid joins `filter::FOLLOWED`. Attached only
//! with `--children`; new threads (same tgid) are already followed.

use crate::filter;
use crate::task::tgid;
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

/// sched_process_fork(struct task_struct *parent, struct task_struct *child).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let (Some(parent), Some(child)) = (tgid(ctx.arg(0)), tgid(ctx.arg(1))) else {
        return 0;
    };
    if parent != child && filter::wanted(parent) {
        let _ = filter::FOLLOWED.insert(child, 1, 0);
    }
    0
}

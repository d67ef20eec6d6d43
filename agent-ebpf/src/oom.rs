//! OOM kills on the raw tracepoint `oom:mark_victim`, which the kernel hits
//! once per victim it chooses. On Linux 6.8+ its argument is the victim's
//! task_struct, so the victim's pid, name and cgroup are read from it; before,
//! it is the victim's pid, and the cgroup is that of the task that ran out of
//! memory (the victim is chosen inside its memory cgroup).

use crate::{cgroup, counters, filter, task};
use agent_common::counters::OOM_RINGBUF_DROPS;
use agent_common::oom::{OomEvent, VICTIM_IS_TASK};
use aya_ebpf::{
    Global, bindings::BPF_RB_FORCE_WAKEUP, macros::map, macros::raw_tracepoint, maps::RingBuf,
    programs::RawTracePointContext,
};

/// What the tracepoint's first argument is (agent_common::oom), set at load.
#[unsafe(no_mangle)]
static OOM_VICTIM_ARG: Global<u32> = Global::new(0);

/// 4 KiB holds about 170 kills; the agent is woken at each one.
#[map]
static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim(ctx: RawTracePointContext) -> i32 {
    let arg: u64 = ctx.arg(0);
    let (tgid, comm, cgroup) = if OOM_VICTIM_ARG.load() == VICTIM_IS_TASK {
        let victim = arg as *const u8;
        let Some(tgid) = task::tgid(victim) else {
            return 0;
        };
        let cgroup = if cgroup::enabled() {
            task::cgroup_of(victim)
        } else {
            0
        };
        (tgid, task::comm(victim), cgroup)
    } else {
        (arg as u32, [0; 16], cgroup::current() as u32)
    };
    if !filter::wanted(tgid) {
        return 0;
    }
    match OOM_EVENTS.reserve::<OomEvent>(0) {
        Some(mut entry) => {
            entry.write(OomEvent { tgid, cgroup, comm });
            entry.submit(BPF_RB_FORCE_WAKEUP as u64);
        }
        None => counters::add(OOM_RINGBUF_DROPS, 1),
    }
    0
}

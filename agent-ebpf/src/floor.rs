//! Empty programs on the syscall tracepoints: the benchmark's cost floor (what
//! attaching anything at all costs). Only `agent bench-floor` loads them.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn floor_sys_enter(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_exit")]
pub fn floor_sys_exit(_ctx: TracePointContext) -> u32 {
    0
}

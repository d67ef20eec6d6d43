//! Empty programs on the syscall tracepoints: the benchmark's cost floor (what
//! attaching anything at all costs). Only `agent bench-floor` loads them.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn floor_sys_enter(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_exit")]
pub fn floor_sys_exit(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_raw_sys_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_raw_sys_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

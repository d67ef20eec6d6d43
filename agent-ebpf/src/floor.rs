//! Empty programs on the syscall, scheduler, process, block and TCP reset
//! tracepoints: the benchmarks' cost floor (what attaching anything at all
//! costs). Only `agent bench-floor` loads them.

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

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn floor_sched_wakeup(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn floor_sched_wakeup_new(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn floor_sched_switch(_ctx: RawTracePointContext) -> i32 {
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn floor_process_exec(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn floor_process_fork(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn floor_process_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "block_rq_insert")]
pub fn floor_block_rq_insert(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn floor_block_rq_issue(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn floor_block_rq_complete(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "block_rq_merge")]
pub fn floor_block_rq_merge(_ctx: RawTracePointContext) -> i32 {
    0
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn floor_tcp_send_reset(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn floor_tcp_receive_reset(_ctx: TracePointContext) -> u32 {
    0
}

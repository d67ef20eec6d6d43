//! Process lifecycle: execs on the classic tracepoint `sched:sched_process_exec`
//! (its record has the `__data_loc` filename), forks and exits on raw
//! tracepoints (they hand over the task_structs). One ring-buffer event each,
//! processes only: a fork that makes a thread and the exit of a thread that
//! leaves others behind are skipped.

use crate::{cgroup, counters, filter, task};
use agent_common::counters::{
    EXEC_FILENAME_UNREADABLE, PROCESS_READ_FAILED, PROCESS_RINGBUF_DROPS,
};
use agent_common::process::{
    EXIT_GROUP_DEAD_ARG, ExecEvent, KIND_EXEC, KIND_EXIT, KIND_FORK, ProcessEvent, ProcessOffsets,
};
use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_task, bpf_ktime_get_ns},
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::RingBuf,
    programs::{RawTracePointContext, TracePointContext},
};

#[unsafe(no_mangle)]
static PROCESS_OFFSETS: Global<ProcessOffsets> = Global::new(ProcessOffsets {
    real_parent: 0,
    exit_code: 0,
    start_time: 0,
    filename: 8,
    filenames: 0,
});

/// `agent_common::process::EXIT_GROUP_DEAD_ARG` when `sched_process_exit`
/// passes `group_dead`; set at load (also used by following children).
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD: Global<u32> = Global::new(0);

/// Sized by the agent (`--ring-buffer-bytes`).
#[map]
static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// A quarter of the default ring: a burst of execs wakes the agent early;
/// otherwise it drains on its timer.
const WAKEUP_BYTES: u64 = 256 * 1024;

#[inline(always)]
fn submit_flags() -> u64 {
    if PROCESS_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// The tgid of `task`'s parent.
#[inline(always)]
fn parent_tgid(task: *const u8, real_parent: u32) -> Option<u32> {
    let parent =
        unsafe { bpf_probe_read_kernel(task.add(real_parent as usize) as *const *const u8) }
            .ok()?;
    task::tgid(parent)
}

#[inline(always)]
fn emit(ev: ProcessEvent) {
    match PROCESS_EVENTS.reserve::<ProcessEvent>(0) {
        Some(mut entry) => {
            entry.write(ev);
            entry.submit(submit_flags());
        }
        None => counters::add(PROCESS_RINGBUF_DROPS, 1),
    }
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn process_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !filter::wanted(tgid) {
        return 0;
    }
    let off = PROCESS_OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Some(ppid) = parent_tgid(task, off.real_parent) else {
        counters::add(PROCESS_READ_FAILED, 1);
        return 0;
    };
    let head = ProcessEvent {
        kind: KIND_EXEC,
        tgid,
        ppid,
        uid: bpf_get_current_uid_gid() as u32,
        exit_code: 0,
        _pad: 0,
        ns: now(),
        cgroup: cgroup::current(),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // Without the audit stream the filename is not needed (frozen global:
    // the verifier prunes the other branch).
    if off.filenames == 0 {
        emit(head);
        return 0;
    }
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ExecEvent>(0) else {
        counters::add(PROCESS_RINGBUF_DROPS, 1);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved record; the filename is read in place
    // (it is too large for the stack).
    unsafe {
        core::ptr::addr_of_mut!((*ev).head).write(head);
        let name = &mut *core::ptr::addr_of_mut!((*ev).filename);
        let loc = ctx.read_at::<u32>(off.filename as usize).unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        if loc == 0 || bpf_probe_read_kernel_str_bytes(src, name).is_err() {
            name[0] = 0;
            counters::add(EXEC_FILENAME_UNREADABLE, 1);
        }
    }
    entry.submit(submit_flags());
    0
}

/// sched_process_fork(struct task_struct *parent, struct task_struct *child).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn process_fork(ctx: RawTracePointContext) -> i32 {
    let parent = ctx.arg::<u64>(0) as *const u8;
    let child = ctx.arg::<u64>(1) as *const u8;
    let (Some(ppid), Some(tgid)) = (task::tgid(parent), task::tgid(child)) else {
        counters::add(PROCESS_READ_FAILED, 1);
        return 0;
    };
    // Same tgid: a new thread, not a process.
    if ppid == tgid || !filter::wanted(ppid) {
        return 0;
    }
    emit(ProcessEvent {
        kind: KIND_FORK,
        tgid,
        ppid,
        uid: 0,
        exit_code: 0,
        _pad: 0,
        ns: now(),
        // The forking task's: the child starts in its cgroup.
        cgroup: cgroup::current(),
        comm: task::comm(parent),
    });
    0
}

/// The tgid of the process that `sched_process_exit`'s task ends, or None
/// when other threads of it live on: the last thread out (`group_dead`) on
/// kernels that say so, else the thread group leader.
#[inline(always)]
pub(crate) fn process_ended(ctx: &RawTracePointContext, task: *const u8) -> Option<u32> {
    let (pid, tgid) = task::ids(task)?;
    let last = if EXIT_GROUP_DEAD.load() == EXIT_GROUP_DEAD_ARG {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        pid == tgid
    };
    last.then_some(tgid)
}

/// sched_process_exit(struct task_struct *p[, bool group_dead]).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_exit(ctx: RawTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0) as *const u8;
    let Some(tgid) = process_ended(&ctx, task) else {
        return 0;
    };
    if !filter::wanted(tgid) {
        return 0;
    }
    let off = PROCESS_OFFSETS.load();
    let read = |at: u32| unsafe { bpf_probe_read_kernel(task.add(at as usize) as *const u64) };
    let (Ok(code), Ok(start)) = (
        unsafe { bpf_probe_read_kernel(task.add(off.exit_code as usize) as *const u32) },
        read(off.start_time),
    ) else {
        counters::add(PROCESS_READ_FAILED, 1);
        return 0;
    };
    emit(ProcessEvent {
        kind: KIND_EXIT,
        tgid,
        ppid: parent_tgid(task, off.real_parent).unwrap_or(0),
        uid: 0,
        exit_code: code,
        _pad: 0,
        ns: now().saturating_sub(start),
        cgroup: if cgroup::enabled() {
            task::cgroup_of(task) as u64
        } else {
            0
        },
        comm: task::comm(task),
    });
    0
}

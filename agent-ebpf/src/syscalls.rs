//! Syscall latency on the raw tracepoints `sys_enter(regs, id)` and
//! `sys_exit(regs, ret)`: cheaper per hit than the classic tracepoints (no
//! trace record is built) and no tracefs needed. `sys_enter` packs its time and
//! the syscall number into the thread's start slot; `sys_exit` turns it into a
//! 16-byte record staged in a per-CPU batch. Full batches go to the ring buffer
//! in one submission without waking the consumer (it drains on a timer, or is
//! woken once the ring is filling up). `flush_syscalls` is run by the agent on
//! every CPU a few times a second so idle CPUs never hold records back.

use crate::{cgroup, counters, filter};
use agent_common::counters::{
    SYSCALL_EXIT_WITHOUT_ENTER, SYSCALL_FLUSH_BUSY, SYSCALL_RINGBUF_DROPS,
};
use agent_common::syscalls::{
    BATCH_LEN, MAX_ERRNO, PT_REGS_ORIG_AX, SyscallBatch, SyscallRecord, pack_start, unpack_start,
};
use aya_ebpf::{
    Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use core::ptr::{read_volatile, write_volatile};

/// One batch as the ring stores it (its record, not counting the ring's
/// 8-byte header).
const BATCH_BYTES: u64 = core::mem::size_of::<SyscallBatch>() as u64;

/// Bytes waiting in the ring above which a submission wakes the consumer.
#[unsafe(no_mangle)]
static SYSCALL_WAKEUP_BYTES: Global<u64> = Global::new(1 << 20);

/// Packed start slot per thread id. An array indexed by tid (sized to pid_max
/// by the agent) is a pointer add after the verifier inlines it; a hash map
/// costs tens of nanoseconds per operation, which is most of the budget.
/// The sizes here are the smallest: a probe the agent does not start costs
/// no memory.
#[map]
static SYSCALL_START: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static SYSCALL_STAGE: PerCpuArray<SyscallBatch> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SYSCALL_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::wanted((pid_tgid >> 32) as u32) {
        return 0;
    }
    if let Some(slot) = SYSCALL_START.get_ptr_mut(pid_tgid as u32) {
        let id: u64 = ctx.arg(1);
        unsafe { *slot = pack_start(bpf_ktime_get_ns(), id) };
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::wanted((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(slot) = SYSCALL_START.get_ptr_mut(pid_tgid as u32) else {
        counters::add(SYSCALL_EXIT_WITHOUT_ENTER, 1);
        return 0;
    };
    let start = unsafe { *slot };
    if start == 0 {
        // A new thread's or process's first return, from clone/fork in the
        // child, has no entry on its side: not a lost syscall (the parent's
        // is counted), so not counted as one.
        let ret: i64 = ctx.arg(1);
        if ret != 0 || !is_fork(&ctx) {
            counters::add(SYSCALL_EXIT_WITHOUT_ENTER, 1);
        }
        return 0;
    }
    unsafe { *slot = 0 };
    let (latency_ns, id) = unpack_start(start, unsafe { bpf_ktime_get_ns() });
    // Rare: numbers >= 4094 (x32, bogus) are read back from the registers.
    let id = id.unwrap_or_else(|| {
        let regs: *const u8 = ctx.arg(0);
        unsafe { bpf_probe_read_kernel(regs.add(PT_REGS_ORIG_AX) as *const u64) }
            .unwrap_or(u64::MAX)
    });
    let ret: i64 = ctx.arg(1);
    let errno = if (-MAX_ERRNO..0).contains(&ret) {
        (-ret) as u16
    } else {
        0
    };
    stage(SyscallRecord::new(
        latency_ns,
        id as u32,
        errno,
        cgroup::current() as u32,
    ));
    0
}

/// The syscall returning is clone, fork, vfork or clone3 (x86_64 numbers).
#[inline(always)]
fn is_fork(ctx: &RawTracePointContext) -> bool {
    let regs: *const u8 = ctx.arg(0);
    let id = unsafe { bpf_probe_read_kernel(regs.add(PT_REGS_ORIG_AX) as *const u64) };
    matches!(id, Ok(56..=58 | 435))
}

#[inline(always)]
fn stage(rec: SyscallRecord) {
    let Some(batch) = SYSCALL_STAGE.get_ptr_mut(0) else {
        return;
    };
    let batch = unsafe { &mut *batch };
    unsafe { write_volatile(&mut batch.busy, 1) };
    let i = batch.len as usize;
    if let Some(slot) = batch.records.get_mut(i) {
        *slot = rec;
        batch.len = i as u32 + 1;
    }
    if batch.len as usize >= BATCH_LEN {
        submit(batch);
    }
    unsafe { write_volatile(&mut batch.busy, 0) };
}

#[inline(always)]
fn submit(batch: &mut SyscallBatch) {
    // Counting the batch about to be written: in a ring that holds few
    // batches, the waiting data alone may never reach the mark before the
    // ring is full, and the reader would only be woken by its timer.
    let waiting = SYSCALL_EVENTS.query(BPF_RB_AVAIL_DATA as u64) + BATCH_BYTES;
    let flags = if waiting >= SYSCALL_WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if SYSCALL_EVENTS
        .output::<SyscallBatch>(&*batch, flags as u64)
        .is_err()
    {
        counters::add(SYSCALL_RINGBUF_DROPS, batch.len as u64);
    }
    batch.len = 0;
}

/// Never attached: the agent runs it with `BPF_PROG_TEST_RUN` on each CPU (raw
/// tracepoint programs can be run on a chosen CPU) to push out partial batches.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn flush_syscalls(_ctx: RawTracePointContext) -> i32 {
    let Some(batch) = SYSCALL_STAGE.get_ptr_mut(0) else {
        return 0;
    };
    let batch = unsafe { &mut *batch };
    if unsafe { read_volatile(&batch.busy) } != 0 {
        // We interrupted sys_exit on this CPU; the next round flushes.
        counters::add(SYSCALL_FLUSH_BUSY, 1);
    } else if batch.len > 0 {
        submit(batch);
    }
    0
}

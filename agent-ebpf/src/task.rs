//! Reading a task_struct the kernel hands a program, at the offsets the agent
//! found in kernel BTF (agent_common::task).

use agent_common::task::TaskOffsets;
use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};

#[unsafe(no_mangle)]
pub(crate) static TASK_OFFSETS: Global<TaskOffsets> = Global::new(TaskOffsets {
    pid: 0,
    comm: 0,
    cgroups: 0,
    dfl_cgrp: 0,
    kn: 0,
    kn_id: 0,
});

/// tgid of a task_struct pointer (pid at the BTF offset, tgid right after it).
#[inline(always)]
pub fn tgid(task: *const u8) -> Option<u32> {
    let off = TASK_OFFSETS.load().pid as usize + 4;
    unsafe { bpf_probe_read_kernel(task.add(off) as *const u32) }.ok()
}

/// (pid, tgid) of a task_struct pointer, in one read.
#[inline(always)]
pub fn ids(task: *const u8) -> Option<(u32, u32)> {
    let off = TASK_OFFSETS.load().pid as usize;
    let [pid, tgid] = unsafe { bpf_probe_read_kernel(task.add(off) as *const [u32; 2]) }.ok()?;
    Some((pid, tgid))
}

/// The task's command name; zeroes if unreadable.
#[inline(always)]
pub fn comm(task: *const u8) -> [u8; 16] {
    let off = TASK_OFFSETS.load().comm as usize;
    unsafe { bpf_probe_read_kernel(task.add(off) as *const [u8; 16]) }.unwrap_or([0; 16])
}

/// A task's cgroup v2 id (low 32 bits) with helper reads; 0 if unreadable.
#[inline(always)]
pub fn cgroup_of(task: *const u8) -> u32 {
    let o = TASK_OFFSETS.load();
    let step = |p: *const u8, off: u32| unsafe {
        bpf_probe_read_kernel(p.add(off as usize) as *const *const u8).ok()
    };
    step(task, o.cgroups)
        .and_then(|css_set| step(css_set, o.dfl_cgrp))
        .and_then(|cgrp| step(cgrp, o.kn))
        .and_then(|kn| {
            unsafe { bpf_probe_read_kernel(kn.add(o.kn_id as usize) as *const u64) }.ok()
        })
        .map_or(0, |id| id as u32)
}

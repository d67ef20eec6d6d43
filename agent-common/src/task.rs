//! Where the kernel keeps a task's ids, name and cgroup: offsets in
//! `struct task_struct` and the structs it points to, from kernel BTF (there
//! is no CO-RE in Rust eBPF). Shared by every program that is handed a task
//! pointer (the run-queue, fork-following and OOM probes).

/// Offsets from kernel BTF, set by the agent at load as `TASK_OFFSETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `pid` (the thread id); `tgid` follows it at +4 (checked at startup).
    pub pid: u32,
    /// `comm`, the 16-byte command name.
    pub comm: u32,
    /// The chain to a task's cgroup v2 id, for container attribution:
    /// `task_struct.cgroups` → `css_set.dfl_cgrp` → `cgroup.kn` →
    /// `kernfs_node.id`. All 0 when kernel BTF lacks one of them.
    pub cgroups: u32,
    pub dfl_cgrp: u32,
    pub kn: u32,
    pub kn_id: u32,
}

crate::impl_pod!(TaskOffsets);

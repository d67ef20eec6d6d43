//! The process probe's records: one ring-buffer event per exec, fork and
//! process exit of the traced processes, and the offsets the kernel side
//! reads them at.

/// `ProcessEvent::kind`.
pub const KIND_EXEC: u32 = 1;
pub const KIND_FORK: u32 = 2;
pub const KIND_EXIT: u32 = 3;

/// Bytes of an exec's filename kept (with its NUL); longer ones are cut.
pub const FILENAME_LEN: usize = 256;

/// How the kernel tells that a thread's exit ends its process (the global
/// `EXIT_GROUP_DEAD`, shared with following children). The raw tracepoint `sched_process_exit(task, group_dead)` says so (6.16+).
pub const EXIT_GROUP_DEAD_ARG: u32 = 1;
/// Older kernels pass the task only: the thread group leader's exit is taken.
pub const EXIT_LEADER: u32 = 0;

/// Offsets from kernel BTF and tracefs, set by the agent at load as `PROCESS_OFFSETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessOffsets {
    /// `task_struct.real_parent` (a pointer), for the parent's pid.
    pub real_parent: u32,
    /// `task_struct.exit_code`: the wait status (signal in the low 7 bits,
    /// exit status in bits 8-15).
    pub exit_code: u32,
    /// `task_struct.start_time`: monotonic ns at fork.
    pub start_time: u32,
    /// `sched_process_exec`'s `__data_loc filename` field in its tracefs record.
    pub filename: u32,
    /// Non-zero: execs carry their filename (the audit stream is on).
    pub filenames: u32,
}

crate::impl_pod!(ProcessOffsets);

/// One exec, fork or exit. An exec is followed in the ring by its filename
/// ([`ExecEvent`]); forks and exits are this header alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    pub kind: u32,
    /// The process (for a fork, the child).
    pub tgid: u32,
    /// The parent process (for a fork, the forking one).
    pub ppid: u32,
    /// Real uid of the exec'ing task (execs only).
    pub uid: u32,
    /// Exits: the wait status (`task->exit_code`).
    pub exit_code: u32,
    pub _pad: u32,
    /// Execs: CLOCK_MONOTONIC ns of the exec. Exits: the process's lifetime
    /// in ns (from its fork).
    pub ns: u64,
    /// cgroup v2 id (with attribution on; else 0).
    pub cgroup: u64,
    pub comm: [u8; 16],
}

/// An exec with its filename (NUL-terminated, cut at [`FILENAME_LEN`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub head: ProcessEvent,
    pub filename: [u8; FILENAME_LEN],
}

crate::impl_pod!(ProcessEvent, ExecEvent);

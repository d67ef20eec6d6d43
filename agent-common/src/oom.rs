//! The OOM-kill probe's record: one ring-buffer event per kill (kills are
//! rare, so each wakes the agent at once).

/// `oom:mark_victim`'s first argument: the victim's task_struct since Linux
/// 6.8, its pid before. Set by the agent at load (`OOM_VICTIM_ARG`).
pub const VICTIM_IS_PID: u32 = 0;
pub const VICTIM_IS_TASK: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    /// The victim's process id.
    pub tgid: u32,
    /// Low 32 bits of the victim's cgroup v2 id (with attribution on; on
    /// kernels that pass only the pid, the cgroup of the task that ran out
    /// of memory, which a memory-cgroup OOM picks its victim inside).
    pub cgroup: u32,
    /// The victim's command name; zeroes when the kernel passes only the pid.
    pub comm: [u8; 16],
}

crate::impl_pod!(OomEvent);

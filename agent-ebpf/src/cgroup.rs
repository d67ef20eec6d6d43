//! Container attribution: the caller's cgroup v2 id, read only when the agent
//! asked for it. The flag is frozen at load time, so with attribution off the
//! verifier prunes the helper call and the probes pay nothing for it.

use aya_ebpf::{Global, helpers::bpf_get_current_cgroup_id};

/// Non-zero: records carry the current cgroup id. Set by the agent at load.
#[unsafe(no_mangle)]
static CGROUP_IDS: Global<u32> = Global::new(0);

#[inline(always)]
pub fn enabled() -> bool {
    CGROUP_IDS.load() != 0
}

/// The current task's cgroup v2 id, or 0 when attribution is off.
#[inline(always)]
pub fn current() -> u64 {
    if enabled() {
        unsafe { bpf_get_current_cgroup_id() }
    } else {
        0
    }
}

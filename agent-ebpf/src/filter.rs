//! The in-kernel process filter, checked first by every program so that other
//! processes pay as little as possible in `--pid` mode.

use aya_ebpf::{Global, macros::map, maps::HashMap};

/// Target process (tgid); 0 traces every process. Set by the agent at load time.
#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);

/// Non-zero when the target's descendants are traced too (`attach --children`).
/// Frozen at load time: when 0, the verifier prunes the map lookup below and
/// `wanted` stays a single compare.
#[unsafe(no_mangle)]
static FOLLOW_CHILDREN: Global<u32> = Global::new(0);

/// Descendants of the target (tgids), added by `follow::sched_process_fork`.
#[map]
pub(crate) static FOLLOWED: HashMap<u32, u8> = HashMap::with_max_entries(8192, 0);

#[inline(always)]
pub fn wanted(tgid: u32) -> bool {
    let target = TARGET_TGID.load();
    if target == 0 || target == tgid {
        return true;
    }
    FOLLOW_CHILDREN.load() != 0 && unsafe { FOLLOWED.get(tgid) }.is_some()
}

/// True when every process is traced (node mode).
#[inline(always)]
pub fn all() -> bool {
    TARGET_TGID.load() == 0
}

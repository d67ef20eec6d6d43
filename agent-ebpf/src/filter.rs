//! The in-kernel process filter, checked first by every program so that other
//! processes pay as little as possible in `--pid` mode.

use aya_ebpf::Global;

/// Target process (tgid); 0 traces every process. Set by the agent at load time.
#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);

#[inline(always)]
pub fn wanted(tgid: u32) -> bool {
    let target = TARGET_TGID.load();
    target == 0 || target == tgid
}

/// True when every process is traced (node mode).
#[inline(always)]
pub fn all() -> bool {
    TARGET_TGID.load() == 0
}

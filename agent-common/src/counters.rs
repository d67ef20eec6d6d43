//! Indices into the kernel's per-CPU `COUNTERS` array. The kernel increments them
//! when it has to give up on an event, so every loss is visible in `/metrics`.

/// Syscall events lost because the ring buffer had no room for a batch.
pub const SYSCALL_RINGBUF_DROPS: u32 = 0;
/// `sys_exit` seen for a thread with no recorded `sys_enter` (the syscall began
/// before the probe attached, or the thread id is above the start table's size).
pub const SYSCALL_EXIT_WITHOUT_ENTER: u32 = 1;
/// Flush requests that found the batch mid-update (it is flushed next round).
pub const SYSCALL_FLUSH_BUSY: u32 = 2;

/// Number of counters; the size of the `COUNTERS` map.
pub const COUNT: u32 = 3;

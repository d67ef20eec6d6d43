//! Indices into the kernel's per-CPU `COUNTERS` array: mostly what the kernel
//! had to give up on, so every loss is visible in `/metrics`.

/// Syscall events lost because the ring buffer had no room for a batch.
pub const SYSCALL_RINGBUF_DROPS: u32 = 0;
/// `sys_exit` seen for a thread with no recorded `sys_enter` (the syscall began
/// before the probe attached, or the thread id is above the start table's size).
pub const SYSCALL_EXIT_WITHOUT_ENTER: u32 = 1;
/// Flush requests that found the batch mid-update (it is flushed next round).
pub const SYSCALL_FLUSH_BUSY: u32 = 2;

/// Connect events lost because the TCP ring buffer was full.
pub const TCP_RINGBUF_DROPS: u32 = 3;
/// Connects whose SYN_SENT entry could not be stored (map update failed).
pub const TCP_INFLIGHT_FULL: u32 = 4;
/// Passive opens: SYN_RECV -> ESTABLISHED (node mode only: no process to filter on).
pub const TCP_ACCEPTS: u32 = 5;

/// Run-queue waits not measured because the task's pid/tgid could not be read.
pub const RUNQ_READ_FAILED: u32 = 6;

/// Run-queue waits counted under the host's labels because the per-cgroup
/// histogram map was full (container attribution only).
pub const RUNQ_CGROUP_MAP_FULL: u32 = 7;

/// OOM kills not reported because the OOM ring buffer was full.
pub const OOM_RINGBUF_DROPS: u32 = 8;

/// Retransmits and resets lost because the TCP peer-event ring buffer was full.
pub const TCP_PEER_RINGBUF_DROPS: u32 = 9;
/// `--pid` mode: a target socket that could not be remembered (map full), so
/// its retransmits and resets are not counted.
pub const TCP_OWNED_FULL: u32 = 10;
/// Retransmits and resets whose record could not be read (counted under
/// destination "unknown" instead of their peer).
pub const TCP_PEER_READ_FAILED: u32 = 11;

/// Block requests not timed because the in-flight map was full.
pub const BLOCK_INFLIGHT_FULL: u32 = 12;
/// Block completions with no recorded issue (issued before the probe
/// attached, or lost to a full in-flight map): counted, never guessed.
pub const BLOCK_COMPLETE_WITHOUT_ISSUE: u32 = 13;
/// Block completions not counted because the (device, operation) histogram
/// map was full.
pub const BLOCK_HIST_FULL: u32 = 14;
/// Block requests whose device, operation or size could not be read.
pub const BLOCK_READ_FAILED: u32 = 15;

/// Process events (exec, fork, exit) lost because the process ring buffer was full.
pub const PROCESS_RINGBUF_DROPS: u32 = 16;
/// Children not followed (`attach`, `run --pid --children`) because the
/// followed-processes map was full: their events are all missed.
pub const FOLLOW_MAP_FULL: u32 = 17;
/// Process events not reported because a task field could not be read.
pub const PROCESS_READ_FAILED: u32 = 18;
/// Execs reported without their filename (unreadable record).
pub const EXEC_FILENAME_UNREADABLE: u32 = 19;

/// Not losses: retransmits, resets sent and resets received (three
/// counters from here, in `PEER_*` kind order) the kernel counted under
/// destination "other" itself, once the agent had spent the destination
/// budget and turned `TCP_PEER_FOLD` on. The agent adds them to "other".
pub const TCP_PEER_FOLDED: u32 = 20;

/// Number of counters; the size of the `COUNTERS` map.
pub const COUNT: u32 = 23;

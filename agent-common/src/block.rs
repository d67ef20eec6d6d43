//! The block I/O probe's shared types. Block I/O reaches ~1M requests a
//! second on NVMe, so the kernel aggregates in place (like `sched`): per CPU,
//! per (device, operation), two latency histograms in the agent's buckets and
//! a size histogram in power-of-two byte buckets. Nothing is streamed.

/// Operations, the `op` label (from the request's `cmd_flags & REQ_OP_MASK`).
pub const OP_READ: u32 = 0;
pub const OP_WRITE: u32 = 1;
pub const OP_FLUSH: u32 = 2;
pub const OP_DISCARD: u32 = 3;
pub const OP_OTHER: u32 = 4;
/// Label of each `OP_*`, by index.
pub const OP_NAMES: [&str; 5] = ["read", "write", "flush", "discard", "other"];

/// The kernel's `REQ_OP_*` numbers (include/linux/blk_types.h, stable since
/// 4.10) mapped to the labels; everything else is `other`.
#[inline(always)]
pub fn op_of(cmd_flags: u32) -> u32 {
    match cmd_flags & 0xff {
        0 => OP_READ,
        1 => OP_WRITE,
        2 => OP_FLUSH,
        3 => OP_DISCARD,
        _ => OP_OTHER,
    }
}

/// Histogram key: the disk's dev_t in the kernel's encoding (major << 20 |
/// minor), an `OP_*`, and the low 32 bits of the submitting task's cgroup
/// v2 id (0 without container attribution).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub dev: u32,
    pub op: u32,
    pub cgroup: u32,
}

/// Byte-size buckets: 512 B, 1 KiB, ... 16 MiB (2^9..2^24), then +Inf.
pub const SIZE_MIN_SHIFT: u32 = 9;
pub const SIZE_MAX_SHIFT: u32 = 24;
pub const SIZE_BOUNDS: usize = (SIZE_MAX_SHIFT - SIZE_MIN_SHIFT + 1) as usize;

/// Index of the size bucket holding `bytes` (`le` inclusive): the smallest
/// power of two >= bytes, clamped to the first bucket, or +Inf.
#[inline(always)]
pub fn size_index(bytes: u64) -> usize {
    if bytes <= 1 << SIZE_MIN_SHIFT {
        return 0;
    }
    // ceil(log2(bytes)) = 64 - leading_zeros(bytes - 1)
    let log = 64 - (bytes - 1).leading_zeros();
    let i = (log - SIZE_MIN_SHIFT) as usize;
    if i > SIZE_BOUNDS { SIZE_BOUNDS } else { i }
}

/// One latency histogram: the run-queue probe's layout (non-cumulative
/// counts in the agent's buckets, count and exact sum).
pub use crate::sched::RunqHist as Latency;

/// Everything the kernel keeps per (device, operation) and CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHist {
    /// Insert -> issue (requests issued without an insert have none).
    pub queue: Latency,
    /// Issue -> final completion: one per completed request.
    pub device: Latency,
    /// Bytes of each completed request, in `size_index` buckets (+Inf last).
    pub size: [u64; SIZE_BOUNDS + 1],
    pub size_sum: u64,
}

impl BlockHist {
    pub const ZERO: BlockHist = BlockHist {
        queue: Latency::ZERO,
        device: Latency::ZERO,
        size: [0; SIZE_BOUNDS + 1],
        size_sum: 0,
    };
}

/// A request's timestamps, keyed by its `struct request *`; both 0 while it
/// is not in flight (the entry stays for its next I/O).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inflight {
    /// `block_rq_insert` time, 0 when issued directly.
    pub insert_ns: u64,
    /// `block_rq_issue` time, 0 while only inserted.
    pub issue_ns: u64,
    /// The submitter's cgroup (low 32 bits), taken where the request is
    /// claimed (insert, or a direct issue): a kworker may issue it later.
    pub cgroup: u32,
    pub _pad: u32,
}

impl Inflight {
    pub const IDLE: Inflight = Inflight {
        insert_ns: 0,
        issue_ns: 0,
        cgroup: 0,
        _pad: 0,
    };

    /// Inserted or issued, and not completed since.
    #[inline(always)]
    pub fn in_flight(&self) -> bool {
        self.insert_ns != 0 || self.issue_ns != 0
    }
}

/// Offsets from kernel BTF (no CO-RE in Rust eBPF), set as `BLOCK_OFFSETS`:
/// `request.q` -> `request_queue.disk` -> `gendisk.major`/`first_minor`,
/// and `request.cmd_flags`, `request.__data_len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOffsets {
    /// The pointer in `struct request` that leads to the disk: `q` (then
    /// `q_disk`, 5.16+), or `rq_disk`, the disk itself, before 5.16.
    pub rq_q: u32,
    /// `request_queue.disk`, or [`DISK_DIRECT`] when `rq_q` is `rq_disk`.
    pub q_disk: u32,
    pub disk_major: u32,
    pub disk_first_minor: u32,
    pub rq_cmd_flags: u32,
    pub rq_data_len: u32,
}

/// `BlockOffsets::q_disk` when the request points at its disk directly.
pub const DISK_DIRECT: u32 = u32::MAX;

/// Request pointers the kernel remembers (least recently used ones give way).
/// blk-mq preallocates requests per hardware queue tag and reuses them, so
/// this should exceed the requests the node's devices use (an NVMe drive:
/// up to 1023 per hardware queue); those in flight at once are far fewer.
pub const INFLIGHT_ENTRIES: u32 = 16384;
/// (device, operation) histograms: 5 operations on up to ~200 disks.
pub const HIST_ENTRIES: u32 = 1024;
/// (device, operation, cgroup) histograms with container attribution: a
/// cgroup doing I/O uses a few (one disk: read, write, flush). Preallocated
/// per CPU (688 bytes each: 1.4 MiB per CPU), so not larger; a full map is
/// counted (`histogram_map_full`), and gone cgroups' keys are deleted.
pub const CGROUP_HIST_ENTRIES: u32 = 2048;

crate::impl_pod!(BlockKey, BlockHist, Inflight, BlockOffsets);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets_are_inclusive_powers_of_two() {
        assert_eq!(size_index(0), 0);
        assert_eq!(size_index(512), 0);
        assert_eq!(size_index(513), 1);
        assert_eq!(size_index(4096), 3);
        assert_eq!(size_index(65536), 7);
        assert_eq!(size_index(16 << 20), SIZE_BOUNDS - 1);
        assert_eq!(size_index((16 << 20) + 1), SIZE_BOUNDS);
        assert_eq!(size_index(u64::MAX), SIZE_BOUNDS);
    }

    #[test]
    fn ops_follow_req_op() {
        assert_eq!(op_of(0), OP_READ);
        assert_eq!(op_of(1 | 1 << 11), OP_WRITE);
        assert_eq!(op_of(2), OP_FLUSH);
        assert_eq!(op_of(3), OP_DISCARD);
        assert_eq!(op_of(9), OP_OTHER);
    }
}

//! The syscall probe's records.
//!
//! `sys_exit` appends one 16-byte [`SyscallRecord`] to a per-CPU
//! [`SyscallBatch`]; a full batch is copied to the ring buffer in one
//! submission. Per-event submission costs more than the syscall it measures.

/// Records per batch. 128 x 16 B = 2 KiB: one ring-buffer submission per 128
/// syscalls keeps the per-event share of it to a few nanoseconds.
pub const BATCH_LEN: usize = 128;

/// One completed syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallRecord {
    /// Time from `sys_enter` to `sys_exit` of the same thread, in nanoseconds.
    pub latency_ns: u64,
    /// Syscall number as the kernel saw it (x86_64 table; any value is kept).
    pub id: u32,
    /// errno when the syscall failed (return value in -4095..=-1), else 0.
    pub errno: u16,
    pub _pad: u16,
}

/// A per-CPU staging buffer; also the ring buffer's item type.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallBatch {
    /// Valid records at the front of `records`.
    pub len: u32,
    /// Non-zero while `sys_exit` updates the batch; a flush that interrupts it
    /// (an IPI on the same CPU) leaves the batch alone.
    pub busy: u32,
    pub records: [SyscallRecord; BATCH_LEN],
}

impl SyscallBatch {
    pub const EMPTY: SyscallBatch = SyscallBatch {
        len: 0,
        busy: 0,
        records: [SyscallRecord {
            latency_ns: 0,
            id: 0,
            errno: 0,
            _pad: 0,
        }; BATCH_LEN],
    };
}

/// Field offsets in the `raw_syscalls` tracepoint records, parsed from tracefs
/// `format` files at startup (layouts differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallOffsets {
    /// `long id` in `sys_exit`.
    pub exit_id: u32,
    /// `long ret` in `sys_exit`.
    pub exit_ret: u32,
}

impl SyscallOffsets {
    /// Offsets on x86_64 kernels since raw_syscalls existed; replaced at load time.
    pub const DEFAULT: SyscallOffsets = SyscallOffsets {
        exit_id: 8,
        exit_ret: 16,
    };
}

/// Largest errno the kernel returns in-band (see `IS_ERR_VALUE`).
pub const MAX_ERRNO: i64 = 4095;

crate::impl_pod!(SyscallRecord, SyscallBatch, SyscallOffsets);

//! The syscall probe's records.
//!
//! `sys_exit` appends one 16-byte [`SyscallRecord`] to a per-CPU
//! [`SyscallBatch`]; a full batch is copied to the ring buffer in one
//! submission. Per-event submission costs more than the syscall it measures.

/// Records per batch. 128 x 16 B = 2 KiB: one ring-buffer submission per 128
/// syscalls keeps the per-event share of it to a few nanoseconds.
pub const BATCH_LEN: usize = 128;

/// One completed syscall, packed into 16 bytes: halving the record would
/// not pay for the extra shifts, and 24 would add half again to ring traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallRecord {
    /// Bits 0..48: time from `sys_enter` to `sys_exit` of the same thread in
    /// nanoseconds, saturated at 2^48-1 (78 hours); bits 48..64: errno when the
    /// syscall failed (return value in -4095..=-1), else 0.
    pub latency_errno: u64,
    /// Syscall number as the kernel saw it (x86_64 table; any value is kept).
    pub id: u32,
    /// Low 32 bits of the thread's cgroup v2 id (unique among live cgroups:
    /// the high bits are a generation that only moves after 2^32 creations);
    /// 0 when container attribution is off.
    pub cgroup: u32,
}

/// Largest latency a record holds (about 78 hours).
pub const MAX_RECORD_LATENCY_NS: u64 = (1 << 48) - 1;

impl SyscallRecord {
    #[inline(always)]
    pub fn new(latency_ns: u64, id: u32, errno: u16, cgroup: u32) -> Self {
        let latency = if latency_ns > MAX_RECORD_LATENCY_NS {
            MAX_RECORD_LATENCY_NS
        } else {
            latency_ns
        };
        SyscallRecord {
            latency_errno: latency | (u64::from(errno) << 48),
            id,
            cgroup,
        }
    }

    #[inline(always)]
    pub fn latency_ns(&self) -> u64 {
        self.latency_errno & MAX_RECORD_LATENCY_NS
    }

    #[inline(always)]
    pub fn errno(&self) -> u16 {
        (self.latency_errno >> 48) as u16
    }
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
            latency_errno: 0,
            id: 0,
            cgroup: 0,
        }; BATCH_LEN],
    };
}

/// The per-thread start slot packs the entry time and the syscall number into
/// one u64, so `sys_exit` (whose raw tracepoint has no syscall number) needs no
/// second lookup: bits 0..52 hold the low bits of the entry time (latencies are
/// differences modulo 2^52 ns, correct up to 52 days), bits 52..64 hold id + 1
/// for ids below 4094, or all ones when the id did not fit and `sys_exit` must
/// read it from the registers. A slot is never 0 once written; 0 means empty.
pub const TS_BITS: u32 = 52;
pub const TS_MASK: u64 = (1 << TS_BITS) - 1;
/// Upper bits meaning "id not stored".
pub const ID_UNSTORED: u64 = 0xfff;

#[inline(always)]
pub fn pack_start(ts_ns: u64, id: u64) -> u64 {
    let tag = if id < ID_UNSTORED - 1 {
        id + 1
    } else {
        ID_UNSTORED
    };
    (tag << TS_BITS) | (ts_ns & TS_MASK)
}

/// Latency since the packed start, and the stored id (None: read it elsewhere).
#[inline(always)]
pub fn unpack_start(slot: u64, now_ns: u64) -> (u64, Option<u64>) {
    let latency = now_ns.wrapping_sub(slot) & TS_MASK;
    let tag = slot >> TS_BITS;
    (
        latency,
        if tag == ID_UNSTORED {
            None
        } else {
            Some(tag - 1)
        },
    )
}

/// Offset of `orig_ax` (the syscall number) in x86_64 `struct pt_regs` (UAPI).
pub const PT_REGS_ORIG_AX: usize = 120;

/// Largest errno the kernel returns in-band (see `IS_ERR_VALUE`).
pub const MAX_ERRNO: i64 = 4095;

crate::impl_pod!(SyscallRecord, SyscallBatch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_packs_latency_errno_and_cgroup() {
        let r = SyscallRecord::new(1_234, 110, 9, 77);
        assert_eq!(
            (r.latency_ns(), r.id, r.errno(), r.cgroup),
            (1_234, 110, 9, 77)
        );
        let r = SyscallRecord::new(u64::MAX, 1, 4095, 0);
        assert_eq!((r.latency_ns(), r.errno()), (MAX_RECORD_LATENCY_NS, 4095));
        assert_eq!(
            SyscallRecord::new(MAX_RECORD_LATENCY_NS, 1, 0, 0).latency_ns(),
            MAX_RECORD_LATENCY_NS
        );
    }

    #[test]
    fn packs_id_and_time() {
        let slot = pack_start(1_000, 110);
        assert_ne!(slot, 0);
        assert_eq!(unpack_start(slot, 1_750), (750, Some(110)));
        assert_ne!(pack_start(0, 0), 0, "a written slot is never empty");
        assert_eq!(unpack_start(pack_start(0, 0), 5), (5, Some(0)));
    }

    #[test]
    fn ids_that_do_not_fit_are_flagged() {
        assert_eq!(unpack_start(pack_start(10, 4093), 20), (10, Some(4093)));
        assert_eq!(unpack_start(pack_start(10, 4094), 20).1, None);
        assert_eq!(unpack_start(pack_start(10, u64::MAX), 20).1, None); // syscall(-1)
        assert_eq!(unpack_start(pack_start(10, 0x4000_0000), 20).1, None); // x32
    }

    #[test]
    fn latency_survives_the_52_bit_wrap() {
        let start = TS_MASK - 5; // entry just before the low bits wrap
        let slot = pack_start(start, 1);
        assert_eq!(unpack_start(slot, start + 100), (100, Some(1)));
        // Any uptime: only the low bits matter.
        let start = (7 << 52) + 123;
        assert_eq!(
            unpack_start(pack_start(start, 2), start + 1_000_000_000).0,
            1_000_000_000
        );
    }
}

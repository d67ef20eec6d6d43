//! Block I/O latency on the block_rq_* tracepoints: each takes the `struct
//! request *`, which keys the in-flight map (classic block records carry no
//! request pointer, and (dev, sector) collides: flushes have no sector, and a
//! request may be requeued). Queue time runs insert -> issue, device time
//! issue -> final completion; both are counted at completion, in place per
//! CPU and (device, operation, cgroup of the submitter; 0 without container
//! attribution), with the request's size (see agent-common).
//!
//! Each hook has two programs: tp_btf (`*_btf`), which reads the request by
//! direct loads, and a raw tracepoint fallback for kernels that refuse
//! tp_btf, which reads it with helper calls. A request costs two lookups of
//! its in-flight entry and one of its histogram.

use crate::sched::BUCKET_NS;
use crate::{cgroup, counters, filter};
use agent_common::block::{
    BlockHist, BlockKey, BlockOffsets, DISK_DIRECT, Inflight, Latency, op_of, size_index,
};
use agent_common::buckets;
use agent_common::counters::{
    BLOCK_COMPLETE_WITHOUT_ISSUE, BLOCK_HIST_FULL, BLOCK_INFLIGHT_FULL, BLOCK_READ_FAILED,
};
use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, LruHashMap, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use core::ptr::read_volatile;

/// `-EEXIST` from a map insert with BPF_NOEXIST.
const EEXIST: i32 = -17;

#[unsafe(no_mangle)]
static BLOCK_OFFSETS: Global<BlockOffsets> = Global::new(BlockOffsets {
    rq_q: 0,
    q_disk: 0,
    disk_major: 0,
    disk_first_minor: 0,
    rq_cmd_flags: 0,
    rq_data_len: 0,
});

/// Requests by `struct request *` (sized by the agent:
/// agent_common::block::INFLIGHT_ENTRIES; 1 here so an unused probe costs
/// nothing). blk-mq preallocates its requests per tag set and reuses them,
/// so an entry outlives its I/O and is rewritten in place by the next one:
/// a request costs map lookups only, no insert or delete (locked, and the
/// dearest part of the probe). LRU, so the pointers of a device that went
/// away age out instead of filling the map.
#[map]
static BLOCK_INFLIGHT: LruHashMap<u64, Inflight> = LruHashMap::with_max_entries(1, 0);

/// Per CPU and (device, operation, cgroup); sized by the agent
/// (HIST_ENTRIES, or CGROUP_HIST_ENTRIES with container attribution).
#[map]
static BLOCK_HIST: PerCpuHashMap<BlockKey, BlockHist> = PerCpuHashMap::with_max_entries(1, 0);

/// An all-zero histogram to create entries from (too big for the stack).
#[map]
static BLOCK_ZERO: Array<BlockHist> = Array::with_max_entries(1, 0);

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn current_wanted() -> bool {
    filter::all() || filter::wanted((bpf_get_current_pid_tgid() >> 32) as u32)
}

/// The low 32 bits of the current task's cgroup id (0: attribution off).
#[inline(always)]
fn current_cgroup() -> u32 {
    cgroup::current() as u32
}

/// The request is queued (an I/O scheduler or a plug): its queue time starts.
/// With `--pid`, this (the submitter's context) is where a request is
/// claimed, and where its cgroup is taken.
#[inline(always)]
fn insert(rq: u64) {
    if !current_wanted() {
        return;
    }
    let t = now();
    let cgroup = current_cgroup();
    match BLOCK_INFLIGHT.get_ptr_mut(rq) {
        Some(e) => unsafe {
            (*e).insert_ns = t;
            (*e).issue_ns = 0;
            (*e).cgroup = cgroup;
        },
        None => first_seen(
            rq,
            Inflight {
                insert_ns: t,
                issue_ns: 0,
                cgroup,
                _pad: 0,
            },
        ),
    }
}

/// The request goes to the driver: device time starts. An inserted (or
/// requeued) request is in flight already and keeps its submitter's cgroup
/// (a kworker may be the one issuing it); one issued directly is claimed
/// here, with the current cgroup, when issued from a wanted process.
#[inline(always)]
fn issue(rq: u64) {
    let t = now();
    match BLOCK_INFLIGHT.get_ptr_mut(rq) {
        Some(e) => unsafe {
            if (*e).in_flight() {
                (*e).issue_ns = t;
            } else if current_wanted() {
                (*e).issue_ns = t;
                (*e).cgroup = current_cgroup();
            }
        },
        None if current_wanted() => first_seen(
            rq,
            Inflight {
                insert_ns: 0,
                issue_ns: t,
                cgroup: current_cgroup(),
                _pad: 0,
            },
        ),
        None => {}
    }
}

/// The first I/O of a request pointer: its entry is created (once).
#[inline(always)]
fn first_seen(rq: u64, entry: Inflight) {
    // BPF_NOEXIST: another CPU cannot be timing this request meanwhile, but
    // an entry it just made must not be overwritten with a stale one.
    if BLOCK_INFLIGHT
        .insert(rq, entry, BPF_NOEXIST as u64)
        .is_err_and(|e| e != EEXIST)
    {
        counters::add(BLOCK_INFLIGHT_FULL, 1);
    }
}

/// `rq` was merged into another request and is freed without completing.
#[inline(always)]
fn merge(rq: u64) {
    if let Some(e) = BLOCK_INFLIGHT.get_ptr_mut(rq) {
        unsafe { *e = Inflight::IDLE };
    }
}

/// block_rq_complete(rq, error, nr_bytes): fires per partial completion;
/// only the last one (nr_bytes covers what is left) ends the request.
#[inline(always)]
fn complete<R: Reader>(rq: u64, nr_bytes: u32) {
    let entry = BLOCK_INFLIGHT.get_ptr_mut(rq);
    let Some(e) = entry.filter(|&e| unsafe { (*e).in_flight() }) else {
        // In --pid mode most requests are other processes': not a loss.
        if filter::all() {
            counters::add(BLOCK_COMPLETE_WITHOUT_ISSUE, 1);
        }
        return;
    };
    let e = unsafe { &mut *e };
    let Some(req) = read_request::<R>(rq as *const u8) else {
        *e = Inflight::IDLE;
        counters::add(BLOCK_READ_FAILED, 1);
        return;
    };
    if nr_bytes < req.remaining {
        return; // partial: the request goes on
    }
    let Inflight {
        insert_ns,
        issue_ns,
        cgroup,
        ..
    } = *e;
    *e = Inflight::IDLE;
    if issue_ns == 0 {
        counters::add(BLOCK_COMPLETE_WITHOUT_ISSUE, 1);
        return;
    }
    let t = now();
    let Some(h) = hist(BlockKey {
        dev: req.dev,
        op: req.op,
        cgroup,
    }) else {
        return;
    };
    let h = unsafe { &mut *h };
    if insert_ns != 0 && issue_ns >= insert_ns {
        record(&mut h.queue, issue_ns - insert_ns);
    }
    record(&mut h.device, t.saturating_sub(issue_ns));
    if let Some(b) = h.size.get_mut(size_index(req.bytes)) {
        *b += 1;
    }
    h.size_sum += req.bytes;
}

#[btf_tracepoint(function = "block_rq_insert")]
pub fn block_rq_insert_btf(ctx: BtfTracePointContext) -> i32 {
    insert(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue_btf(ctx: BtfTracePointContext) -> i32 {
    issue(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "block_rq_merge")]
pub fn block_rq_merge_btf(ctx: BtfTracePointContext) -> i32 {
    merge(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete_btf(ctx: BtfTracePointContext) -> i32 {
    let nr_bytes: u64 = ctx.arg(2);
    complete::<Direct>(ctx.arg(0), nr_bytes as u32);
    0
}

#[raw_tracepoint(tracepoint = "block_rq_insert")]
pub fn block_rq_insert(ctx: RawTracePointContext) -> i32 {
    insert(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn block_rq_issue(ctx: RawTracePointContext) -> i32 {
    issue(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "block_rq_merge")]
pub fn block_rq_merge(ctx: RawTracePointContext) -> i32 {
    merge(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn block_rq_complete(ctx: RawTracePointContext) -> i32 {
    let nr_bytes: u64 = ctx.arg(2);
    complete::<Helper>(ctx.arg(0), nr_bytes as u32);
    0
}

struct Request {
    dev: u32,
    op: u32,
    /// `__data_len` now: the bytes not completed yet (all of them before
    /// the first completion).
    remaining: u32,
    bytes: u64,
}

/// How a program reads kernel memory it was handed.
trait Reader {
    /// # Safety
    /// `p` points into a kernel object the program may read.
    unsafe fn read<T: Copy>(p: *const u8) -> Option<T>;
}

/// Raw tracepoints: untyped pointers, read with a helper call each.
struct Helper;

impl Reader for Helper {
    #[inline(always)]
    unsafe fn read<T: Copy>(p: *const u8) -> Option<T> {
        unsafe { bpf_probe_read_kernel(p as *const T) }.ok()
    }
}

/// tp_btf: BTF-typed pointers, which the verifier lets us load from
/// directly (it checks each offset against kernel BTF; a fault reads 0).
struct Direct;

impl Reader for Direct {
    #[inline(always)]
    unsafe fn read<T: Copy>(p: *const u8) -> Option<T> {
        Some(unsafe { read_volatile(p as *const T) })
    }
}

/// The request's disk, operation and size, at offsets from kernel BTF.
#[inline(always)]
fn read_request<R: Reader>(rq: *const u8) -> Option<Request> {
    let o = BLOCK_OFFSETS.load();
    unsafe {
        let first: *const u8 = R::read(rq.add(o.rq_q as usize))?;
        let disk = if o.q_disk == DISK_DIRECT {
            first
        } else {
            R::read(first.add(o.q_disk as usize))?
        };
        let major: u32 = R::read(disk.add(o.disk_major as usize))?;
        let minor: u32 = R::read(disk.add(o.disk_first_minor as usize))?;
        let flags: u32 = R::read(rq.add(o.rq_cmd_flags as usize))?;
        let len: u32 = R::read(rq.add(o.rq_data_len as usize))?;
        Some(Request {
            dev: major << 20 | minor,
            op: op_of(flags),
            remaining: len,
            bytes: u64::from(len),
        })
    }
}

#[inline(always)]
fn record(l: &mut Latency, ns: u64) {
    let i = buckets::index_by(ns, |i| {
        BUCKET_NS
            .get(i)
            .map_or(u64::MAX, |b| unsafe { read_volatile(b) })
    });
    if let Some(b) = l.buckets.get_mut(i) {
        *b += 1;
    }
    l.count += 1;
    l.sum_ns += ns;
}

/// This CPU's histogram for the key, created on first use; None (counted)
/// when the map is full.
#[inline(always)]
fn hist(key: BlockKey) -> Option<*mut BlockHist> {
    if let Some(h) = BLOCK_HIST.get_ptr_mut(key) {
        return Some(h);
    }
    let zero = BLOCK_ZERO.get(0)?;
    // EEXIST (another CPU just made it) is fine; anything else is a full map.
    let _ = BLOCK_HIST.insert(key, zero, BPF_NOEXIST as u64);
    let h = BLOCK_HIST.get_ptr_mut(key);
    if h.is_none() {
        counters::add(BLOCK_HIST_FULL, 1);
    }
    h
}

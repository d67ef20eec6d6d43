//! Block I/O latency on raw tracepoints: each takes the `struct request *`,
//! which keys the in-flight map (classic block records carry no request
//! pointer, and (dev, sector) collides: flushes have no sector, and a
//! request may be requeued). Queue time runs insert -> issue, device time
//! issue -> final completion; both are counted at completion, in place per
//! CPU and (device, operation), with the request's size (see agent-common).

use crate::sched::BUCKET_NS;
use crate::{counters, filter};
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
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use core::ptr::read_volatile;

#[unsafe(no_mangle)]
static BLOCK_OFFSETS: Global<BlockOffsets> = Global::new(BlockOffsets {
    rq_q: 0,
    q_disk: 0,
    disk_major: 0,
    disk_first_minor: 0,
    rq_cmd_flags: 0,
    rq_data_len: 0,
});

/// Requests in flight by `struct request *` (sized by the agent:
/// agent_common::block::INFLIGHT_ENTRIES; 1 here so an unused probe costs
/// nothing).
#[map]
static BLOCK_INFLIGHT: HashMap<u64, Inflight> = HashMap::with_max_entries(1, 0);

/// Per CPU and (device, operation); sized by the agent (HIST_ENTRIES).
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

/// The request is queued (an I/O scheduler or a plug): its queue time starts.
/// With `--pid`, this (the submitter's context) is where a request is claimed.
#[raw_tracepoint(tracepoint = "block_rq_insert")]
pub fn block_rq_insert(ctx: RawTracePointContext) -> i32 {
    if !current_wanted() {
        return 0;
    }
    let rq: u64 = ctx.arg(0);
    let entry = Inflight {
        insert_ns: now(),
        issue_ns: 0,
    };
    if BLOCK_INFLIGHT.insert(rq, entry, 0).is_err() {
        counters::add(BLOCK_INFLIGHT_FULL, 1);
    }
    0
}

/// The request goes to the driver: device time starts. A request issued
/// directly (no insert) is claimed here when issued from a wanted process.
#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn block_rq_issue(ctx: RawTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let t = now();
    if let Some(e) = BLOCK_INFLIGHT.get_ptr_mut(rq) {
        unsafe { (*e).issue_ns = t };
        return 0;
    }
    if !current_wanted() {
        return 0;
    }
    let entry = Inflight {
        insert_ns: 0,
        issue_ns: t,
    };
    if BLOCK_INFLIGHT.insert(rq, entry, 0).is_err() {
        counters::add(BLOCK_INFLIGHT_FULL, 1);
    }
    0
}

/// `next` was merged into another request and is freed without completing.
#[raw_tracepoint(tracepoint = "block_rq_merge")]
pub fn block_rq_merge(ctx: RawTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let _ = BLOCK_INFLIGHT.remove(rq);
    0
}

/// block_rq_complete(rq, error, nr_bytes): fires per partial completion;
/// only the last one (nr_bytes covers what is left) ends the request.
#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn block_rq_complete(ctx: RawTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let nr_bytes: u64 = ctx.arg(2);
    let Some(e) = BLOCK_INFLIGHT.get_ptr(rq) else {
        // In --pid mode most requests are other processes': not a loss.
        if filter::all() {
            counters::add(BLOCK_COMPLETE_WITHOUT_ISSUE, 1);
        }
        return 0;
    };
    let Some(req) = read_request(rq as *const u8) else {
        let _ = BLOCK_INFLIGHT.remove(rq);
        counters::add(BLOCK_READ_FAILED, 1);
        return 0;
    };
    if (nr_bytes as u32) < req.remaining {
        return 0; // partial: the request goes on
    }
    let Inflight {
        insert_ns,
        issue_ns,
    } = unsafe { *e };
    let _ = BLOCK_INFLIGHT.remove(rq);
    if issue_ns == 0 {
        counters::add(BLOCK_COMPLETE_WITHOUT_ISSUE, 1);
        return 0;
    }
    let t = now();
    let Some(h) = hist(BlockKey {
        dev: req.dev,
        op: req.op,
    }) else {
        return 0;
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

/// The request's disk, operation and size, with helper reads at BTF offsets.
#[inline(always)]
fn read_request(rq: *const u8) -> Option<Request> {
    let o = BLOCK_OFFSETS.load();
    unsafe {
        let first = bpf_probe_read_kernel(rq.add(o.rq_q as usize) as *const *const u8).ok()?;
        let disk = if o.q_disk == DISK_DIRECT {
            first
        } else {
            bpf_probe_read_kernel(first.add(o.q_disk as usize) as *const *const u8).ok()?
        };
        let major = bpf_probe_read_kernel(disk.add(o.disk_major as usize) as *const u32).ok()?;
        let minor =
            bpf_probe_read_kernel(disk.add(o.disk_first_minor as usize) as *const u32).ok()?;
        let flags = bpf_probe_read_kernel(rq.add(o.rq_cmd_flags as usize) as *const u32).ok()?;
        let len = bpf_probe_read_kernel(rq.add(o.rq_data_len as usize) as *const u32).ok()?;
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

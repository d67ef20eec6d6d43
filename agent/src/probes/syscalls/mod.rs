//! Syscall probe, userspace side (kernel side: agent-ebpf/src/syscalls.rs;
//! records: agent-common/src/syscalls.rs; test: tests/syscalls.rs).
//!
//! Batches arrive through the SYSCALL_EVENTS ring buffer. The kernel does not
//! wake us per batch: we drain on a timer and when the kernel forces a wakeup
//! because the ring is filling. A flusher thread runs the `flush_syscalls`
//! program on every CPU each interval so partial batches on idle CPUs are
//! delivered within about two intervals.

mod aggregate;
mod errno_table;
mod metrics;
pub(crate) mod names;
mod syscall_table;
pub(crate) mod view;

use aggregate::SyscallsBySlot;

use super::series::{Series, SeriesInputs};
use super::{Loss, Prepare, Probe, Running, Start, lock};
use crate::bpf::{self, LoadPlan};
use crate::k8s::{Attribution, Slot};
use crate::probes::stats::ProbeStats;
use agent_common::counters;
use agent_common::syscalls::{BATCH_LEN, SyscallRecord};
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use aya::programs::RawTracePoint;
use prometheus_client::collector::Collector;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) const PROBE: Probe = Probe {
    name: "syscalls",
    about: "latency, count and errors of every syscall, by syscall and errno",
    needs: "raw tracepoints raw_syscalls:sys_enter and sys_exit, BPF ring buffers (5.8)",
    needs_tracefs: false,
    streams: true,
    losses: &[
        (
            "ringbuf_full",
            Loss::Kernel(counters::SYSCALL_RINGBUF_DROPS),
        ),
        (
            "exit_without_enter",
            Loss::Kernel(counters::SYSCALL_EXIT_WITHOUT_ENTER),
        ),
        // A malformed item holds up to a batch of events; counted per item.
        ("decode", Loss::Decode),
    ],
    prepare,
    start,
    series,
    render: Some(view::render),
};

/// Per syscall series: the histogram, the count, errors by errno (the budget
/// and "other"). The host names every syscall plus the unknown budget; a
/// container at most its budget; both may have "other".
fn series(i: &SeriesInputs) -> Series {
    let per_key = i.histogram + 1 + aggregate::ERRNO_BUDGET as u64 + 1;
    let named = syscall_table::NAMES.len() as u64;
    Series {
        // + series_folded{family="syscall"|"container"}
        host: (named.saturating_add(i.unknown_syscall) + 1).saturating_mul(per_key) + 2,
        per_container: i
            .container_syscall
            .saturating_add(1)
            .saturating_mul(per_key),
    }
}

fn prepare(p: &Prepare<'_>, plan: &mut LoadPlan) -> Result<()> {
    // The kernel forces a wakeup once a quarter of the ring is waiting.
    plan.global("SYSCALL_WAKEUP_BYTES", &u64::from(p.opts.ring_bytes / 4));
    plan.map_size("SYSCALL_START", bpf::pid_max());
    plan.map_size("SYSCALL_EVENTS", p.opts.ring_bytes);
    Ok(())
}

fn start(ebpf: &mut Ebpf, s: &mut Start<'_>) -> Result<Box<dyn Running>> {
    let agg = Arc::new(Mutex::new(SyscallsBySlot::with_host(
        s.opts.hdr_precision,
        s.opts.unknown_syscall_budget,
        s.opts.container_syscall_budget,
    )));
    let attached = attach(ebpf)?;
    s.tasks.push(spawn(
        attached,
        agg.clone(),
        s.opts.attribution.clone(),
        s.stats.clone(),
        s.opts.flush_interval,
        s.stop.clone(),
    )?);
    Ok(Box::new(Syscalls {
        agg,
        attribution: s.opts.attribution.clone(),
    }))
}

struct Syscalls {
    agg: Arc<Mutex<SyscallsBySlot>>,
    attribution: Option<Arc<Attribution>>,
}

impl Running for Syscalls {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(metrics::SyscallCollector {
            agg: self.agg.clone(),
            attribution: self.attribution.clone(),
        })
    }

    fn reload(&self, budgets: &super::Budgets) {
        lock(&self.agg).set_budgets(budgets.unknown_syscall, budgets.container_syscall);
    }

    fn attach_view(&self) -> Option<Box<dyn super::AttachView>> {
        Some(Box::new(view::SyscallView::new(self.agg.clone())))
    }
}

/// What the running probe needs after attach: its ring and its flush program.
struct Attached {
    ring: RingBuf<MapData>,
    flush: OwnedFd,
}

fn attach(ebpf: &mut Ebpf) -> Result<Attached> {
    super::attach_raw_tracepoint(ebpf, "sys_enter", "sys_enter")?;
    super::attach_raw_tracepoint(ebpf, "sys_exit", "sys_exit")?;
    let flush: &mut RawTracePoint = ebpf
        .program_mut("flush_syscalls")
        .context("flush_syscalls missing from the object")?
        .try_into()?;
    flush.load().context("loading flush_syscalls")?;
    let flush = flush.fd()?.as_fd().try_clone_to_owned()?;
    let ring = RingBuf::try_from(
        ebpf.take_map("SYSCALL_EVENTS")
            .context("SYSCALL_EVENTS missing")?,
    )?;
    Ok(Attached { ring, flush })
}

/// Decodes one ring-buffer item; `None` if it is not a well-formed batch.
fn decode_batch(bytes: &[u8]) -> Option<impl Iterator<Item = SyscallRecord> + '_> {
    const HEADER: usize = 8;
    const REC: usize = std::mem::size_of::<SyscallRecord>();
    let len = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    if len > BATCH_LEN || bytes.len() < HEADER + len * REC {
        return None;
    }
    Some(
        bytes[HEADER..HEADER + len * REC]
            .chunks_exact(REC)
            .map(|c| {
                // SAFETY: c has exactly size_of::<SyscallRecord>() bytes and every bit
                // pattern is a valid SyscallRecord (integers only).
                unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<SyscallRecord>()) }
            }),
    )
}

fn drain(
    ring: &mut RingBuf<MapData>,
    agg: &Mutex<SyscallsBySlot>,
    attribution: Option<&Attribution>,
    stats: &ProbeStats,
) {
    while let Some(item) = ring.next() {
        match decode_batch(&item) {
            Some(records) => {
                let mut resolver = attribution.map(Attribution::lock);
                let mut agg = lock(agg);
                let mut n = 0;
                for rec in records {
                    let slot = match &mut resolver {
                        Some(r) => r.slot(rec.cgroup),
                        None => Slot::HOST,
                    };
                    agg.record(slot, &rec);
                    n += 1;
                }
                stats.add_events(n);
            }
            None => stats.add_decode_error(),
        }
    }
}

/// Runs the drain loop until `shutdown` flips, then flushes every CPU and
/// drains a last time so nothing staged is left behind.
fn spawn(
    attached: Attached,
    agg: Arc<Mutex<SyscallsBySlot>>,
    attribution: Option<Arc<Attribution>>,
    stats: Arc<ProbeStats>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let Attached { ring, flush } = attached;
    let flush = Arc::new(flush);
    spawn_flusher(flush.clone(), cpus.clone(), interval, shutdown.clone());
    let drain_ring =
        move |ring: &mut RingBuf<MapData>| drain(ring, &agg, attribution.as_deref(), &stats);
    super::ring_drain::spawn("syscall", ring, interval, shutdown, drain_ring, move || {
        flush_all(&flush, &cpus)
    })
}

fn flush_all(prog: &OwnedFd, cpus: &[u32]) {
    for &cpu in cpus {
        if let Err(e) = bpf::run_on_cpu(prog.as_fd(), cpu) {
            // A CPU that went offline has nothing staged that it can still add to.
            tracing::debug!(cpu, error = %e, "flush on CPU failed");
        }
    }
}

/// A plain thread: each flush is a blocking syscall that interrupts one CPU.
fn spawn_flusher(
    prog: Arc<OwnedFd>,
    cpus: Vec<u32>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) {
    std::thread::Builder::new()
        .name("syscall-flush".into())
        .spawn(move || {
            while !*shutdown.borrow() {
                flush_all(&prog, &cpus);
                std::thread::sleep(interval);
            }
        })
        .expect("spawning a thread at startup");
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::syscalls::SyscallBatch;

    fn bytes_of(batch: &SyscallBatch) -> Vec<u8> {
        // SAFETY: SyscallBatch is repr(C) plain data.
        unsafe {
            std::slice::from_raw_parts(
                (batch as *const SyscallBatch).cast::<u8>(),
                size_of::<SyscallBatch>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_partial_batch() {
        let mut b = SyscallBatch::EMPTY;
        b.len = 2;
        b.records[0] = SyscallRecord::new(5, 110, 0, 0);
        b.records[1] = SyscallRecord::new(7, 81, 9, 0);
        b.records[2] = SyscallRecord::new(9, 1, 0, 0); // beyond len
        let recs: Vec<_> = decode_batch(&bytes_of(&b)).unwrap().collect();
        assert_eq!(recs, b.records[..2]);
    }

    #[test]
    fn decodes_a_full_batch_and_rejects_garbage() {
        let mut b = SyscallBatch::EMPTY;
        b.len = BATCH_LEN as u32;
        assert_eq!(decode_batch(&bytes_of(&b)).unwrap().count(), BATCH_LEN);
        b.len = BATCH_LEN as u32 + 1;
        assert!(decode_batch(&bytes_of(&b)).is_none());
        assert!(decode_batch(&[1, 0]).is_none());
        assert!(decode_batch(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 2]).is_none()); // truncated record
        assert_eq!(decode_batch(&[0; 8]).unwrap().count(), 0);
    }
}

//! Syscall probe, userspace side (kernel side: agent-ebpf/src/syscalls.rs).
//!
//! Batches arrive through the SYSCALL_EVENTS ring buffer. The kernel does not
//! wake us per batch: we drain on a timer and when the kernel forces a wakeup
//! because the ring is filling. A flusher thread runs the `flush_syscalls`
//! program on every CPU each interval so partial batches on idle CPUs are
//! delivered within about two intervals.

use crate::aggregate::SyscallsBySlot;
use crate::bpf;
use crate::k8s::{Attribution, Slot};
use crate::stats::ProbeStats;
use agent_common::syscalls::{BATCH_LEN, SyscallRecord};
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use aya::programs::RawTracePoint;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the running probe needs after attach: its ring and its flush program.
pub struct Attached {
    ring: RingBuf<MapData>,
    flush: OwnedFd,
}

pub fn attach(ebpf: &mut Ebpf) -> Result<Attached> {
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
pub fn decode_batch(bytes: &[u8]) -> Option<impl Iterator<Item = SyscallRecord> + '_> {
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
                let mut agg = agg.lock().unwrap_or_else(|p| p.into_inner());
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
            None => {
                stats
                    .decode_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Runs the drain loop until `shutdown` flips, then flushes every CPU and
/// drains a last time so nothing staged is left behind.
pub fn spawn(
    attached: Attached,
    agg: Arc<Mutex<SyscallsBySlot>>,
    attribution: Option<Arc<Attribution>>,
    stats: Arc<crate::stats::AgentStats>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let Attached { ring, flush } = attached;
    let flush = Arc::new(flush);
    spawn_flusher(flush.clone(), cpus.clone(), interval, shutdown.clone());
    let drain_ring = move |ring: &mut RingBuf<MapData>| {
        drain(ring, &agg, attribution.as_deref(), &stats.syscalls)
    };
    super::ring::spawn_drain("syscall", ring, interval, shutdown, drain_ring, move || {
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

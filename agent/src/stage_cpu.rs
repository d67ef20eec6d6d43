//! The agent's own CPU time, split by what it was doing: draining the probes'
//! ring buffers or encoding scrapes. Each span reads the calling thread's
//! CPU clock twice (a vDSO call, tens of ns), once per drain wake-up or
//! scrape, never per event.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    Drain,
    Scrape,
}

const STAGES: [(Stage, &str); 2] = [(Stage::Drain, "drain"), (Stage::Scrape, "scrape")];

/// Nanoseconds of thread CPU time per stage, since start.
static NANOS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Runs `f`, adding the CPU time this thread spent in it to `stage`.
pub(crate) fn measure<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu_ns();
    let out = f();
    NANOS[stage as usize].fetch_add(thread_cpu_ns().saturating_sub(start), Relaxed);
    out
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `ebpf_agent_cpu_seconds_total{stage}`.
#[derive(Debug)]
pub(crate) struct StageCpu;

impl Collector for StageCpu {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let mut m = enc.encode_descriptor(
            "cpu",
            "CPU time the agent spent, by stage: draining the probes' ring buffers, or encoding scrapes",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (stage, name) in STAGES {
            let secs = NANOS[stage as usize].load(Relaxed) as f64 / 1e9;
            m.encode_family(&[("stage", name)])?
                .encode_counter::<NoLabelSet, _, f64>(&secs, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_span_is_counted_in_its_stage() {
        let before = NANOS[Stage::Drain as usize].load(Relaxed);
        let spun = measure(Stage::Drain, || {
            // 20 ms of this thread's CPU, however busy the machine is.
            let t = thread_cpu_ns();
            while thread_cpu_ns() - t < 20_000_000 {
                std::hint::black_box(0);
            }
            7
        });
        let added = NANOS[Stage::Drain as usize].load(Relaxed) - before;
        assert_eq!(spun, 7);
        assert!(added >= 10_000_000, "{added} ns");
    }
}

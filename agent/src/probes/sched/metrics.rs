//! The run-queue probe's metric families: the latency histogram (per
//! container with attribution) and what the per-cgroup map had no room for.

use super::Runq;
use crate::histogram::{ns_to_seconds, seconds_buckets};
use agent_common::counters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::Arc;

pub(super) struct RunqCollector(pub Arc<Runq>);

impl std::fmt::Debug for RunqCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunqCollector")
    }
}

impl Collector for RunqCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(node) = self.0.snapshot() else {
            tracing::warn!("cannot read the run-queue histogram map");
            return Ok(());
        };
        // (labels, histogram) per series: one unlabelled without attribution;
        // with it, one per container and the host's (node-wide map included).
        let series = match &self.0.cgroups {
            None => vec![(Vec::new(), node)],
            Some(cgroups) => cgroups.series(node),
        };
        let mut m = enc.encode_descriptor(
            "runqueue_latency",
            "Time runnable threads waited for a CPU (node-wide, or the target's threads with --pid)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, h) in &series {
            let sum = ns_to_seconds(u128::from(h.sum_ns));
            m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                sum,
                h.count,
                &seconds_buckets(&h.buckets),
                None,
            )?;
        }
        let mut m = enc.encode_descriptor(
            "runqueue_cgroup_map_full",
            "Run-queue waits counted under the host's labels because the kernel's per-cgroup histogram map was full (container attribution only)",
            None,
            MetricType::Counter,
        )?;
        let full = self.0.kernel.get(counters::RUNQ_CGROUP_MAP_FULL);
        m.encode_counter::<NoLabelSet, _, u64>(&full, None)?;
        Ok(())
    }
}

//! The process probe's metric families.

use super::aggregate::ProcessAggregate;
use crate::probes::lock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::{Arc, Mutex};

/// One counter of a slot's stats.
type Count = fn(&super::aggregate::ProcessStats) -> u64;

#[derive(Debug)]
pub(super) struct ProcessCollector {
    pub agg: Arc<Mutex<ProcessAggregate>>,
    pub attribution: Option<Arc<crate::k8s::Attribution>>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let labeler = crate::k8s::labeler(self.attribution.as_deref());
        let agg = lock(&self.agg);
        let series: Vec<_> = agg
            .by_slot()
            .filter_map(|(slot, s)| Some((labeler.labels(slot)?, s)))
            .collect();
        let counters: [(&str, &str, Count); 2] = [
            ("process_execs", "Successful execve/execveat calls", |s| {
                s.execs
            }),
            (
                "process_forks",
                "New processes (forks and clones that are not threads)",
                |s| s.forks,
            ),
        ];
        for (name, help, value) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, s) in &series {
                m.encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value(s), None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "process_exits",
            "Processes that ended (their last thread), by how: code=\"0\", \"nonzero\", or the signal that killed them (\"other\" past the named ones)",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &series {
            for (code, n) in &s.exits {
                let mut labels = labels.clone();
                labels.push(("code", (*code).into()));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "process_lifetime",
            "Time from a process's fork to its exit",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, s) in &series {
            let l = &s.lifetime;
            m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                crate::histogram::ns_to_seconds(l.sum_ns),
                l.count,
                &l.buckets_seconds(),
                None,
            )?;
        }
        Ok(())
    }
}

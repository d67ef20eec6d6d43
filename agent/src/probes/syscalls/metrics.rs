//! The syscall probe's metric families: latency histograms, counts, errors
//! by errno, and what the series budgets folded.

use super::aggregate::{ERRNO_OTHER, SyscallKey, SyscallsBySlot};
use super::names;
use crate::k8s::Attribution;
use crate::probes::lock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub(super) struct SyscallCollector {
    pub(super) agg: Arc<Mutex<SyscallsBySlot>>,
    pub(super) attribution: Option<Arc<Attribution>>,
}

fn label(key: SyscallKey) -> Cow<'static, str> {
    match key {
        SyscallKey::Id(id) => names::syscall(id),
        SyscallKey::Other => Cow::Borrowed("other"),
    }
}

fn errno_label(errno: u16) -> Cow<'static, str> {
    match errno {
        ERRNO_OTHER => Cow::Borrowed("other"),
        e => names::errno(e),
    }
}

impl Collector for SyscallCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let labeler = crate::k8s::labeler(self.attribution.as_deref());
        let agg = lock(&self.agg);
        // (container labels + syscall label, stats) for every live slot.
        let series: Vec<_> = agg
            .iter()
            .filter_map(|(slot, a)| Some((labeler.labels(slot)?, a)))
            .flat_map(|(container, a)| {
                a.series().into_iter().map(move |(key, s)| {
                    let mut labels = container.clone();
                    labels.push(("syscall", label(key)));
                    (labels, s)
                })
            })
            .collect();
        let mut m = enc.encode_descriptor(
            "syscall_latency",
            "Time from syscall entry to exit, by syscall",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, s) in &series {
            s.latency.encode(m.encode_family(labels)?)?;
        }
        let mut m = enc.encode_descriptor(
            "syscalls",
            "Completed syscalls, by syscall",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &series {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(&s.latency.count(), None)?;
        }
        let mut m = enc.encode_descriptor(
            "syscall_errors",
            "Syscalls that returned an error, by syscall and errno",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &series {
            for &(errno, n) in &s.errors {
                let mut labels = labels.clone();
                labels.push(("errno", errno_label(errno)));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        let folded = agg.folded_events();
        drop(agg);
        let mut m = enc.encode_descriptor(
            "series_folded",
            "Events recorded under label value \"other\" because a family's series budget was spent",
            None,
            MetricType::Counter,
        )?;
        if let Some(a) = &self.attribution {
            m.encode_family(&[("family", "container")])?
                .encode_counter::<NoLabelSet, _, u64>(&a.folded_events(), None)?;
        }
        m.encode_family(&[("family", "syscall")])?
            .encode_counter::<NoLabelSet, _, u64>(&folded, None)?;
        Ok(())
    }
}

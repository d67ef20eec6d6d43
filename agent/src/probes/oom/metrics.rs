//! The OOM probe's metric families.

use super::aggregate::OomAggregate;
use crate::probes::lock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub(super) struct OomCollector {
    pub agg: Arc<Mutex<OomAggregate>>,
    pub attribution: Option<Arc<crate::k8s::Attribution>>,
}

impl Collector for OomCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let labeler = crate::k8s::labeler(self.attribution.as_deref());
        let agg = lock(&self.agg);
        let mut m = enc.encode_descriptor(
            "oom_kills",
            "Processes the kernel's OOM killer chose, by their command (commands past the budget are \"other\") and container",
            None,
            MetricType::Counter,
        )?;
        for (slot, commands) in agg.by_slot() {
            let Some(labels) = labeler.labels(slot) else {
                continue;
            };
            for (command, n) in commands {
                let mut labels = labels.clone();
                labels.push(("command", command.clone().into()));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "oom_commands_folded",
            "OOM kills counted under command=\"other\" because the command budget was spent",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&agg.folded(), None)?;
        Ok(())
    }
}

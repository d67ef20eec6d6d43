//! The TCP probe's metric families: connect latency, outcomes, destinations
//! behind their budget, retransmits and resets by destination, passive opens
//! and connects in flight.

use super::InFlightMap;
use super::aggregate::{Outcome, PeerKind};
use super::peer_counts::Shared;
use crate::bpf::KernelCounters;
use crate::k8s::Slot;

use agent_common::counters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::{Arc, Mutex};

/// Exports the aggregate; `in_flight` counts entries in the kernel's map.
pub(super) struct TcpCollector {
    pub shared: Shared,
    pub attribution: Option<Arc<crate::k8s::Attribution>>,
    pub in_flight: Arc<Mutex<InFlightMap>>,
    pub kernel: Arc<KernelCounters>,
}

impl std::fmt::Debug for TcpCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TcpCollector")
    }
}

impl Collector for TcpCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let labeler = crate::k8s::labeler(self.attribution.as_deref());
        let agg = self.shared.read();
        let series: Vec<_> = agg
            .by_slot()
            .iter()
            .filter_map(|(slot, s)| Some((labeler.labels(slot)?, slot, s)))
            .collect();
        let mut m = enc.encode_descriptor(
            "tcp_connect_latency",
            "Time from connect() entering SYN_SENT to ESTABLISHED, successful connects",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, _, s) in &series {
            s.latency.encode(m.encode_family(labels)?)?;
        }
        let mut m = enc.encode_descriptor(
            "tcp_connects",
            "Outgoing TCP connects, by outcome",
            None,
            MetricType::Counter,
        )?;
        for (labels, slot, s) in &series {
            for outcome in Outcome::ALL {
                // The host has every outcome (zeros included); containers
                // only those seen, to keep their series few.
                let n = s.count(outcome);
                if n == 0 && *slot != Slot::HOST {
                    continue;
                }
                let mut labels = labels.clone();
                labels.push(("outcome", outcome.label().into()));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "tcp_connects_by_destination",
            "Outgoing TCP connects by destination (ip:port) and outcome; destinations past the budget are \"other\"",
            None,
            MetricType::Counter,
        )?;
        for (dest, outcome, n) in agg.by_destination() {
            m.encode_family(&[("destination", dest), ("outcome", outcome.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        let peers = agg.peer_by_destination();
        let mut m = enc.encode_descriptor(
            "tcp_retransmits",
            "Retransmitted TCP segments, by destination (ip:port; \"other\" past the budget, \"unknown\" when unreadable)",
            None,
            MetricType::Counter,
        )?;
        for (dest, _, n) in peers.iter().filter(|p| p.1 == PeerKind::Retransmit) {
            m.encode_family(&[("destination", *dest)])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        let mut m = enc.encode_descriptor(
            "tcp_resets",
            "TCP resets sent and received, by peer (ip:port; \"other\" past the budget, \"unknown\" when unreadable)",
            None,
            MetricType::Counter,
        )?;
        for (dest, kind, n) in &peers {
            let direction = match kind {
                PeerKind::ResetSent => "sent",
                PeerKind::ResetReceived => "received",
                PeerKind::Retransmit => continue,
            };
            m.encode_family(&[("direction", direction), ("destination", *dest)])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        let folded = agg.folded();
        drop(agg);
        let mut m = enc.encode_descriptor(
            "tcp_destinations_folded",
            "Connects, retransmits and resets counted under destination=\"other\" because the destination budget was spent",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&folded, None)?;
        let mut m = enc.encode_descriptor(
            "tcp_accepts",
            "Passive TCP opens (SYN_RECV to ESTABLISHED); node mode only",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&self.kernel.get(counters::TCP_ACCEPTS), None)?;
        if let Some(n) = count_in_flight(&self.in_flight) {
            let mut m = enc.encode_descriptor(
                "tcp_connects_in_flight",
                "Connects in SYN_SENT the kernel is tracking now",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(n as i64))?;
        }
        Ok(())
    }
}

/// Number of connects the kernel is tracking in SYN_SENT.
fn count_in_flight(map: &Mutex<InFlightMap>) -> Option<u64> {
    let map = map.lock().ok()?;
    Some(map.keys().filter(Result::is_ok).count() as u64)
}

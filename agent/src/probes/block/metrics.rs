//! The block probe's metric families: queue time, device time and size, per
//! container (with attribution), device and operation; and what the rows'
//! budget folded.

use super::Block;
use crate::histogram::{ns_to_seconds, seconds_buckets};
use agent_common::block::{Latency, SIZE_BOUNDS, SIZE_MIN_SHIFT};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::borrow::Cow;
use std::sync::Arc;

pub(super) struct BlockCollector(pub Arc<Block>);

impl std::fmt::Debug for BlockCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockCollector")
    }
}

/// (upper bound in bytes, non-cumulative count): 512 B .. 16 MiB, then +Inf.
fn size_buckets(counts: &[u64; SIZE_BOUNDS + 1]) -> Vec<(f64, u64)> {
    (0..SIZE_BOUNDS)
        .map(|i| (1u64 << (SIZE_MIN_SHIFT as usize + i)) as f64)
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts.iter().copied())
        .collect()
}

/// A row's labels: its container's, then device and op.
fn labels(r: &super::Row) -> crate::k8s::Labels {
    let mut l = r.labels.clone();
    l.push(("device", Cow::Owned(r.device.clone())));
    l.push(("op", Cow::Borrowed(r.op)));
    l
}

/// A latency family: name, help, and which of a row's histograms it shows.
type LatencyFamily = (&'static str, &'static str, fn(&super::Row) -> &Latency);

impl Collector for BlockCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let (rows, folded) = self.0.rows();
        let labels: Vec<_> = rows.iter().map(labels).collect();
        let latency: [LatencyFamily; 2] = [
            (
                "block_io_queue",
                "Time block requests waited between insert (I/O scheduler or plug) and issue to the driver; requests issued directly have none",
                |r| &r.hist.queue,
            ),
            (
                "block_io_device",
                "Time block requests spent in the driver and device, from issue to completion",
                |r| &r.hist.device,
            ),
        ];
        for (name, help, of) in latency {
            let mut m =
                enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for (r, labels) in rows.iter().zip(&labels) {
                let h = of(r);
                m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                    ns_to_seconds(u128::from(h.sum_ns)),
                    h.count,
                    &seconds_buckets(&h.buckets),
                    None,
                )?;
            }
        }
        let mut m = enc.encode_descriptor(
            "block_io_size",
            "Size of completed block requests",
            Some(&Unit::Bytes),
            MetricType::Histogram,
        )?;
        for (r, labels) in rows.iter().zip(&labels) {
            m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                r.hist.size_sum as f64,
                r.hist.device.count,
                &size_buckets(&r.hist.size),
                None,
            )?;
        }
        let mut m = enc.encode_descriptor(
            "block_devices_folded",
            "Block completions counted under device=\"other\",op=\"other\" because their container's series already named as many (device, op) pairs as the budget allows",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&folded, None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_bounds_are_powers_of_two_from_512() {
        let mut c = [0; SIZE_BOUNDS + 1];
        c[3] = 5;
        let b = size_buckets(&c);
        assert_eq!(b.len(), SIZE_BOUNDS + 1);
        assert_eq!(b[0].0, 512.0);
        assert_eq!(b[3], (4096.0, 5));
        assert_eq!(b[SIZE_BOUNDS - 1].0, 16.0 * 1024.0 * 1024.0);
        assert_eq!(b[SIZE_BOUNDS].0, f64::INFINITY);
    }
}

//! Latency histograms: exact fixed buckets for Prometheus, plus an HDR histogram
//! for percentiles (the terminal view and JSON).
//!
//! The exported buckets are counted exactly at record time rather than derived
//! from the HDR histogram: HDR quantises values (to ~1% at 2 significant
//! digits), which would put values near a bucket edge on the wrong side of it.

use agent_common::buckets::{self, COUNT, MAX_BOUNDS, Padded};
use hdrhistogram::Histogram;
use std::sync::OnceLock;

/// The bucket bounds of this run: the defaults, or `--latency-buckets`. Every
/// latency histogram (and the kernel's run-queue one) uses the same layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Boxed: `agent run`'s arguments hold one, and they sit in an enum.
    padded: Box<Padded>,
    len: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            padded: Box::new(buckets::DEFAULT_PADDED),
            len: buckets::DEFAULT_NS.len(),
        }
    }
}

impl Layout {
    /// From upper bounds in seconds, comma separated, strictly increasing.
    pub fn parse(s: &str) -> Result<Layout, String> {
        let mut padded = [u64::MAX; buckets::SLOTS];
        let mut len = 0;
        for item in s.split(',').map(str::trim) {
            let secs: f64 = item
                .parse()
                .map_err(|_| format!("`{item}` is not a number of seconds"))?;
            if !(1e-9..=86_400.0).contains(&secs) {
                return Err(format!("{item} s is outside 1e-9 to 86400 seconds"));
            }
            let ns = (secs * 1e9).round() as u64;
            if len > 0 && ns <= padded[len - 1] {
                return Err(format!(
                    "{item} does not increase on the bound before it (bounds go up, in seconds)"
                ));
            }
            if len == MAX_BOUNDS {
                return Err(format!("more than {MAX_BOUNDS} bounds"));
            }
            padded[len] = ns;
            len += 1;
        }
        Ok(Layout {
            padded: Box::new(padded),
            len,
        })
    }

    /// The upper bounds in ns, without the +Inf bucket.
    pub fn bounds_ns(&self) -> &[u64] {
        &self.padded[..self.len]
    }

    /// The bounds as the kernel takes them.
    pub fn padded(&self) -> &Padded {
        &self.padded
    }
}

static LAYOUT: OnceLock<Layout> = OnceLock::new();

/// The layout in use (the default until [`set_layout`]).
pub fn layout() -> &'static Layout {
    LAYOUT.get_or_init(Layout::default)
}

/// Sets the layout once, before any histogram is made; false if a different
/// one is already in use.
pub fn set_layout(l: Layout) -> bool {
    *LAYOUT.get_or_init(|| l.clone()) == l
}

/// Largest value the HDR histogram tracks precisely (1 hour); larger values are
/// clamped there for percentiles but still counted exactly in buckets and sum.
const HDR_MAX_NS: u64 = 3_600_000_000_000;

/// Index of the bucket holding `ns`: the first bound >= ns, or the number of
/// bounds (the +Inf bucket) when it exceeds every bound.
pub fn bucket_index(ns: u64) -> usize {
    buckets::index(&layout().padded, ns)
}

/// An exact nanosecond total in seconds. Whole seconds and the remainder are
/// converted separately, so f64 rounds the total, not each part.
pub fn ns_to_seconds(ns: u128) -> f64 {
    (ns / 1_000_000_000) as f64 + (ns % 1_000_000_000) as f64 / 1e9
}

/// (upper bound in seconds, non-cumulative count) pairs for per-bucket counts
/// over the layout's bounds then +Inf: the shape `prometheus_client`'s
/// `encode_histogram` cumulates. Shared with the kernel-aggregated run queue.
pub fn seconds_buckets(counts: &[u64]) -> Vec<(f64, u64)> {
    layout()
        .bounds_ns()
        .iter()
        .map(|&b| b as f64 / 1e9)
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts.iter().copied())
        .collect()
}

#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    /// Non-cumulative counts; the last slot is the +Inf overflow.
    buckets: [u64; COUNT],
    count: u64,
    sum_ns: u128,
    max_ns: u64,
    /// None for precision 0: per-container series export buckets only, and
    /// an HDR histogram costs tens of KiB.
    hdr: Option<Histogram<u64>>,
}

impl LatencyHistogram {
    /// `precision`: HDR significant digits (1..=5; memory grows ~10x per
    /// digit), or 0 for no percentiles.
    pub fn new(precision: u8) -> Self {
        let hdr = (precision > 0).then(|| {
            Histogram::new_with_bounds(1, HDR_MAX_NS, precision.min(5))
                .expect("1..=5 significant digits are valid HDR settings")
        });
        LatencyHistogram {
            buckets: [0; COUNT],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
            hdr,
        }
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.buckets[bucket_index(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
        if let Some(hdr) = &mut self.hdr {
            hdr.saturating_record(ns.min(HDR_MAX_NS));
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    #[cfg(test)]
    pub fn sum_ns(&self) -> u128 {
        self.sum_ns
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// Value at quantile `q` (0..=1) in ns, within the HDR precision; 0 if
    /// empty or without HDR.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        match &self.hdr {
            Some(hdr) if self.count > 0 => hdr.value_at_quantile(q).min(self.max_ns),
            _ => 0,
        }
    }

    /// Sum in seconds, for `_sum`.
    pub fn sum_seconds(&self) -> f64 {
        ns_to_seconds(self.sum_ns)
    }

    /// Writes this as one Prometheus histogram series (buckets in seconds).
    pub fn encode(
        &self,
        mut enc: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> std::fmt::Result {
        enc.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_seconds(),
            self.count(),
            &self.buckets_seconds(),
            None,
        )
    }

    /// The buckets in the shape `encode_histogram` takes (see `seconds_buckets`).
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        seconds_buckets(&self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::buckets::DEFAULT_NS as BOUNDS_NS;

    #[test]
    fn edges_are_right_inclusive() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(999), 0);
        assert_eq!(bucket_index(1_000), 0); // exactly 1 µs is le="1e-6"
        assert_eq!(bucket_index(1_001), 1);
        assert_eq!(bucket_index(2_500), 1);
        assert_eq!(bucket_index(10_000_000_000), BOUNDS_NS.len() - 1);
        assert_eq!(bucket_index(10_000_000_001), BOUNDS_NS.len());
        assert_eq!(bucket_index(u64::MAX), BOUNDS_NS.len());
    }

    #[test]
    fn bounds_are_log_spaced_and_increasing() {
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        for w in BOUNDS_NS.windows(2) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!((2.0..=2.5).contains(&ratio), "{w:?}");
        }
    }

    #[test]
    fn buckets_count_and_sum_are_exact() {
        let mut h = LatencyHistogram::new(2);
        for ns in [1, 1_000, 1_001, 7_000_000, 20_000_000_000] {
            h.record(ns);
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum_ns(), 20_007_002_002);
        assert_eq!(h.sum_seconds(), 20.007002002);
        assert_eq!(h.max_ns(), 20_000_000_000);
        let b = h.buckets_seconds();
        assert_eq!(b.len(), BOUNDS_NS.len() + 1);
        assert_eq!(b[0], (1e-6, 2));
        assert_eq!(b[1], (2.5e-6, 1));
        assert_eq!(b[11], (5e-3, 0));
        assert_eq!(b[12], (1e-2, 1));
        assert_eq!(b[BOUNDS_NS.len()], (f64::INFINITY, 1));
        assert_eq!(b.iter().map(|&(_, c)| c).sum::<u64>(), h.count());
    }

    #[test]
    fn quantiles_follow_precision_and_never_exceed_max() {
        let mut h = LatencyHistogram::new(3);
        for ns in 1..=1000u64 {
            h.record(ns * 1_000);
        }
        let p50 = h.quantile_ns(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.002, "{p50}");
        assert_eq!(h.quantile_ns(1.0), 1_000_000);
        assert_eq!(LatencyHistogram::new(2).quantile_ns(0.99), 0);
    }

    #[test]
    fn layouts_parse_and_bad_ones_say_why() {
        let l = Layout::parse("0.001, 0.01,1").unwrap();
        assert_eq!(l.bounds_ns(), [1_000_000, 10_000_000, 1_000_000_000]);
        assert_eq!(l.padded()[3], u64::MAX);
        let err = |s| Layout::parse(s).unwrap_err();
        assert!(err("0.01,0.001").contains("does not increase"));
        assert!(err("0.001,0.001").contains("does not increase"));
        assert!(err("fast").contains("`fast` is not a number"));
        assert!(err("0").contains("outside"));
        assert!(err("").contains("not a number"));
        let many: Vec<String> = (1..=32).map(|i| i.to_string()).collect();
        assert!(err(&many.join(",")).contains("more than 31"));
        assert_eq!(
            Layout::parse(&many[..31].join(","))
                .unwrap()
                .bounds_ns()
                .len(),
            31
        );
        let defaults: Vec<String> = BOUNDS_NS
            .iter()
            .map(|&b| (b as f64 / 1e9).to_string())
            .collect();
        assert_eq!(
            Layout::parse(&defaults.join(",")).unwrap(),
            Layout::default()
        );
    }

    #[test]
    fn precision_zero_keeps_exact_buckets_without_hdr() {
        let mut h = LatencyHistogram::new(0);
        h.record(1_500);
        assert!(h.hdr.is_none());
        assert_eq!((h.count(), h.sum_ns(), h.quantile_ns(0.5)), (1, 1_500, 0));
        assert_eq!(h.buckets_seconds()[1], (2.5e-6, 1));
    }

    #[test]
    fn huge_values_do_not_panic() {
        let mut h = LatencyHistogram::new(2);
        h.record(u64::MAX);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum_ns(), 2 * u128::from(u64::MAX));
        let p50 = h.quantile_ns(0.5);
        assert!(
            (HDR_MAX_NS..HDR_MAX_NS + HDR_MAX_NS / 50).contains(&p50),
            "{p50}"
        );
    }
}

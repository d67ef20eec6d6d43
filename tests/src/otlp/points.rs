//! An export request flattened into points keyed like Prometheus series (metric
//! name and sorted data-point attributes), so tests compare them with /metrics.
//! An exporter's structural mistakes (a point twice, buckets that do not add up
//! to the count, a missing value) panic here with what is wrong.

use super::{AggregationTemporality, ExportMetricsServiceRequest};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint};
use std::collections::BTreeMap;

/// A metric name and its data point's attributes, sorted by key.
pub type Key = (String, Vec<(String, String)>);

/// One data point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Sum {
        value: f64,
        monotonic: bool,
        temporality: AggregationTemporality,
    },
    Gauge(f64),
    /// Explicit-bounds histogram: `bucket_counts` has one more entry than
    /// `bounds` (the overflow bucket), counts per bucket (not cumulative).
    Histogram {
        bounds: Vec<f64>,
        bucket_counts: Vec<u64>,
        sum: Option<f64>,
        count: u64,
        temporality: AggregationTemporality,
    },
}

impl Point {
    /// A sum's or gauge's value. Panics on a histogram.
    pub fn value(&self) -> f64 {
        match self {
            Point::Sum { value, .. } | Point::Gauge(value) => *value,
            Point::Histogram { .. } => panic!("a histogram has no single value: {self:?}"),
        }
    }

    /// A histogram's buckets as /metrics shows them: cumulative (le, count)
    /// pairs ending with +Inf, like `Exposition::buckets`. Panics on another kind.
    pub fn cumulative_buckets(&self) -> Vec<(f64, f64)> {
        let Point::Histogram {
            bounds,
            bucket_counts,
            ..
        } = self
        else {
            panic!("not a histogram: {self:?}");
        };
        let les = bounds.iter().copied().chain([f64::INFINITY]);
        let mut total = 0;
        les.zip(bucket_counts)
            .map(|(le, n)| {
                total += n;
                (le, total as f64)
            })
            .collect()
    }
}

/// The points named `name` whose attributes include every pair in `attributes`.
pub fn matching<'a>(
    points: &'a BTreeMap<Key, Point>,
    name: &'a str,
    attributes: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = (&'a Key, &'a Point)> {
    points.iter().filter(move |((n, attrs), _)| {
        n == name
            && attributes
                .iter()
                .all(|(k, v)| attrs.iter().any(|(ak, av)| ak == k && av == v))
    })
}

/// The single point matching (see [`matching`]), or None; panics if several
/// match (the test's attributes are ambiguous).
pub fn get<'a>(
    points: &'a BTreeMap<Key, Point>,
    name: &'a str,
    attributes: &'a [(&'a str, &'a str)],
) -> Option<&'a Point> {
    let found: Vec<_> = matching(points, name, attributes).collect();
    assert!(found.len() <= 1, "{name}{attributes:?} matches {found:?}");
    found.first().map(|(_, p)| *p)
}

/// The sum of the values of the sums and gauges matching, or None if none
/// does (e.g. a syscall's count over every errno).
pub fn sum(points: &BTreeMap<Key, Point>, name: &str, attributes: &[(&str, &str)]) -> Option<f64> {
    matching(points, name, attributes)
        .map(|(_, p)| p.value())
        .reduce(|a, b| a + b)
}

/// A data point's times, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamps {
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
}

/// Every data point of the request by metric name and attributes (resource
/// attributes apart: see [`resource_attributes`]).
pub fn points(req: &ExportMetricsServiceRequest) -> BTreeMap<Key, Point> {
    stamped_points(req)
        .into_iter()
        .map(|(k, (p, _))| (k, p))
        .collect()
}

/// Like [`points`], with each point's start and time stamps.
pub fn stamped_points(req: &ExportMetricsServiceRequest) -> BTreeMap<Key, (Point, Stamps)> {
    let mut out = BTreeMap::new();
    let metrics = req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics);
    for metric in metrics {
        for (attributes, point, stamps) in metric_points(metric) {
            let key = (metric.name.clone(), sorted(attributes));
            if let Some((earlier, _)) = out.insert(key.clone(), (point, stamps)) {
                panic!("OTLP request has {key:?} twice (first {earlier:?})");
            }
        }
    }
    out
}

/// How many data points the request carries.
pub(super) fn count(req: &ExportMetricsServiceRequest) -> usize {
    stamped_points(req).len()
}

/// The request's resource attributes as sorted (key, value) pairs, values as
/// strings (every resource's, should there be several).
pub fn resource_attributes(req: &ExportMetricsServiceRequest) -> Vec<(String, String)> {
    let mut out: Vec<_> = req
        .resource_metrics
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .map(pair)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn metric_points(metric: &Metric) -> Vec<(&[KeyValue], Point, Stamps)> {
    let name = &metric.name;
    let temporality = |t: i32| {
        AggregationTemporality::try_from(t)
            .unwrap_or_else(|_| panic!("{name}: unknown aggregation temporality {t}"))
    };
    let number = |p: &NumberDataPoint| match p.value {
        Some(Value::AsDouble(v)) => v,
        Some(Value::AsInt(v)) => v as f64,
        None => panic!("{name}: a data point without a value: {p:?}"),
    };
    match &metric.data {
        Some(Data::Sum(s)) => s
            .data_points
            .iter()
            .map(|p| {
                let point = Point::Sum {
                    value: number(p),
                    monotonic: s.is_monotonic,
                    temporality: temporality(s.aggregation_temporality),
                };
                let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
                stamped(&p.attributes, start, time, point)
            })
            .collect(),
        Some(Data::Gauge(g)) => g
            .data_points
            .iter()
            .map(|p| {
                let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
                stamped(&p.attributes, start, time, Point::Gauge(number(p)))
            })
            .collect(),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| {
                assert_eq!(
                    p.bucket_counts.len(),
                    p.explicit_bounds.len() + 1,
                    "{name}: bucket counts for {} bounds: {p:?}",
                    p.explicit_bounds.len()
                );
                let total: u64 = p.bucket_counts.iter().sum();
                assert_eq!(
                    total, p.count,
                    "{name}: buckets do not add up to the count: {p:?}"
                );
                let point = Point::Histogram {
                    bounds: p.explicit_bounds.clone(),
                    bucket_counts: p.bucket_counts.clone(),
                    sum: p.sum,
                    count: p.count,
                    temporality: temporality(h.aggregation_temporality),
                };
                let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
                stamped(&p.attributes, start, time, point)
            })
            .collect(),
        other => panic!("{name}: data {other:?} is not a sum, gauge or histogram"),
    }
}

fn stamped(
    attributes: &[KeyValue],
    start_time_unix_nano: u64,
    time_unix_nano: u64,
    point: Point,
) -> (&[KeyValue], Point, Stamps) {
    let stamps = Stamps {
        start_time_unix_nano,
        time_unix_nano,
    };
    (attributes, point, stamps)
}

fn sorted(attributes: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<_> = attributes.iter().map(pair).collect();
    out.sort();
    out
}

fn pair(kv: &KeyValue) -> (String, String) {
    (
        kv.key.clone(),
        kv.value.as_ref().map(text).unwrap_or_default(),
    )
}

/// An attribute value as text: strings as they are, scalars formatted.
fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

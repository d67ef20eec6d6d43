//! OTLP metrics: the exposition's families as an `ExportMetricsServiceRequest`
//! (messages from the `opentelemetry-proto` crate, the official definitions),
//! for HTTP/protobuf (`POST /v1/metrics`) or gRPC (`MetricsService/Export`).
//!
//! A counter is a monotonic Sum, a gauge (and an untyped family) a Gauge, an
//! info family a Gauge of 1 named `<name>_info`, a histogram one data point per
//! series with the agent's own bucket bounds, its exact sum and count. Points
//! are cumulative from the series' start: the machine's boot for `node_*`
//! families (the kernel counts those since boot), the agent's start for the
//! rest. With delta temporality each point covers the time since the previous
//! push; the first point of a `node_*` series only sets the reference (its
//! since-boot total would be counted again after every agent restart), the
//! first of the agent's own series covers the time since the agent started.

use super::samples::{Family, Kind, Labels};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// The gRPC method a metrics push calls.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// HTTP/protobuf: POST to the endpoint (default path /v1/metrics).
    Http,
    /// gRPC over HTTP/2: opentelemetry.proto.collector.metrics.v1.MetricsService/Export.
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Temporality {
    /// Every point counts from the series' start (as Prometheus counters).
    Cumulative,
    /// Every point counts what happened since the previous push.
    Delta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Gzip,
    None,
}

/// `agent run`'s OTLP flags.
#[derive(Debug, Clone, clap::Args)]
pub struct OtlpArgs {
    /// Push the metrics with OTLP to this endpoint (repeatable): for http, the
    /// URL to POST to (a URL without a path gets /v1/metrics, e.g.
    /// http://collector:4318); for grpc, the server (e.g. http://collector:4317).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Vec<String>,

    /// OTLP transport.
    #[arg(long, value_name = "PROTOCOL", value_enum, default_value_t = Protocol::Http)]
    pub otlp_protocol: Protocol,

    /// OTLP aggregation temporality of counters and histograms.
    #[arg(long, value_name = "TEMPORALITY", value_enum, default_value_t = Temporality::Cumulative)]
    pub otlp_temporality: Temporality,

    /// Compression of OTLP requests.
    #[arg(long, value_name = "ALGORITHM", value_enum, default_value_t = Compression::Gzip)]
    pub otlp_compression: Compression,
}

impl OtlpArgs {
    /// The URL a request goes to, from `--otlp-endpoint`.
    pub fn url(&self, endpoint: &str) -> String {
        let base = endpoint.trim_end_matches('/');
        let has_path = endpoint
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/').contains('/'));
        match (self.otlp_protocol, has_path) {
            (Protocol::Http, false) => format!("{base}/v1/metrics"),
            (Protocol::Http, true) => endpoint.to_string(),
            (Protocol::Grpc, _) => base.to_string(),
        }
    }
}

/// Resource attributes: `service.name` (`OTEL_SERVICE_NAME`, else ebpf-agent),
/// `service.version`, `host.name`, then `OTEL_RESOURCE_ATTRIBUTES` (the
/// DaemonSet sets `k8s.node.name`, `k8s.pod.name` and `k8s.namespace.name`
/// there from the downward API), then the user's `--push-external-label`s.
pub fn resource(
    host: &str,
    env: &dyn Fn(&str) -> Option<String>,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut attrs = vec![
        (
            "service.name".to_string(),
            env("OTEL_SERVICE_NAME")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "ebpf-agent".to_string()),
        ),
        (
            "service.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("host.name".to_string(), host.to_string()),
    ];
    let mut set = |k: String, v: String| {
        attrs.retain(|(n, _)| *n != k);
        if !v.is_empty() {
            attrs.push((k, v));
        }
    };
    for pair in env("OTEL_RESOURCE_ATTRIBUTES")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((k, v)) = pair.split_once('=') {
            let k = percent_decode(k.trim());
            // OTEL_SERVICE_NAME wins over a service.name here (the spec's rule).
            if k.is_empty() || (k == "service.name" && env("OTEL_SERVICE_NAME").is_some()) {
                continue;
            }
            set(k, percent_decode(v.trim()));
        }
    }
    for (k, v) in extra {
        set(k.clone(), v.clone());
    }
    attrs
}

/// OTEL_RESOURCE_ATTRIBUTES values are percent-encoded (W3C baggage style).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a point was at the previous push (delta temporality).
enum Previous {
    Number(f64),
    Histogram {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// Builds requests; remembers the previous push's points for delta temporality.
pub struct Encoder {
    temporality: Temporality,
    resource: Resource,
    agent_start_ns: u64,
    boot_ns: u64,
    previous: HashMap<u64, Previous>,
    previous_ns: u64,
}

impl Encoder {
    pub fn new(
        temporality: Temporality,
        resource: &[(String, String)],
        agent_start_ns: u64,
        boot_ns: u64,
    ) -> Encoder {
        Encoder {
            temporality,
            resource: Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            },
            agent_start_ns,
            boot_ns,
            previous: HashMap::new(),
            previous_ns: 0,
        }
    }

    /// One request for the families at `time_ns`, and how many data points it holds.
    pub fn encode(
        &mut self,
        families: &[Family],
        time_ns: u64,
    ) -> (ExportMetricsServiceRequest, u64) {
        let mut points = 0u64;
        let mut seen = HashSet::new();
        let mut metrics = Vec::with_capacity(families.len());
        for f in families {
            let start = if f.name.starts_with("node_") {
                self.boot_ns
            } else {
                self.agent_start_ns
            };
            let data = match f.kind {
                Kind::Counter => {
                    let data_points = self.numbers(f, "_total", start, time_ns, &mut seen, true);
                    points += data_points.len() as u64;
                    Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: self.aggregation() as i32,
                        is_monotonic: true,
                    })
                }
                Kind::Histogram => {
                    let data_points = self.histograms(f, start, time_ns, &mut seen);
                    points += data_points.len() as u64;
                    Data::Histogram(Histogram {
                        data_points,
                        aggregation_temporality: self.aggregation() as i32,
                    })
                }
                Kind::Gauge | Kind::Unknown | Kind::Info => {
                    let suffix = if f.kind == Kind::Info { "_info" } else { "" };
                    let data_points = self.numbers(f, suffix, start, time_ns, &mut seen, false);
                    points += data_points.len() as u64;
                    Data::Gauge(Gauge { data_points })
                }
            };
            if data_points_empty(&data) {
                continue;
            }
            let name = match f.kind {
                Kind::Info => format!("{}_info", f.name),
                _ => f.name.to_string(),
            };
            metrics.push(Metric {
                name,
                description: f.help.to_string(),
                unit: ucum(f.unit),
                data: Some(data),
                ..Default::default()
            });
        }
        // Series that went away leave the delta state with them.
        self.previous.retain(|k, _| seen.contains(k));
        self.previous_ns = time_ns;
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "ebpf-agent".to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        (request, points)
    }

    fn aggregation(&self) -> AggregationTemporality {
        match self.temporality {
            Temporality::Cumulative => AggregationTemporality::Cumulative,
            Temporality::Delta => AggregationTemporality::Delta,
        }
    }

    /// Delta temporality: remembers `now` for the series and returns what it
    /// was at the previous push with the point's start (the previous push's
    /// time), or for a series first seen, no previous and the series' start;
    /// None when this first point only sets the reference (`node_*`).
    fn delta(
        &mut self,
        name: &str,
        labels: &Labels,
        now: Previous,
        series_start: u64,
        seen: &mut HashSet<u64>,
    ) -> Option<(Option<Previous>, u64)> {
        let key = key(name, labels);
        seen.insert(key);
        match self.previous.insert(key, now) {
            Some(p) => Some((Some(p), self.previous_ns)),
            None => (series_start == self.agent_start_ns).then_some((None, series_start)),
        }
    }

    fn numbers(
        &mut self,
        f: &Family,
        suffix: &str,
        start: u64,
        time_ns: u64,
        seen: &mut HashSet<u64>,
        counter: bool,
    ) -> Vec<NumberDataPoint> {
        let mut out = Vec::with_capacity(f.samples.len());
        for s in f
            .samples
            .iter()
            .filter(|s| s.name.len() == f.name.len() + suffix.len())
        {
            let (mut value, mut point_start) = (s.value, start);
            if counter && self.temporality == Temporality::Delta {
                let now = Previous::Number(s.value);
                let Some((prev, st)) = self.delta(f.name, &s.labels, now, start, seen) else {
                    continue;
                };
                point_start = st;
                // A counter that went down was reset: all of it is new.
                if let Some(Previous::Number(p)) = prev
                    && s.value >= p
                {
                    value = s.value - p;
                }
            }
            out.push(NumberDataPoint {
                attributes: attributes(&s.labels),
                start_time_unix_nano: if counter { point_start } else { 0 },
                time_unix_nano: time_ns,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            });
        }
        out
    }

    fn histograms(
        &mut self,
        f: &Family,
        start: u64,
        time_ns: u64,
        seen: &mut HashSet<u64>,
    ) -> Vec<HistogramDataPoint> {
        let mut out = Vec::new();
        for h in group_histograms(f) {
            let mut counts = h.counts();
            let (mut sum, mut count, mut point_start) = (h.sum, h.count(), start);
            if self.temporality == Temporality::Delta {
                let now = Previous::Histogram {
                    counts: counts.clone(),
                    sum,
                    count,
                };
                let Some((prev, st)) = self.delta(f.name, &h.labels, now, start, seen) else {
                    continue;
                };
                point_start = st;
                // Any bucket or the count gone down: a reset, all of it is new.
                if let Some(Previous::Histogram {
                    counts: pc,
                    sum: ps,
                    count: pn,
                }) = prev
                    && pn <= count
                    && pc.len() == counts.len()
                    && pc.iter().zip(&counts).all(|(p, c)| p <= c)
                {
                    counts.iter_mut().zip(&pc).for_each(|(c, p)| *c -= p);
                    sum -= ps;
                    count -= pn;
                }
            }
            out.push(HistogramDataPoint {
                attributes: attributes(&h.labels),
                start_time_unix_nano: point_start,
                time_unix_nano: time_ns,
                count,
                sum: Some(sum),
                bucket_counts: counts,
                explicit_bounds: h.bounds.clone(),
                ..Default::default()
            });
        }
        out
    }
}

fn data_points_empty(d: &Data) -> bool {
    match d {
        Data::Sum(s) => s.data_points.is_empty(),
        Data::Gauge(g) => g.data_points.is_empty(),
        Data::Histogram(h) => h.data_points.is_empty(),
        _ => false,
    }
}

/// One histogram series read back from its `_bucket`, `_sum` and `_count` samples.
#[derive(Debug, PartialEq)]
struct HistogramSeries<'a> {
    labels: Labels<'a>,
    /// Finite upper bounds, ascending.
    bounds: Vec<f64>,
    /// Cumulative counts per finite bound.
    cumulative: Vec<u64>,
    total: Option<u64>,
    inf: Option<u64>,
    sum: f64,
}

impl HistogramSeries<'_> {
    fn count(&self) -> u64 {
        self.total
            .or(self.inf)
            .unwrap_or_else(|| self.cumulative.last().copied().unwrap_or(0))
    }

    /// Per-bucket counts as OTLP has them: one per bound plus the overflow.
    fn counts(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.bounds.len() + 1);
        let mut below = 0;
        for &c in &self.cumulative {
            out.push(c.saturating_sub(below));
            below = c.max(below);
        }
        out.push(self.count().saturating_sub(below));
        out
    }
}

fn group_histograms<'a>(f: &Family<'a>) -> Vec<HistogramSeries<'a>> {
    let mut out: Vec<HistogramSeries> = Vec::new();
    let mut index: HashMap<Labels<'a>, usize> = HashMap::new();
    for s in &f.samples {
        let suffix = &s.name[f.name.len()..];
        let le = s.labels.iter().position(|(k, _)| *k == "le");
        // The series' labels: the sample's without `le`, compared in place
        // (a copy only for a new series).
        let without_le = || {
            s.labels
                .iter()
                .enumerate()
                .filter(move |(j, _)| Some(*j) != le)
                .map(|(_, l)| l)
        };
        // A series' samples are contiguous in the exposition: the last series
        // first, then (a new series, or an exposition out of order) the index.
        let i = match out.last() {
            Some(h) if h.labels.iter().eq(without_le()) => out.len() - 1,
            _ => {
                let labels: Labels<'a> = without_le().cloned().collect();
                *index.entry(labels.clone()).or_insert_with(|| {
                    out.push(HistogramSeries {
                        labels,
                        bounds: Vec::new(),
                        cumulative: Vec::new(),
                        total: None,
                        inf: None,
                        sum: 0.0,
                    });
                    out.len() - 1
                })
            }
        };
        let h = &mut out[i];
        match (suffix, le) {
            ("_bucket", Some(le)) => {
                let bound = &s.labels[le].1;
                if bound == "+Inf" {
                    h.inf = Some(s.value as u64);
                } else if let Ok(b) = bound.parse::<f64>() {
                    h.bounds.push(b);
                    h.cumulative.push(s.value as u64);
                }
            }
            ("_sum", _) => h.sum = s.value,
            ("_count", _) => h.total = Some(s.value as u64),
            _ => {}
        }
    }
    out
}

fn key(name: &str, labels: &Labels) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    labels.hash(&mut h);
    h.finish()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| kv(k, v)).collect()
}

/// OpenMetrics units as UCUM, as OpenTelemetry writes them.
fn ucum(unit: &str) -> String {
    match unit {
        "seconds" => "s",
        "bytes" => "By",
        "" => "",
        other => other,
    }
    .to_string()
}

/// The body to send: protobuf, gzipped or not, framed for gRPC.
pub fn body(
    request: &ExportMetricsServiceRequest,
    protocol: Protocol,
    compression: Compression,
) -> Vec<u8> {
    let proto = prost::Message::encode_to_vec(request);
    let payload = match compression {
        Compression::None => proto,
        Compression::Gzip => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&proto).expect("writing to a Vec cannot fail");
            gz.finish().expect("writing to a Vec cannot fail")
        }
    };
    match protocol {
        Protocol::Http => payload,
        // A gRPC message: compressed flag, big-endian length, the message.
        Protocol::Grpc => {
            let mut framed = Vec::with_capacity(payload.len() + 5);
            framed.push(u8::from(compression == Compression::Gzip));
            framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            framed.extend_from_slice(&payload);
            framed
        }
    }
}

/// Data points a receiver said it rejected in a successful answer (OTLP's
/// partial success), with its message.
pub fn rejected(protocol: Protocol, body: &[u8]) -> Option<(u64, String)> {
    let message = match protocol {
        Protocol::Http => body,
        Protocol::Grpc => body.get(5..)?,
    };
    let response: ExportMetricsServiceResponse = prost::Message::decode(message).ok()?;
    let partial = response.partial_success?;
    (partial.rejected_data_points > 0)
        .then_some((partial.rejected_data_points as u64, partial.error_message))
}

/// The gRPC status codes OTLP says to retry (the spec's "retryable" table;
/// RESOURCE_EXHAUSTED only when the server says when to, with RetryInfo).
pub fn grpc_retryable(code: u32, retry_info: bool) -> bool {
    matches!(code, 1 | 4 | 10 | 11 | 14 | 15) || (code == 8 && retry_info)
}

// google.rpc.Status and RetryInfo, the fields read (opentelemetry-proto has
// no google.rpc types): the delay a throttling server asks for.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types_any::Any>,
}

mod prost_types_any {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The RetryInfo delay in a `grpc-status-details-bin` trailer (base64 of a
/// google.rpc.Status), in whole seconds rounded up.
pub fn grpc_retry_delay(details_bin: &str) -> Option<u64> {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(details_bin.trim()).ok()?;
    let status: RpcStatus = prost::Message::decode(bytes.as_slice()).ok()?;
    let any = status
        .details
        .iter()
        .find(|d| d.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let info: RetryInfo = prost::Message::decode(any.value.as_slice()).ok()?;
    let d = info.retry_delay.unwrap_or_default();
    let nanos = d.seconds.max(0) as u64 * 1_000_000_000 + d.nanos.max(0) as u64;
    Some(nanos.div_ceil(1_000_000_000))
}

/// gRPC status names, for the failure reason label.
pub fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::samples::parse;

    const TEXT: &str = "# HELP a_seconds Latency.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
        a_seconds_sum{op=\"read\"} 1.5\na_seconds_count{op=\"read\"} 6\n\
        a_seconds_bucket{le=\"0.1\",op=\"read\"} 2\na_seconds_bucket{le=\"1.0\",op=\"read\"} 5\n\
        a_seconds_bucket{le=\"+Inf\",op=\"read\"} 6\n\
        # HELP c Calls.\n# TYPE c counter\nc_total{op=\"read\"} 10\n\
        # HELP node_x Since boot.\n# TYPE node_x counter\nnode_x_total 100\n\
        # TYPE g gauge\ng 2.5\n# TYPE b info\nb_info{v=\"1\"} 1\n# EOF\n";

    fn metric<'a>(r: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
        r.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
    }

    fn value(m: &Metric) -> (f64, u64) {
        let p = match m.data.as_ref().unwrap() {
            Data::Sum(s) => &s.data_points[0],
            Data::Gauge(g) => &g.data_points[0],
            _ => panic!("not a number"),
        };
        let Some(number_data_point::Value::AsDouble(v)) = p.value else {
            panic!()
        };
        (v, p.start_time_unix_nano)
    }

    #[test]
    fn families_become_otlp_metrics_with_exact_buckets() {
        let mut enc = Encoder::new(
            Temporality::Cumulative,
            &[("service.name".into(), "x".into())],
            50,
            10,
        );
        let (r, points) = enc.encode(&parse(TEXT).unwrap(), 1000);
        assert_eq!(points, 5);
        let h = metric(&r, "a_seconds").unwrap();
        assert_eq!((h.unit.as_str(), h.description.as_str()), ("s", "Latency."));
        let Some(Data::Histogram(h)) = &h.data else {
            panic!()
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!(p.bucket_counts, [2, 3, 1]);
        assert_eq!(
            (p.count, p.sum, p.start_time_unix_nano, p.time_unix_nano),
            (6, Some(1.5), 50, 1000)
        );
        assert_eq!(p.attributes, [kv("op", "read")]);
        let c = metric(&r, "c").unwrap();
        assert!(matches!(&c.data, Some(Data::Sum(s)) if s.is_monotonic));
        assert_eq!(value(c), (10.0, 50));
        assert_eq!(value(metric(&r, "node_x").unwrap()), (100.0, 10));
        assert_eq!(value(metric(&r, "g").unwrap()), (2.5, 0));
        assert_eq!(value(metric(&r, "b_info").unwrap()), (1.0, 0));
    }

    #[test]
    fn histogram_series_out_of_order_are_still_one_point_each() {
        let text = "# TYPE h histogram\n\
            h_bucket{a=\"1\",le=\"1\"} 1\nh_bucket{a=\"2\",le=\"1\"} 5\n\
            h_bucket{a=\"1\",le=\"+Inf\"} 2\nh_bucket{a=\"2\",le=\"+Inf\"} 7\n\
            h_sum{a=\"1\"} 3\nh_count{a=\"1\"} 2\nh_sum{a=\"2\"} 9\nh_count{a=\"2\"} 7\n";
        let families = parse(text).unwrap();
        let groups = group_histograms(&families[0]);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].counts(), groups[0].sum), (vec![1, 1], 3.0));
        assert_eq!((groups[1].counts(), groups[1].sum), (vec![5, 2], 9.0));
    }

    #[test]
    fn delta_points_cover_the_time_since_the_previous_push() {
        let mut enc = Encoder::new(Temporality::Delta, &[], 50, 10);
        let (r, _) = enc.encode(&parse(TEXT).unwrap(), 1000);
        // The agent's own counter counts from the agent's start; a node_*
        // counter's first point is only the reference.
        assert_eq!(value(metric(&r, "c").unwrap()), (10.0, 50));
        assert!(metric(&r, "node_x").is_none());
        let later = TEXT
            .replace("c_total{op=\"read\"} 10", "c_total{op=\"read\"} 13")
            .replace("node_x_total 100", "node_x_total 104")
            .replace("le=\"1.0\",op=\"read\"} 5", "le=\"1.0\",op=\"read\"} 6")
            .replace("+Inf\",op=\"read\"} 6", "+Inf\",op=\"read\"} 7")
            .replace("count{op=\"read\"} 6", "count{op=\"read\"} 7")
            .replace("1.5", "2.0");
        let (r, points) = enc.encode(&parse(&later).unwrap(), 2000);
        assert_eq!(points, 5);
        assert_eq!(value(metric(&r, "c").unwrap()), (3.0, 1000));
        assert_eq!(value(metric(&r, "node_x").unwrap()), (4.0, 1000));
        let Some(Data::Histogram(h)) = &metric(&r, "a_seconds").unwrap().data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.bucket_counts.as_slice(), p.count, p.sum),
            ([0, 1, 0].as_slice(), 1, Some(0.5))
        );
        // Gauges stay what they are.
        assert_eq!(value(metric(&r, "g").unwrap()), (2.5, 0));
        // A reset counter: everything since the previous push is new.
        let reset = later.replace("c_total{op=\"read\"} 13", "c_total{op=\"read\"} 2");
        let (r, _) = enc.encode(&parse(&reset).unwrap(), 3000);
        assert_eq!(value(metric(&r, "c").unwrap()), (2.0, 2000));
    }

    #[test]
    fn bodies_are_framed_for_grpc_and_gzipped() {
        let mut enc = Encoder::new(Temporality::Cumulative, &[], 0, 0);
        let (r, _) = enc.encode(&parse(TEXT).unwrap(), 1);
        let plain = body(&r, Protocol::Http, Compression::None);
        let back: ExportMetricsServiceRequest = prost::Message::decode(plain.as_slice()).unwrap();
        assert_eq!(back, r);
        let framed = body(&r, Protocol::Grpc, Compression::Gzip);
        assert_eq!(framed[0], 1);
        assert_eq!(
            u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize,
            framed.len() - 5
        );
        let mut unzipped = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&framed[5..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain);
    }

    #[test]
    fn resource_attributes_come_from_the_environment_and_flags() {
        let env = |k: &str| match k {
            "OTEL_RESOURCE_ATTRIBUTES" => {
                Some("k8s.node.name=n1, k8s.pod.name=ebpf-agent-x%2C1,host.name=".to_string())
            }
            _ => None,
        };
        let r = resource("h", &env, &[("region".into(), "eu".into())]);
        let get = |k: &str| r.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("service.name"), Some("ebpf-agent"));
        assert_eq!(get("k8s.node.name"), Some("n1"));
        assert_eq!(get("k8s.pod.name"), Some("ebpf-agent-x,1"));
        // An empty value removes an attribute.
        assert_eq!(get("host.name"), None);
        assert_eq!(get("region"), Some("eu"));
    }

    #[test]
    fn endpoints_and_retryable_codes() {
        let mut a = OtlpArgs {
            otlp_endpoint: vec![],
            otlp_protocol: Protocol::Http,
            otlp_temporality: Temporality::Cumulative,
            otlp_compression: Compression::Gzip,
        };
        assert_eq!(a.url("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(a.url("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(
            a.url("http://c:4318/otlp/v1/metrics"),
            "http://c:4318/otlp/v1/metrics"
        );
        a.otlp_protocol = Protocol::Grpc;
        assert_eq!(a.url("http://c:4317/"), "http://c:4317");
        assert!(grpc_retryable(14, false) && !grpc_retryable(3, false));
        assert!(!grpc_retryable(8, false) && grpc_retryable(8, true));
        // A Status whose details hold a RetryInfo of 2.5 s, unpadded base64.
        let info = prost::Message::encode_to_vec(&RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        });
        let status = prost::Message::encode_to_vec(&RpcStatus {
            details: vec![prost_types_any::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info,
            }],
        });
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status);
        assert_eq!(grpc_retry_delay(&b64), Some(3));
        assert_eq!(grpc_retry_delay("!!"), None);
        assert_eq!(grpc_code_name(16), "unauthenticated");
        assert_eq!(grpc_code_name(99), "unknown");
    }
}

//! The push exporters' own metrics, per exporter (`exporter`, `url`): what was
//! sent, what failed and why, what was retried, what was dropped and why, and
//! the queue's size and age. Every way a sample can fail to arrive is counted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Target {
    pub exporter: &'static str,
    pub url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WithReason {
    pub exporter: &'static str,
    pub url: String,
    pub reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The families, shared by every exporter.
#[derive(Default)]
pub struct Metrics {
    samples: Family<Target, Counter>,
    requests: Family<Target, Counter>,
    failed: Family<WithReason, Counter>,
    retried: Family<Target, Counter>,
    dropped: Family<WithReason, Counter>,
    corrupt_records: Family<Target, Counter>,
    corrupt_bytes: Family<Target, Counter>,
    queue_bytes: Family<Target, Gauge>,
    queue_records: Family<Target, Gauge>,
    oldest_age: Family<Target, FloatGauge>,
    last_success: Family<Target, FloatGauge>,
    pub collect_errors: Counter,
}

/// Every family's name (without the prefix) and help; docs/metrics.md lists them.
pub const FAMILIES: [(&str, &str); 12] = [
    ("push_samples", "Samples the receiver accepted"),
    ("push_requests", "Requests the receiver accepted (2xx)"),
    (
        "push_requests_failed",
        "Requests that failed, by reason: http_<status>, grpc_<code> (OTLP/gRPC), network (connect, TLS, I/O), timeout",
    ),
    (
        "push_requests_retried",
        "Requests sent again after a retryable answer (remote write: 5xx, 429; OTLP: its spec's) or a network error",
    ),
    (
        "push_samples_dropped",
        "Samples given up, by reason: rejected (an answer not retried, e.g. a 4xx other than 429), queue_full (the oldest, past --push-queue-max-bytes), queue_write (the queue's disk failed)",
    ),
    (
        "push_queue_corrupt_records",
        "Damaged stretches of the queue's files (torn writes, bit rot), skipped",
    ),
    (
        "push_queue_corrupt",
        "Bytes of the queue's files skipped as damaged",
    ),
    ("push_queue", "Bytes of requests waiting in the queue"),
    ("push_queue_records", "Requests waiting in the queue"),
    (
        "push_queue_oldest_age",
        "Age of the oldest request waiting in the queue (0 when empty)",
    ),
    (
        "push_last_success_timestamp",
        "Unix time of the last request the receiver accepted",
    ),
    (
        "push_collect_errors",
        "Push intervals whose exposition could not be read (a bug; logged)",
    ),
];

impl Metrics {
    pub fn registry(&self) -> Registry {
        use prometheus_client::registry::Unit;
        let mut r = Registry::with_prefix(crate::PREFIX);
        let help = |name: &str| FAMILIES.iter().find(|(n, _)| *n == name).unwrap().1;
        let (s, b, sec) = (Unit::Bytes, Unit::Bytes, Unit::Seconds);
        r.register("push_samples", help("push_samples"), self.samples.clone());
        r.register(
            "push_requests",
            help("push_requests"),
            self.requests.clone(),
        );
        r.register(
            "push_requests_failed",
            help("push_requests_failed"),
            self.failed.clone(),
        );
        r.register(
            "push_requests_retried",
            help("push_requests_retried"),
            self.retried.clone(),
        );
        r.register(
            "push_samples_dropped",
            help("push_samples_dropped"),
            self.dropped.clone(),
        );
        r.register(
            "push_queue_corrupt_records",
            help("push_queue_corrupt_records"),
            self.corrupt_records.clone(),
        );
        r.register_with_unit(
            "push_queue_corrupt",
            help("push_queue_corrupt"),
            s,
            self.corrupt_bytes.clone(),
        );
        r.register_with_unit(
            "push_queue",
            help("push_queue"),
            b,
            self.queue_bytes.clone(),
        );
        r.register(
            "push_queue_records",
            help("push_queue_records"),
            self.queue_records.clone(),
        );
        r.register_with_unit(
            "push_queue_oldest_age",
            help("push_queue_oldest_age"),
            sec.clone(),
            self.oldest_age.clone(),
        );
        r.register_with_unit(
            "push_last_success_timestamp",
            help("push_last_success_timestamp"),
            sec,
            self.last_success.clone(),
        );
        r.register(
            "push_collect_errors",
            help("push_collect_errors"),
            self.collect_errors.clone(),
        );
        r
    }

    /// One exporter's handles; its series exist (at 0) from the start.
    pub fn exporter(&self, exporter: &'static str, url: &str) -> Exporter {
        let t = Target {
            exporter,
            url: url.to_string(),
        };
        Exporter {
            samples: self.samples.get_or_create(&t).clone(),
            requests: self.requests.get_or_create(&t).clone(),
            retried: self.retried.get_or_create(&t).clone(),
            corrupt_records: self.corrupt_records.get_or_create(&t).clone(),
            corrupt_bytes: self.corrupt_bytes.get_or_create(&t).clone(),
            queue_bytes: self.queue_bytes.get_or_create(&t).clone(),
            queue_records: self.queue_records.get_or_create(&t).clone(),
            oldest_age: self.oldest_age.get_or_create(&t).clone(),
            last_success: self.last_success.get_or_create(&t).clone(),
            failed: self.failed.clone(),
            dropped: self.dropped.clone(),
            target: t,
            logged: Default::default(),
        }
    }
}

/// What one exporter updates.
pub struct Exporter {
    pub samples: Counter,
    pub requests: Counter,
    pub retried: Counter,
    pub corrupt_records: Counter,
    pub corrupt_bytes: Counter,
    pub queue_bytes: Gauge,
    pub queue_records: Gauge,
    pub oldest_age: FloatGauge,
    pub last_success: FloatGauge,
    failed: Family<WithReason, Counter>,
    dropped: Family<WithReason, Counter>,
    target: Target,
    logged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Exporter {
    fn with(&self, reason: &str) -> WithReason {
        WithReason {
            exporter: self.target.exporter,
            url: self.target.url.clone(),
            reason: reason.to_string(),
        }
    }

    pub fn failed(&self, reason: &str) {
        self.failed.get_or_create(&self.with(reason)).inc();
    }

    pub fn dropped(&self, reason: &str, samples: u64) {
        self.dropped
            .get_or_create(&self.with(reason))
            .inc_by(samples);
    }

    /// Logs `what` the first time `reason` happens; the counters carry the rest.
    pub fn warn_once(&self, reason: &str, what: impl FnOnce() -> String) {
        if self.logged.lock().unwrap().insert(reason.to_string()) {
            tracing::warn!(
                "{} {}: {} (logged once per reason; ebpf_agent_push_* metrics count every occurrence)",
                self.target.exporter,
                self.target.url,
                what()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_family_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
                .unwrap();
        let m = super::Metrics::default();
        let e = m.exporter("remote_write", "http://x");
        e.failed("network");
        e.dropped("rejected", 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        assert_eq!(names.len(), super::FAMILIES.len(), "{names:?}");
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/metrics.md lacks {name}"
            );
        }
    }
}

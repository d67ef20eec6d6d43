//! What a collector reads at scrape time, before it is encoded: metric
//! families with their samples. Collectors build these from parsed /proc
//! files, so parsing is testable without an encoder, and a collector that
//! fails half-way writes nothing it has not finished.

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::borrow::Cow;

/// The exposition type. node_exporter's untyped families (vmstat) stay
/// untyped, so metadata matches what dashboards were built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

/// Label pairs in exposition order. Names are mostly the collectors' own
/// constants; the textfile collector's come from the files.
pub type Labels = Vec<(Cow<'static, str>, String)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// One metric family. `name` is the full sample name as node_exporter's
/// classic text format shows it (counters end in `_total`).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: Cow<'static, str>,
    pub help: Cow<'static, str>,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: Kind,
    ) -> Family {
        let name = name.into();
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}");
        Family {
            name,
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    pub fn counter(name: &'static str, help: &'static str) -> Family {
        Family::new(name, help, Kind::Counter)
    }

    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family::new(name, help, Kind::Gauge)
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: f64) {
        let labels = labels
            .iter()
            .map(|&(k, v)| (Cow::Borrowed(k), v.to_string()))
            .collect();
        self.push_labels(labels, value);
    }

    /// Adds a sample whose labels are already owned.
    pub fn push_labels(&mut self, labels: Labels, value: f64) {
        self.samples.push(Sample { labels, value });
    }

    /// Builder form of `push`.
    pub fn with(mut self, labels: &[(&'static str, &str)], value: f64) -> Family {
        self.push(labels, value);
        self
    }

    /// Writes the family, splitting `_total` and a unit suffix off the name
    /// because prometheus-client appends them itself (OpenMetrics names the
    /// family without `_total`, and a `# UNIT` line documents the unit).
    pub fn encode(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        if self.samples.is_empty() {
            return Ok(());
        }
        let name = match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(&self.name),
            _ => &self.name,
        };
        let (base, unit) = split_unit(name);
        let metric_type = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Untyped => MetricType::Unknown,
        };
        let mut m = enc.encode_descriptor(base, &self.help, unit.as_ref(), metric_type)?;
        for s in &self.samples {
            if s.labels.is_empty() {
                write_value(&mut m, self.kind, s.value)?;
            } else {
                write_value(&mut m.encode_family(&s.labels)?, self.kind, s.value)?;
            }
        }
        Ok(())
    }

    /// The value of the sample with exactly these labels.
    #[cfg(test)]
    pub fn get(&self, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
            })
            .map(|s| s.value)
    }
}

fn split_unit(name: &str) -> (&str, Option<Unit>) {
    if let Some(base) = name.strip_suffix("_seconds") {
        (base, Some(Unit::Seconds))
    } else if let Some(base) = name.strip_suffix("_bytes") {
        (base, Some(Unit::Bytes))
    } else {
        (name, None)
    }
}

fn write_value(m: &mut MetricEncoder, kind: Kind, v: f64) -> std::fmt::Result {
    match kind {
        Kind::Counter => m.encode_counter::<NoLabelSet, f64, f64>(&v, None),
        Kind::Gauge | Kind::Untyped => m.encode_gauge(&v),
    }
}

/// Finds a family by name in a collector's output.
#[cfg(test)]
pub fn find<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
    families.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Fixed(Vec<Family>);

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            self.0.iter().try_for_each(|f| f.encode(&mut enc))
        }
    }

    fn render(families: Vec<Family>) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(Fixed(families)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn names_units_and_labels_come_out_as_node_exporter_spells_them() {
        let text = render(vec![
            Family::counter(
                "node_cpu_seconds_total",
                "Seconds the CPUs spent in each mode.",
            )
            .with(&[("cpu", "0"), ("mode", "idle")], 1.5),
            Family::gauge(
                "node_memory_MemTotal_bytes",
                "Memory information field MemTotal_bytes.",
            )
            .with(&[], 1024.0),
            Family::new("node_vmstat_pgfault", "x", Kind::Untyped).with(&[], 7.0),
            Family::gauge("node_load1", "1m load average.").with(&[], 0.5),
            Family::gauge("empty", "never shown"),
            Family::counter("node_network_receive_bytes_total", "h")
                .with(&[("device", "we\"ird\\dev")], 3.0),
        ]);
        for want in [
            "# TYPE node_cpu_seconds counter\n",
            "# UNIT node_cpu_seconds seconds\n",
            "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1.5\n",
            "# TYPE node_memory_MemTotal_bytes gauge\n",
            "node_memory_MemTotal_bytes 1024.0\n",
            "# TYPE node_vmstat_pgfault unknown\n",
            "node_load1 0.5\n",
            "node_network_receive_bytes_total{device=\"we\\\"ird\\\\dev\"} 3.0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("empty"), "{text}");
        let text004 = crate::exposition::to_text_004(&text);
        assert!(text004.contains("# TYPE node_cpu_seconds_total counter\n"));
        assert!(text004.contains("# TYPE node_vmstat_pgfault untyped\n"));
    }
}

//! Prometheus remote write 1.0: the `WriteRequest` protobuf (messages written
//! from the spec's `types.proto` and `remote.proto`, the fields 1.0 uses),
//! snappy's block format, and stale markers for series that went away.

use super::samples::{Family, Sample};
use std::collections::HashSet;

/// The spec's headers besides Content-Type and User-Agent.
pub const HEADERS: [(&str, &str); 2] = [
    ("content-encoding", "snappy"),
    ("x-prometheus-remote-write-version", "0.1.0"),
];
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Prometheus' StaleNaN: a NaN whose bits mark "this series ended here".
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Turns each moment's families into a request body, remembering which series
/// the previous one had so that a series that disappears (a retired container's,
/// a folded label) gets a stale marker instead of lingering for 5 minutes.
#[derive(Default)]
pub struct Encoder {
    /// The previous request's series, with a hash of their labels.
    previous: Vec<(u64, Vec<Label>)>,
}

/// One encoded request: its body (snappy-compressed protobuf) and how many
/// samples it carries.
pub struct Encoded {
    pub body: Vec<u8>,
    pub samples: u64,
}

impl Encoder {
    /// `extra` labels (external labels) go on every series that has no label
    /// of that name already.
    pub fn encode(
        &mut self,
        families: &[Family],
        extra: &[(String, String)],
        timestamp_ms: i64,
    ) -> Encoded {
        let mut timeseries: Vec<TimeSeries> = families
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| TimeSeries {
                labels: series_labels(s, extra),
                samples: vec![ProtoSample {
                    value: s.value,
                    timestamp: timestamp_ms,
                }],
            })
            .collect();
        // A 64-bit hash stands for a series here: a collision would only cost
        // one stale marker, and keeping hashes avoids copying every label set.
        let current: Vec<u64> = timeseries.iter().map(|t| hash(&t.labels)).collect();
        let now: HashSet<u64> = current.iter().copied().collect();
        for (h, labels) in std::mem::take(&mut self.previous) {
            if !now.contains(&h) {
                timeseries.push(TimeSeries {
                    labels,
                    samples: vec![ProtoSample {
                        value: f64::from_bits(STALE_NAN),
                        timestamp: timestamp_ms,
                    }],
                });
            }
        }
        let n = timeseries.len() as u64;
        let request = WriteRequest { timeseries };
        let proto = prost::Message::encode_to_vec(&request);
        let body = snap::raw::Encoder::new()
            .compress_vec(&proto)
            .expect("snappy compresses any input shorter than 4 GiB");
        self.previous = current
            .into_iter()
            .zip(request.timeseries.into_iter().map(|t| t.labels))
            .collect();
        Encoded { body, samples: n }
    }
}

/// `__name__`, the sample's labels and the external ones, sorted by name as
/// the spec requires.
fn series_labels(s: &Sample, extra: &[(String, String)]) -> Vec<Label> {
    let mut labels = Vec::with_capacity(s.labels.len() + extra.len() + 1);
    labels.push(Label {
        name: "__name__".to_string(),
        value: s.name.clone(),
    });
    for (name, value) in &s.labels {
        labels.push(Label {
            name: name.clone(),
            value: value.clone(),
        });
    }
    for (name, value) in extra {
        if !value.is_empty() && !s.labels.iter().any(|(n, _)| n == name) {
            labels.push(Label {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    labels
}

fn hash(labels: &[Label]) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the hashes must agree from one push to the next.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in labels {
        l.name.hash(&mut h);
        l.value.hash(&mut h);
    }
    h.finish()
}

/// Decodes a body back (the tests; a receiver would do this).
#[cfg(test)]
pub fn decode(body: &[u8]) -> WriteRequest {
    let proto = snap::raw::Decoder::new().decompress_vec(body).unwrap();
    prost::Message::decode(proto.as_slice()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(samples: &[(&str, f64)]) -> Vec<Family> {
        vec![Family {
            name: "x".into(),
            kind: super::super::samples::Kind::Gauge,
            unit: String::new(),
            help: String::new(),
            samples: samples
                .iter()
                .map(|(name, value)| Sample {
                    name: name.to_string(),
                    labels: vec![("job".into(), "a".into())],
                    value: *value,
                })
                .collect(),
        }]
    }

    #[test]
    fn encodes_samples_and_marks_vanished_series_stale_once() {
        let mut enc = Encoder::default();
        let extra = [
            ("instance".to_string(), "n".to_string()),
            ("job".to_string(), "x".to_string()),
        ];
        let first = enc.encode(&family(&[("a", 1.0), ("b", 2.0)]), &extra, 1000);
        assert_eq!(first.samples, 2);
        let req = decode(&first.body);
        assert_eq!(req.timeseries[0].labels[0].name, "__name__");
        assert_eq!(req.timeseries[0].labels[0].value, "a");
        // Sorted, and the series' own job wins over the external one.
        let names: Vec<_> = req.timeseries[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(names, [("__name__", "a"), ("instance", "n"), ("job", "a")]);
        assert_eq!(req.timeseries[1].samples[0].value, 2.0);
        assert_eq!(req.timeseries[1].samples[0].timestamp, 1000);

        let second = decode(&enc.encode(&family(&[("a", 3.0)]), &extra, 2000).body);
        assert_eq!(second.timeseries.len(), 2);
        let stale = &second.timeseries[1];
        assert_eq!(stale.labels[0].value, "b");
        assert_eq!(stale.samples[0].value.to_bits(), STALE_NAN);
        assert_eq!(stale.samples[0].timestamp, 2000);

        // Only once: the next request no longer knows b.
        assert_eq!(
            decode(&enc.encode(&family(&[("a", 4.0)]), &extra, 3000).body)
                .timeseries
                .len(),
            1
        );
    }
}

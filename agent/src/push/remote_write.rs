//! Prometheus remote write 1.0: the `WriteRequest` protobuf (messages written
//! from the spec's `types.proto` and `remote.proto`, the fields 1.0 uses),
//! snappy's block format, and stale markers for series that went away.

use super::samples::{Labels, Sample};
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

/// Turns each moment's samples into a request body, remembering which series
/// the previous one had so that a series that disappears (a retired container's,
/// a folded label) gets a stale marker instead of lingering for 5 minutes.
#[derive(Default)]
pub struct Encoder {
    previous: HashSet<Labels>,
}

/// One encoded request: its body (snappy-compressed protobuf) and how many
/// samples it carries.
pub struct Encoded {
    pub body: Vec<u8>,
    pub samples: u64,
}

impl Encoder {
    pub fn encode(&mut self, samples: Vec<Sample>, timestamp_ms: i64) -> Encoded {
        let current: HashSet<Labels> = samples.iter().map(|s| s.labels.clone()).collect();
        let stale: Vec<Sample> = self
            .previous
            .difference(&current)
            .map(|labels| Sample {
                labels: labels.clone(),
                value: f64::from_bits(STALE_NAN),
            })
            .collect();
        self.previous = current;
        let timeseries: Vec<TimeSeries> = samples
            .into_iter()
            .chain(stale)
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples: vec![ProtoSample {
                    value: s.value,
                    timestamp: timestamp_ms,
                }],
            })
            .collect();
        let n = timeseries.len() as u64;
        let proto = prost::Message::encode_to_vec(&WriteRequest { timeseries });
        let body = snap::raw::Encoder::new()
            .compress_vec(&proto)
            .expect("snappy compresses any input shorter than 4 GiB");
        Encoded { body, samples: n }
    }
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

    fn sample(name: &str, value: f64) -> Sample {
        Sample {
            labels: vec![("__name__".into(), name.into()), ("job".into(), "a".into())],
            value,
        }
    }

    #[test]
    fn encodes_samples_and_marks_vanished_series_stale_once() {
        let mut enc = Encoder::default();
        let first = enc.encode(vec![sample("a", 1.0), sample("b", 2.0)], 1000);
        assert_eq!(first.samples, 2);
        let req = decode(&first.body);
        assert_eq!(req.timeseries[0].labels[0].name, "__name__");
        assert_eq!(req.timeseries[0].labels[0].value, "a");
        assert_eq!(req.timeseries[1].samples[0].value, 2.0);
        assert_eq!(req.timeseries[1].samples[0].timestamp, 1000);

        let second = decode(&enc.encode(vec![sample("a", 3.0)], 2000).body);
        assert_eq!(second.timeseries.len(), 2);
        let stale = &second.timeseries[1];
        assert_eq!(stale.labels[0].value, "b");
        assert_eq!(stale.samples[0].value.to_bits(), STALE_NAN);
        assert_eq!(stale.samples[0].timestamp, 2000);

        // Only once: the next request no longer knows b.
        assert_eq!(
            decode(&enc.encode(vec![sample("a", 4.0)], 3000).body)
                .timeseries
                .len(),
            1
        );
    }
}

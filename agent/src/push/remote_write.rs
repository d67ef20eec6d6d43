//! Prometheus remote write 1.0: the `WriteRequest` protobuf (messages written
//! from the spec's `types.proto` and `remote.proto`, the fields 1.0 uses),
//! snappy's block format, and stale markers for series that went away.
//!
//! The request is written straight from the exposition's borrowed samples
//! (wire format by hand, five fields): building prost structs would copy every
//! label of every series each push. The prost structs below decode it in the
//! tests, so the two must agree.

use super::samples::{Family, Sample};
use prost::encoding::{encode_varint, encoded_len_varint};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The spec's headers besides Content-Type and User-Agent.
pub const HEADERS: [(&str, &str); 2] = [
    ("content-encoding", "snappy"),
    ("x-prometheus-remote-write-version", "0.1.0"),
];
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Prometheus' StaleNaN: a NaN whose bits mark "this series ended here".
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
}

#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[cfg(test)]
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
    /// The previous exposition and a hash of each of its series. A 64-bit
    /// hash stands for a series: a collision would cost one stale marker.
    previous: Option<(String, Hashes)>,
}

/// The hashes are FNV already: a set of them needs no hashing of its own.
type Hashes = HashSet<u64, BuildHasherDefault<AsIs>>;

#[derive(Default)]
struct AsIs(u64);

impl Hasher for AsIs {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One encoded request: its body (snappy-compressed protobuf) and how many
/// samples it carries.
pub struct Encoded {
    pub body: Vec<u8>,
    pub samples: u64,
}

impl Encoder {
    /// `families` were read from `text`; `extra` labels (external labels) go
    /// on every series that has no label of that name already.
    pub fn encode(
        &mut self,
        text: &str,
        families: &[Family],
        extra: &[(String, String)],
        timestamp_ms: i64,
    ) -> Encoded {
        let mut proto = Vec::with_capacity(text.len());
        let mut labels: Vec<(&str, &str)> = Vec::new();
        let mut current = Hashes::default();
        current.reserve(self.previous.as_ref().map_or(0, |p| p.1.len()));
        let mut n = 0u64;
        for s in families.iter().flat_map(|f| &f.samples) {
            series_labels(s, extra, &mut labels);
            current.insert(hash(&labels));
            put_series(&mut proto, &labels, s.value, timestamp_ms);
            n += 1;
        }
        // Only when a series went away: read the previous text again for its
        // labels (cheaper than keeping every label set between pushes).
        if let Some((text, before)) = &self.previous
            && before.iter().any(|h| !current.contains(h))
            && let Ok(old) = super::samples::parse(text)
        {
            for s in old.iter().flat_map(|f| &f.samples) {
                series_labels(s, extra, &mut labels);
                let h = hash(&labels);
                if before.contains(&h) && !current.contains(&h) {
                    let stale = f64::from_bits(STALE_NAN);
                    put_series(&mut proto, &labels, stale, timestamp_ms);
                    n += 1;
                }
            }
        }
        self.previous = Some((text.to_string(), current));
        let body = snap::raw::Encoder::new()
            .compress_vec(&proto)
            .expect("snappy compresses any input shorter than 4 GiB");
        Encoded { body, samples: n }
    }
}

/// `__name__`, the sample's labels and the external ones, sorted by name as
/// the spec requires, into `out`.
fn series_labels<'a>(
    s: &'a Sample,
    extra: &'a [(String, String)],
    out: &mut Vec<(&'a str, &'a str)>,
) {
    out.clear();
    out.push(("__name__", s.name));
    out.extend(s.labels.iter().map(|(k, v)| (*k, v.as_ref())));
    for (name, value) in extra {
        if !value.is_empty() && !s.labels.iter().any(|(n, _)| n == name) {
            out.push((name, value));
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(b.0));
}

/// FNV-1a over the labels, 0xff between strings (never in UTF-8): stable
/// from one push to the next, and fast.
fn hash(labels: &[(&str, &str)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Field keys: (field number << 3) | wire type (2: length-delimited, 1: 64-bit, 0: varint).
const REQUEST_TIMESERIES: u8 = 1 << 3 | 2;
const SERIES_LABEL: u8 = 1 << 3 | 2;
const SERIES_SAMPLE: u8 = 2 << 3 | 2;
const LABEL_NAME: u8 = 1 << 3 | 2;
const LABEL_VALUE: u8 = 2 << 3 | 2;
const SAMPLE_VALUE: u8 = 1 << 3 | 1;
const SAMPLE_TIMESTAMP: u8 = 2 << 3;

fn string_len(s: &str) -> usize {
    1 + encoded_len_varint(s.len() as u64) + s.len()
}

fn put_string(out: &mut Vec<u8>, key: u8, s: &str) {
    out.push(key);
    encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// One `TimeSeries` with one sample, as a `WriteRequest.timeseries` field.
fn put_series(out: &mut Vec<u8>, labels: &[(&str, &str)], value: f64, timestamp_ms: i64) {
    let label_len = |(k, v): &(&str, &str)| string_len(k) + string_len(v);
    let sample_len = 1 + 8 + 1 + encoded_len_varint(timestamp_ms as u64);
    let series_len: usize = labels
        .iter()
        .map(|l| {
            let n = label_len(l);
            1 + encoded_len_varint(n as u64) + n
        })
        .sum::<usize>()
        + 1
        + encoded_len_varint(sample_len as u64)
        + sample_len;
    out.push(REQUEST_TIMESERIES);
    encode_varint(series_len as u64, out);
    for l in labels {
        out.push(SERIES_LABEL);
        encode_varint(label_len(l) as u64, out);
        put_string(out, LABEL_NAME, l.0);
        put_string(out, LABEL_VALUE, l.1);
    }
    out.push(SERIES_SAMPLE);
    encode_varint(sample_len as u64, out);
    out.push(SAMPLE_VALUE);
    out.extend_from_slice(&value.to_le_bytes());
    out.push(SAMPLE_TIMESTAMP);
    encode_varint(timestamp_ms as u64, out);
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

    fn text(samples: &[(&str, f64)]) -> String {
        let mut t = String::from("# TYPE x gauge\n");
        for (name, value) in samples {
            t.push_str(&format!("{name}{{job=\"a\",e=\"q\\\"\"}} {value}\n"));
        }
        t
    }

    fn encode(enc: &mut Encoder, t: &str, extra: &[(String, String)], ts: i64) -> Encoded {
        let families = crate::push::samples::parse(t).unwrap();
        enc.encode(t, &families, extra, ts)
    }

    #[test]
    fn encodes_samples_and_marks_vanished_series_stale_once() {
        let mut enc = Encoder::default();
        let extra = [
            ("instance".to_string(), "n".to_string()),
            ("job".to_string(), "x".to_string()),
        ];
        let first = encode(&mut enc, &text(&[("a", 1.0), ("b", 2.0)]), &extra, 1000);
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
        assert_eq!(
            names,
            [
                ("__name__", "a"),
                ("e", "q\""),
                ("instance", "n"),
                ("job", "a")
            ]
        );
        assert_eq!(req.timeseries[1].samples[0].value, 2.0);
        assert_eq!(req.timeseries[1].samples[0].timestamp, 1000);

        let second = decode(&encode(&mut enc, &text(&[("a", 3.0)]), &extra, 2000).body);
        assert_eq!(second.timeseries.len(), 2);
        let stale = &second.timeseries[1];
        assert_eq!(stale.labels[0].value, "b");
        assert_eq!(stale.samples[0].value.to_bits(), STALE_NAN);
        assert_eq!(stale.samples[0].timestamp, 2000);

        // Only once: the next request no longer knows b.
        assert_eq!(
            decode(&encode(&mut enc, &text(&[("a", 4.0)]), &extra, 3000).body)
                .timeseries
                .len(),
            1
        );
    }

    #[test]
    fn hand_written_wire_format_is_what_prost_writes() {
        let labels = [
            ("__name__", "a_total"),
            ("le", "+Inf"),
            ("x", &*"long".repeat(40)),
        ];
        let mut ours = Vec::new();
        put_series(&mut ours, &labels, 12.5, 1_733_000_000_123);
        let theirs = prost::Message::encode_to_vec(&WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels
                    .iter()
                    .map(|(k, v)| Label {
                        name: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: vec![ProtoSample {
                    value: 12.5,
                    timestamp: 1_733_000_000_123,
                }],
            }],
        });
        assert_eq!(ours, theirs);
    }
}

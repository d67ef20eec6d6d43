//! The Prometheus/OpenMetrics text exposition, parsed into samples.

use std::collections::BTreeMap;

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed Prometheus/OpenMetrics text exposition.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses `text`, panicking (failing the test) on a malformed line.
    pub fn parse(text: &str) -> Exposition {
        Exposition::try_parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses `text`; the error names the first malformed line.
    pub fn try_parse(text: &str) -> Result<Exposition, String> {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| parse_sample(l).ok_or_else(|| format!("unparsable sample line: {l}")))
            .collect::<Result<_, _>>()?;
        Ok(Exposition {
            text: text.to_string(),
            samples,
        })
    }

    /// Sum of the samples matching; None if none does.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }

    /// Like [`Exposition::sum`], split by the value of label `by` (e.g. each drop stage).
    pub fn sum_by(&self, name: &str, labels: &[(&str, &str)], by: &str) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for s in self.matching(name, labels) {
            let key = s.labels.get(by).cloned().unwrap_or_default();
            *sums.entry(key).or_default() += s.value;
        }
        sums
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the single sample matching, or None if there is none.
    /// Panics if several match (the test's labels are ambiguous).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<_> = self.matching(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// A histogram's cumulative buckets as (le, count), sorted by le.
    pub fn buckets(&self, histogram: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let name = format!("{histogram}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .matching(&name, labels)
            .map(|s| {
                let le = &s.labels["le"];
                (
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    },
                    s.value,
                )
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        buckets
    }

    /// Like `get`, treating a missing sample as 0 (counters not yet created).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name_labels, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_at(line.find(' ')?),
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match name_labels.split_once('{') {
        Some((n, l)) => (n, parse_labels(l.strip_suffix('}')?)?),
        None => (name_labels, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_lines() {
        let e = Exposition::parse(
            "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"z\"} 5\ny 2.5\nh_bucket{le=\"+Inf\",s=\"read\"} 3\n# EOF\n",
        );
        assert_eq!(e.get("x_total", &[("a", "1")]), Some(5.0));
        assert_eq!(e.samples[0].labels["b"], "q\"z");
        assert_eq!(e.get("y", &[]), Some(2.5));
        assert_eq!(e.get("h_bucket", &[("le", "+Inf")]), Some(3.0));
        assert_eq!(e.value("missing", &[]), 0.0);
        assert!(Exposition::try_parse("x{a=\"1\" 3\n").is_err());
    }

    #[test]
    fn sums_by_labels() {
        let e = Exposition::parse(
            "# TYPE x counter\n\
             x_total{probe=\"syscalls\",stage=\"ringbuf_full\"} 2\n\
             x_total{probe=\"syscalls\",stage=\"decode\"} 3\n\
             x_total{probe=\"other\",stage=\"decode\"} 100\n\
             y 1.5\n",
        );
        assert_eq!(e.sum("x_total", &[("probe", "syscalls")]), Some(5.0));
        assert_eq!(e.sum("x_total", &[("stage", "decode")]), Some(103.0));
        assert_eq!(e.sum("y", &[]), Some(1.5));
        assert_eq!(e.sum("z", &[]), None);
        let by_stage = e.sum_by("x_total", &[("probe", "syscalls")], "stage");
        assert_eq!(
            by_stage.into_iter().collect::<Vec<_>>(),
            [
                ("decode".to_string(), 3.0),
                ("ringbuf_full".to_string(), 2.0)
            ]
        );
    }
}

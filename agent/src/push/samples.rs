//! The families of one exposition, for pushing: the same OpenMetrics text a
//! scrape gets, read back into families (name, type, unit, help) and their
//! samples. Going through the text keeps push and scrape identical by
//! construction: remote write sends each sample as Prometheus stores a scrape
//! (`_bucket{le}`, `_sum`, `_count`, `_total`, `_info`), OTLP regroups a
//! histogram's samples into one data point per series.

use std::borrow::Cow;

/// One series' labels without `__name__`, sorted by name, no empty values;
/// borrowed from the text unless a value had escapes.
pub type Labels<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// A family's type, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
    Unknown,
}

/// A sample: its series' name (`foo_total`, `foo_bucket`...), labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Labels<'a>,
    pub value: f64,
}

/// A family and its samples in exposition order, borrowed from the text (a
/// push reads tens of thousands of samples a second: no copies).
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub unit: &'a str,
    pub help: Cow<'a, str>,
    pub samples: Vec<Sample<'a>>,
}

/// Reads every family of an OpenMetrics (or 0.0.4) text. A line that cannot
/// be read is an error naming it: the agent made the text, so that is a bug
/// to surface, not data to skip silently.
pub fn parse(text: &str) -> Result<Vec<Family<'_>>, String> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (word, name, rest) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
            let Some(name) = name else { continue };
            let family = match out.last_mut() {
                Some(f) if f.name == name => f,
                _ => {
                    out.push(family(name, Kind::Unknown));
                    out.last_mut().expect("just pushed")
                }
            };
            match word {
                Some("TYPE") => family.kind = kind(rest),
                Some("UNIT") => family.unit = rest,
                Some("HELP") => family.help = unescape_help(rest),
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|e| format!("{e} in line {line:?}"))?;
        match out.last_mut() {
            Some(f) if belongs(f, sample.name) => f.samples.push(sample),
            _ => {
                let mut f = family(sample.name, Kind::Unknown);
                f.samples.push(sample);
                out.push(f);
            }
        }
    }
    Ok(out)
}

fn family(name: &str, kind: Kind) -> Family<'_> {
    Family {
        name,
        kind,
        unit: "",
        help: Cow::Borrowed(""),
        samples: Vec::new(),
    }
}

fn kind(s: &str) -> Kind {
    match s {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        "histogram" => Kind::Histogram,
        "info" => Kind::Info,
        _ => Kind::Unknown,
    }
}

/// Whether a sample named `series` is one of `f`'s (its name plus a suffix its type allows).
fn belongs(f: &Family, series: &str) -> bool {
    let Some(suffix) = series.strip_prefix(f.name) else {
        return false;
    };
    match f.kind {
        Kind::Counter => matches!(suffix, "_total" | "_created"),
        Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count" | "_created"),
        Kind::Info => suffix == "_info",
        Kind::Gauge | Kind::Unknown => suffix.is_empty(),
    }
}

fn unescape_help(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn parse_line(line: &str) -> Result<Sample<'_>, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        rest = parse_labels(body, &mut labels)?;
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| "no value".to_string())?;
    let value = parse_value(value)?;
    // The remote-write spec: a label with an empty value is the same as none.
    if labels.iter().any(|(_, v)| v.is_empty()) {
        labels.retain(|(_, v)| !v.is_empty());
    }
    if !labels.is_sorted_by(|a, b| a.0 <= b.0) {
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y\"z"}` → the labels into `out`, and what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, out: &mut Labels<'a>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches(',');
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let eq = s.find("=\"").ok_or("a label without =\"")?;
        let name = &s[..eq];
        let body = &s[eq + 2..];
        // Most values have no escapes: borrowed as they are.
        let (value, end) = match body.find(['"', '\\']) {
            Some(i) if body.as_bytes()[i] == b'"' => (Cow::Borrowed(&body[..i]), eq + 2 + i + 1),
            _ => unescape_value(body).map(|(v, n)| (Cow::Owned(v), eq + 2 + n))?,
        };
        out.push((name, value));
        s = &s[end..];
    }
}

/// A label value with escapes, up to its closing quote: the value and the
/// length consumed (quote included).
fn unescape_value(body: &str) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut chars = body.char_indices();
    loop {
        match chars.next() {
            Some((i, '"')) => return Ok((value, i + 1)),
            Some((_, '\\')) => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated escape".into()),
            },
            Some((_, c)) => value.push(c),
            None => return Err("an unterminated label value".into()),
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("value {s:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn l<'a>(pairs: &[(&'a str, &'a str)]) -> Labels<'a> {
        pairs.iter().map(|(k, v)| (*k, Cow::Borrowed(*v))).collect()
    }

    #[test]
    fn reads_families_with_their_types_units_and_sorted_labels() {
        let text = "# HELP a_seconds Latency\\nof x.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
                    a_seconds_bucket{syscall=\"read\",le=\"0.5\"} 3\n\
                    a_seconds_bucket{syscall=\"read\",le=\"+Inf\"} 4\n\
                    a_seconds_sum{syscall=\"read\"} 1.25\n\
                    a_seconds_count{syscall=\"read\"} 4\n\
                    # HELP a Things.\n# TYPE a counter\n\
                    a_total{x=\"q\\\"uote\\\\d\\n\",empty=\"\",job=\"mine\"} 7\n\
                    # TYPE g gauge\ng NaN\n\
                    # TYPE build info\nbuild_info{version=\"1\"} 1\n# EOF\n";
        let f = parse(text).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(
            (f[0].name, f[0].kind, f[0].unit),
            ("a_seconds", Kind::Histogram, "seconds")
        );
        assert_eq!(f[0].help, "Latency\nof x.");
        assert_eq!(f[0].samples.len(), 4);
        assert_eq!(f[0].samples[0].name, "a_seconds_bucket");
        assert_eq!(
            f[0].samples[0].labels,
            l(&[("le", "0.5"), ("syscall", "read")])
        );
        assert_eq!(f[0].samples[1].value, 4.0);
        assert_eq!(f[0].samples[2].value, 1.25);
        // Empty values go, escapes are read.
        assert_eq!(
            (f[1].kind, f[1].samples[0].name),
            (Kind::Counter, "a_total")
        );
        assert_eq!(
            f[1].samples[0].labels,
            l(&[("job", "mine"), ("x", "q\"uote\\d\n")])
        );
        assert!(f[2].samples[0].value.is_nan());
        assert_eq!(
            (f[3].kind, f[3].samples[0].name),
            (Kind::Info, "build_info")
        );
    }

    #[test]
    fn a_sample_without_metadata_is_its_own_untyped_family() {
        let f = parse("# TYPE a counter\na_total 1\nb 2\n").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[1].name, f[1].kind), ("b", Kind::Unknown));
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse("a{b=\"c} 1\n").is_err());
        assert!(parse("a{b=\"c\\").is_err());
        assert!(parse("a x\n").is_err());
        assert!(parse("a\n").is_err());
    }
}

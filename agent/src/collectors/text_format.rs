//! A strict parser of the Prometheus text format (0.0.4), for the textfile
//! collector: a file is exported only when all of it is valid, as
//! node_exporter does. Counters, gauges and untyped families; histograms
//! and summaries are refused (the agent's encoder has no summary, and a
//! half-supported histogram would be worse than a clear error).

use super::family::Kind;
use anyhow::{Result, anyhow, bail};
use std::collections::{HashMap, HashSet};

/// One family as written in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub name: String,
    pub help: Option<String>,
    /// `counter` is kept apart from Kind: see [`Parsed::kind`].
    pub declared: Option<&'static str>,
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Parsed {
    /// The exported type. A counter whose name lacks `_total` is exported
    /// untyped: OpenMetrics would rename it `<name>_total`, and the name is
    /// what queries use.
    pub fn kind(&self) -> Kind {
        match self.declared {
            Some("counter") if self.name.ends_with("_total") => Kind::Counter,
            Some("gauge") => Kind::Gauge,
            _ => Kind::Untyped,
        }
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut b = s.bytes();
    let ok_first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
    b.next().is_some_and(ok_first) && b.all(|c| ok_first(c) || c.is_ascii_digit())
}

/// Parses a whole file; the error names the line.
pub fn parse(text: &str) -> Result<Vec<Parsed>> {
    let mut families: Vec<Parsed> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut series: HashSet<(usize, Vec<(String, String)>)> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        parse_line(line, &mut families, &mut index, &mut series)
            .map_err(|e| anyhow!("line {}: {e}", n + 1))?;
    }
    families.retain(|f| !f.samples.is_empty());
    Ok(families)
}

fn family<'a>(
    name: &str,
    families: &'a mut Vec<Parsed>,
    index: &mut HashMap<String, usize>,
) -> (usize, &'a mut Parsed) {
    let i = *index.entry(name.to_string()).or_insert_with(|| {
        families.push(Parsed {
            name: name.to_string(),
            help: None,
            declared: None,
            samples: Vec::new(),
        });
        families.len() - 1
    });
    (i, &mut families[i])
}

fn parse_line(
    line: &str,
    families: &mut Vec<Parsed>,
    index: &mut HashMap<String, usize>,
    series: &mut HashSet<(usize, Vec<(String, String)>)>,
) -> Result<()> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() {
        return Ok(());
    }
    if let Some(comment) = trimmed.strip_prefix('#') {
        let comment = comment.trim_start();
        let (keyword, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(());
        }
        let rest = rest.trim_start();
        let (name, value) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
        if !is_name(name, true) {
            bail!("`{name}` is not a metric name");
        }
        let (_, f) = family(name, families, index);
        if keyword == "HELP" {
            if f.help.is_some() {
                bail!("second HELP for {name}");
            }
            f.help = Some(unescape_help(value));
        } else {
            if f.declared.is_some() {
                bail!("second TYPE for {name}");
            }
            if !f.samples.is_empty() {
                bail!("TYPE for {name} after its samples");
            }
            f.declared = Some(match value.trim() {
                "counter" => "counter",
                "gauge" => "gauge",
                "untyped" => "untyped",
                t @ ("histogram" | "summary") => bail!(
                    "{name} is a {t}: the agent's textfile collector takes counters, gauges and untyped metrics"
                ),
                t => bail!("unknown type `{t}` for {name}"),
            });
        }
        return Ok(());
    }
    let (name, labels, rest) = sample(trimmed)?;
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| anyhow!("{name} has no value"))?;
    let value: f64 = parse_value(value).ok_or_else(|| anyhow!("`{value}` is not a number"))?;
    if fields.next().is_some() {
        bail!(
            "{name} has a timestamp or trailing text: timestamps are not supported (as node_exporter)"
        );
    }
    let (i, f) = family(name, families, index);
    if !series.insert((i, labels.clone())) {
        bail!("{name}{labels:?} appears twice");
    }
    f.samples.push((labels, value));
    Ok(())
}

/// As Go's ParseFloat, which node_exporter uses, minus hexadecimal floats.
fn parse_value(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ if s
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            None
        }
        _ => s.parse().ok(),
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

type Sample<'a> = (&'a str, Vec<(String, String)>, &'a str);

/// `name{a="b",...} rest`: the name, the labels, what follows.
fn sample(line: &str) -> Result<Sample<'_>> {
    let end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..end];
    if !is_name(name, true) {
        bail!("`{name}` is not a metric name");
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.trim_start().strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest
                .split_once('=')
                .ok_or_else(|| anyhow!("label without `=` in {name}"))?;
            let key = key.trim();
            if !is_name(key, false) || key.starts_with("__") {
                bail!("`{key}` is not a label name (or is reserved)");
            }
            if labels.iter().any(|(k, _)| k == key) {
                bail!("label {key} twice in {name}");
            }
            let (value, after) = label_value(after.trim_start())
                .ok_or_else(|| anyhow!("label {key} of {name}: unterminated or unquoted value"))?;
            labels.push((key.to_string(), value));
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                bail!("expected `,` or `}}` after label {key} of {name}");
            }
        }
    }
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        bail!("expected a space after {name}");
    }
    Ok((name, labels, rest))
}

/// A `"..."` value with `\\`, `\"`, `\n` escapes; returns it and the rest.
fn label_value(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_file() {
        let f = parse(
            "# HELP backup_last_success_seconds When the backup last succeeded.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\",path=\"/var/\\\"x\\\"\\\\n\"} 1.7e9\n\n# a comment\njobs_done_total 5\n# TYPE raw counter\nraw{a=\"1\",} +Inf\nraw{a=\"2\"} NaN\n",
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[0].help.as_deref(),
            Some("When the backup last succeeded.")
        );
        assert_eq!(f[0].kind(), Kind::Gauge);
        assert_eq!(f[0].samples[0].0[1].1, "/var/\"x\"\\n");
        assert_eq!(f[0].samples[0].1, 1.7e9);
        assert_eq!(f[1].kind(), Kind::Untyped);
        assert_eq!(f[2].kind(), Kind::Untyped, "a counter without _total");
        assert!(f[2].samples[0].1.is_infinite() && f[2].samples[1].1.is_nan());
        let counter = parse("# TYPE a_total counter\na_total 1\n").unwrap();
        assert_eq!(counter[0].kind(), Kind::Counter);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, want) in [
            ("bad metric{\n", "line 1: `metric{` is not a number"),
            ("ok 1\n9bad 1\n", "line 2: `9bad` is not a metric name"),
            ("m{a=\"1\" 2\n", "expected `,` or `}`"),
            ("m{a=\"1} 2\n", "unterminated"),
            ("m{a=1} 2\n", "unquoted"),
            ("m{a=\"1\",a=\"2\"} 2\n", "label a twice"),
            ("m{__name__=\"x\"} 2\n", "reserved"),
            ("m 1 1700000000000\n", "timestamps are not supported"),
            ("m\n", "m has no value"),
            ("m 1\nm 2\n", "line 2: m[] appears twice"),
            ("m 1\n# TYPE m gauge\n", "TYPE for m after its samples"),
            ("# TYPE m gauge\n# TYPE m counter\n", "second TYPE"),
            ("# HELP m a\n# HELP m b\n", "second HELP"),
            ("# TYPE h histogram\n", "h is a histogram"),
            ("# TYPE m gauges\n", "unknown type `gauges`"),
            ("m 0x1p3\n", "is not a number"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn truncated_and_empty_files() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# HELP only_help x\n").unwrap().is_empty());
        assert!(parse("m{a=\"1\"").is_err());
        assert!(parse("m{a=\"1\"} ").is_err());
        assert_eq!(parse("m 1\r\n").unwrap()[0].samples[0].1, 1.0);
    }
}

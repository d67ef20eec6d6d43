//! The samples of one exposition, for pushing: the same OpenMetrics text a
//! scrape gets, read back into series (name and labels) and values. Going
//! through the text keeps push and scrape identical by construction: a
//! histogram is its `_bucket{le}`, `_sum` and `_count` series, a counter its
//! `_total`, an info family its `_info`, exactly as Prometheus stores a scrape.

use std::collections::BTreeMap;

/// One series' labels, `__name__` included, sorted by name, no empty values.
pub type Labels = Vec<(String, String)>;

/// A series and its value at the moment of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// Parses every sample line of an OpenMetrics (or 0.0.4) text; `extra` labels
/// are added to every series unless it has a label of that name already.
/// A line that cannot be read is an error naming it: the agent made the text,
/// so that is a bug to surface, not data to skip silently.
pub fn parse(text: &str, extra: &[(String, String)]) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line, extra).map_err(|e| format!("{e} in line {line:?}"))?);
    }
    Ok(out)
}

fn parse_line(line: &str, extra: &[(String, String)]) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| "no value".to_string())?;
    let value = parse_value(value)?;
    for (k, v) in extra {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    labels.insert("__name__".to_string(), name.to_string());
    // The remote-write spec: a label with an empty value is the same as none.
    let labels = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    Ok(Sample { labels, value })
}

/// `a="x",b="y\"z"}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find("=\"").ok_or("a label without =\"")?;
        let name = s[..eq].to_string();
        let mut value = String::new();
        let mut chars = s[eq + 2..].char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break eq + 2 + i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        labels.insert(name, value);
        s = &s[end..];
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

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_families_with_sorted_labels_and_extras() {
        let text = "# HELP a_seconds Latency\n# TYPE a_seconds histogram\n\
                    a_seconds_bucket{syscall=\"read\",le=\"0.5\"} 3\n\
                    a_seconds_bucket{syscall=\"read\",le=\"+Inf\"} 4\n\
                    a_seconds_sum{syscall=\"read\"} 1.25\n\
                    a_total{x=\"q\\\"uote\\\\d\\n\",empty=\"\",job=\"mine\"} 7\n\
                    g NaN\n# EOF\n";
        let extra = [
            ("job".to_string(), "agent".to_string()),
            ("instance".to_string(), "n1".to_string()),
        ];
        let s = parse(text, &extra).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            s[0].labels,
            l(&[
                ("__name__", "a_seconds_bucket"),
                ("instance", "n1"),
                ("job", "agent"),
                ("le", "0.5"),
                ("syscall", "read")
            ])
        );
        assert_eq!(s[1].value, f64::INFINITY.min(4.0));
        assert_eq!(s[2].value, 1.25);
        // Empty values go; the series' own job wins over the extra one.
        assert_eq!(
            s[3].labels,
            l(&[
                ("__name__", "a_total"),
                ("instance", "n1"),
                ("job", "mine"),
                ("x", "q\"uote\\d\n")
            ])
        );
        assert!(s[4].value.is_nan());
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse("a{b=\"c} 1\n", &[]).is_err());
        assert!(parse("a x\n", &[]).is_err());
        assert!(parse("a\n", &[]).is_err());
    }
}

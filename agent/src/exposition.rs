//! Exposition formats. prometheus-client writes OpenMetrics 1.0, which
//! Prometheus asks for; every other client (curl, `promtool check metrics`,
//! `Accept: */*`) gets the classic text format 0.0.4, as from Prometheus' own
//! clients (negotiation: http/negotiation.rs), converted here: the formats differ only in how
//! counter and info families are named, and in OpenMetrics-only lines.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text004,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Text004 => TEXT_004,
        }
    }
}

/// Rewrites an OpenMetrics exposition as text format 0.0.4: counter families
/// take their samples' `_total` name, info families become `_info` gauges, and
/// `# UNIT` and `# EOF` lines go.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Emitted with the TYPE line, once we know the family's type.
            pending_help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                k => (name.to_string(), k),
            };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_counters_info_and_drops_openmetrics_lines() {
        let om = "# HELP a_build Build.\n# TYPE a_build info\na_build_info{version=\"1\"} 1\n\
                  # HELP a_x Things seen\n# TYPE a_x counter\na_x_total{k=\"v\"} 3\n\
                  # HELP a_lat_seconds Latency\n# TYPE a_lat_seconds histogram\n# UNIT a_lat_seconds seconds\n\
                  a_lat_seconds_sum 1.5\na_lat_seconds_count 2\na_lat_seconds_bucket{le=\"+Inf\"} 2\n\
                  # TYPE a_g gauge\na_g 7\n# EOF\n";
        let text = to_text_004(om);
        assert_eq!(
            text,
            "# HELP a_build_info Build.\n# TYPE a_build_info gauge\na_build_info{version=\"1\"} 1\n\
             # HELP a_x_total Things seen\n# TYPE a_x_total counter\na_x_total{k=\"v\"} 3\n\
             # HELP a_lat_seconds Latency\n# TYPE a_lat_seconds histogram\n\
             a_lat_seconds_sum 1.5\na_lat_seconds_count 2\na_lat_seconds_bucket{le=\"+Inf\"} 2\n\
             # TYPE a_g gauge\na_g 7\n"
        );
    }
}

//! Content negotiation as Prometheus' own clients do it: OpenMetrics only when
//! the Accept header asks for it (at least as much as for text/plain); anything
//! else, `*/*` included, gets the classic text format 0.0.4. gzip only when
//! Accept-Encoding names it.

use crate::exposition::Format;

/// (media type, q) of each entry of an Accept-like header, lowercased.
fn entries(header: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    header.split(',').filter_map(|entry| {
        let mut parts = entry.split(';');
        let media = parts.next()?.trim().to_ascii_lowercase();
        if media.is_empty() {
            return None;
        }
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        Some((media, q))
    })
}

pub fn format(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text004;
    };
    let mut openmetrics: f32 = 0.0;
    let mut text: f32 = 0.0;
    for (media, q) in entries(accept) {
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text004
    }
}

pub fn gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|h| entries(h).any(|(e, q)| e == "gzip" && q > 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format(None), Format::Text004);
        assert_eq!(format(Some("*/*")), Format::Text004);
        assert_eq!(format(Some("text/plain")), Format::Text004);
        assert_eq!(format(Some("text/plain;version=0.0.4")), Format::Text004);
        assert_eq!(
            format(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(
            format(Some("application/openmetrics-text;q=0")),
            Format::Text004
        );
        assert_eq!(
            format(Some("text/plain;q=0.9,application/openmetrics-text;q=0.5")),
            Format::Text004
        );
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,\
                          application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(format(Some(prometheus)), Format::OpenMetrics);
        let prometheus_text = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
        assert_eq!(format(Some(prometheus_text)), Format::Text004);
    }

    #[test]
    fn encodings() {
        assert!(!gzip(None));
        assert!(gzip(Some("gzip")));
        assert!(gzip(Some("deflate, GZIP;q=0.5")));
        assert!(!gzip(Some("gzip;q=0, identity")));
        assert!(!gzip(Some("br")));
    }
}

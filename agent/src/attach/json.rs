//! `--json`: one JSON object per line (NDJSON) per interval, then a final one
//! with `"final": true`. The schema is documented in docs/attach.md.

use super::snapshot::Snapshot;

/// The snapshot as one line of JSON, newline included.
pub fn line(s: &Snapshot) -> String {
    let mut out = serde_json::to_string(s).unwrap_or_else(|e| {
        // Only plain data is serialised: this cannot fail, but never print half a line.
        serde_json::json!({ "error": e.to_string() }).to_string()
    });
    out.push('\n');
    out
}

//! Real peer tools that judge what the agent serves.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `cmd` with `input` on its stdin and returns its output; panics with
/// `hint` if it cannot start.
fn pipe_through(cmd: &mut Command, input: &str, hint: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): {hint}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const INSTALL_HINT: &str = "`cargo xtask setup --test-tools` installs it";

/// Runs `promtool check metrics` (classic text format) and panics on a parse
/// error or a lint finding. Findings for `node_*` metrics are allowed: those
/// names copy node_exporter's exactly (CamelCase meminfo fields and all, which
/// node_exporter's own output is flagged for too), so dashboards keep working.
pub fn promtool_check(text: &str) {
    let out = pipe_through(
        Command::new("promtool").args(["check", "metrics"]),
        text,
        INSTALL_HINT,
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => {}
        // 3: lint findings, one per line, each starting with the metric name.
        Some(3) => {
            let ours: Vec<&str> = report.lines().filter(|l| !l.starts_with("node_")).collect();
            assert!(
                ours.is_empty(),
                "promtool check metrics found problems:\n{}",
                ours.join("\n")
            );
        }
        _ => panic!("promtool check metrics rejected the exposition:\n{report}"),
    }
}

/// Parses an OpenMetrics exposition with the Python client library's strict
/// parser (Debian's python3-prometheus-client); panics with its complaint.
pub fn openmetrics_check(text: &str) {
    const SCRIPT: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        n = sum(1 for _ in parse(sys.stdin.read()))\n\
        print(n, 'families')\n";
    // Debian's interpreter, where the Debian package installs the module.
    let out = pipe_through(
        Command::new("/usr/bin/python3").args(["-c", SCRIPT]),
        text,
        INSTALL_HINT,
    );
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected the exposition ({INSTALL_HINT}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

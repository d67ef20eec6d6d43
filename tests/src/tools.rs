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

/// bpftrace running a program, for counting the same events as the agent.
pub struct Bpftrace {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Bpftrace {
    /// Starts `program` and returns once its probes are attached.
    pub fn start(program: &str) -> Bpftrace {
        use std::io::BufRead;
        let mut child = Command::new("bpftrace")
            .args(["-e", program])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run bpftrace ({e}): {INSTALL_HINT}"));
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("Attaching"), "bpftrace said {line:?}");
        // "Attaching" is printed before the probes are attached.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Bpftrace { child, stdout }
    }

    /// Stops it (SIGINT, which prints its maps) and returns map `name`'s
    /// value as printed (`@name: 3`). bpftrace 0.17 sometimes misses a
    /// SIGINT on a busy machine and keeps running, so it is repeated.
    pub fn stop(self, name: &str) -> f64 {
        self.stop_maps(&[name])[0]
    }

    /// Like [`Bpftrace::stop`], for several scalar maps.
    pub fn stop_maps(mut self, names: &[&str]) -> Vec<f64> {
        use std::io::Read;
        let mut stdout = self.stdout;
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).map(|_| out)
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "bpftrace did not stop on SIGINT"
            );
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            for _ in 0..20 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if self.child.try_wait().unwrap().is_some() {
                    break;
                }
            }
        }
        let out = reader.join().unwrap().unwrap();
        names
            .iter()
            .map(|name| {
                let prefix = format!("@{name}: ");
                out.lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .unwrap_or_else(|| panic!("no @{name} in bpftrace's output: {out}"))
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    }
}

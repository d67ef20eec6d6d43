//! Harness for the end-to-end tests: start the real agent binary, scrape it
//! over HTTP like Prometheus, parse the exposition, run real peer tools.
//!
//! Tests that cannot run (not root, binary missing, tool missing) panic with
//! the reason: nothing here skips silently.

pub mod web;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary under test: $AGENT_BIN (set by `cargo xtask test`) or
/// target/release/agent.
pub fn agent_bin() -> PathBuf {
    let path = std::env::var_os("AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/agent")
        });
    assert!(
        path.exists(),
        "agent binary {} not found: run the tests with `cargo xtask test`, which builds it",
        path.display()
    );
    path
}

/// The workload helper binary of this crate (built beside the test binaries:
/// target/<profile>/workload, while tests run from target/<profile>/deps).
pub fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("workload");
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build -p tests --bins`",
        path.display()
    );
    path
}

/// The cgroup v2 hierarchy: /sys/fs/cgroup on v2 hosts, its `unified`
/// subdirectory on hybrid ones (this machine).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let root = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]));
    root.expect("no cgroup2 mount: container attribution needs cgroup v2 (the kernel's cgroup ids are v2 ids)")
}

/// Fails the test (never skips it) unless we can load eBPF programs.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "end-to-end tests load eBPF programs and must run as root (run `sudo cargo xtask test`)"
    );
}

/// A workload child (src/bin/workload.rs), stopped at "ready" until `go`.
pub struct Workload {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Workload {
    pub fn start(args: &[&str]) -> Workload {
        let mut child = Command::new(workload_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start workload");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut w = Workload { child, stdout };
        let first = w.line();
        assert_eq!(first, "ready", "workload said {first:?}");
        w
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Lets the workload run, waits until it has exited successfully, and
    /// returns what it printed before "done".
    pub fn go(mut self) -> Vec<String> {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut printed = Vec::new();
        loop {
            let line = self.line();
            if line == "done" {
                break;
            }
            assert!(!line.is_empty(), "workload ended without \"done\"");
            printed.push(line);
        }
        assert!(self.child.wait().unwrap().success());
        printed
    }

    /// The next line the workload printed.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

/// A free loopback port (bound and released; the agent binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running agent, stopped (SIGKILL) on drop if the test did not stop it.
pub struct Agent {
    child: Option<Child>,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// `agent run --listen 127.0.0.1:<free port> <args>`, waiting until /readyz is 200.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_under(&[], args)
    }

    /// Like [`Agent::start`], run through `prefix` (e.g. `setpriv --reuid=65534 ...`),
    /// which execs the agent with its own arguments appended.
    pub fn start_under(prefix: &[&str], args: &[&str]) -> Agent {
        require_root();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(agent_bin());
                cmd
            }
            None => Command::new(agent_bin()),
        };
        cmd.arg("run")
            .arg("--listen")
            .arg(addr.to_string())
            .args(args);
        let mut agent = Agent::spawn(cmd, addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "agent exited during startup ({status}); stderr:\n{}",
                    agent.stderr()
                );
            }
            if http_get(addr, "/readyz").is_ok_and(|r| r.status == 200) {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready within 30 s; stderr:\n{}",
                agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spawns any agent command line, capturing stderr for failure messages.
    /// RUST_LOG is `info` unless `cmd` sets or removes it.
    pub fn spawn(mut cmd: Command, addr: SocketAddr) -> Agent {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Agent {
            child: Some(child),
            addr,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// GET /metrics, checked for status and content type, parsed.
    pub fn scrape(&self) -> Exposition {
        // OpenMetrics must be asked for: the default is the classic text format.
        let r = http_get_accept(self.addr, "/metrics", "application/openmetrics-text")
            .unwrap_or_else(|e| panic!("scrape failed: {e}; agent stderr:\n{}", self.stderr()));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        Exposition::parse(&r.body)
    }

    /// Validates both renderings of /metrics with real parsers: the OpenMetrics
    /// text with the Python client's strict OpenMetrics parser, and the classic
    /// text format (asked for with `Accept: text/plain`) with `promtool check metrics`.
    pub fn check_exposition_with_peers(&self) {
        let om = http_get_accept(
            self.addr,
            "/metrics",
            "application/openmetrics-text; version=1.0.0",
        )
        .unwrap();
        assert!(
            om.body.ends_with("# EOF\n"),
            "OpenMetrics must end with # EOF"
        );
        openmetrics_check(&om.body);
        let text = http_get_accept(self.addr, "/metrics", "text/plain; version=0.0.4").unwrap();
        assert_eq!(
            text.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        promtool_check(&text.body);
    }

    /// Scrapes until `done` holds (or panics after `timeout`), returning that scrape.
    pub fn scrape_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Exposition) -> bool,
    ) -> Exposition {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.scrape();
            if done(&e) {
                return e;
            }
            if Instant::now() > deadline {
                return e;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal`, waits for exit, returns the status and how long it took.
    pub fn stop_with(&mut self, signal: i32) -> (ExitStatus, Duration) {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        (status, start.elapsed())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 GET (Connection: close), so the tests need no HTTP crate.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_get_accept(addr, path, "*/*")
}

/// GET with an Accept header (content negotiation).
pub fn http_get_accept(
    addr: SocketAddr,
    path: &str,
    accept: &str,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

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
    pub fn parse(text: &str) -> Exposition {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unparsable sample line: {l}")))
            .collect();
        Exposition {
            text: text.to_string(),
            samples,
        }
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
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}

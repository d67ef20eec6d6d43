//! A real Prometheus server (Debian's `prometheus` package) for the tests that
//! need one (the mixin's, the secure endpoint's): started on a loopback port
//! with its own storage directory, scraping the agent, evaluating rule files,
//! queried over its HTTP API.

use crate::{free_port, http_get};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root (rule files and dashboards live under deploy/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// How a test's Prometheus scrapes and evaluates.
pub struct Settings<'a> {
    /// The agent to scrape, as job `ebpf-agent` (the rules' job selector).
    pub target: SocketAddr,
    /// Scrape and rule evaluation interval, e.g. "1s".
    pub interval: &'a str,
    /// Rule files to load.
    pub rule_files: Vec<PathBuf>,
    /// The YAML list under `scrape_configs:` instead of the plain job for
    /// `target` (e.g. https with tls_config and basic_auth).
    pub scrape_configs: Option<String>,
    /// More command-line flags, e.g. `--web.enable-remote-write-receiver`.
    pub extra_args: Vec<String>,
    /// A web config file (`--web.config.file`) that serves TLS: then the
    /// server is ready when it answers at all (plain HTTP gets a 400), and
    /// the query helpers, which speak plain HTTP, do not work.
    pub tls_web_config: Option<PathBuf>,
}

impl Settings<'_> {
    /// Scrapes `target` as job `ebpf-agent` every second, with no rules.
    pub fn every_second(target: SocketAddr) -> Settings<'static> {
        Settings {
            target,
            interval: "1s",
            rule_files: Vec::new(),
            scrape_configs: None,
            extra_args: Vec::new(),
            tls_web_config: None,
        }
    }

    /// A receiver of remote writes that scrapes nothing.
    pub fn remote_write_receiver() -> Settings<'static> {
        Settings {
            scrape_configs: Some("  []\n".to_string()),
            extra_args: vec!["--web.enable-remote-write-receiver".to_string()],
            ..Settings::every_second(SocketAddr::from(([127, 0, 0, 1], 9)))
        }
    }
}

/// A running Prometheus, killed and its directory removed on drop.
pub struct Prometheus {
    child: Option<Child>,
    args: Vec<String>,
    tls: bool,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Prometheus {
    /// Writes prometheus.yml into a fresh directory, checks it with `promtool
    /// check config`, starts the server and waits until /-/ready answers 200.
    pub fn start(settings: &Settings) -> Prometheus {
        crate::require_root();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "ebpf-agent-prometheus-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules: String = settings
            .rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let scrape = settings.scrape_configs.clone().unwrap_or_else(|| {
            format!(
                "  - job_name: ebpf-agent\n    static_configs:\n      - targets: ['{}']\n",
                settings.target
            )
        });
        let config = format!(
            "global:\n  scrape_interval: {i}\n  scrape_timeout: {i}\n  evaluation_interval: {i}\n\
             rule_files:{rules}\nscrape_configs:\n{scrape}",
            i = settings.interval,
            rules = if rules.is_empty() {
                " []\n".to_string()
            } else {
                format!("\n{rules}")
            },
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        promtool(&["check", "config", config_path.to_str().unwrap()]);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
        ];
        args.extend(settings.extra_args.iter().cloned());
        if let Some(web) = &settings.tls_web_config {
            args.push(format!("--web.config.file={}", web.display()));
        }
        let mut p = Prometheus {
            child: None,
            tls: settings.tls_web_config.is_some(),
            args,
            addr,
            dir,
        };
        p.run();
        p
    }

    /// Starts the server (again, on the same storage) and waits until
    /// /-/ready answers 200.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "prometheus is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))
            .unwrap();
        let child = Command::new("prometheus")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start prometheus ({e}): `cargo xtask setup --test-tools` installs it"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("prometheus exited at start-up ({status}):\n{}", self.log());
            }
            let ready = http_get(self.addr, "/-/ready");
            if ready.is_ok_and(|r| r.status == 200 || (self.tls && r.status == 400)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM, as an operator would), keeping its storage
    /// for [`Prometheus::run`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// What Prometheus logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path and return `data`, or the API's `errorType: error` text.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let r = http_get(self.addr, path).map_err(|e| format!("GET {path}: {e}"))?;
        let body: Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("GET {path}: {} not JSON ({e}): {}", r.status, r.body))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// An instant query: the result vector (or the error Prometheus gave).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        match &data["result"] {
            Value::Array(v) => Ok(v.clone()),
            // Scalars and strings answer [time, "value"].
            other => Ok(vec![other.clone()]),
        }
    }

    /// The value of `expr`'s first sample, if there is one.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let series = self.query(expr).ok()?;
        series.first()?["value"][1].as_str()?.parse().ok()
    }

    /// The raw samples of `selector` over the last `secs` seconds, as
    /// (Unix time, value), oldest first, of its first series.
    pub fn samples(&self, selector: &str, secs: u64) -> Vec<(f64, f64)> {
        let series = self
            .query(&format!("{selector}[{secs}s]"))
            .unwrap_or_else(|e| panic!("{selector}: {e}"));
        let Some(values) = series.first().and_then(|s| s["values"].as_array()) else {
            return Vec::new();
        };
        values
            .iter()
            .map(|v| {
                let t = v[0].as_f64().unwrap();
                (t, v[1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    }

    /// Waits until `expr`'s value is `want`, up to `timeout`; the last value.
    pub fn wait_for_value(&self, expr: &str, want: f64, timeout: Duration) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.value(expr);
            if v == Some(want) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Prometheus' view of its targets (health, last error), for failure messages.
    pub fn targets(&self) -> String {
        self.api("/api/v1/targets")
            .map(|v| v.to_string())
            .unwrap_or_else(|e| e)
    }

    /// Waits until `expr` returns at least one series, panicking after `timeout`.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.query(expr) {
                Ok(v) if !v.is_empty() => return v,
                Ok(_) => {}
                Err(e) => panic!("query {expr} failed: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "{expr} returned nothing within {timeout:?}; targets: {:?}\nprometheus log:\n{}",
                self.api("/api/v1/targets"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every alert Prometheus holds now (pending or firing), from /api/v1/alerts.
    pub fn alerts(&self) -> Vec<Value> {
        let data = self.api("/api/v1/alerts").expect("/api/v1/alerts");
        data["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Every rule of every loaded group, from /api/v1/rules.
    pub fn rules(&self) -> Vec<Value> {
        let data = self.api("/api/v1/rules").expect("/api/v1/rules");
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs promtool with `args` from the repository root; panics with its output
/// unless it succeeds. Returns its stdout.
pub fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): `cargo xtask setup --test-tools` installs it")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Evaluates a jsonnet expression from the repository root (`jsonnet -S -e`),
/// returning its string output; panics with jsonnet's complaint.
pub fn jsonnet(expr: &str) -> String {
    let out = Command::new("jsonnet")
        .args(["-S", "-e", expr])
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run jsonnet ({e}): `cargo xtask setup --test-tools` installs it")
        });
    assert!(
        out.status.success(),
        "jsonnet -S -e {expr:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Reads a file under the repository root.
pub fn read_repo_file(path: impl AsRef<Path>) -> String {
    let full = repo_root().join(path.as_ref());
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[cfg(test)]
mod tests {
    use super::url_encode;

    #[test]
    fn encodes_promql() {
        assert_eq!(
            url_encode(r#"rate(x{a=~"b|c"}[1m]) > 0.5"#),
            "rate%28x%7Ba%3D~%22b%7Cc%22%7D%5B1m%5D%29%20%3E%200.5"
        );
    }
}

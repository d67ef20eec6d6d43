//! The agent under test: found, started, waited for, scraped, stopped.

use crate::exposition::Exposition;
use crate::http::{free_port, http_get, http_get_accept};
use crate::tools::{openmetrics_check, promtool_check};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary under test: $AGENT_BIN (set by `cargo xtask test`) or
/// target/release/agent.
pub fn agent_bin() -> PathBuf {
    let path = std::env::var_os("AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(built_agent);
    assert!(
        path.exists(),
        "agent binary {} not found: run the tests with `cargo xtask test`, which builds it",
        path.display()
    );
    path
}

/// Where `cargo build --release -p agent` puts the binary: under
/// $CARGO_TARGET_DIR (relative to the workspace root) or target/.
pub fn built_agent() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root.join(t))
        .unwrap_or_else(|| root.join("target"));
    target.join("release/agent")
}

/// Fails the test (never skips it) unless we can load eBPF programs.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "end-to-end tests load eBPF programs and must run as root (run `sudo cargo xtask test`)"
    );
}

/// Polls `GET /readyz` on `addr` until it answers 200 (probes attached),
/// `alive` reports the process gone (its error is returned), or `timeout`.
pub fn wait_ready(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        alive()?;
        if http_get(addr, "/readyz").is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ready within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        // Tests scrape after their workload exits: unless one asks for
        // another behaviour, a --pid agent keeps serving its target's numbers.
        if args.contains(&"--pid") && !args.contains(&"--on-target-exit") {
            cmd.args(["--on-target-exit", "serve"]);
        }
        let mut agent = Agent::spawn(cmd, addr);
        let child = agent.child.as_mut().unwrap();
        let ready = wait_ready(addr, Duration::from_secs(30), || match child.try_wait() {
            Ok(Some(status)) => Err(format!("agent exited during startup ({status})")),
            _ => Ok(()),
        });
        if let Err(e) = ready {
            panic!("{e}; stderr:\n{}", agent.stderr());
        }
        agent
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

    /// Waits up to `timeout` for the agent to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
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

//! Configuration end to end (agent/src/config/, agent/src/reload.rs): the
//! config file, EBPF_AGENT_* variables and flags in their precedence,
//! `--check-config`, errors, SIGHUP reloads and JSON logs, against the real
//! binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tests::{Agent, Exposition, Workload, agent_bin, free_port, http_get, require_root};

/// A fresh file in this test's own directory.
fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agent-e2e-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// `agent run ARGS` with extra environment (RUST_LOG left unset), not
/// waited for.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.arg("run").args(args).env_remove("RUST_LOG");
    isolate(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Spawns the agent and waits until `addr` answers /readyz.
fn start(cmd: Command, addr: SocketAddr) -> Agent {
    require_root();
    let agent = Agent::spawn(cmd, addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(addr, "/readyz").is_ok_and(|r| r.status == 200) {
        assert!(
            Instant::now() < deadline,
            "agent not ready on {addr} within 30 s; stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// Drops EBPF_AGENT_* variables this test process inherited: each test
/// sets exactly the ones it means.
fn isolate(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("EBPF_AGENT_") {
            cmd.env_remove(k);
        }
    }
}

/// Runs the agent to completion (10 s limit).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("10")
        .arg(agent_bin())
        .arg("run")
        .args(args)
        .env_remove("RUST_LOG");
    isolate(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The node collectors that reported, sorted.
fn collectors(e: &Exposition) -> Vec<String> {
    let mut names: Vec<String> = e
        .matching("ebpf_agent_scrape_collector_success", &[])
        .map(|s| s.labels["collector"].clone())
        .collect();
    names.sort();
    names
}

fn reloads(e: &Exposition, result: &str) -> f64 {
    e.value("ebpf_agent_config_reloads_total", &[("result", result)])
}

fn sighup(agent: &Agent) {
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) }, 0);
}

/// Waits until stderr contains `text`, returning all of stderr.
fn wait_for_log(agent: &Agent, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stderr = agent.stderr();
        if stderr.contains(text) {
            return stderr;
        }
        assert!(
            Instant::now() < deadline,
            "no {text:?} in stderr within 10 s:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_file_sets_listen_and_collectors() {
    let addr = local_addr();
    let config = write(
        "file.yaml",
        &format!("listen: {addr}\ncollectors: [loadavg, meminfo]\nprobes: [syscalls]\n"),
    );
    let agent = start(command(&["--config", config.to_str().unwrap()], &[]), addr);
    let e = agent.scrape();
    assert_eq!(collectors(&e), ["loadavg", "meminfo"]);
    assert!(e.get("node_load1", &[]).is_some());
    assert!(e.matching("node_cpu_seconds_total", &[]).next().is_none());
    let probes: Vec<&str> = e
        .matching("ebpf_agent_probe_attached", &[])
        .map(|s| s.labels["probe"].as_str())
        .collect();
    assert_eq!(probes, ["syscalls"]);
    // Text logs on a pipe: no colour codes.
    assert!(!agent.stderr().contains('\u{1b}'), "{}", agent.stderr());
}

#[test]
fn environment_beats_file_and_flags_beat_environment() {
    let (file_addr, env_addr, flag_addr) = (local_addr(), local_addr(), local_addr());
    let config = write(
        "precedence.toml",
        &format!("listen = \"{file_addr}\"\ncollectors = [\"cpu\"]\nprobes = \"none\"\n"),
    );
    let config = config.to_str().unwrap();
    let env_listen = env_addr.to_string();
    let env = [
        ("EBPF_AGENT_CONFIG", config),
        ("EBPF_AGENT_LISTEN", env_listen.as_str()),
        ("EBPF_AGENT_COLLECTORS", "loadavg"),
    ];
    let agent = start(command(&[], &env), env_addr);
    assert_eq!(collectors(&agent.scrape()), ["loadavg"]);
    assert!(
        http_get(file_addr, "/healthz").is_err(),
        "file's listen must lose"
    );
    drop(agent);
    let flag_listen = flag_addr.to_string();
    let cmd = command(&["--listen", &flag_listen, "--collectors", "vmstat"], &env);
    let agent = start(cmd, flag_addr);
    assert_eq!(collectors(&agent.scrape()), ["vmstat"]);
    assert!(
        http_get(env_addr, "/healthz").is_err(),
        "env's listen must lose"
    );
}

#[test]
fn check_config_prints_every_setting_and_its_source() {
    let config = write(
        "check.yaml",
        "listen: 127.0.0.1:9\nhdr_precision: 3\nno-collector: [cpu, process]\n",
    );
    let config = config.to_str().unwrap();
    let env = [("EBPF_AGENT_HDR_PRECISION", "4")];
    let out = run(&["--config", config, "--check-config", "--strict"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("agent: configuration is valid ({config})")
    );
    let row = |key: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"));
        line.split_whitespace().map(String::from).collect()
    };
    assert_eq!(row("KEY"), ["KEY", "SOURCE", "VALUE"]);
    assert_eq!(row("listen"), ["listen", "file", "127.0.0.1:9"]);
    assert_eq!(row("hdr-precision"), ["hdr-precision", "env", "4"]);
    assert_eq!(row("strict"), ["strict", "flag", "true"]);
    assert_eq!(row("no-collector"), ["no-collector", "file", "cpu,process"]);
    assert_eq!(
        row("probes"),
        ["probes", "default", "syscalls,tcp,sched,oom,process,block"]
    );
    assert_eq!(row("pid"), ["pid", "default", "(unset)"]);
    assert_eq!(row("config"), ["config", "flag", config]);
    // One row per `agent run` flag (all but --help) and the header.
    let help = Command::new(agent_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let flags = String::from_utf8_lossy(&help.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("--"))
        .count();
    assert_eq!(stdout.lines().count(), flags + 1, "{stdout}");
}

/// The one-line error and exit code of `agent run ARGS` that must fail.
fn error_of(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_config_is_exit_code_2_with_the_key_and_value() {
    let bad = write("bad.yaml", "ring-buffer-bytes: 5000\n");
    let bad = bad.to_str().unwrap();
    let want = format!(
        "agent: error: config file {bad}: key ring-buffer-bytes: invalid value 5000: 5000 is not a power of two from 32768 (32 KiB) to 268435456 (256 MiB) (the kernel's ring buffers are power-of-two pages, and each is mapped whole into the agent); try 32768"
    );
    assert_eq!(error_of(&["--config", bad], &[]), (2, want.clone()));
    // --check-config reports the same, and so does a config from the environment.
    assert_eq!(
        error_of(&["--config", bad, "--check-config"], &[]),
        (2, want.clone())
    );
    assert_eq!(error_of(&[], &[("EBPF_AGENT_CONFIG", bad)]), (2, want));

    let typo = write("typo.toml", "listn = \"127.0.0.1:1\"\n");
    let typo = typo.to_str().unwrap();
    assert_eq!(
        error_of(&["--config", typo], &[]),
        (
            2,
            format!(
                "agent: error: config file {typo}: unknown key listn: it is not an `agent run` flag; did you mean listen? (`agent run --help` lists them)"
            )
        )
    );
    let syntax = write("syntax.yaml", "listen: 127.0.0.1:1\nprobes: [tcp\n");
    let (code, stderr) = error_of(&["--config", syntax.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid YAML") && stderr.contains("line 3 column 1"),
        "{stderr}"
    );
    let wrong = write("type.yaml", "strict: yes please\n");
    let (code, stderr) = error_of(&["--config", wrong.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.ends_with("key strict: expected true or false (it is a switch), got \"yes please\""),
        "{stderr}"
    );
    assert_eq!(
        error_of(&[], &[("EBPF_AGENT_FLUSH_INTERVAL_MS", "5")]),
        (
            2,
            "agent: error: environment variable EBPF_AGENT_FLUSH_INTERVAL_MS: invalid value 5: 5 is not in 10..=10000".to_string()
        )
    );
}

#[test]
fn sighup_turns_a_collector_off_and_keeps_ebpf_counts() {
    let addr = local_addr();
    let config = write(
        "reload.yaml",
        &format!("listen: {addr}\nprobes: [syscalls]\n"),
    );
    let config_str = config.to_str().unwrap();
    let agent = start(command(&["--config", config_str], &[]), addr);
    const EBADF: &[(&str, &str)] = &[("syscall", "fchdir"), ("errno", "EBADF")];
    let errors = |e: &Exposition| e.value("ebpf_agent_syscall_errors_total", EBADF);
    let calls = |e: &Exposition| e.value("ebpf_agent_syscalls_total", &[("syscall", "fchdir")]);
    // fchdir(-1) is called by nothing else, so its count is exact.
    let e = agent.scrape();
    let (base, base_calls) = (errors(&e), calls(&e));
    Workload::start(&["syscalls", "0", "3000"]).go();
    let e = agent.scrape_until(Duration::from_secs(10), |e| errors(e) >= base + 3000.0);
    assert_eq!(errors(&e), base + 3000.0);
    assert_eq!(calls(&e), base_calls + 3000.0);
    assert!(
        e.get("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "idle")])
            .is_some()
    );
    assert_eq!(reloads(&e, "success"), 0.0);
    assert_eq!(
        e.get("ebpf_agent_config_last_reload_successful", &[]),
        Some(1.0)
    );

    let moved = local_addr();
    std::fs::write(
        &config,
        format!("listen: {moved}\nprobes: [syscalls]\nno-collector: [cpu]\nlog-level: info,agent=debug\n"),
    )
    .unwrap();
    sighup(&agent);
    agent.scrape_until(Duration::from_secs(10), |e| reloads(e, "success") == 1.0);
    // A scrape that began before the reload can show the old collectors next
    // to the new count (registries are read one after another): scrape anew.
    let e = agent.scrape();
    assert_eq!((reloads(&e, "success"), reloads(&e, "failure")), (1.0, 0.0));
    assert_eq!(
        e.get("ebpf_agent_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert!(e.matching("node_cpu_seconds_total", &[]).next().is_none());
    assert!(!collectors(&e).contains(&"cpu".to_string()));
    assert!(e.get("node_load1", &[]).is_some());
    let stderr = wait_for_log(&agent, "configuration reloaded");
    assert!(
        stderr.contains("no-collector changed from (unset) to cpu"),
        "{stderr}"
    );
    assert!(stderr.contains("collector cpu stopped"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "listen changed from {addr} to {moved}: takes effect after a restart"
        )),
        "{stderr}"
    );
    assert!(
        http_get(addr, "/healthz").is_ok(),
        "still on the old address"
    );
    // The eBPF aggregate was not rebuilt: the count goes on from where it was.
    Workload::start(&["syscalls", "0", "500"]).go();
    let e = agent.scrape_until(Duration::from_secs(10), |e| errors(e) >= base + 3500.0);
    assert_eq!(errors(&e), base + 3500.0);
    assert_eq!(calls(&e), base_calls + 3500.0);
    // log-level applied live: the shutdown's debug line now shows.
    let mut agent = agent;
    agent.stop_with(libc::SIGTERM);
    assert!(
        agent.stderr().contains("probes detached"),
        "{}",
        agent.stderr()
    );
}

#[test]
fn a_bad_reload_keeps_the_running_config_and_counts_a_failure() {
    let addr = local_addr();
    let good = format!("listen: {addr}\nprobes: none\ncollectors: [loadavg]\n");
    let config = write("bad-reload.yaml", &good);
    let agent = start(command(&["--config", config.to_str().unwrap()], &[]), addr);
    std::fs::write(
        &config,
        "collectors: [loadavg, cpu]\nring-buffer-bytes: 5000\n",
    )
    .unwrap();
    sighup(&agent);
    let e = agent.scrape_until(Duration::from_secs(10), |e| reloads(e, "failure") == 1.0);
    assert_eq!((reloads(&e, "success"), reloads(&e, "failure")), (0.0, 1.0));
    assert_eq!(
        e.get("ebpf_agent_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(collectors(&e), ["loadavg"], "the old collectors still run");
    let stderr = wait_for_log(&agent, "config reload failed");
    let want = format!(
        "config reload failed, keeping the running configuration: config file {}: key ring-buffer-bytes: invalid value 5000",
        config.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("config reload failed")),
        "{stderr}"
    );
    let before = e
        .get(
            "ebpf_agent_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .unwrap();
    // Fixed: the next SIGHUP applies it.
    let fixed = format!("listen: {addr}\nprobes: none\ncollectors: [loadavg, cpu]\n");
    std::fs::write(&config, fixed).unwrap();
    sighup(&agent);
    agent.scrape_until(Duration::from_secs(10), |e| reloads(e, "success") == 1.0);
    let e = agent.scrape(); // begun after the reload (see above)
    assert_eq!((reloads(&e, "success"), reloads(&e, "failure")), (1.0, 1.0));
    assert_eq!(
        e.get("ebpf_agent_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(collectors(&e), ["cpu", "loadavg"]);
    let after = e
        .get(
            "ebpf_agent_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .unwrap();
    assert!(after > before, "{before} -> {after}");
    // The reload metrics pass promtool and the strict OpenMetrics parser.
    agent.check_exposition_with_peers();
}

#[test]
fn json_logs_are_one_object_per_line() {
    let addr = local_addr();
    let listen = addr.to_string();
    let config = write("json.yaml", "log-format: json\n");
    let cmd = command(
        &["--listen", &listen, "--config", config.to_str().unwrap()],
        &[],
    );
    let mut agent = start(cmd, addr);
    sighup(&agent);
    wait_for_log(&agent, "configuration reloaded");
    let (status, _) = agent.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    let stderr = agent.stderr();
    let mut messages = Vec::new();
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nstderr:\n{stderr}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(
            ["INFO", "WARN"].contains(&v["level"].as_str().unwrap()),
            "{line}"
        );
        messages.push(v["message"].as_str().unwrap().to_string());
    }
    assert!(
        messages.contains(&format!(
            "tracing all processes; metrics on http://{addr}/metrics"
        )),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("SIGHUP: reloading the configuration"))
    );
    assert!(
        messages.contains(&"stopping: detaching probes".to_string()),
        "{messages:?}"
    );
}

/// Budgets whose worst case passes --max-series are refused at start,
/// naming what to lower (docs/metrics.md, "How many series"), and a reload
/// that would pass it is rejected, keeping the running budgets.
#[test]
fn budgets_past_max_series_are_refused_at_start_and_on_reload() {
    let (code, stderr) = error_of(&["--max-series", "10000", "--container-labels", "off"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "these settings allow up to {NODE_WORST} series ({NODE_PARTS}), more than --max-series 10000; lower --container-budget"
        )),
        "{stderr}"
    );

    let addr = local_addr();
    let config = write(
        "series.yaml",
        &format!("listen: {addr}\ncontainer-labels: off\nmax-series: 100000\n"),
    );
    let agent = start(command(&["--config", config.to_str().unwrap()], &[]), addr);
    std::fs::write(
        &config,
        format!("listen: {addr}\ncontainer-labels: off\nmax-series: 100000\nunknown-syscall-budget: 1000\n"),
    )
    .unwrap();
    sighup(&agent);
    let e = agent.scrape_until(Duration::from_secs(10), |e| reloads(e, "failure") == 1.0);
    assert_eq!(
        e.get("ebpf_agent_config_last_reload_successful", &[]),
        Some(0.0)
    );
    let stderr = wait_for_log(&agent, "config reload failed");
    assert!(stderr.contains("more than --max-series 100000"), "{stderr}");
}

/// The probes' worst case in node mode without container labels, with every
/// default (docs/metrics.md has the arithmetic).
const NODE_WORST: u64 = 90_463;
const NODE_PARTS: &str = "syscalls 19180, tcp 496, sched 26, oom 66, process 38, block 70657";

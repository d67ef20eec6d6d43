//! The mixin: deploy/prometheus/ rules and deploy/grafana/ dashboard, checked
//! by promtool and run by a real Prometheus (Debian's) scraping the real agent.
//! - promtool checks the rules and runs their unit tests (each alert and its near miss);
//! - every dashboard query, with its variables filled in, runs on Prometheus and
//!   returns series, and every recording rule evaluates;
//! - a burst of failing syscalls makes EbpfAgentSyscallErrorRatioHigh fire, and
//!   refused connects EbpfAgentTcpConnectFailuresHigh; the time from the burst
//!   to `firing` is printed.

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::prometheus::{
    Prometheus, Settings, jsonnet, promtool, read_repo_file, repo_root, url_encode,
};
use tests::{Agent, Workload};

const RULES: &str = "deploy/prometheus/ebpf-agent.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/tests/ebpf-agent.rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/ebpf-agent.json";

const MIXIN: &str = "deploy/prometheus/mixin";

/// The rule file the mixin renders with `config` (a jsonnet object) as its knobs.
fn render(config: &str) -> String {
    jsonnet(&format!("(import '{MIXIN}/render.libsonnet')({config})"))
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool(&["check", "rules", RULES]);
    assert!(check.contains("SUCCESS: 19 rules found"), "{check}");
    let test = promtool(&["test", "rules", RULE_TESTS]);
    assert!(test.contains("SUCCESS"), "{test}");
}

#[test]
fn the_rule_file_is_the_rendered_mixin_and_its_knobs_work() {
    assert!(
        render("{}") == read_repo_file(RULES),
        "{RULES} is not what {MIXIN} renders: regenerate it with\n  \
         jsonnet -S -e \"(import '{MIXIN}/render.libsonnet')({{}})\" > {RULES}"
    );
    let files: Vec<String> = std::fs::read_dir(repo_root().join(MIXIN))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut fmt = vec!["--test"];
    fmt.extend(files.iter().map(String::as_str));
    let out = std::process::Command::new("jsonnetfmt")
        .args(&fmt)
        .output()
        .expect("jsonnetfmt (package jsonnet)");
    assert!(out.status.success(), "jsonnetfmt -i would change {files:?}");
    // A tuned rendering: another job, another threshold, another for:.
    let tuned =
        render("{selector: 'job=\"node-agent\"', runqueueP99Seconds: 0.1, syscallErrorFor: '30m'}");
    // Every rule's selector moved: 3 one-line expressions (quotes escaped) and 16
    // selectors in block expressions.
    assert!(!tuned.contains(r#"job="ebpf-agent""#) && !tuned.contains(r#"job=\"ebpf-agent"#));
    assert_eq!(tuned.matches(r#"job=\"node-agent\""#).count(), 3);
    assert_eq!(tuned.matches(r#"job="node-agent""#).count(), 16);
    assert!(tuned.contains("histogram_quantile{quantile=\"0.99\"} > 0.1\n"));
    assert!(tuned.contains("for: \"30m\""));
    let path = std::env::temp_dir().join(format!("ebpf-agent-tuned-{}.yml", std::process::id()));
    std::fs::write(&path, tuned).unwrap();
    let _cleanup = RemoveOnDrop(path.clone());
    promtool(&["check", "rules", path.to_str().unwrap()]);
    // The mixin's dashboard is the one in deploy/grafana/.
    let dashboard = jsonnet(&format!(
        "(import '{MIXIN}/mixin.libsonnet').grafanaDashboards['ebpf-agent.json'].uid"
    ));
    assert_eq!(dashboard.trim(), "ebpf-agent");
}

/// A dashboard query with Grafana's variables filled in for one agent.
fn substitute(expr: &str, instance: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", "ebpf-agent")
        .replace("$node", instance)
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
}

/// `label_values(SELECTOR, LABEL)` of a Grafana query variable.
fn label_values(query: &str) -> (&str, &str) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(...)"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    (selector.trim(), label.trim())
}

#[test]
fn every_dashboard_query_and_recording_rule_runs_on_a_real_prometheus() {
    // BPF statistics on, so the kernel-cost panels have series.
    let agent = Agent::start(&["--bpf-stats", "on"]);
    let instance = agent.addr.to_string();
    let prometheus = Prometheus::start(&Settings {
        target: agent.addr,
        interval: "1s",
        rule_files: vec![repo_root().join(RULES)],
        ..Settings::every_second(agent.addr)
    });
    // Two scrapes give every rate() a value.
    prometheus.wait_for(
        r#"rate(ebpf_agent_syscalls_total{job="ebpf-agent"}[1m]) > 0"#,
        Duration::from_secs(30),
    );

    let dashboard: Value = serde_json::from_str(&read_repo_file(DASHBOARD)).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = variables
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["datasource", "job", "node", "namespace", "pod"]);
    assert_eq!(variables[0]["type"], "datasource");
    assert_eq!(variables[0]["query"], "prometheus");
    let mut failures = Vec::new();
    for v in &variables[1..] {
        let (selector, label) = label_values(v["query"]["query"].as_str().unwrap());
        let path = format!(
            "/api/v1/label/{label}/values?match[]={}",
            url_encode(&substitute(selector, &instance))
        );
        match prometheus.api(&path) {
            Ok(values) => {
                let values: Vec<&str> = values
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let want = match label {
                    "job" => Some("ebpf-agent"),
                    "instance" => Some(instance.as_str()),
                    // Container labels are off on this (non-Kubernetes) machine: no values,
                    // and the variables' "All" (.*) matches the empty label.
                    _ => None,
                };
                if want.is_some_and(|w| !values.contains(&w)) {
                    failures.push(format!("variable {}: {values:?} lacks {want:?}", v["name"]));
                }
            }
            Err(e) => failures.push(format!("variable {}: {e}", v["name"])),
        }
    }

    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title}"
            );
            let expr = substitute(target["expr"].as_str().unwrap(), &instance);
            queries += 1;
            match prometheus.query(&expr) {
                Ok(series) if series.is_empty() => {
                    failures.push(format!("{title}: no series from {expr}"))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{title}: {expr}: {e}")),
            }
        }
    }
    assert!(queries >= 30, "only {queries} dashboard queries");

    // Every rule evaluates without error, and every recording rule records series
    // once an evaluation has seen two scrapes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (rules, recorded, missing) = loop {
        let rules = prometheus.rules();
        let recorded: Vec<String> = rules
            .iter()
            .filter(|r| r["type"] == "recording")
            .map(|r| format!("{}{{instance=\"{instance}\"}}", r["name"].as_str().unwrap()))
            .collect();
        let missing: Vec<String> = recorded
            .iter()
            .filter(|q| prometheus.query(q).map_or(true, |s| s.is_empty()))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (rules, recorded.len(), missing);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rules.len(), 19, "rules loaded: {rules:#?}");
    for rule in &rules {
        if rule["health"] != "ok" {
            failures.push(format!(
                "rule {}: health {} {}",
                rule["name"], rule["health"], rule["lastError"]
            ));
        }
    }
    failures.extend(
        missing
            .iter()
            .map(|q| format!("recording rule: no series from {q}")),
    );
    assert_eq!(recorded, 8);
    assert!(
        failures.is_empty(),
        "{} of {queries} dashboard queries, 4 variables and {} rules failed:\n{}",
        failures.len(),
        rules.len(),
        failures.join("\n")
    );
    eprintln!(
        "{queries} dashboard queries, 4 variables, {} rules ({recorded} recording) ran on Prometheus",
        rules.len()
    );
}

/// The rules with every `for:` knob of the mixin set to `for_`: the test-only
/// override that lets an alert fire within seconds (docs/mixin.md, "Testing").
fn rules_with_short_for(for_: &str) -> String {
    let rules = render(&format!(
        "{{ [k]: '{for_}' for k in std.objectFields((import '{MIXIN}/config.libsonnet')._config) \
         if std.endsWith(k, 'For') }}"
    ));
    let short = format!("for: \"{for_}\"");
    assert_eq!(
        rules.matches(&short).count(),
        10,
        "every alert has a short for:"
    );
    rules
}

/// The test-only `for:` of the real-alert tests.
const SHORT_FOR: &str = "5s";

/// What one real-alert run saw.
struct Fired {
    /// The one alert firing.
    alert: Value,
    /// From letting the workload go to the alert's `firing`.
    elapsed: Duration,
    /// What the workload printed.
    printed: Vec<String>,
}

/// Runs `workload` traced by its own agent (`--pid`), scraped every second by a
/// Prometheus with the rules (every `for:` shortened to SHORT_FOR). Requires no
/// alert before the workload goes, then exactly `alertname` firing for that
/// agent and nothing else pending or firing.
fn burst_fires(workload: &[&str], alertname: &str) -> Fired {
    let workload = Workload::start(workload);
    let agent = Agent::start(&["--pid", &workload.pid()]);
    let rules = std::env::temp_dir().join(format!(
        "ebpf-agent-mixin-{alertname}-{}.yml",
        std::process::id()
    ));
    std::fs::write(&rules, rules_with_short_for(SHORT_FOR)).unwrap();
    let _cleanup = RemoveOnDrop(rules.clone());
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    let prometheus = Prometheus::start(&Settings {
        target: agent.addr,
        interval: "1s",
        rule_files: vec![rules],
        ..Settings::every_second(agent.addr)
    });
    // A baseline of a few scrapes, so counters that exist before the burst
    // (the connect outcomes) have samples from before it.
    prometheus.wait_for(
        r#"count_over_time(up{job="ebpf-agent"}[1m]) >= 3"#,
        Duration::from_secs(30),
    );
    let quiet = prometheus.alerts();
    assert!(quiet.is_empty(), "alerts before the burst: {quiet:#?}");

    let burst = Instant::now();
    let printed = workload.go();
    let firing = loop {
        let firing: Vec<Value> = prometheus
            .alerts()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .collect();
        if !firing.is_empty() {
            break firing;
        }
        assert!(
            burst.elapsed() < Duration::from_secs(60),
            "no alert fired within 60 s of the burst; alerts: {:#?}",
            prometheus.alerts()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = burst.elapsed();
    assert_eq!(firing.len(), 1, "only {alertname} fires: {firing:#?}");
    let alert = firing.into_iter().next().unwrap();
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], alertname);
    assert_eq!(labels["instance"], agent.addr.to_string());
    assert_eq!(labels["job"], "ebpf-agent");
    assert_eq!(labels["severity"], "warning");
    let all = prometheus.alerts();
    assert_eq!(all.len(), 1, "no other alert is even pending: {all:#?}");
    // Bounded by the scrape that first sees the burst (1 s), the one that gives
    // rate() its second sample (1 s), an evaluation (1 s), for: 5 s and the next
    // evaluation (1 s); the rest is slack for a loaded machine.
    assert!(
        elapsed < Duration::from_secs(20),
        "{alertname} firing only after {elapsed:?}"
    );
    Fired {
        alert,
        elapsed,
        printed,
    }
}

fn value(alert: &Value) -> f64 {
    alert["value"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_burst_of_failing_syscalls_fires_the_error_ratio_alert() {
    const BURST_MS: u64 = 3000;
    let fired = burst_fires(
        &["fail", &BURST_MS.to_string()],
        "EbpfAgentSyscallErrorRatioHigh",
    );
    let failed = fired.printed[0].strip_prefix("failed=").unwrap();
    eprintln!(
        "{failed} failing fchdir() calls over {BURST_MS} ms: EbpfAgentSyscallErrorRatioHigh firing \
         {:.1} s after the burst began (scrape and evaluation every 1 s, for: {SHORT_FOR})",
        fired.elapsed.as_secs_f64()
    );
    // Every syscall of the workload but a handful (its read of "go", its writes) failed.
    let ratio = value(&fired.alert);
    assert!(ratio > 0.99 && ratio <= 1.0, "error ratio {ratio}");
}

#[test]
fn a_burst_of_refused_connects_fires_the_connect_failure_alert() {
    // 300 refused connects at once: over the rule's 5m window that is 1/s, above
    // its 0.5/s floor, and all of the workload's connects fail (ratio 1 > 0.1).
    const CONNECTS: u32 = 300;
    let closed = tests::free_port();
    let fired = burst_fires(
        &[
            "connect",
            "0",
            &format!("127.0.0.1:{closed}"),
            &CONNECTS.to_string(),
        ],
        "EbpfAgentTcpConnectFailuresHigh",
    );
    assert_eq!(fired.printed, [format!("ECONNREFUSED={CONNECTS}")]);
    eprintln!(
        "{CONNECTS} refused connects on loopback: EbpfAgentTcpConnectFailuresHigh firing {:.1} s \
         after them (scrape and evaluation every 1 s, for: {SHORT_FOR})",
        fired.elapsed.as_secs_f64()
    );
    assert_eq!(value(&fired.alert), 1.0, "every connect failed");
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

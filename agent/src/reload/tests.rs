use super::*;
use crate::collectors::CollectorName;
use crate::config::{self, Env, Origin, key_names};
use std::ffi::OsString;
use std::path::PathBuf;

fn load(flags: &[&str]) -> Loaded {
    let argv = flags.iter().map(OsString::from).collect();
    config::load(argv, Env::default()).unwrap()
}

/// A value `key` accepts that differs from its default, found by trying a
/// few and the flag's possible values: works for flags added later too.
fn other_value(key: &str) -> Option<RunArgs> {
    let default = format!("{:?}", load(&[]).args);
    let empty = file("empty.yaml", "");
    let mut candidates: Vec<String> = [
        "",
        "1",
        "3",
        "4096",
        "32768",
        "127.0.0.1:1",
        "cpu",
        "debug",
        "^x$",
        "pod",
        "bpf",
        "a=b",
        "A: b",
    ]
    .map(String::from)
    .into();
    candidates.push(empty.to_str().unwrap().to_string());
    let cmd = config::run_command();
    let arg = cmd.get_arguments().find(|a| a.get_long() == Some(key))?;
    candidates.extend(
        arg.get_possible_values()
            .iter()
            .map(|p| p.get_name().to_string()),
    );
    candidates.iter().find_map(|v| {
        let flag = match v.as_str() {
            "" => format!("--{key}"),
            v => format!("--{key}={v}"),
        };
        let argv = vec![OsString::from(flag)];
        let args = config::load(argv, Env::default()).ok()?.args;
        (format!("{args:?}") != default).then_some(args)
    })
}

#[test]
fn exactly_the_live_keys_are_copied_on_reload() {
    for key in LIVE.iter().map(|k| k.key) {
        assert!(key_names().iter().any(|k| k == key), "{key} is no flag");
    }
    let default = load(&[]).args;
    for key in key_names() {
        let Some(new) = other_value(&key) else {
            panic!("no test value for {key}: add one to `other_value`")
        };
        let mut running = default.clone();
        take_live(&mut running, &new);
        let want = if is_live(&key) { &new } else { &default };
        assert_eq!(format!("{running:?}"), format!("{want:?}"), "{key}");
    }
}

fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agent-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn live(args: &RunArgs) -> (Registry, Live) {
    let (r, node) = crate::collectors::live::registry(&args.collectors, None).unwrap();
    let live = Live {
        node,
        probes: Vec::new(),
        label_sets: 0,
    };
    (r, live)
}

fn render(r: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, r).unwrap();
    text
}

#[test]
fn a_reload_applies_live_keys_and_keeps_the_rest() {
    let path = file("live.yaml", "listen: 127.0.0.1:1\n");
    let config = path.to_str().unwrap();
    let mut running = load(&["--config", config]);
    let (registry, mut live) = live(&running.args);
    assert!(render(&registry).contains("node_cpu_seconds_total"));
    std::fs::write(
        &path,
        "listen: 127.0.0.1:2\nno-collector: [cpu]\nunknown-syscall-budget: 5\n",
    )
    .unwrap();
    let new = running.reload().unwrap();
    apply(&mut running, new, &mut live).unwrap();
    assert_eq!(
        running.args.collectors.no_collector,
        [CollectorName::named("cpu")]
    );
    assert_eq!(running.args.unknown_syscall_budget, 5);
    assert_eq!(
        running.args.listen.to_string(),
        "127.0.0.1:1",
        "restart-only"
    );
    let listen = running.settings.get("listen").unwrap();
    assert_eq!(listen.value.as_deref(), Some("127.0.0.1:1"));
    let budget = running.settings.get("unknown-syscall-budget").unwrap();
    assert_eq!(
        (budget.value.as_deref(), budget.origin),
        (Some("5"), Origin::File)
    );
    let text = render(&registry);
    assert!(!text.contains("node_cpu_seconds_total") && text.contains("node_load1"));
}

#[test]
fn a_reload_that_cannot_apply_changes_nothing() {
    let path = file("fails.yaml", "collectors: none\n");
    let config = path.to_str().unwrap();
    let mut running = load(&["--config", config, "--procfs", "/nonexistent"]);
    let (_, mut live) = live(&running.args);
    std::fs::write(&path, "collectors: all\nunknown-syscall-budget: 5\n").unwrap();
    let before = format!("{running:?}");
    let new = running.reload().unwrap();
    let e = apply(&mut running, new, &mut live).unwrap_err();
    assert!(e.contains("--procfs"), "{e}");
    assert_eq!(format!("{running:?}"), before);
}

#[test]
fn metrics_count_reloads_like_prometheus() {
    let m = Metrics::new();
    let text = render(&m.registry());
    assert!(
        text.contains("ebpf_agent_config_reloads_total{result=\"success\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("ebpf_agent_config_last_reload_successful 1\n"),
        "{text}"
    );
    m.record(true);
    m.record(false);
    let text = render(&m.registry());
    assert!(
        text.contains("ebpf_agent_config_reloads_total{result=\"success\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ebpf_agent_config_reloads_total{result=\"failure\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ebpf_agent_config_last_reload_successful 0\n"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT ebpf_agent_config_last_reload_success_timestamp_seconds seconds"),
        "{text}"
    );
}

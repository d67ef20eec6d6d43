use super::*;
use crate::collectors::CollectorName;
use std::path::{Path, PathBuf};

/// Writes `text` to a fresh file named `name` (its extension picks the format).
fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agent-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v))),
    )
}

fn argv(flags: &[&str]) -> Vec<OsString> {
    flags.iter().map(OsString::from).collect()
}

/// Loads with `--config path` (if any) before `flags`.
fn load_with(path: Option<&Path>, flags: &[&str], vars: &[(&str, &str)]) -> Result<Loaded, String> {
    let mut a = match path {
        Some(p) => vec![OsString::from("--config"), p.into()],
        None => Vec::new(),
    };
    a.extend(argv(flags));
    load(a, env(vars)).map_err(|e| e.0)
}

fn origin(l: &Loaded, key: &str) -> (String, Origin) {
    let s = l.settings.get(key).unwrap();
    (s.shown().to_string(), s.origin)
}

#[test]
fn the_file_sets_what_flags_and_environment_do_not() {
    let path = file(
        "basic.yaml",
        "listen: 127.0.0.1:9999\ncollectors: [cpu, meminfo]\nring_buffer_bytes: 65536\nstrict: true\n",
    );
    let l = load_with(Some(&path), &[], &[]).unwrap();
    assert_eq!(l.args.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(
        l.args.collectors.enabled(),
        [CollectorName::named("cpu"), CollectorName::named("meminfo")]
    );
    assert_eq!(l.args.ring_buffer_bytes, 65536);
    assert!(l.args.strict);
    assert_eq!(
        origin(&l, "listen"),
        ("127.0.0.1:9999".into(), Origin::File)
    );
    assert_eq!(
        origin(&l, "collectors"),
        ("cpu,meminfo".into(), Origin::File)
    );
    assert_eq!(origin(&l, "hdr-precision"), ("2".into(), Origin::Default));
    assert_eq!(origin(&l, "pid"), ("(unset)".into(), Origin::Default));
    assert_eq!(origin(&l, "config").1, Origin::Flag);
    assert_eq!(l.file(), Some(path.to_str().unwrap()));
}

#[test]
fn flags_beat_environment_beats_file() {
    let path = file(
        "prec.toml",
        "listen = \"127.0.0.1:1\"\nhdr-precision = 3\nflush-interval-ms = 200\n",
    );
    let vars = [
        ("EBPF_AGENT_LISTEN", "127.0.0.1:2"),
        ("EBPF_AGENT_HDR_PRECISION", "4"),
    ];
    let l = load_with(Some(&path), &["--listen", "127.0.0.1:3"], &vars).unwrap();
    assert_eq!(l.args.listen.to_string(), "127.0.0.1:3");
    assert_eq!(l.args.hdr_precision, 4);
    assert_eq!(l.args.flush_interval_ms, 200);
    assert_eq!(origin(&l, "listen").1, Origin::Flag);
    assert_eq!(origin(&l, "hdr-precision").1, Origin::Env);
    assert_eq!(origin(&l, "flush-interval-ms").1, Origin::File);
}

#[test]
fn the_config_file_can_come_from_the_environment() {
    let path = file("from-env.yml", "probes: [tcp]\n");
    let vars = [("EBPF_AGENT_CONFIG", path.to_str().unwrap())];
    let l = load_with(None, &[], &vars).unwrap();
    assert_eq!(l.args.probes, ["tcp"]);
    assert_eq!(origin(&l, "config").1, Origin::Env);
    assert_eq!(origin(&l, "probes"), ("tcp".into(), Origin::File));
}

#[test]
fn lists_repeat_repeatable_flags_and_a_flag_replaces_the_whole_list() {
    let path = file(
        "lists.yaml",
        "no-collector: [cpu, vmstat]\nprobes: [syscalls, sched]\n",
    );
    let l = load_with(Some(&path), &[], &[]).unwrap();
    assert_eq!(
        l.args.collectors.no_collector,
        [CollectorName::named("cpu"), CollectorName::named("vmstat")]
    );
    assert_eq!(l.args.probes, ["syscalls", "sched"]);
    let l = load_with(Some(&path), &["--no-collector", "process"], &[]).unwrap();
    assert_eq!(
        l.args.collectors.no_collector,
        [CollectorName::named("process")]
    );
    let l = load_with(None, &[], &[("EBPF_AGENT_NO_COLLECTOR", "cpu,process")]).unwrap();
    assert_eq!(
        l.args.collectors.no_collector,
        [CollectorName::named("cpu"), CollectorName::named("process")]
    );
}

#[test]
fn switches_take_booleans_from_file_and_environment() {
    let path = file("switch.toml", "netdev-virtual = false\nstrict = true\n");
    let l = load_with(Some(&path), &[], &[]).unwrap();
    assert!(l.args.strict && !l.args.collectors.options.netdev_virtual);
    assert_eq!(origin(&l, "netdev-virtual"), ("false".into(), Origin::File));
    let l = load_with(Some(&path), &[], &[("EBPF_AGENT_STRICT", "false")]).unwrap();
    assert!(
        !l.args.strict,
        "the environment's false beats the file's true"
    );
    assert_eq!(origin(&l, "strict").1, Origin::Env);
    // An empty variable is unset (how Kubernetes renders a missing optional value).
    let l = load_with(None, &[], &[("EBPF_AGENT_LISTEN", "")]).unwrap();
    assert_eq!(origin(&l, "listen").1, Origin::Default);
}

#[test]
fn bad_values_name_the_file_key_and_value() {
    let path = file("bad.yaml", "ring-buffer-bytes: 5000\n");
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    let want = format!(
        "config file {}: key ring-buffer-bytes: invalid value 5000: 5000 is not a power of two",
        path.display()
    );
    assert!(e.starts_with(&want), "{e}");
    let path = file("bad-probe.toml", "probes = [\"tcp\", \"bogus\"]\n");
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(
        e.ends_with(
            "key probes: invalid value bogus: valid values are syscalls, tcp, sched, oom, process, block, none"
        ),
        "{e}"
    );
    let path = file("bad-type.yaml", "strict: [true]\nlisten: 1\n");
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(
        e.ends_with("key strict: expected true or false (it is a switch), got a list"),
        "{e}"
    );
    let path = file("bad-level.yaml", "log-level: loud\n");
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(
        e.contains("key log-level: invalid value loud: `loud` is not a level"),
        "{e}"
    );
}

#[test]
fn a_bad_value_is_ignored_when_a_flag_overrides_it() {
    let path = file("shadowed.yaml", "ring-buffer-bytes: 5000\n");
    let l = load_with(Some(&path), &["--ring-buffer-bytes", "32768"], &[]).unwrap();
    assert_eq!(l.args.ring_buffer_bytes, 32768);
}

#[test]
fn bad_environment_values_name_the_variable() {
    let e = load_with(None, &[], &[("EBPF_AGENT_HDR_PRECISION", "9")]).unwrap_err();
    assert_eq!(
        e,
        "environment variable EBPF_AGENT_HDR_PRECISION: invalid value 9: 9 is not in 1..=5"
    );
    let e = load_with(None, &[], &[("EBPF_AGENT_STRICT", "maybe")]).unwrap_err();
    assert!(
        e.contains("EBPF_AGENT_STRICT: expected true or false"),
        "{e}"
    );
}

#[test]
fn unknown_environment_variables_are_warnings() {
    let l = load_with(
        None,
        &[],
        &[
            ("EBPF_AGENT_LISTN", "x"),
            ("EBPF_AGENT_PORT", "tcp://10.0.0.1:9477"),
        ],
    )
    .unwrap();
    assert_eq!(
        l.warnings,
        [
            "ignoring environment variable EBPF_AGENT_LISTN: it names no `agent run` flag (did you mean EBPF_AGENT_LISTEN?)",
            "ignoring environment variable EBPF_AGENT_PORT: it names no `agent run` flag",
        ]
    );
}

#[test]
fn unknown_and_forbidden_keys_say_why() {
    let path = file("typo.yaml", "listn: 127.0.0.1:1\n");
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(
        e.contains("unknown key listn: it is not an `agent run` flag; did you mean listen?"),
        "{e}"
    );
    let path = file("nested.yaml", "config: /etc/other.yaml\n");
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(
        e.contains("key config cannot be set in a config file"),
        "{e}"
    );
    let path = file("missing.yaml", "");
    std::fs::remove_file(&path).unwrap();
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(
        e.contains("cannot read it") && e.contains("--config"),
        "{e}"
    );
    let path = file("syntax.toml", "listen = \n");
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(e.contains("invalid TOML") && e.contains("line 1"), "{e}");
}

#[test]
fn enum_values_from_the_environment_list_the_valid_ones() {
    let e = load_with(None, &[], &[("EBPF_AGENT_LOG_FORMAT", "xml")]).unwrap_err();
    assert_eq!(
        e,
        "environment variable EBPF_AGENT_LOG_FORMAT: invalid value xml: valid values are auto, text, json"
    );
}

#[test]
fn changes_compare_values_not_sources() {
    let a = load_with(None, &[], &[]).unwrap();
    let path = file("diff.yaml", "hdr-precision: 2\nlisten: 127.0.0.1:5\n");
    let b = load_with(Some(&path), &[], &[]).unwrap();
    let changes = a.settings.changes(&b.settings);
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["listen", "config"]);
    assert_eq!(
        (changes[0].from.as_str(), changes[0].to.as_str()),
        ("0.0.0.0:9477", "127.0.0.1:5")
    );
    assert_eq!(changes[1].from, "(unset)");
}

#[test]
fn the_table_lists_every_key_with_its_source() {
    let l = load_with(None, &["--strict"], &[("EBPF_AGENT_LISTEN", "127.0.0.1:7")]).unwrap();
    let table = l.settings.table();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.splitn(3, char::is_whitespace).collect())
        .collect();
    let row = |key: &str| {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap();
        line.split_whitespace().collect::<Vec<_>>()
    };
    assert_eq!(rows.len(), key_names().len() + 1);
    assert_eq!(row("KEY"), ["KEY", "SOURCE", "VALUE"]);
    assert_eq!(row("listen"), ["listen", "env", "127.0.0.1:7"]);
    assert_eq!(row("strict"), ["strict", "flag", "true"]);
    assert_eq!(row("pid"), ["pid", "default", "(unset)"]);
}

/// Every `agent run` flag in the example, set or (for the keys a file cannot
/// set, or ones without a default) commented out.
fn check_example(name: &str, separator: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let l = load_with(Some(&path), &[], &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut missing = Vec::new();
    for key in key_names() {
        let set = format!("{key}{separator}");
        let found = text.lines().any(|line| {
            let line = line.trim_start();
            line.starts_with(&set) || line.strip_prefix("# ").is_some_and(|l| l.starts_with(&set))
        });
        if !found {
            missing.push(key);
        }
    }
    assert!(missing.is_empty(), "{name} does not show {missing:?}");
    // The example's values are the defaults: it documents, it changes nothing.
    let defaults = load_with(None, &[], &[]).unwrap();
    let changed: Vec<_> = defaults
        .settings
        .changes(&l.settings)
        .into_iter()
        .filter(|c| c.key != "config")
        .collect();
    assert!(changed.is_empty(), "{name} changes defaults: {changed:?}");
}

#[test]
fn the_yaml_example_shows_every_key() {
    check_example("config.example.yaml", ":");
}

#[test]
fn the_toml_example_shows_every_key() {
    check_example("config.example.toml", " =");
}

#[test]
fn files_that_cost_resources_are_refused_at_once() {
    let t = std::time::Instant::now();
    // Big: a 5 MB regex value, and a deeply nested document.
    let big = file(
        "big.yaml",
        &format!("netdev-exclude: \"{}\"\n", "a|".repeat(2_500_000)),
    );
    let e = load_with(Some(&big), &[], &[]).unwrap_err();
    assert!(e.contains("may have at most 65536"), "{e}");
    assert!(
        e.len() < 300,
        "the error echoes the file: {} bytes",
        e.len()
    );
    let nested = file("nested.yaml", &"[".repeat(200_000));
    let e = load_with(Some(&nested), &[], &[]).unwrap_err();
    assert!(e.contains("may have at most 65536"), "{e}");
    // Not regular files: a device is not read, a FIFO does not block.
    let e = load_with(Some(Path::new("/dev/zero.yaml")), &[], &[]).unwrap_err();
    assert!(e.contains("cannot read it"), "{e}");
    let dir = std::env::temp_dir().join(format!("agent-config-{}", std::process::id()));
    let fifo = dir.join("fifo.yaml");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = load_with(Some(&fifo), &[], &[]).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    let dev = dir.join("zero.yaml");
    let _ = std::fs::remove_file(&dev);
    std::os::unix::fs::symlink("/dev/zero", &dev).unwrap();
    let e = load_with(Some(&dev), &[], &[]).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn long_values_are_abbreviated_in_errors() {
    let long = format!("{}(", "x".repeat(50_000));
    let path = file("long.yaml", &format!("netdev-exclude: \"{long}\"\n"));
    let e = load_with(Some(&path), &[], &[]).unwrap_err();
    assert!(e.contains("key netdev-exclude: invalid value xxx"), "{e}");
    assert!(e.contains("(50001 bytes)"), "{e}");
    assert!(e.len() < 700, "{} bytes: {e}", e.len());
}

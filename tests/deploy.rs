//! deploy/: the Kubernetes manifests render with kustomize, pass strict schema
//! validation for two Kubernetes versions, and keep the promises
//! docs/kubernetes.md makes; the Dockerfile passes hadolint. The tools come
//! from `cargo xtask setup --test-tools` (xtask/src/deploy_tools.rs) and work
//! offline. No cluster is involved.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where xtask installs the tools (deploy_tools::DIR).
const TOOLS: &str = "/opt/ebpf-agent-tools/bin";
/// The oldest Kubernetes release we promise to fit and the newest schema
/// kubernetes-validate 1.37.0 bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new(TOOLS).join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask setup --test-tools` installs it",
        path.display()
    );
    path
}

/// Runs a tool, panicking with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command, input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kustomize(dir: &Path) -> String {
    run(
        Command::new(tool("kubectl")).arg("kustomize").arg(dir),
        None,
    )
}

/// Every document of a YAML stream, as JSON values (PyYAML from the tools).
fn parse_yaml(text: &str) -> Vec<Value> {
    const SCRIPT: &str = "import sys, json, yaml\n\
        print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))\n";
    let json = run(
        Command::new(tool("python3")).args(["-c", SCRIPT]),
        Some(text),
    );
    serde_json::from_str::<Vec<Value>>(&json).unwrap()
}

fn validate_strictly(rendered: &str, what: &str) {
    for version in KUBERNETES_VERSIONS {
        let out = run(
            Command::new(tool("kubernetes-validate")).args([
                "--strict",
                "--kubernetes-version",
                version,
                "-",
            ]),
            Some(rendered),
        );
        // One "passed" line per document: nothing skipped as unknown.
        let passed = out.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(passed, 5, "{what} against {version}:\n{out}");
    }
}

/// The base, and the base with the privileged component switched on the way
/// docs/kubernetes.md says (uncommenting `components`), rendered.
fn render_both() -> (String, String) {
    let base = repo().join("deploy/kubernetes");
    (kustomize(&base), render_with("privileged"))
}

/// The base with one component's commented `components` lines switched on.
fn render_with(component: &str) -> String {
    let base = repo().join("deploy/kubernetes");
    // One copy per call: tests may run in parallel.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let copy = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "kubernetes-{component}-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&base, &copy);
    let k = copy.join("kustomization.yaml");
    let text = std::fs::read_to_string(&k).unwrap();
    let on = text.replace(
        &format!("# components:\n#   - {component}\n"),
        &format!("components:\n  - {component}\n"),
    );
    assert_ne!(
        on, text,
        "kustomization.yaml lost its commented `components` lines for {component}"
    );
    std::fs::write(&k, on).unwrap();
    let rendered = kustomize(&copy);
    std::fs::remove_dir_all(&copy).unwrap();
    rendered
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A container's args.
fn args_of(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn contains_privileged(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| (k == "privileged" && v == true) || contains_privileged(v)),
        Value::Array(a) => a.iter().any(contains_privileged),
        _ => false,
    }
}

#[test]
fn manifests_pass_strict_schema_validation() {
    let (base, privileged) = render_both();
    validate_strictly(&base, "deploy/kubernetes");
    validate_strictly(
        &privileged,
        "deploy/kubernetes with components: [privileged]",
    );
}

#[test]
fn strict_validation_rejects_a_misspelt_field() {
    // The validator must really be strict, or the test above proves nothing.
    let (base, _) = render_both();
    let broken = base.replace("hostPID: true", "hostPID: true\n      hostPid: true");
    let out = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", "1.30.0", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(broken.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("'hostPid' was unexpected"), "{report}");
}

#[test]
fn daemonset_keeps_the_documented_promises() {
    let (base, _) = render_both();
    let docs = parse_yaml(&base);
    assert!(
        !docs.iter().any(contains_privileged),
        "the base must not be privileged"
    );
    let ds = find(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert_eq!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "Unconfined"
    );
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON"])
    );

    // Probes on the metrics port, which is the port the config listens on.
    assert_eq!(
        c["ports"],
        serde_json::json!([{"name": "metrics", "containerPort": 9477, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        serde_json::json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        serde_json::json!({"path": "/readyz", "port": "metrics"})
    );

    // OTLP's resource: the node, pod and namespace from the downward API,
    // in OpenTelemetry's variable.
    let env = c["env"].as_array().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    for (name, field) in [
        ("K8S_NODE_NAME", "spec.nodeName"),
        ("K8S_POD_NAME", "metadata.name"),
        ("K8S_NAMESPACE_NAME", "metadata.namespace"),
    ] {
        assert_eq!(
            var(name)["valueFrom"]["fieldRef"]["fieldPath"],
            field,
            "{name}"
        );
    }
    assert_eq!(
        var("OTEL_RESOURCE_ATTRIBUTES")["value"],
        "k8s.node.name=$(K8S_NODE_NAME),k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME)"
    );

    // The generated ConfigMap is mounted where --config points.
    let args = args_of(c);
    assert_eq!(args, ["run", "--config", "/etc/ebpf-agent/config.yaml"]);
    let cm = find(&docs, "ConfigMap");
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    assert!(
        cm_name.starts_with("ebpf-agent-config-"),
        "{cm_name}: hashed by the generator"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    assert_eq!(volume("config")["configMap"]["name"], cm_name);
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("no mount at {path}"))
    };
    assert_eq!(mount("/etc/ebpf-agent")["name"], "config");
    let config = &parse_yaml(cm["data"]["config.yaml"].as_str().unwrap())[0];
    assert_eq!(config["listen"], "0.0.0.0:9477");
    assert_eq!(config["keep-capabilities"], "none");

    // Every host path read-only, and the config's paths are those mounts.
    for m in mounts {
        assert_eq!(m["readOnly"], true, "{m}");
    }
    for (flag, host) in [("procfs", "/proc"), ("sysfs", "/sys"), ("rootfs", "/")] {
        let m = mount(config[flag].as_str().unwrap());
        assert_eq!(
            volume(m["name"].as_str().unwrap())["hostPath"]["path"],
            host,
            "{flag}"
        );
    }
    assert_eq!(mount("/host/root")["mountPropagation"], "HostToContainer");
    assert_eq!(
        volume(mount("/host/sys/fs/cgroup")["name"].as_str().unwrap())["hostPath"]["path"],
        "/sys/fs/cgroup"
    );
    assert_eq!(config["container-labels"], "on");
    assert!(
        !c["env"]
            .as_array()
            .is_some_and(|env| env.iter().any(|e| e["name"] == "RUST_LOG")),
        "RUST_LOG would override log-level"
    );
    let tracefs = mount("/sys/kernel/tracing");
    assert_eq!(
        volume(tracefs["name"].as_str().unwrap())["hostPath"]["path"],
        "/sys/kernel/tracing"
    );

    // Prometheus finds every pod through the headless Service.
    let svc = find(&docs, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9477");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9477);
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn privileged_component_changes_only_the_container_security_context() {
    let (base, privileged) = render_both();
    let (mut base, mut privileged) = (parse_yaml(&base), parse_yaml(&privileged));
    let sc = |docs: &mut Vec<Value>| {
        let ds = docs.iter_mut().find(|d| d["kind"] == "DaemonSet").unwrap();
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"].take()
    };
    sc(&mut base);
    let priv_sc = sc(&mut privileged);
    assert_eq!(priv_sc["privileged"], true);
    assert_eq!(priv_sc["readOnlyRootFilesystem"], true);
    assert_eq!(base, privileged, "nothing else may differ");
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = run(
        Command::new(tool("hadolint")).arg(repo().join("deploy/Dockerfile")),
        None,
    );
    assert_eq!(out, "", "hadolint findings");
}

/// The shipped config runs for real: the agent accepts every key, and with
/// only the host paths and the listen address overridden (flags beat the
/// file), it attaches, drops every capability and still labels a container.
#[test]
fn the_shipped_config_runs_and_labels_containers_after_the_drop() {
    let config = repo().join("deploy/kubernetes/config.yaml");
    let check = Command::new(tests::agent_bin())
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--check-config",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["container-labels", "file", "on"]), "{out}");

    // A kubelet-style pod whose container runs the workload.
    let logs = std::env::temp_dir().join(format!("deploy-logs-{}", std::process::id()));
    let id = format!("{:064x}", std::process::id());
    let uid = format!("{:08x}-0000-4000-8000-000000000001", std::process::id());
    std::fs::create_dir_all(logs.join(format!("pods/ops_probe-0_{uid}/check"))).unwrap();
    std::fs::create_dir_all(logs.join("containers")).unwrap();
    std::fs::write(
        logs.join(format!("containers/probe-0_ops_check-{id}.log")),
        "",
    )
    .unwrap();
    let cgroup = tests::cgroup2_root().join(format!("kubepods/pod{uid}/{id}"));
    std::fs::create_dir_all(&cgroup).unwrap();

    let agent = tests::Agent::start(&[
        "--config",
        config.to_str().unwrap(),
        "--procfs",
        "/proc",
        "--sysfs",
        "/sys",
        "--rootfs",
        "/",
        "--pod-logs",
        logs.to_str().unwrap(),
    ]);
    let w = tests::Workload::start(&["syscalls", "2000", "0"]);
    std::fs::write(cgroup.join("cgroup.procs"), w.pid()).unwrap();
    w.go();
    let labels = [
        ("namespace", "ops"),
        ("pod", "probe-0"),
        ("container", "check"),
        ("syscall", "getppid"),
    ];
    let e = agent.scrape_until(std::time::Duration::from_secs(5), |e| {
        e.value("ebpf_agent_syscalls_total", &labels) >= 2000.0
    });
    assert_eq!(e.value("ebpf_agent_syscalls_total", &labels), 2000.0);
    assert_eq!(e.value("ebpf_agent_capabilities_effective", &[]), 0.0);
    for probe in ["syscalls", "tcp", "sched"] {
        assert_eq!(
            e.value("ebpf_agent_probe_attached", &[("probe", probe)]),
            1.0,
            "{probe}"
        );
    }
    // log-format: json from the file.
    let stderr = agent.stderr();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<Value>(first).is_ok(),
        "not JSON: {first}"
    );
    drop(agent);
    let _ = std::fs::remove_dir(&cgroup);
    let _ = std::fs::remove_dir(cgroup.parent().unwrap());
    let _ = std::fs::remove_dir(cgroup.parent().unwrap().parent().unwrap()); // kubepods, if empty
    std::fs::remove_dir_all(&logs).unwrap();
}

/// The secure component: web config and certificates from the Secret, probes
/// on the plain health port, HTTPS for annotation discovery, and the
/// destinations the unauthenticated base folds turned back on.
#[test]
fn secure_component_mounts_the_secret_and_moves_the_probes() {
    let rendered = render_with("secure");
    validate_strictly(&rendered, "deploy/kubernetes with components: [secure]");
    let docs = parse_yaml(&rendered);
    let ds = find(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = args_of(c);
    assert_eq!(
        args,
        [
            "run",
            "--config",
            "/etc/ebpf-agent/config.yaml",
            "--web-config-file=/etc/ebpf-agent-web/web-config.yml",
            "--health-listen=0.0.0.0:9478",
            "--tcp-destination-budget=50"
        ]
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "health");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "health");
    assert!(
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "health" && p["containerPort"] == 9478)
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web")
        .expect("the web volume");
    assert_eq!(volume["secret"]["secretName"], "ebpf-agent-web");
    let svc = find(&docs, "Service");
    assert_eq!(
        svc["metadata"]["annotations"]["prometheus.io/scheme"],
        "https"
    );
    // The base, unauthenticated, does not publish destinations.
    let config = std::fs::read_to_string(repo().join("deploy/kubernetes/config.yaml")).unwrap();
    assert!(config.contains("\ntcp-destination-budget: 0\n"));
    // The example web config is one exporter-toolkit (promtool) accepts, with
    // the Secret's files beside it.
    let dir = tests::web::Scratch::new("secure-component");
    tests::web::make_pki(&dir.0);
    for (from, to) in [("server.crt", "tls.crt"), ("server.key", "tls.key")] {
        std::fs::copy(dir.path(from), dir.path(to)).unwrap();
    }
    let example =
        std::fs::read_to_string(repo().join("deploy/kubernetes/secure/web-config.yml")).unwrap();
    let file = dir.write("web-config.yml", &example);
    tests::web::promtool_check_web_config(&file);
    let (agent, health) =
        tests::web::start_agent(&[], &["--web-config-file", file.to_str().unwrap()]);
    assert_eq!(tests::http_get(health, "/readyz").unwrap().status, 200);
    drop(agent);
}

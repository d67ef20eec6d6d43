//! Push export end to end (agent/src/push/): the agent pushes with Prometheus
//! remote write to a real Prometheus, through an outage and a restart of its
//! own, and to a receiver that fails on purpose; its queue directory is
//! bounded and survives a torn write.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tests::prometheus::{Prometheus, Settings};
use tests::web::{Scratch, bcrypt_hash, make_pki, promtool_check_web_config};
use tests::{Agent, Exposition, Receiver, Workload, free_port};

const GETPPID: &str = r#"ebpf_agent_syscalls_total{syscall="getppid",instance="push-test"}"#;
/// A series every push carries (the value does not matter): one sample per push.
const ALWAYS: &str = r#"ebpf_agent_probe_attached{probe="syscalls",instance="push-test"}"#;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("ebpf-agent-push-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn push_args<'a>(pid: &'a str, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--pid",
        pid,
        "--probes",
        "syscalls",
        "--collectors",
        "none",
        "--remote-write-url",
        url,
        "--push-interval",
        "1",
        "--push-external-label",
        "instance=push-test",
    ];
    args.extend_from_slice(extra);
    args
}

fn metric(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.sum(name, labels).unwrap_or(0.0)
}

#[test]
fn remote_write_reaches_prometheus_through_an_outage_and_an_agent_restart() {
    const BEFORE: u64 = 100;
    const DURING: u64 = 1_234;
    const AFTER_RESTART: u64 = 4_321;
    let mut prometheus = Prometheus::start(&Settings::remote_write_receiver());
    let url = format!("http://{}/api/v1/write", prometheus.addr);
    let queue = TempDir::new("outage");
    let mut w = Workload::start(&["bursts"]);
    let pid = w.pid();
    let args = push_args(&pid, &url, &["--push-queue-dir", queue.path()]);
    let mut agent = Agent::start(&args);
    w.burst(BEFORE);
    let v = prometheus.wait_for_value(GETPPID, BEFORE as f64, Duration::from_secs(30));
    assert_eq!(
        v,
        Some(BEFORE as f64),
        "agent:\n{}\nprometheus:\n{}",
        agent.stderr(),
        prometheus.log()
    );

    // The outage: Prometheus down for about 20 s; a burst; the agent restarted.
    let outage_start = unix_now();
    prometheus.stop();
    std::thread::sleep(Duration::from_secs(4));
    w.burst(DURING);
    std::thread::sleep(Duration::from_secs(4));
    let (status, _) = agent.stop_with(libc::SIGTERM);
    assert!(status.success(), "{}", agent.stderr());
    let down_from = unix_now();
    let agent = Agent::start(&args);
    let down_to = unix_now();
    w.burst(AFTER_RESTART);
    std::thread::sleep(Duration::from_secs(10));
    let e = agent.scrape();
    let queued = metric(&e, "ebpf_agent_push_queue_records", &[]);
    assert!(queued >= 8.0, "the restarted agent queued {queued} pushes");
    let outage_end = unix_now();
    prometheus.run();

    // The backlog arrives, oldest first, then the pushes of now.
    let v = prometheus.wait_for_value(GETPPID, AFTER_RESTART as f64, Duration::from_secs(60));
    assert_eq!(v, Some(AFTER_RESTART as f64), "agent:\n{}", agent.stderr());
    let e = agent.scrape_until(Duration::from_secs(30), |e| {
        metric(e, "ebpf_agent_push_queue_records", &[]) == 0.0
    });
    assert_eq!(metric(&e, "ebpf_agent_push_queue_records", &[]), 0.0);
    assert!(metric(&e, "ebpf_agent_push_requests_retried_total", &[]) > 0.0);
    assert_eq!(
        metric(&e, "ebpf_agent_push_samples_dropped_total", &[]),
        0.0
    );
    assert_eq!(
        metric(&e, "ebpf_agent_push_queue_corrupt_records_total", &[]),
        0.0
    );

    let window = (unix_now() - outage_start + 10.0).ceil() as u64;
    // A sample for every push interval of the outage, except while no agent ran.
    let times: Vec<f64> = prometheus
        .samples(ALWAYS, window)
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| (outage_start..outage_end).contains(t))
        .collect();
    let downtime = down_to - down_from;
    let mut gaps: Vec<(f64, f64)> = std::iter::once(outage_start)
        .chain(times.iter().copied())
        .chain([outage_end])
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .filter(|(_, gap)| *gap > 2.0)
        .collect();
    // The one allowed gap: the agent's own restart.
    gaps.retain(|(at, gap)| !(*at <= down_from + 1.0 && *gap <= downtime + 3.0));
    assert!(
        gaps.is_empty(),
        "pushes missing in the outage (start {outage_start}, agent down {down_from}..{down_to}, \
         end {outage_end}): gaps {gaps:?} in {times:?}"
    );
    assert!(
        times.len() as f64 >= (outage_end - outage_start - downtime) - 4.0,
        "{times:?}"
    );

    // The right values: before the burst, after it, and from the new agent.
    let mut values: Vec<f64> = prometheus
        .samples(GETPPID, window)
        .into_iter()
        .filter(|(t, _)| *t >= outage_start - 0.5)
        .map(|(_, v)| v)
        .collect();
    values.dedup();
    assert_eq!(
        values,
        [
            BEFORE as f64,
            (BEFORE + DURING) as f64,
            AFTER_RESTART as f64
        ],
        "getppid counts pushed through the outage"
    );
}

/// An agent tracing an idle workload and pushing to `url` every second.
fn start_pushing(url: &str, extra: &[&str]) -> (Agent, Workload) {
    let w = Workload::start(&["bursts"]);
    let pid = w.pid();
    (Agent::start(&push_args(&pid, url, extra)), w)
}

/// `--remote-write-url` to the test receiver on `addr`, with a bearer token and a header.
fn start_against(addr: SocketAddr, extra: &[&str]) -> (Agent, Workload, TempDir) {
    let url = format!("http://{addr}/api/v1/write");
    let dir = TempDir::new(&format!("auth-{}", addr.port()));
    let token = dir.0.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let token = token.to_str().unwrap().to_string();
    let mut args = extra.to_vec();
    args.extend_from_slice(&[
        "--push-bearer-token-file",
        &token,
        "--push-header",
        "X-Scope-OrgID: team-a",
    ]);
    let (agent, w) = start_pushing(&url, &args);
    (agent, w, dir)
}

#[test]
fn receiver_errors_are_retried_or_dropped_as_the_spec_says_and_counted() {
    let retry_after = vec![("Retry-After".to_string(), "2".to_string())];
    let receiver = Receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            (400, Vec::new()),
            (401, Vec::new()),
            (413, Vec::new()),
            (429, retry_after),
            (503, Vec::new()),
        ],
    );
    let (agent, _w, _dir) = start_against(receiver.addr, &[]);
    let e = agent.scrape_until(Duration::from_secs(30), |e| {
        metric(e, "ebpf_agent_push_requests_total", &[]) >= 2.0
    });
    let got = receiver.received();
    assert!(got.len() >= 6, "{} requests", got.len());
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..6], [400, 401, 413, 429, 503, 200]);
    // 400, 401, 413: three different pushes, each given up; 429 and 503: the
    // same push sent again until it was taken, the first time after Retry-After.
    assert!(got[0].body != got[1].body && got[1].body != got[2].body && got[2].body != got[3].body);
    assert!(got[3].body == got[4].body && got[4].body == got[5].body);
    assert!(
        got[4].at - got[3].at >= Duration::from_secs(2),
        "Retry-After not honoured"
    );
    for r in &got {
        assert_eq!(r.path, "/api/v1/write");
        assert_eq!(r.header("content-encoding"), Some("snappy"));
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("x-prometheus-remote-write-version"), Some("0.1.0"));
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("ebpf-agent/"))
        );
        assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
    }
    let failed = |reason| {
        metric(
            &e,
            "ebpf_agent_push_requests_failed_total",
            &[("reason", reason)],
        )
    };
    for reason in ["http_400", "http_401", "http_413", "http_429", "http_503"] {
        assert_eq!(failed(reason), 1.0, "{reason}");
    }
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_retried_total", &[]),
        2.0
    );
    let rejected = metric(
        &e,
        "ebpf_agent_push_samples_dropped_total",
        &[("reason", "rejected")],
    );
    let sent = metric(&e, "ebpf_agent_push_samples_total", &[]);
    assert!(
        rejected > 0.0 && sent > 0.0,
        "rejected {rejected}, sent {sent}"
    );
    assert!(metric(&e, "ebpf_agent_push_last_success_timestamp_seconds", &[]) > 1.7e9);
    let log = agent.stderr();
    assert_eq!(
        log.matches("answered 503").count(),
        1,
        "logged once:\n{log}"
    );
}

/// The segment files of the queue under `dir`, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| std::fs::read_dir(e.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    out.sort();
    out
}

#[test]
fn queue_dir_drops_the_oldest_past_its_bound_and_recovers_from_a_torn_write() {
    const MAX: u64 = 24_000;
    // Nothing listens on the receiver's port until the second agent runs.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let queue = TempDir::new("bound");
    let max = MAX.to_string();
    let extra = [
        "--push-queue-dir",
        queue.path(),
        "--push-queue-max-bytes",
        &max,
    ];
    let (mut agent, _w, _dir) = start_against(addr, &extra);
    let e = agent.scrape_until(Duration::from_secs(60), |e| {
        metric(
            e,
            "ebpf_agent_push_samples_dropped_total",
            &[("reason", "queue_full")],
        ) > 0.0
    });
    assert!(
        metric(
            &e,
            "ebpf_agent_push_samples_dropped_total",
            &[("reason", "queue_full")]
        ) > 0.0,
        "{}",
        agent.stderr()
    );
    assert!(metric(&e, "ebpf_agent_push_queue_bytes", &[]) <= MAX as f64);
    assert!(
        metric(
            &e,
            "ebpf_agent_push_requests_failed_total",
            &[("reason", "network")]
        ) > 0.0
    );
    let on_disk: u64 = segments(&queue.0)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // The bound, plus at most the segment being written (an eighth of it).
    assert!(on_disk <= MAX + MAX / 8 + 4096, "{on_disk} bytes on disk");

    // Power loss in the middle of a write: the newest record is cut short.
    agent.stop_with(libc::SIGKILL);
    let newest = segments(&queue.0).pop().unwrap();
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let receiver = Receiver::start(addr, Vec::new());
    let (agent, _w2, _dir2) = start_against(addr, &extra);
    let log = agent.stderr();
    let backlog: f64 = log
        .split(" unsent pushes from before")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no backlog logged:\n{log}"));
    assert!(backlog >= 2.0, "{log}");
    let e = agent.scrape_until(Duration::from_secs(60), |e| {
        metric(e, "ebpf_agent_push_requests_total", &[]) >= backlog + 1.0
    });
    assert!(metric(&e, "ebpf_agent_push_requests_total", &[]) >= backlog + 1.0);
    assert_eq!(
        metric(&e, "ebpf_agent_push_queue_corrupt_records_total", &[]),
        1.0
    );
    let corrupt = metric(&e, "ebpf_agent_push_queue_corrupt_bytes_total", &[]);
    assert!(corrupt > 0.0 && corrupt < MAX as f64, "{corrupt}");
    assert!(receiver.received().len() as f64 >= backlog + 1.0);
}

#[test]
fn remote_write_over_mutual_tls_with_basic_auth_to_prometheus() {
    let pki = Scratch::new("push-tls");
    make_pki(&pki.0);
    let p = |f: &str| pki.path(f).to_str().unwrap().to_string();
    let web = pki.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\nbasic_auth_users:\n  agent: {}\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt"),
            bcrypt_hash("pushpw")
        ),
    );
    promtool_check_web_config(&web);
    let password = pki.write("password", "pushpw\n");
    let wrong = pki.write("wrong", "nope\n");
    let prometheus = Prometheus::start(&Settings {
        tls_web_config: Some(web),
        ..Settings::remote_write_receiver()
    });
    let url = format!("https://{}/api/v1/write", prometheus.addr);
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let tls = [
        "--push-ca-file",
        &ca,
        "--push-cert-file",
        &cert,
        "--push-key-file",
        &key,
    ];
    let with_password = |file: &Path| {
        let mut args = tls.to_vec();
        let file = file.to_str().unwrap().to_string();
        args.extend([
            "--push-basic-auth-user",
            "agent",
            "--push-basic-auth-password-file",
        ]);
        start_pushing(&url, &[args, vec![&file]].concat())
    };

    // Verified both ways, with the right password: accepted.
    let (agent, _w) = with_password(&password);
    let e = agent.scrape_until(Duration::from_secs(30), |e| {
        metric(e, "ebpf_agent_push_requests_total", &[]) >= 2.0
    });
    assert!(
        metric(&e, "ebpf_agent_push_requests_total", &[]) >= 2.0,
        "agent:\n{}\nprometheus:\n{}",
        agent.stderr(),
        prometheus.log()
    );
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_failed_total", &[]),
        0.0
    );
    drop(agent);

    // A wrong password: 401, never retried, the samples dropped and counted.
    let (agent, _w) = with_password(&wrong);
    let e = agent.scrape_until(Duration::from_secs(30), |e| {
        metric(
            e,
            "ebpf_agent_push_requests_failed_total",
            &[("reason", "http_401")],
        ) >= 2.0
    });
    assert!(
        metric(
            &e,
            "ebpf_agent_push_requests_failed_total",
            &[("reason", "http_401")]
        ) >= 2.0
    );
    assert!(
        metric(
            &e,
            "ebpf_agent_push_samples_dropped_total",
            &[("reason", "rejected")]
        ) > 0.0
    );
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_retried_total", &[]),
        0.0
    );
    drop(agent);

    // No client certificate: the handshake fails, which is retried.
    let (agent, _w) = start_pushing(&url, &["--push-ca-file", &ca]);
    let e = agent.scrape_until(Duration::from_secs(30), |e| {
        metric(e, "ebpf_agent_push_requests_retried_total", &[]) >= 2.0
    });
    assert!(
        metric(
            &e,
            "ebpf_agent_push_requests_failed_total",
            &[("reason", "network")]
        ) >= 2.0
    );
    assert_eq!(metric(&e, "ebpf_agent_push_requests_total", &[]), 0.0);
}

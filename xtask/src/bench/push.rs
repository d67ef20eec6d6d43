//! `cargo xtask bench push`: what pushing every second costs the agent, in
//! node mode with every probe and collector on, against the usual way to do
//! the same job without push: a Prometheus in agent mode (Debian's package,
//! `--enable-feature=agent`) scraping the agent every second and forwarding
//! with remote write.
//!
//! Configurations, one fresh process set each, measured in rotated order per
//! round: the agent alone (baseline); the agent pushing remote write every
//! second; the agent pushing OTLP/HTTP every second; the agent scraped by the
//! Prometheus agent. Receivers are the test harness's (remote write: an
//! HTTP/1.1 server answering 200; OTLP: hyper, decoding every request). Each
//! is measured as CPU time (utime + stime, all threads, from /proc) over a
//! window after a warm-up; reported as % of one core.

use super::{
    Background, BenchArgs, agent_bin, interleaved, median, min_max, print_machine, process_cpu,
    require_root, start_agent,
};
use anyhow::{Context, Result};
use harness::Receiver;
use harness::otlp::{OtlpReceiver, Protocol};
use std::process::Command;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Agent,
    RemoteWrite,
    Otlp,
    PrometheusAgent,
}

const CONFIGS: [Config; 4] = [
    Config::Agent,
    Config::RemoteWrite,
    Config::Otlp,
    Config::PrometheusAgent,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Agent => "agent",
            Config::RemoteWrite => "agent + remote write",
            Config::Otlp => "agent + OTLP/HTTP",
            Config::PrometheusAgent => "agent + prometheus --agent",
        }
    }
}

const WARMUP: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(20);
/// The target: pushing every second adds under 1% of a core.
const TARGET_ADDED_PERCENT: f64 = 1.0;

/// CPU per configuration: the agent's, and the Prometheus agent's if any (%).
#[derive(Clone, Copy, Debug)]
struct Cpu {
    agent: f64,
    peer: f64,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    let agent = agent_bin()?;
    let rw = Receiver::start("127.0.0.1:0".parse()?, Vec::new());
    let otlp = OtlpReceiver::start(Protocol::Http);
    eprintln!(
        "xtask: bench push: {} rounds x {} configurations, {WINDOW:?} each after {WARMUP:?}",
        args.rounds,
        CONFIGS.len()
    );
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let url = match config {
            Config::RemoteWrite => format!("http://{}/api/v1/write", rw.addr),
            Config::Otlp => otlp.endpoint(),
            _ => String::new(),
        };
        let cpu = measure(config, &agent, &url, rw.addr)?;
        eprintln!(
            "xtask: bench push: round {}/{} {:<28} agent {:5.2} %  peer {:5.2} %",
            round + 1,
            args.rounds,
            config.name(),
            cpu.agent,
            cpu.peer
        );
        Ok(cpu)
    })?;
    let delivered = otlp.received().iter().filter(|r| r.delivered()).count();
    print_report(&results, rw.received().len(), delivered);
    Ok(())
}

fn measure(
    config: Config,
    agent: &std::path::Path,
    url: &str,
    rw: std::net::SocketAddr,
) -> Result<Cpu> {
    let mut run_args = vec!["run"];
    match config {
        Config::RemoteWrite => run_args.extend(["--remote-write-url", url]),
        Config::Otlp => run_args.extend(["--otlp-endpoint", url]),
        _ => {}
    }
    if matches!(config, Config::RemoteWrite | Config::Otlp) {
        run_args.extend(["--push-interval", "1"]);
    }
    let (agent_p, addr) = start_agent(agent, &run_args)?;
    let peer = match config {
        Config::PrometheusAgent => Some(prometheus_agent(addr, rw)?),
        _ => None,
    };
    std::thread::sleep(WARMUP);
    let pids: Vec<Option<u32>> = vec![Some(agent_p.pid()), peer.as_ref().map(|(p, _)| p.pid())];
    let before: Vec<Duration> = pids
        .iter()
        .map(|p| p.map_or(Ok(Duration::ZERO), process_cpu))
        .collect::<Result<_>>()?;
    std::thread::sleep(WINDOW);
    let after: Vec<Duration> = pids
        .iter()
        .map(|p| p.map_or(Ok(Duration::ZERO), process_cpu))
        .collect::<Result<_>>()?;
    let percent = |i: usize| 100.0 * (after[i] - before[i]).as_secs_f64() / WINDOW.as_secs_f64();
    let cpu = Cpu {
        agent: percent(0),
        peer: percent(1),
    };
    if let Some((p, dir)) = peer {
        p.stop()?;
        let _ = std::fs::remove_dir_all(dir);
    }
    agent_p.stop()?;
    Ok(cpu)
}

/// `prometheus --enable-feature=agent`: scrapes the agent every second and
/// forwards to the remote-write receiver (flushing every second, as the
/// agent's own push does).
fn prometheus_agent(
    target: std::net::SocketAddr,
    rw: std::net::SocketAddr,
) -> Result<(Background, std::path::PathBuf)> {
    let port = harness::free_port();
    let dir = std::env::temp_dir().join(format!("ebpf-agent-bench-push-{port}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: ebpf-agent\n    static_configs:\n      - targets: ['{target}']\n\
         remote_write:\n  - url: http://{rw}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n"
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let mut cmd = Command::new("prometheus");
    cmd.args([
        "--enable-feature=agent".to_string(),
        format!("--config.file={}", path.display()),
        format!("--storage.agent.path={}", dir.join("wal").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ]);
    let mut p = Background::spawn("prometheus --agent", cmd, libc::SIGTERM)?;
    let ready: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    p.wait_until(Duration::from_secs(30), || {
        harness::http::http_get(ready, "/-/ready").is_ok_and(|r| r.status == 200)
    })?;
    Ok((p, dir))
}

fn print_report(results: &[Vec<Cpu>], rw_requests: usize, otlp_requests: usize) {
    println!();
    println!("bench push: CPU in % of one core, all probes and collectors, pushing every second");
    print_machine();
    let agent: Vec<f64> = results
        .iter()
        .map(|r| median(&r.iter().map(|c| c.agent).collect::<Vec<_>>()))
        .collect();
    println!();
    println!(
        "  {:<28} {:>8} {:>14} {:>8}",
        "config", "agent %", "min..max", "added %"
    );
    for (i, config) in CONFIGS.iter().enumerate() {
        let (lo, hi) = min_max(&results[i].iter().map(|c| c.agent).collect::<Vec<_>>());
        println!(
            "  {:<28} {:>8.2} {:>14} {:>8}",
            config.name(),
            agent[i],
            format!("{lo:.2}..{hi:.2}"),
            if i == 0 {
                "-".to_string()
            } else {
                format!("{:+.2}", agent[i] - agent[0])
            }
        );
    }
    let peer = median(&results[3].iter().map(|c| c.peer).collect::<Vec<_>>());
    // The peer's cost of the same job: its own CPU plus what being scraped adds to the agent.
    let peer_total = peer + (agent[3] - agent[0]).max(0.0);
    println!(
        "  {:<28} {:>8.2}   (prometheus --agent's own CPU)",
        "prometheus --agent", peer
    );
    println!();
    println!(
        "  requests received: remote write {rw_requests} (the agent's and prometheus --agent's), OTLP {otlp_requests}"
    );
    for (i, what) in [(1, "remote write"), (2, "OTLP/HTTP")] {
        let added = agent[i] - agent[0];
        let verdict = if added < TARGET_ADDED_PERCENT {
            "PASS"
        } else {
            "MISS"
        };
        println!(
            "  pushing {what:<13} adds {added:5.2} % of a core (target < {TARGET_ADDED_PERCENT:.0} %) {verdict}; \
             {:.2}x the Prometheus agent doing the same ({peer_total:.2} %)",
            added / peer_total
        );
    }
}

//! `cargo xtask bench scrape`: how long a /metrics scrape takes and what it
//! costs, the agent against prometheus-node-exporter with the same collectors.
//!
//! Both run side by side for the whole benchmark; each round does a batch of
//! sequential `GET /metrics` (`Accept: text/plain`, a new connection each) to
//! one of them, then the other, order rotated between rounds. Per batch: the
//! wall latency of each scrape and the process's CPU time (utime + stime)
//! over the batch divided by the scrapes.

use super::{
    Background, BenchArgs, READY_TIMEOUT, agent_bin, interleaved, median, min_max, print_machine,
    process_cpu, process_rss, require_root, scrape_text, start_agent,
};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Agent,
    NodeExporter,
}

const CONFIGS: [Config; 2] = [Config::Agent, Config::NodeExporter];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Agent => "agent",
            Config::NodeExporter => "node_exporter",
        }
    }
}

const NODE_EXPORTER: &str = "prometheus-node-exporter";
/// The collectors the agent's node mode also exports.
const NODE_EXPORTER_COLLECTORS: [&str; 25] = [
    "--collector.cpu",
    "--collector.stat",
    "--collector.loadavg",
    "--collector.meminfo",
    "--collector.netdev",
    "--collector.diskstats",
    "--collector.pressure",
    "--collector.filesystem",
    "--collector.vmstat",
    "--collector.netstat",
    "--collector.sockstat",
    "--collector.filefd",
    "--collector.uname",
    "--collector.os",
    "--collector.time",
    "--collector.timex",
    "--collector.softnet",
    "--collector.conntrack",
    "--collector.entropy",
    "--collector.schedstat",
    "--collector.hwmon",
    "--collector.thermal_zone",
    "--collector.cpufreq",
    "--collector.powersupplyclass",
    "--collector.textfile",
];

/// The textfile directory both read: empty, so the cost is the directory
/// listing each scrape, the same for both.
fn textfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join("ebpf-agent-bench-textfile");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Scrapes per batch (one batch per configuration per round).
const SCRAPES: usize = 200;
const WARMUP_SCRAPES: usize = 10;
/// Targets: agent median latency and CPU per scrape at most this fraction
/// of node_exporter's...
const TARGET_LATENCY_VS_PEER: f64 = 0.5;
/// ...and the agent's RSS below this many bytes.
const TARGET_RSS: u64 = 30_000_000;
/// Idle time over which each target's background CPU use is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

struct Batch {
    /// Per scrape, µs.
    latencies: Vec<f64>,
    cpu_per_scrape_us: f64,
    wall: Duration,
    samples: usize,
    rss_bytes: u64,
}

struct Target {
    process: Background,
    addr: SocketAddr,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    let agent_path = agent_bin()?;
    let agent = start_agent_target(&agent_path, false)?;
    let exporter = start_node_exporter()?;
    let targets = [agent, exporter];
    for t in &targets {
        for _ in 0..WARMUP_SCRAPES {
            scrape_text(t.addr)?;
        }
    }
    // CPU each uses with nobody scraping (the agent's probes keep working).
    let idle_before: Vec<Duration> = targets
        .iter()
        .map(|t| process_cpu(t.process.pid()))
        .collect::<Result<_>>()?;
    std::thread::sleep(IDLE_WINDOW);
    let idle_cpu_per_s: Vec<f64> = targets
        .iter()
        .zip(&idle_before)
        .map(|(t, b)| {
            Ok(process_cpu(t.process.pid())?
                .saturating_sub(*b)
                .as_secs_f64()
                / IDLE_WINDOW.as_secs_f64())
        })
        .collect::<Result<_>>()?;
    eprintln!(
        "xtask: bench scrape: {} rounds x {} targets, {SCRAPES} scrapes each",
        args.rounds,
        CONFIGS.len()
    );
    let mut targets = targets;
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let t = &mut targets[index_of(config)];
        let b = batch(t)?;
        eprintln!(
            "xtask: bench scrape: round {}/{} {:<14} median {:8.0} us, {:6.0} us CPU/scrape, {} samples",
            round + 1,
            args.rounds,
            config.name(),
            median(&b.latencies),
            b.cpu_per_scrape_us,
            b.samples
        );
        Ok(b)
    })?;
    let [agent, exporter] = targets;
    let (mut agent, mut exporter) = (agent.process, exporter.process);
    agent.check_running()?;
    exporter.check_running()?;
    agent.stop()?;
    // node_exporter (Go) dies of the SIGTERM rather than exiting 0, which
    // `stop` would report as an error: the guard's drop stops it instead.
    drop(exporter);
    // Last, alone: the agent with all probes and collectors, for its RSS and
    // for what its full exposition (eBPF histograms too) costs to serve.
    let mut full = start_agent_target(&agent_path, true)?;
    let full_batch = batch(&mut full)?;
    full.process.stop()?;
    print_report(args, &results, &idle_cpu_per_s, &full_batch);
    Ok(())
}

fn index_of(config: Config) -> usize {
    CONFIGS
        .iter()
        .position(|&c| c == config)
        .expect("in CONFIGS")
}

/// The agent with only the collectors node_exporter also runs (`--probes
/// none`), or with everything on (`full`: the RSS target is for that).
fn start_agent_target(agent: &std::path::Path, full: bool) -> Result<Target> {
    let dir = textfile_dir()?;
    let mut args = vec!["run", "--strict", "--textfile-directory"];
    args.push(dir.to_str().context("temp dir is not UTF-8")?);
    if !full {
        args.extend(["--probes", "none"]);
    }
    let (process, addr) = start_agent(agent, &args)?;
    Ok(Target { process, addr })
}

fn start_node_exporter() -> Result<Target> {
    match Command::new(NODE_EXPORTER).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => bail!("`{NODE_EXPORTER} --version` failed ({})", out.status),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot run {NODE_EXPORTER} (apt-get install prometheus-node-exporter)")
            });
        }
    }
    let addr: SocketAddr = ([127, 0, 0, 1], harness::free_port()).into();
    let mut cmd = Command::new(NODE_EXPORTER);
    cmd.arg(format!("--web.listen-address={addr}"))
        .arg("--collector.disable-defaults")
        .args(NODE_EXPORTER_COLLECTORS)
        .arg(format!(
            "--collector.textfile.directory={}",
            textfile_dir()?.display()
        ));
    let mut p = Background::spawn(NODE_EXPORTER, cmd, libc::SIGTERM)?;
    p.wait_until(READY_TIMEOUT, || {
        harness::http_get(addr, "/metrics").is_ok_and(|r| r.status == 200)
    })?;
    Ok(Target { process: p, addr })
}

fn batch(t: &mut Target) -> Result<Batch> {
    t.process.check_running()?;
    let pid = t.process.pid();
    let mut latencies = Vec::with_capacity(SCRAPES);
    let mut samples = 0;
    let cpu_before = process_cpu(pid)?;
    let batch_start = Instant::now();
    for _ in 0..SCRAPES {
        let start = Instant::now();
        let body = scrape_text(t.addr)?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
        samples = body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
    }
    let cpu = process_cpu(pid)?.saturating_sub(cpu_before);
    Ok(Batch {
        latencies,
        cpu_per_scrape_us: cpu.as_secs_f64() * 1e6 / SCRAPES as f64,
        wall: batch_start.elapsed(),
        samples,
        rss_bytes: process_rss(pid)?,
    })
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[((n - 1) as f64 * p).round() as usize],
    }
}

fn print_report(args: &BenchArgs, results: &[Vec<Batch>], idle_cpu_per_s: &[f64], full: &Batch) {
    println!();
    println!(
        "scrape cost: sequential GET /metrics (Accept: text/plain, new connection each), agent vs {NODE_EXPORTER}"
    );
    print_machine();
    println!(
        "  runs     {} rounds x {SCRAPES} scrapes per target, both running throughout, order rotated each round",
        args.rounds
    );
    println!(
        "  node_exporter flags: --collector.disable-defaults {} --collector.textfile.directory=<empty dir>",
        NODE_EXPORTER_COLLECTORS.join(" ")
    );
    println!();
    println!(
        "  {:<14} {:>10} {:>18} {:>10} {:>14} {:>8} {:>9}",
        "target", "median us", "batch medians", "p99 us", "CPU us/scrape", "samples", "RSS MiB"
    );
    let mut net_cpu = Vec::new();
    let mut medians = Vec::new();
    let mut cpus = Vec::new();
    let mut rss = Vec::new();
    for (&c, batches) in CONFIGS.iter().zip(results) {
        let all: Vec<f64> = batches
            .iter()
            .flat_map(|b| b.latencies.iter().copied())
            .collect();
        let per_batch: Vec<f64> = batches.iter().map(|b| median(&b.latencies)).collect();
        let (lo, hi) = min_max(&per_batch);
        let cpu = median(
            &batches
                .iter()
                .map(|b| b.cpu_per_scrape_us)
                .collect::<Vec<_>>(),
        );
        let max_rss = batches.iter().map(|b| b.rss_bytes).max().unwrap_or(0);
        let samples = batches.last().map_or(0, |b| b.samples);
        println!(
            "  {:<14} {:>10.0} {:>18} {:>10.0} {:>14.0} {:>8} {:>9.1}",
            c.name(),
            median(&all),
            format!("{lo:.0}..{hi:.0}"),
            percentile(&all, 0.99),
            cpu,
            samples,
            max_rss as f64 / (1024.0 * 1024.0)
        );
        let idle = idle_cpu_per_s[index_of(c)];
        net_cpu.push(median(
            &batches
                .iter()
                .map(|b| b.cpu_per_scrape_us - idle * b.wall.as_secs_f64() * 1e6 / SCRAPES as f64)
                .collect::<Vec<_>>(),
        ));
        medians.push(median(&all));
        cpus.push(cpu);
        rss.push(max_rss);
    }
    println!();
    let ratio = medians[index_of(Config::Agent)] / medians[index_of(Config::NodeExporter)];
    println!(
        "  {:<36} {ratio:>5.2}  (target <= {TARGET_LATENCY_VS_PEER:.2})  {}",
        "agent / node_exporter median latency",
        if ratio <= TARGET_LATENCY_VS_PEER {
            "PASS"
        } else {
            "MISS"
        }
    );
    let cpu_ratio = cpus[index_of(Config::Agent)] / cpus[index_of(Config::NodeExporter)];
    println!(
        "  {:<36} {cpu_ratio:>5.2}  (target <= {TARGET_LATENCY_VS_PEER:.2})  {}",
        "agent / node_exporter CPU per scrape",
        if cpu_ratio <= TARGET_LATENCY_VS_PEER {
            "PASS"
        } else {
            "MISS"
        }
    );
    let _ = &rss;
    let agent_rss = full.rss_bytes;
    println!(
        "  agent with all probes too: median {:.0} us, {:.0} us CPU/scrape, {} samples",
        median(&full.latencies),
        full.cpu_per_scrape_us,
        full.samples
    );
    println!(
        "  {:<36} {:>5.1}  (target < {:.0} MB)  {}",
        "agent RSS, all probes + collectors (MB)",
        agent_rss as f64 / 1e6,
        TARGET_RSS as f64 / 1e6,
        if agent_rss < TARGET_RSS {
            "PASS"
        } else {
            "MISS"
        }
    );
    for (&c, (net, idle)) in CONFIGS.iter().zip(net_cpu.iter().zip(idle_cpu_per_s)) {
        println!(
            "  {:<14} idle CPU {:>6.2} % of a core; CPU per scrape net of that {:>6.0} us",
            c.name(),
            idle * 100.0,
            net
        );
    }
    println!(
        "  (CPU us/scrape is the process's whole CPU time over the batch / scrapes; the agent's includes its probes' work)"
    );
    println!();
    println!(
        "reproduce (as root): cargo xtask bench scrape --rounds {}",
        args.rounds
    );
}

//! `cargo xtask bench process`: what the process probe adds to a process's
//! life. The workload forks and execs /bin/true and waits for it, in a loop
//! (one fork, one exec, one exit each). Measured once per configuration per
//! round:
//!
//! - baseline: nothing attached;
//! - floor: `agent bench-floor --process`, empty programs on the same three
//!   tracepoints;
//! - agent: `agent run --probes process`, node mode;
//! - agent+audit: the same with `--exec-events /dev/null` (a filename read
//!   and a JSON line per exec);
//! - bpftrace: the peer, an execsnoop-like one-liner (a line per exec with
//!   its filename, exits counted).
//!
//! A fork+exec costs milliseconds on a busy VM, so the wall-clock difference
//! of a few microseconds drowns in noise. The kernel's own figure does not:
//! with `kernel.bpf_stats_enabled` on (for the run, then restored), each BPF
//! program fd's `/proc/PID/fdinfo` has `run_time_ns` and `run_cnt`. Each
//! program's mean cost per run over the loop, summed over the programs of the
//! process under test (agent, floor or bpftrace), is the cost of one cycle
//! (each hook fires once per cycle for this workload), whatever else the
//! machine ran meanwhile (the programs see every process). The wall-clock
//! figures are printed too.
//!
//! See docs/benchmarks.md for how to read the results.

use super::bpf_runs::ProgRuns;
use super::{
    Background, BenchArgs, NOISY_SPREAD, READY_TIMEOUT, agent_bin, interleaved, median, min_max,
    print_machine, process_cpu, require_root, scrape, start_agent, start_bpftrace,
};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Baseline,
    Floor,
    Agent,
    Audit,
    Bpftrace,
}

const CONFIGS: [Config; 5] = [
    Config::Baseline,
    Config::Floor,
    Config::Agent,
    Config::Audit,
    Config::Bpftrace,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor => "floor",
            Config::Agent => "agent",
            Config::Audit => "agent+audit",
            Config::Bpftrace => "bpftrace",
        }
    }
}

/// The peer: execsnoop's output (pid, uid, filename per exec) and exits counted.
const BPFTRACE_PROGRAM: &str = "tracepoint:sched:sched_process_exec \
    { printf(\"%d %d %s\\n\", pid, uid, str(args->filename)); } \
    tracepoint:sched:sched_process_exit { @exits = count(); }";

/// `--calls` is divided by this to get fork+exec+exit cycles.
const CALLS_PER_CYCLE: u64 = 1000;
const WARMUP_CYCLES: u64 = 100;
/// Timed in chunks; a measurement is their median (see bench sched).
const CHUNKS: u64 = 10;
const SETTLE: Duration = Duration::from_millis(300);
const DRAIN_WAIT: Duration = Duration::from_millis(300);

struct Measurement {
    ns_per_cycle: f64,
    /// BPF run time per cycle: each program's ns per run, summed (not for the baseline).
    kernel_ns_per_cycle: Option<f64>,
    /// The agent's CPU (% of one core over the loop) and the execs it counted.
    agent: Option<(f64, f64)>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    let agent = agent_bin()?;
    let _stats = harness::sysctl::BpfStats::set(true).context("kernel.bpf_stats_enabled")?;
    let cycles = (args.calls / CALLS_PER_CYCLE).max(100);
    eprintln!(
        "xtask: bench process: {} rounds x {} configurations, {cycles} fork+exec+exit each",
        args.rounds,
        CONFIGS.len(),
    );
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let m = measure(config, &agent, cycles)?;
        eprintln!(
            "xtask: bench process: round {}/{} {:<11} {:10.0} ns/cycle",
            round + 1,
            args.rounds,
            config.name(),
            m.ns_per_cycle
        );
        Ok(m)
    })?;
    print_report(args, cycles, &results);
    Ok(())
}

fn execs(addr: std::net::SocketAddr) -> Result<f64> {
    scrape(addr)?
        .sum("ebpf_agent_process_execs_total", &[])
        .context("ebpf_agent_process_execs_total missing from /metrics")
}

fn measure(config: Config, agent: &Path, cycles: u64) -> Result<Measurement> {
    let mut attached = attach(config, agent)?;
    fork_exec_loop(WARMUP_CYCLES.min(cycles))?;
    std::thread::sleep(SETTLE);
    let watch = match &attached {
        Some((p, Some(addr))) => Some((p.pid(), *addr, execs(*addr)?, process_cpu(p.pid())?)),
        _ => None,
    };
    let kernel_before = match &attached {
        Some((p, _)) => Some(ProgRuns::read(p.pid())?),
        None => None,
    };
    let start = Instant::now();
    let chunks = fork_exec_loop(cycles)?;
    let wall = start.elapsed();
    let kernel_ns_per_cycle = match (&attached, kernel_before) {
        (Some((p, _)), Some(before)) => Some(ProgRuns::read(p.pid())?.per_run_sum_since(&before)),
        _ => None,
    };
    let agent_cost = match watch {
        Some((pid, addr, before, cpu_before)) => {
            let cpu = process_cpu(pid)?.saturating_sub(cpu_before);
            std::thread::sleep(DRAIN_WAIT);
            Some((
                100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
                execs(addr)? - before,
            ))
        }
        None => None,
    };
    if let Some((mut p, _)) = attached.take() {
        p.check_running()?;
        p.stop()?;
    }
    let per_cycle: Vec<f64> = chunks.iter().map(|d| d.as_nanos() as f64).collect();
    Ok(Measurement {
        ns_per_cycle: median(&per_cycle),
        kernel_ns_per_cycle,
        agent: agent_cost,
    })
}

type Attached = Option<(Background, Option<std::net::SocketAddr>)>;

fn attach(config: Config, agent: &Path) -> Result<Attached> {
    let run = |extra: &[&str]| -> Result<Attached> {
        let mut args = vec!["run", "--strict", "--probes", "process"];
        args.extend_from_slice(extra);
        let (p, addr) = start_agent(agent, &args)?;
        Ok(Some((p, Some(addr))))
    };
    Ok(Some(match config {
        Config::Baseline => return Ok(None),
        Config::Floor => {
            let mut cmd = Command::new(agent);
            cmd.args(["bench-floor", "--process"]);
            let mut p = Background::spawn("agent bench-floor --process", cmd, libc::SIGTERM)?;
            p.wait_for_line(READY_TIMEOUT, |l| l.trim() == "ready")?;
            (p, None)
        }
        Config::Agent => return run(&[]),
        Config::Audit => return run(&["--exec-events", "/dev/null"]),
        Config::Bpftrace => {
            let p = start_bpftrace(BPFTRACE_PROGRAM)?;
            (p, None)
        }
    }))
}

/// `cycles` runs of /bin/true, each waited for, in CHUNKS timed chunks;
/// returns each chunk's time per cycle.
fn fork_exec_loop(cycles: u64) -> Result<Vec<Duration>> {
    let per_chunk = (cycles / CHUNKS).max(1);
    let mut chunks = Vec::new();
    for _ in 0..CHUNKS {
        let start = Instant::now();
        for _ in 0..per_chunk {
            let status = Command::new("/bin/true")
                .status()
                .context("running /bin/true")?;
            if !status.success() {
                bail!("/bin/true: {status}");
            }
        }
        chunks.push(start.elapsed() / per_chunk as u32);
    }
    Ok(chunks)
}

fn print_report(args: &BenchArgs, cycles: u64, results: &[Vec<Measurement>]) {
    let idx = |c: Config| CONFIGS.iter().position(|&x| x == c).expect("in CONFIGS");
    let stats: Vec<(f64, f64, f64)> = results
        .iter()
        .map(|ms| {
            let v: Vec<f64> = ms.iter().map(|m| m.ns_per_cycle).collect();
            let (lo, hi) = min_max(&v);
            (median(&v), lo, hi)
        })
        .collect();
    let base = stats[idx(Config::Baseline)].0;
    let added = |c: Config| stats[idx(c)].0 - base;
    let kernel = |c: Config| {
        let v: Vec<f64> = results[idx(c)]
            .iter()
            .filter_map(|m| m.kernel_ns_per_cycle)
            .collect();
        median(&v)
    };
    println!();
    println!("process lifecycle overhead: fork + exec /bin/true + exit + wait, in a loop");
    print_machine();
    println!(
        "  runs     {} rounds x {cycles} cycles per configuration, order rotated each round",
        args.rounds
    );
    println!();
    println!(
        "  {:<12} {:>10} {:>22} {:>10} {:>12}",
        "config", "ns/cycle", "min..max", "added ns", "BPF ns/cycle"
    );
    for (config, (med, lo, hi)) in CONFIGS.iter().zip(&stats) {
        let (added, bpf) = match config {
            Config::Baseline => ("-".to_string(), "-".to_string()),
            &c => (format!("{:+.0}", added(c)), format!("{:.0}", kernel(c))),
        };
        println!(
            "  {:<12} {:>10.0} {:>22} {:>10} {:>12}",
            config.name(),
            med,
            format!("{lo:.0}..{hi:.0}"),
            added,
            bpf
        );
    }
    let (bmed, blo, bhi) = stats[idx(Config::Baseline)];
    if (bhi - blo) / bmed > NOISY_SPREAD {
        println!(
            "  note: baseline varied by {:.0}% between rounds: other work interfered; treat the figures as rough",
            100.0 * (bhi - blo) / bmed
        );
    }
    println!();
    let peer = kernel(Config::Bpftrace);
    for c in [Config::Agent, Config::Audit] {
        if peer > 0.0 {
            println!(
                "  {:<34} {:>5.2}  (BPF run time per cycle)",
                format!("{} / bpftrace", c.name()),
                kernel(c) / peer
            );
        }
        let costs: Vec<(f64, f64)> = results[idx(c)].iter().filter_map(|m| m.agent).collect();
        println!(
            "  {:<34} {:>5.1} % of one core; {:.0} execs counted per {cycles} cycles (median)",
            format!("{} process CPU", c.name()),
            median(&costs.iter().map(|c| c.0).collect::<Vec<_>>()),
            median(&costs.iter().map(|c| c.1).collect::<Vec<_>>()),
        );
    }
    println!();
    println!(
        "reproduce (as root): cargo xtask bench process --rounds {} --calls {}",
        args.rounds, args.calls
    );
}

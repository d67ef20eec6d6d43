//! `cargo xtask bench syscalls`: what the syscall probe adds to every syscall.
//!
//! A tight loop of getppid (about the cheapest syscall there is, so the
//! tracing cost dominates) runs in this process on a pinned thread, once per
//! configuration per round:
//!
//! - baseline: nothing attached;
//! - floor: `agent bench-floor`, empty programs on the same two tracepoints,
//!   i.e. the cost of attaching anything at all;
//! - agent: `agent run`, the real probe tracing every process;
//! - agent-stats: the same with `--bpf-stats on`: the kernel's BPF statistics
//!   on, so the difference is what they cost, and they tell the programs' own
//!   run time, so the rest of the added cost is the dispatch;
//! - bpftrace: the peer, a one-liner computing the same latency histograms.
//!
//! See docs/benchmarks.md for how to read the results.

use super::{
    Background, BenchArgs, NOISY_SPREAD, READY_TIMEOUT, agent_bin, interleaved, median, min_max,
    pin_current_thread, print_machine, process_cpu, process_rss, reproduce_command,
    require_bpftrace, require_root, scrape, start_agent, start_bpftrace, workload_cpu,
};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Baseline,
    Floor,
    Agent,
    /// The agent with BPF run-time statistics on.
    AgentStats,
    Bpftrace,
    /// `agent attach --pid` on another (sleeping) process: the loop is not the
    /// target, so this is what attach mode costs everyone else.
    AttachOther,
    /// Node mode with container labels on: what attribution adds.
    Containers,
}

const CONFIGS: [Config; 7] = [
    Config::Baseline,
    Config::Floor,
    Config::Agent,
    Config::AgentStats,
    Config::Bpftrace,
    Config::AttachOther,
    Config::Containers,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor => "floor",
            Config::Agent => "agent",
            Config::AgentStats => "agent-stats",
            Config::Bpftrace => "bpftrace",
            Config::AttachOther => "attach-other",
            Config::Containers => "containers",
        }
    }
}

/// The peer: per-syscall latency histograms, the same work the agent's probe does.
const BPFTRACE_PROGRAM: &str = "tracepoint:raw_syscalls:sys_enter { @s[tid] = nsecs; } \
    tracepoint:raw_syscalls:sys_exit /@s[tid]/ { @h[args->id] = hist(nsecs - @s[tid]); delete(@s[tid]); }";

/// Targets: the agent must add at most this fraction of what the peer adds...
const TARGET_VS_PEER: f64 = 0.25;
/// ...and at most this multiple of what empty programs add.
const TARGET_VS_FLOOR: f64 = 3.0;
/// Attach mode may cost non-target processes at most this much over the floor.
const TARGET_OTHER_OVER_FLOOR_NS: f64 = 10.0;

/// Calls before the timed loop: faults in the code, creates the probes'
/// per-thread state, wakes the CPU.
const WARMUP_CALLS: u64 = 100_000;
/// Pause after the warm-up so the agent has drained the warm-up's events
/// before the first scrape; it flushes and drains every 100 ms.
const SETTLE: Duration = Duration::from_millis(300);
/// Same, after the loop, before the second scrape.
const DRAIN_WAIT: Duration = Duration::from_millis(300);

const RECEIVED: &str = "ebpf_agent_events_received_total";
const DROPPED: &str = "ebpf_agent_events_dropped_total";
const PROBE: (&str, &str) = ("probe", "syscalls");
const KERNEL_RUNS: &str = "ebpf_agent_probe_kernel_runs_total";
const KERNEL_SECONDS: &str = "ebpf_agent_probe_kernel_seconds_total";

/// One measurement of one configuration.
struct Measurement {
    ns_per_call: f64,
    /// Only for the agent configuration.
    agent: Option<AgentCost>,
}

/// What the agent process itself spent while the loop ran.
struct AgentCost {
    cpu_percent: f64,
    rss_bytes: u64,
    events_received: f64,
    /// By stage.
    events_dropped: BTreeMap<String, f64>,
    /// Events drained and aggregated per second of agent CPU time.
    drain_per_cpu_second: f64,
    /// Time inside the probe's programs per traced syscall (entry + exit),
    /// from BPF statistics: what the kernel reports, without dispatch.
    kernel_ns_per_syscall: Option<f64>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    require_bpftrace()?;
    let cpu = workload_cpu(args.cpu)?;
    let agent = agent_bin()?;
    eprintln!(
        "xtask: bench syscalls: {} rounds x {} configurations, {} getppid calls each, on CPU {cpu}",
        args.rounds,
        CONFIGS.len(),
        args.calls
    );
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let m = measure(config, &agent, args.calls, cpu)?;
        eprintln!(
            "xtask: bench syscalls: round {}/{} {:<8} {:8.1} ns/call",
            round + 1,
            args.rounds,
            config.name(),
            m.ns_per_call
        );
        Ok(m)
    })?;
    print_report(args, cpu, &results);
    Ok(())
}

// ---------------------------------------------------------------------------
// One measurement

/// Attaches `config`, runs the loop, detaches (also on error, via Background's Drop).
fn measure(config: Config, agent: &Path, calls: u64, cpu: usize) -> Result<Measurement> {
    let attached = attach(config, agent)?;
    let watched = attached
        .as_ref()
        .and_then(|a| a.metrics.map(|addr| (a.process.pid(), addr)));
    let m = run_pinned(cpu, calls, watched)?;
    if let Some(Attached { mut process, .. }) = attached {
        // A probe process that died mid-loop would make the number meaningless.
        process.check_running()?;
        process.stop()?;
    }
    Ok(m)
}

/// A process holding probes attached; `metrics` is set for the agent.
struct Attached {
    process: Background,
    metrics: Option<SocketAddr>,
    /// The process attach mode watches (attach-other), stopped after the agent.
    _target: Option<Background>,
}

/// Starts what `config` needs and waits until its probes are attached.
fn attach(config: Config, agent: &Path) -> Result<Option<Attached>> {
    let attached = match config {
        Config::Baseline => return Ok(None),
        Config::Floor => {
            let mut cmd = Command::new(agent);
            cmd.arg("bench-floor");
            let mut p = Background::spawn("agent bench-floor", cmd, libc::SIGTERM)?;
            p.wait_for_line(READY_TIMEOUT, |l| l.trim() == "ready")?;
            Attached {
                process: p,
                metrics: None,
                _target: None,
            }
        }
        Config::Agent | Config::AgentStats => {
            // --strict: fail rather than measure an agent whose probe did not attach.
            let stats = if config == Config::Agent { "off" } else { "on" };
            let (p, addr) = start_agent(agent, &["run", "--strict", "--bpf-stats", stats])?;
            Attached {
                process: p,
                metrics: Some(addr),
                _target: None,
            }
        }
        Config::Containers => {
            // An empty kubelet log tree: labels on without a warning; the
            // loop runs on the host, so its records resolve to the host.
            let logs = std::env::temp_dir().join("ebpf-agent-bench-logs");
            std::fs::create_dir_all(logs.join("pods"))?;
            let logs = logs.to_string_lossy().into_owned();
            let args = [
                "run",
                "--strict",
                "--container-labels",
                "on",
                "--pod-logs",
                &logs,
            ];
            let (p, addr) = start_agent(agent, &args)?;
            Attached {
                process: p,
                metrics: Some(addr),
                _target: None,
            }
        }
        Config::AttachOther => {
            let target = {
                let mut sleep = Command::new("sleep");
                sleep.arg("3600");
                Background::spawn("sleep", sleep, libc::SIGTERM)?
            };
            let pid = target.pid().to_string();
            let attach = ["attach", "--json", "--interval", "60", "--pid", &pid];
            let (p, _) = start_agent(agent, &attach)?;
            Attached {
                process: p,
                metrics: None,
                _target: Some(target),
            }
        }
        Config::Bpftrace => {
            let p = start_bpftrace(BPFTRACE_PROGRAM)?;
            Attached {
                process: p,
                metrics: None,
                _target: None,
            }
        }
    };
    Ok(Some(attached))
}

/// Runs `measure_pinned` on a fresh thread: only that thread is pinned, so
/// the children this process starts are free to run on any CPU.
fn run_pinned(cpu: usize, calls: u64, agent: Option<(u32, SocketAddr)>) -> Result<Measurement> {
    std::thread::scope(|s| {
        s.spawn(|| measure_pinned(cpu, calls, agent))
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the workload thread panicked")))
    })
}

/// Warm-up, pause, then the timed loop. `agent` (pid, metrics address) is
/// observed around the loop when given.
fn measure_pinned(cpu: usize, calls: u64, agent: Option<(u32, SocketAddr)>) -> Result<Measurement> {
    pin_current_thread(cpu)?;
    getppid_loop(WARMUP_CALLS.min(calls));
    std::thread::sleep(SETTLE);
    let watch = match agent {
        Some((pid, addr)) => Some(AgentWatch::start(pid, addr)?),
        None => None,
    };

    let start = Instant::now();
    getppid_loop(calls);
    let wall = start.elapsed();

    let agent = match watch {
        Some(watch) => Some(watch.finish(wall)?),
        None => None,
    };
    Ok(Measurement {
        ns_per_call: wall.as_nanos() as f64 / calls as f64,
        agent,
    })
}

/// The workload: `calls` raw getppid syscalls (no libc caching, no vDSO).
fn getppid_loop(calls: u64) {
    for _ in 0..calls {
        // SAFETY: getppid takes no arguments and cannot fail.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
}

/// The agent's syscall-probe counters, from one scrape.
struct Counters {
    received: f64,
    /// By the stage that lost them.
    dropped: BTreeMap<String, f64>,
    /// Runs and seconds of the syscall probe's sys_enter and sys_exit
    /// programs (BPF statistics); None when they are off.
    kernel: Option<(f64, f64)>,
}

impl Counters {
    fn scrape(addr: SocketAddr) -> Result<Counters> {
        let text = scrape(addr)?;
        let missing = |name: &str| format!("{name}{{probe=\"syscalls\"}} missing from /metrics");
        let received = text
            .sum(RECEIVED, &[PROBE])
            .with_context(|| missing(RECEIVED))?;
        let dropped = text.sum_by(DROPPED, &[PROBE], "stage");
        if dropped.is_empty() {
            bail!(missing(DROPPED));
        }
        let programs = ["sys_enter", "sys_exit"].map(|p| [PROBE, ("program", p)]);
        let sum = |name| {
            programs
                .iter()
                .map(|l| text.sum(name, l))
                .sum::<Option<f64>>()
        };
        let kernel = sum(KERNEL_RUNS).zip(sum(KERNEL_SECONDS));
        Ok(Counters {
            received,
            dropped,
            kernel,
        })
    }

    /// Dropped events per stage since `before`.
    fn dropped_since(&self, before: &Counters) -> BTreeMap<String, f64> {
        self.dropped
            .iter()
            .map(|(stage, n)| (stage.clone(), n - before.dropped.get(stage).unwrap_or(&0.0)))
            .collect()
    }
}

/// The agent, observed around the timed loop. Its CPU time is read after the
/// first scrape and before the second, so the scrapes themselves are not counted.
struct AgentWatch {
    pid: u32,
    addr: SocketAddr,
    before: Counters,
    cpu_before: Duration,
}

impl AgentWatch {
    /// Just before the loop.
    fn start(pid: u32, addr: SocketAddr) -> Result<AgentWatch> {
        let before = Counters::scrape(addr)?;
        Ok(AgentWatch {
            pid,
            addr,
            before,
            cpu_before: process_cpu(pid)?,
        })
    }

    /// Right after the loop: CPU and RSS now; events once the agent has
    /// drained what the loop produced.
    fn finish(self, wall: Duration) -> Result<AgentCost> {
        let cpu_during_loop = process_cpu(self.pid)?.saturating_sub(self.cpu_before);
        let rss_bytes = process_rss(self.pid)?;
        std::thread::sleep(DRAIN_WAIT);
        // CPU over the same span as the events.
        let cpu_for_events = process_cpu(self.pid)?
            .saturating_sub(self.cpu_before)
            .as_secs_f64();
        let after = Counters::scrape(self.addr)?;
        let events_received = after.received - self.before.received;
        // Per run, so other processes' syscalls do not skew it; two runs per syscall.
        let kernel_ns_per_syscall = after
            .kernel
            .zip(self.before.kernel)
            .map(|((runs, secs), (runs0, secs0))| 2.0 * (secs - secs0) * 1e9 / (runs - runs0));
        Ok(AgentCost {
            cpu_percent: 100.0 * cpu_during_loop.as_secs_f64() / wall.as_secs_f64(),
            rss_bytes,
            events_received,
            events_dropped: after.dropped_since(&self.before),
            // Less than one clock tick of CPU time is too short to tell.
            drain_per_cpu_second: if cpu_for_events > 0.0 {
                events_received / cpu_for_events
            } else {
                f64::NAN
            },
            kernel_ns_per_syscall,
        })
    }
}

// ---------------------------------------------------------------------------
// Report

/// Median and range of one configuration's ns/call.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

fn summarize(ms: &[Measurement]) -> Summary {
    let ns: Vec<f64> = ms.iter().map(|m| m.ns_per_call).collect();
    let (min, max) = min_max(&ns);
    Summary {
        median: median(&ns),
        min,
        max,
    }
}

fn print_report(args: &BenchArgs, cpu: usize, results: &[Vec<Measurement>]) {
    let summaries: Vec<Summary> = results.iter().map(|ms| summarize(ms)).collect();
    let base = summaries[index_of(Config::Baseline)].median;
    let added = |c: Config| summaries[index_of(c)].median - base;

    println!();
    println!("syscall overhead: getppid loop, pinned to CPU {cpu}");
    print_machine();
    println!(
        "  runs     {} rounds x {} calls per configuration, order rotated each round",
        args.rounds, args.calls
    );
    println!();
    println!(
        "  {:<12} {:>10} {:>20} {:>10}",
        "config", "ns/call", "min..max", "added ns"
    );
    for (config, s) in CONFIGS.iter().zip(&summaries) {
        let range = format!("{:.1}..{:.1}", s.min, s.max);
        let added = match config {
            Config::Baseline => "-".to_string(),
            &c => format!("{:+.1}", added(c)),
        };
        println!(
            "  {:<12} {:>10.1} {:>20} {:>10}",
            config.name(),
            s.median,
            range,
            added
        );
    }
    warn_if_noisy(&summaries[index_of(Config::Baseline)]);
    println!();
    let agent = added(Config::Agent);
    print_ratio(
        "agent added / bpftrace added",
        agent,
        added(Config::Bpftrace),
        TARGET_VS_PEER,
    );
    print_ratio(
        "agent added / floor added",
        agent,
        added(Config::Floor),
        TARGET_VS_FLOOR,
    );
    println!(
        "  {:<30} {:>+6.1} ns  (no target: measured, reported)",
        "BPF statistics (stats - agent)",
        added(Config::AgentStats) - agent
    );
    let costs = results[index_of(Config::AgentStats)].iter();
    let run_ns: Vec<f64> = costs
        .filter_map(|m| m.agent.as_ref()?.kernel_ns_per_syscall)
        .collect();
    if !run_ns.is_empty() {
        let run_ns = median(&run_ns);
        println!(
            "  {:<30} {:>6.1} ns  (BPF statistics: sys_enter + sys_exit run time per syscall)",
            "programs' own run time", run_ns
        );
        // The floor is what calling (empty) programs costs: the dispatch the
        // run time leaves out. What is left of the agent's cost is its bodies.
        let bodies = agent - added(Config::Floor);
        println!(
            "  {:<30} {:>+6.1} ns  (agent added - floor added: the programs' bodies)",
            "bodies by subtraction", bodies
        );
        println!(
            "  {:<30} {:>+6.1} ns  (run time - bodies: what the statistics' own clock reads add to it)",
            "statistics over-report",
            run_ns - bodies
        );
    }
    println!(
        "  {:<30} {:>+6.1} ns  (no target: measured, reported)",
        "container labels over agent",
        added(Config::Containers) - agent
    );
    let other = added(Config::AttachOther) - added(Config::Floor);
    println!(
        "  {:<30} {:>+6.1} ns  (target <= {TARGET_OTHER_OVER_FLOOR_NS} ns)  {}",
        "attach-other over floor",
        other,
        if other <= TARGET_OTHER_OVER_FLOOR_NS {
            "PASS"
        } else {
            "MISS"
        }
    );
    println!();
    print_agent_cost(&results[index_of(Config::Agent)], args.calls);
    println!();
    println!(
        "reproduce (as root): {}",
        reproduce_command("syscalls", args)
    );
}

/// Nothing changes between baseline rounds but the machine: a wide range
/// means other work interfered, and small differences are not to be trusted.
fn warn_if_noisy(baseline: &Summary) {
    let spread = (baseline.max - baseline.min) / baseline.median;
    if spread > NOISY_SPREAD {
        println!(
            "  note: baseline varied by {:.0}% between rounds: other work on this machine or \
             its host interfered; treat small differences and the ratios as rough",
            spread * 100.0
        );
    }
}

fn index_of(config: Config) -> usize {
    CONFIGS
        .iter()
        .position(|&c| c == config)
        .expect("in CONFIGS")
}

/// `label  ratio  (target <= t)  PASS|MISS`; a non-positive denominator means
/// the run was too noisy to tell.
fn print_ratio(label: &str, numerator: f64, denominator: f64, target: f64) {
    if denominator <= 0.0 {
        println!(
            "  {label:<30} n/a   (denominator {denominator:+.1} ns is not positive: too noisy, rerun)  MISS"
        );
        return;
    }
    let ratio = numerator / denominator;
    let verdict = if ratio <= target { "PASS" } else { "MISS" };
    println!("  {label:<30} {ratio:>5.2}  (target <= {target:.2})  {verdict}");
}

fn print_agent_cost(ms: &[Measurement], calls: u64) {
    let costs: Vec<&AgentCost> = ms.iter().filter_map(|m| m.agent.as_ref()).collect();
    let med = |f: fn(&AgentCost) -> f64| median(&costs.iter().map(|c| f(c)).collect::<Vec<_>>());
    let received = med(|c| c.events_received);
    println!("  agent process, medians over rounds:");
    println!(
        "    CPU              {:>12.1} % of one core over the loop's wall time",
        med(|c| c.cpu_percent)
    );
    println!(
        "    RSS              {:>12.1} MiB at the end of the loop",
        med(|c| c.rss_bytes as f64) / (1024.0 * 1024.0)
    );
    println!(
        "    events received  {:>12.0} during the loop ({:.2} per loop call; other processes' syscalls count too)",
        received,
        received / calls as f64
    );
    println!(
        "    events dropped   {:>12.0} during the loop ({})",
        med(|c| c.events_dropped.values().sum()),
        dropped_by_stage(&costs)
    );
    println!(
        "    drain capacity   {:>12.2} M events per agent CPU second (received / agent CPU time)",
        med(|c| c.drain_per_cpu_second) / 1e6
    );
}

/// `stage median, ...`: ringbuf_full means the agent fell behind, while
/// exit_without_enter also counts syscalls already under way at attach time.
fn dropped_by_stage(costs: &[&AgentCost]) -> String {
    let stages = costs
        .first()
        .map(|c| c.events_dropped.keys())
        .into_iter()
        .flatten();
    stages
        .map(|stage| {
            let per_round: Vec<f64> = costs
                .iter()
                .map(|c| c.events_dropped.get(stage).copied().unwrap_or(0.0))
                .collect();
            format!("{stage} {:.0}", median(&per_round))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

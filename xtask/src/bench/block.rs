//! `cargo xtask bench block`: what the block probe adds to every block I/O.
//!
//! One thread, pinned to a CPU, reads 4 KiB with O_DIRECT at rotating
//! offsets from a loop device backed by a file in /dev/shm: every read is one
//! block request (issue and completion, no disk below it, so each costs the
//! same). Measured once per configuration per round:
//!
//! - baseline: nothing attached;
//! - floor: `agent bench-floor --block`, empty programs on the raw
//!   tracepoints block_rq_insert, _issue, _complete and _merge;
//! - agent: `agent run --probes block`, node mode;
//! - bpftrace: the peer, biolatency on the block tracepoints (issue ->
//!   complete keyed by device and sector, a histogram per device) plus a
//!   size histogram.
//!
//! A block request costs ~20 us here (a loop worker thread does the copy),
//! and that swings by more than the probes cost between rounds, so the
//! verdict uses the programs' own run time per read from the kernel's BPF
//! statistics (`kernel.bpf_stats_enabled`, on for the run and restored
//! after), read from each tool's programs in /proc/PID/fdinfo (bpf_runs.rs):
//! the same yardstick for the floor, the agent and bpftrace. The wall-clock added
//! cost is printed too.
//!
//! See docs/benchmarks.md for how to read the results.

use super::bpf_runs::ProgRuns;
use super::four_way::{CONFIGS, Config, Setup, spread};
use super::{
    BenchArgs, agent_bin, interleaved, median, pin_current_thread, print_configs, print_machine,
    require_bpftrace, require_root, scrape, workload_cpu,
};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The peer: biolatency on tracepoints (bpftrace's biolatency.bt needs
/// kprobes, which this kernel lacks), with a size histogram like ours.
const BPFTRACE_PROGRAM: &str = "tracepoint:block:block_rq_issue \
    { @start[args->dev, args->sector] = nsecs; } \
    tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ \
    { @usecs[args->dev] = hist((nsecs - @start[args->dev, args->sector]) / 1000); \
      @bytes[args->dev] = hist(args->nr_sector * 512); \
      delete(@start[args->dev, args->sector]); }";

const SETUP: Setup = Setup {
    probe: "block",
    bpftrace_program: BPFTRACE_PROGRAM,
};

/// Target (issue 11): the agent costs at most this fraction of bpftrace per event.
const TARGET_VS_PEER: f64 = 0.3;
/// `--calls` is divided by this to get reads (each is a block request, far
/// dearer than a getppid call).
const CALLS_PER_READ: u64 = 20;
const WARMUP_READS: u64 = 5_000;
const CHUNKS: u64 = 10;
const SETTLE: Duration = Duration::from_millis(300);
const DEVICE_MIB: u64 = 64;
const READ: usize = 4096;

const DEVICE_COUNT: &str = "ebpf_agent_block_io_device_seconds_count";

struct Measurement {
    ns_per_io: f64,
    /// Run time of the tool's BPF programs during the loop, per read.
    prog_ns_per_io: Option<f64>,
    /// Agent only: requests its device histogram counted on the loop
    /// device during the loop, per read.
    counted_per_read: Option<f64>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    require_bpftrace()?;
    let cpu = workload_cpu(args.cpu)?;
    let agent = agent_bin()?;
    let reads = (args.calls / CALLS_PER_READ).max(1000);
    let disk = harness::LoopDevice::in_memory(DEVICE_MIB);
    let _stats = harness::sysctl::BpfStats::set(true).context("kernel.bpf_stats_enabled")?;
    eprintln!(
        "xtask: bench block: {} rounds x {} configurations, {reads} reads each from {} on CPU {cpu}",
        args.rounds,
        CONFIGS.len(),
        disk.path
    );
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let m = measure(config, &agent, &disk, reads, cpu)?;
        eprintln!(
            "xtask: bench block: round {}/{} {:<8} {:8.1} ns/io",
            round + 1,
            args.rounds,
            config.name(),
            m.ns_per_io
        );
        Ok(m)
    })?;
    print_report(args, cpu, reads, &results);
    Ok(())
}

fn measure(
    config: Config,
    agent: &Path,
    disk: &harness::LoopDevice,
    reads: u64,
    cpu: usize,
) -> Result<Measurement> {
    let mut attached = SETUP.attach(config, agent)?;
    read_loop(&disk.path, cpu, WARMUP_READS.min(reads))?;
    std::thread::sleep(SETTLE);
    let before = match &attached {
        Some((_, Some(addr))) => Some((*addr, counted(*addr, disk.name())?)),
        _ => None,
    };
    let runs_before = match &attached {
        Some((p, _)) => Some(ProgRuns::read(p.pid())?),
        None => None,
    };
    let chunks = read_loop(&disk.path, cpu, reads)?;
    let prog_ns_per_io = match (&attached, runs_before) {
        (Some((p, _)), Some(b)) => {
            Some(ProgRuns::read(p.pid())?.total_ns_since(&b) as f64 / reads as f64)
        }
        _ => None,
    };
    let counted_per_read = match before {
        Some((addr, n)) => Some((counted(addr, disk.name())? - n) / reads as f64),
        None => None,
    };
    if let Some((mut p, _)) = attached.take() {
        p.check_running()?;
        p.stop()?;
    }
    let per_io: Vec<f64> = chunks.iter().map(|d| d.as_nanos() as f64).collect();
    Ok(Measurement {
        ns_per_io: median(&per_io),
        prog_ns_per_io,
        counted_per_read,
    })
}

/// Completions the agent counted on `device`, all operations.
fn counted(addr: SocketAddr, device: &str) -> Result<f64> {
    Ok(scrape(addr)?
        .sum(DEVICE_COUNT, &[("device", device)])
        .unwrap_or(0.0))
}

/// `reads` O_DIRECT 4 KiB reads from a thread pinned to `cpu`, in CHUNKS
/// timed chunks; returns each chunk's time per read.
fn read_loop(dev: &str, cpu: usize, reads: u64) -> Result<Vec<Duration>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .with_context(|| format!("opening {dev} with O_DIRECT"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<Duration>> {
            pin_current_thread(cpu)?;
            let layout = std::alloc::Layout::from_size_align(READ, READ)?;
            // SAFETY: a non-zero size; freed below with the same layout.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            if ptr.is_null() {
                bail!("allocating an aligned buffer");
            }
            // SAFETY: `ptr` holds READ initialized bytes until dealloc.
            let buf = unsafe { std::slice::from_raw_parts_mut(ptr, READ) };
            let blocks = (DEVICE_MIB << 20) / READ as u64;
            let per_chunk = reads.div_ceil(CHUNKS);
            let mut chunks = Vec::with_capacity(CHUNKS as usize);
            let (mut done, mut result) = (0, Ok(()));
            while done < reads && result.is_ok() {
                let n = per_chunk.min(reads - done);
                let start = Instant::now();
                for i in done..done + n {
                    if let Err(e) = file.read_exact_at(buf, (i % blocks) * READ as u64) {
                        result = Err(e);
                        break;
                    }
                }
                chunks.push(start.elapsed() / n as u32);
                done += n;
            }
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(ptr, layout) };
            result.context("O_DIRECT read")?;
            Ok(chunks)
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the reader panicked")))
    })
}

fn print_report(args: &BenchArgs, cpu: usize, reads: u64, results: &[Vec<Measurement>]) {
    let idx = Config::index;
    let stats = spread(results, |m| m.ns_per_io);
    let base = stats[idx(Config::Baseline)].0;
    let added = |c: Config| stats[idx(c)].0 - base;

    println!();
    println!(
        "block I/O overhead: O_DIRECT 4 KiB reads from a loop device on tmpfs, one thread pinned to CPU {cpu}"
    );
    print_machine();
    println!(
        "  runs     {} rounds x {reads} reads per configuration, order rotated each round",
        args.rounds
    );
    print_configs("ns/io", &CONFIGS.map(Config::name), &stats);
    println!();
    let prog = |c: Config| {
        let v: Vec<f64> = results[idx(c)]
            .iter()
            .filter_map(|m| m.prog_ns_per_io)
            .collect();
        median(&v)
    };
    println!(
        "  BPF programs' run time per read (kernel.bpf_stats_enabled, medians; the node's other I/O included):"
    );
    for c in [Config::Floor, Config::Agent, Config::Bpftrace] {
        println!("    {:<10} {:>10.1} ns", c.name(), prog(c));
    }
    let (peer, agent) = (prog(Config::Bpftrace), prog(Config::Agent));
    let ratio = agent / peer;
    let verdict = if ratio <= TARGET_VS_PEER {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "  {:<30} {ratio:>5.2}  (target <= {TARGET_VS_PEER:.2})  {verdict}",
        "agent run time / bpftrace's"
    );
    let floor = prog(Config::Floor);
    println!(
        "  {:<30} {:>5.2}  (information: both less the floor, the dispatch and statistics clock reads every program pays)",
        "agent above floor / bpftrace's",
        (prog(Config::Agent) - floor) / (peer - floor)
    );
    let (peer, agent) = (added(Config::Bpftrace), added(Config::Agent));
    if peer > 0.0 && agent > 0.0 {
        println!(
            "  {:<30} {:>5.2}  (wall clock, information: within the noise above)",
            "agent added / bpftrace added",
            agent / peer
        );
    }
    let counted: Vec<f64> = results[idx(Config::Agent)]
        .iter()
        .filter_map(|m| m.counted_per_read)
        .collect();
    println!(
        "  {:<30} {:>5.2}  (the agent's device-time count on the loop device per read: 1.00 is exact)",
        "requests counted per read",
        median(&counted)
    );
    println!();
    let mut cmd = format!(
        "cargo xtask bench block --rounds {} --calls {}",
        args.rounds, args.calls
    );
    if let Some(cpu) = args.cpu {
        cmd.push_str(&format!(" --cpu {cpu}"));
    }
    println!("reproduce (as root): {cmd}");
}

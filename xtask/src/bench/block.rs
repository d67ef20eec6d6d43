//! `cargo xtask bench block`: what the block probe adds to every block I/O.
//!
//! One thread, pinned to a CPU, reads 4 KiB with O_DIRECT at rotating
//! offsets from a loop device backed by a file in /dev/shm, behind the
//! mq-deadline scheduler: every read is one block request that is inserted,
//! issued and completed (no disk below it, so each costs the same). The
//! kernel's unbound workqueues, where the loop driver's worker runs, are
//! confined to the same CPU for the run (restored after): the reader and the
//! worker then hand over on one CPU instead of waking each other across
//! two, which makes a read about four times cheaper and far steadier.
//! Measured once per configuration per round:
//!
//! - baseline: nothing attached;
//! - floor: `agent bench-floor --block`, empty programs on the raw
//!   tracepoints block_rq_insert, _issue, _complete and _merge;
//! - agent: `agent run --probes block`, node mode;
//! - bpftrace: the peer, a program with the probe's output: queue time
//!   (insert -> issue), device time (issue -> complete) and size histograms
//!   by device and operation.
//!
//! A block request still swings by more than the probes cost between rounds,
//! so the verdict uses the programs' own run time per read from the kernel's
//! BPF statistics (`kernel.bpf_stats_enabled`, on for the run and restored
//! after), read from each tool's programs in /proc/PID/fdinfo (bpf_runs.rs):
//! the same yardstick for the floor, the agent and bpftrace. The wall-clock
//! added cost is printed too.
//!
//! See docs/benchmarks.md for how to read the results.

use super::bpf_runs::ProgRuns;
use super::four_way::{CONFIGS, Config, Setup, spread};
use super::{
    BenchArgs, agent_bin, interleaved, median, pin_current_thread, print_configs, print_machine,
    print_verdict, reproduce_command, require_bpftrace, require_root, scrape, workload_cpu,
};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The peer: what the probe measures, written as a bpftrace user would
/// (bpftrace's biolatency.bt needs kprobes, absent here, and times issue ->
/// complete only): classic block tracepoints carry no request pointer, so
/// requests are keyed by (device, sector) as biolatency does; the operation
/// is the tracepoint's `rwbs` string. Each timestamp is looked up once.
const BPFTRACE_PROGRAM: &str = "\
tracepoint:block:block_rq_insert { @insert[args->dev, args->sector] = nsecs; }
tracepoint:block:block_rq_issue {
  $t = @insert[args->dev, args->sector];
  if ($t) {
    @queue_us[args->dev, args->rwbs] = hist((nsecs - $t) / 1000);
    delete(@insert[args->dev, args->sector]);
  }
  @start[args->dev, args->sector] = nsecs;
}
tracepoint:block:block_rq_complete {
  $t = @start[args->dev, args->sector];
  if ($t) {
    @device_us[args->dev, args->rwbs] = hist((nsecs - $t) / 1000);
    @bytes[args->dev, args->rwbs] = hist(args->nr_sector * 512);
    delete(@start[args->dev, args->sector]);
  }
}";

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

/// Every request is inserted before it is issued, so each read fires all
/// three hooks, as most disks' I/O does (the loop driver's default, set
/// explicitly so that a kernel with another default measures the same).
const SCHEDULER: &str = "mq-deadline";
/// Confines the kernel's unbound workqueues (Linux 5.x+).
const WORKQUEUE_CPUMASK: &str = "/sys/devices/virtual/workqueue/cpumask";

const DEVICE_COUNT: &str = "ebpf_agent_block_io_device_seconds_count";

struct Measurement {
    ns_per_io: f64,
    /// Run time of the tool's BPF programs during the loop, per read.
    prog_ns_per_io: Option<f64>,
    /// Runs of the tool's BPF programs during the loop, per read (each
    /// read fires insert, issue and complete once: 3.00 for both tools).
    prog_runs_per_io: Option<f64>,
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
    disk.set_scheduler(SCHEDULER);
    let _workqueues = confine_workqueues(cpu);
    let _stats = harness::sysctl::BpfStats::set(true).context("kernel.bpf_stats_enabled")?;
    eprintln!(
        "xtask: bench block: {} rounds x {} configurations, {reads} reads each from {} ({SCHEDULER}) on CPU {cpu}",
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
    let (prog_ns_per_io, prog_runs_per_io) = match (&attached, runs_before) {
        (Some((p, _)), Some(b)) => {
            let now = ProgRuns::read(p.pid())?;
            let per_read = |n: u64| Some(n as f64 / reads as f64);
            (
                per_read(now.total_ns_since(&b)),
                per_read(now.total_runs_since(&b)),
            )
        }
        _ => (None, None),
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
        prog_runs_per_io,
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
        "block I/O overhead: O_DIRECT 4 KiB reads from a loop device on tmpfs ({SCHEDULER}), one thread pinned to CPU {cpu}"
    );
    print_machine();
    println!(
        "  runs     {} rounds x {reads} reads per configuration, order rotated each round",
        args.rounds
    );
    print_configs("ns/io", &CONFIGS.map(Config::name), &stats);
    println!();
    // The median over the rounds of one of a configuration's readings.
    let med = |c: Config, of: fn(&Measurement) -> Option<f64>| {
        median(&results[idx(c)].iter().filter_map(of).collect::<Vec<_>>())
    };
    let prog = |c: Config| med(c, |m| m.prog_ns_per_io);
    let runs = |c: Config| med(c, |m| m.prog_runs_per_io);
    println!(
        "  BPF programs' run time per read (kernel.bpf_stats_enabled, medians; the node's other I/O included):"
    );
    for c in [Config::Floor, Config::Agent, Config::Bpftrace] {
        println!(
            "    {:<10} {:>10.1} ns   {:.2} program runs per read",
            c.name(),
            prog(c),
            runs(c)
        );
    }
    // The floor's run time is the statistics' own clock read (an empty
    // program is a few instructions; one bpf_ktime_get_ns costs as much):
    // both tools pay it on every run and neither pays it with the
    // statistics off, so the verdict compares the work above it.
    let floor = prog(Config::Floor);
    let (peer, agent) = (prog(Config::Bpftrace), prog(Config::Agent));
    let ratio = (agent - floor) / (peer - floor);
    print_verdict("agent above floor / bpftrace's", ratio, TARGET_VS_PEER);
    println!(
        "  {:<30} {:>5.2}  (information: with the statistics' clock read on every run)",
        "agent run time / bpftrace's",
        agent / peer
    );
    let (peer, agent) = (added(Config::Bpftrace), added(Config::Agent));
    if peer > 0.0 && agent > 0.0 {
        println!(
            "  {:<30} {:>5.2}  (wall clock, information: within the noise above)",
            "agent added / bpftrace added",
            agent / peer
        );
    }
    println!(
        "  {:<30} {:>5.2}  (the agent's device-time count on the loop device per read: 1.00 is exact)",
        "requests counted per read",
        med(Config::Agent, |m| m.counted_per_read)
    );
    println!();
    println!("reproduce (as root): {}", reproduce_command("block", args));
}

/// The kernel's unbound workqueues confined to `cpu` until the guard drops,
/// when the kernel lets us (otherwise the loop's worker runs where it likes
/// and the wall-clock figures are noisier; the verdict does not depend on it).
fn confine_workqueues(cpu: usize) -> Option<harness::sysctl::Restore> {
    match harness::sysctl::Restore::set(WORKQUEUE_CPUMASK, &cpumask(cpu)) {
        Ok(guard) => {
            eprintln!(
                "xtask: bench block: unbound workqueues on CPU {cpu} for the run (were {})",
                guard.was()
            );
            Some(guard)
        }
        Err(e) => {
            eprintln!("xtask: bench block: not confining workqueues ({WORKQUEUE_CPUMASK}): {e}");
            None
        }
    }
}

/// The kernel's cpumask text for one CPU: hex, in comma-separated groups of
/// 32 bits, most significant first.
fn cpumask(cpu: usize) -> String {
    let mut groups = vec![format!("{:x}", 1u32 << (cpu % 32))];
    groups.extend(std::iter::repeat_n("00000000".to_string(), cpu / 32));
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::cpumask;

    #[test]
    fn cpumask_text() {
        assert_eq!(cpumask(0), "1");
        assert_eq!(cpumask(1), "2");
        assert_eq!(cpumask(31), "80000000");
        assert_eq!(cpumask(32), "1,00000000");
        assert_eq!(cpumask(65), "2,00000000,00000000");
    }
}

//! Command line. `agent` alone runs node mode with its defaults.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;

/// Default metrics address: every interface, port 9477.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9477";

#[derive(Parser, Debug)]
#[command(
    name = "agent",
    version,
    about = "eBPF telemetry agent: syscall latency and more, as Prometheus metrics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Node mode (the default): trace the node and serve /metrics.
    #[command(after_help = CONFIG_HELP)]
    Run(Box<RunArgs>),
    /// Watch one process live: attach to a PID, or run a command and trace it.
    Attach(AttachArgs),
    /// Benchmark aid: attach empty programs to the syscall (or other) tracepoints and wait.
    #[command(hide = true)]
    BenchFloor {
        /// Use the classic tracepoints instead of the raw ones the agent uses.
        #[arg(long)]
        classic: bool,
        /// The scheduler tracepoints (sched_wakeup, _new, sched_switch) instead.
        #[arg(long, conflicts_with = "classic")]
        sched: bool,
        /// The process tracepoints (sched_process_exec, _fork, _exit) instead.
        #[arg(long, conflicts_with_all = ["classic", "sched", "block"])]
        process: bool,
        /// The block tracepoints (block_rq_insert, _issue, _complete, _merge) instead.
        #[arg(long, conflicts_with_all = ["classic", "sched", "process"])]
        block: bool,
        /// The TCP reset tracepoints (tcp_send_reset, tcp_receive_reset) instead.
        #[arg(long, conflicts_with_all = ["classic", "sched", "process", "block"])]
        tcp_resets: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Prometheus exporter-toolkit web config file (as node_exporter's
    /// --web.config.file): TLS, client certificates, basic auth, headers.
    /// Re-read on SIGHUP and when it or its certificates change.
    #[arg(
        long = "web-config-file",
        alias = "web.config.file",
        value_name = "PATH"
    )]
    pub web_config_file: Option<std::path::PathBuf>,

    /// Also serve /healthz and /readyz (and nothing else) over plain HTTP on
    /// this address, for kubelet probes when the main endpoint needs a client
    /// certificate or password.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// Most connections to the metrics endpoint at once (fewer if the file
    /// descriptor limit is low); when all are taken, the longest idle one is
    /// closed for a new one.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub web_max_connections: u64,

    /// Most scrapes in progress at once (as node_exporter's --web.max-requests);
    /// more wait, up to 10 s. Simultaneous scrapes share one encode.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub web_max_requests: u64,

    /// Trace only this process (filtered in the kernel; all its threads).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// With --pid: also trace the processes it forks from now on, and
    /// theirs (off by default: the metrics are that one process's).
    #[arg(long)]
    pub children: bool,

    /// With --pid, what to do when that process exits: `exit` (as attach
    /// mode does), or `serve` its metrics until stopped, with the probes
    /// detached. Either way a later process that reuses the PID is never
    /// traced as the target.
    #[arg(long, value_enum, default_value = "exit", value_name = "WHAT")]
    pub on_target_exit: OnTargetExit,

    /// Fail if any probe cannot attach, instead of running without it.
    #[arg(long)]
    pub strict: bool,

    /// Size of each probe's ring buffer in bytes (a power of two, 32 KiB to 256 MiB).
    #[arg(long, default_value_t = 1 << 20, value_parser = parse_ring_bytes)]
    pub ring_buffer_bytes: u32,

    /// Significant digits of attach mode's HDR percentiles (1-5). `run`
    /// exports bucket histograms only and keeps no HDR histogram, so this
    /// costs it nothing; it is accepted for configs shared with attach.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub hdr_precision: u8,

    /// Latency histogram bucket bounds in seconds, comma separated and
    /// increasing (at most 31; +Inf is added). Default: 1-2.5-5 steps from
    /// 1e-6 to 10. The kernel's run-queue histogram uses the same.
    #[arg(long, value_name = "LIST", value_parser = crate::histogram::Layout::parse)]
    pub latency_buckets: Option<crate::histogram::Layout>,

    /// How often staged kernel records are flushed and drained, in ms (10-10000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub flush_interval_ms: u64,

    /// Distinct unknown syscall numbers (naming no syscall) exported as their own series
    /// before further ones are folded into syscall="other".
    #[arg(long, default_value_t = 64)]
    pub unknown_syscall_budget: usize,

    /// Distinct syscalls (named or not) each container's label set keeps as
    /// its own series, before further ones are folded into syscall="other".
    /// The host's series keep every named syscall.
    #[arg(long, default_value_t = 40)]
    pub container_syscall_budget: usize,

    /// The most series the probes' budgets may allow, worst case
    /// (docs/metrics.md, "How many series"): settings past it are refused at
    /// start and on reload, naming what to lower.
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    pub max_series: u64,

    /// eBPF probes to run, comma separated (the possible values below, from
    /// the probe table); `none` runs only the /proc collectors.
    #[arg(long, value_delimiter = ',', default_value = crate::probes::all_names(),
          value_parser = crate::probes::names_parser())]
    pub probes: Vec<String>,

    /// Write one JSON line per exec (time, pid, ppid, uid, comm, filename,
    /// container labels) to this file (appended), or `-` for stdout.
    #[arg(long, value_name = "PATH|-")]
    pub exec_events: Option<std::path::PathBuf>,

    /// Most exec records written per second (`N` or `N/s`); the rest are
    /// counted as events_dropped_total{probe="process",stage="rate_limit"}.
    #[arg(long, default_value = "1000", value_name = "N/s",
          value_parser = crate::probes::process::audit::parse_rate)]
    pub exec_events_rate: u32,

    /// Destinations (ip:port) of outgoing TCP connects, retransmits and resets
    /// exported as their own series; later new destinations are folded into
    /// destination="other".
    #[arg(long, default_value_t = 50)]
    pub tcp_destination_budget: usize,

    /// The probes' kernel cost (ebpf_agent_probe_kernel_*), from the kernel's
    /// BPF run-time statistics: `auto` exports it when they are on already
    /// (sysctl kernel.bpf_stats_enabled=1), `on` turns them on while the
    /// agent runs (CAP_SYS_ADMIN at start), `off` never exports it. They add
    /// two clock reads to every program run: docs/benchmarks.md has the cost.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub bpf_stats: crate::self_metrics::StatsMode,

    /// Capabilities kept after the probes are attached, comma separated
    /// (`bpf,perfmon`); `none` drops them all.
    #[arg(long, value_delimiter = ',', default_value = "none", value_parser = crate::privileges::parse_keep)]
    pub keep_capabilities: Vec<crate::privileges::Keep>,

    #[command(flatten)]
    pub collectors: crate::collectors::CollectorArgs,

    #[command(flatten)]
    pub containers: Box<crate::k8s::args::ContainerArgs>,

    #[command(flatten)]
    pub push: Box<crate::push::PushArgs>,

    #[command(flatten)]
    pub config: ConfigArgs,
}

impl Default for RunArgs {
    fn default() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: RunArgs,
        }
        Wrapper::parse_from(["agent"]).args
    }
}

#[derive(Args, Debug, Clone)]
pub struct AttachArgs {
    /// Process to attach to (all its threads).
    #[arg(
        long,
        value_name = "PID",
        conflicts_with = "command",
        required_unless_present = "command"
    )]
    pub pid: Option<u32>,

    /// Do not trace the processes the target forks (by default they are
    /// traced, and theirs, from the moment the agent attached).
    #[arg(long)]
    pub no_children: bool,

    /// Trace the processes the target forks: the default (kept for scripts).
    #[arg(long, hide = true, conflicts_with = "no_children")]
    pub children: bool,

    /// Refresh the view (or write a JSON object) this often, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_secs)]
    pub interval: f64,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<f64>,

    /// Write one JSON object per interval (NDJSON) instead of the view.
    #[arg(long)]
    pub json: bool,

    /// Also serve /metrics for the process on this address.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Significant digits of the HDR histograms behind percentiles (1-5).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub hdr_precision: u8,

    /// Size of each probe's ring buffer in bytes (a power of two, 32 KiB to 256 MiB).
    #[arg(long, default_value_t = 1 << 20, value_parser = parse_ring_bytes)]
    pub ring_buffer_bytes: u32,

    /// Where procfs is mounted.
    #[arg(long, default_value = "/proc")]
    pub procfs: std::path::PathBuf,

    /// Command to run and trace from its first instruction (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("`{s}` is not a number of seconds: {e}"))?;
    if !(0.05..=86_400.0).contains(&v) {
        return Err(format!("{v} is out of range (0.05 to 86400 seconds)"));
    }
    Ok(v)
}

/// `--on-target-exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnTargetExit {
    Exit,
    Serve,
}

/// The smallest ring: eight batches of 128 syscall records, so one drain
/// wake-up has room to land before the ring fills (4 KiB held one batch, and
/// dropped 99.95% at 2.4 M syscalls/s).
pub const MIN_RING_BYTES: u32 = 32 * 1024;
/// The largest: each ring is mapped whole into the agent (and pinned in the
/// kernel), so this bounds what the flag alone can cost in memory.
pub const MAX_RING_BYTES: u32 = 256 * 1024 * 1024;

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|e| format!("`{s}` is not a byte count (at most {MAX_RING_BYTES}): {e}"))?;
    if !n.is_power_of_two() || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&n) {
        return Err(format!(
            "{n} is not a power of two from {MIN_RING_BYTES} (32 KiB) to {MAX_RING_BYTES} (256 MiB) \
             (the kernel's ring buffers are power-of-two pages, and each is mapped whole into the agent); try {}",
            n.clamp(MIN_RING_BYTES, MAX_RING_BYTES)
                .next_power_of_two()
                .min(MAX_RING_BYTES)
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_node_mode_defaults() {
        let cli = Cli::try_parse_from(["agent"]).unwrap();
        assert!(cli.command.is_none());
        let d = RunArgs::default();
        assert_eq!(d.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(d.pid, None);
        assert_eq!(d.hdr_precision, 2);
    }

    #[test]
    fn bad_values_are_rejected_with_reasons() {
        let err = |args: &[&str]| Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(err(&["agent", "run", "--ring-buffer-bytes", "5000"]).contains("power of two"));
        assert!(err(&["agent", "run", "--ring-buffer-bytes", "4096"]).contains("try 32768"));
        assert!(
            err(&["agent", "run", "--ring-buffer-bytes", "8589934592"])
                .contains("at most 268435456")
        );
        assert!(
            err(&["agent", "run", "--ring-buffer-bytes", "2147483648"]).contains("try 268435456")
        );
        assert!(
            err(&["agent", "run", "--ring-buffer-bytes", "536870912"]).contains("try 268435456")
        );
        assert!(err(&["agent", "run", "--hdr-precision", "9"]).contains("9"));
        assert!(err(&["agent", "run", "--listen", "nonsense"]).contains("nonsense"));
        assert!(err(&["agent", "run", "--pid", "-3"]).contains("-3"));
        assert!(err(&["agent", "attach"]).contains("--pid"));
        assert!(err(&["agent", "attach", "--interval", "0"]).contains("out of range"));
    }

    #[test]
    fn attach_takes_a_pid_or_a_command() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Some(Command::Attach(a)) => a,
            other => panic!("{other:?}"),
        };
        let a = parse(&["agent", "attach", "--pid", "42", "--json"]);
        assert_eq!((a.pid, a.json, a.interval), (Some(42), true, 1.0));
        let a = parse(&["agent", "attach", "--no-children", "--", "ls", "-l"]);
        assert_eq!(a.command, ["ls", "-l"]);
        assert!(a.no_children && a.pid.is_none());
        assert!(!parse(&["agent", "attach", "--children", "--", "ls"]).no_children);
        assert!(Cli::try_parse_from(["agent", "attach", "--pid", "1", "--", "ls"]).is_err());
    }
}

/// The end of `agent run --help`.
pub const CONFIG_HELP: &str = "Every flag is also an environment variable, EBPF_AGENT_<FLAG> \
(EBPF_AGENT_RING_BUFFER_BYTES), and a key of the --config file (ring-buffer-bytes). \
Flags win over the environment, which wins over the file. See docs/configuration.md.";

/// The configuration flags themselves (flattened into `agent run`).
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Read settings from this TOML (.toml) or YAML (.yaml, .yml) file: keys
    /// are these flags' long names. Flags and EBPF_AGENT_* variables override
    /// it; SIGHUP re-reads it. See docs/configuration.md.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    /// Validate flags, environment and config file, print every setting with
    /// its source (flag, env, file, default), and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Log line format on stderr: text, or json (one object per line); auto
    /// is text.
    #[arg(long, value_enum, default_value = "auto")]
    pub log_format: crate::logging::LogFormat,

    /// Log level (error, warn, info, debug, trace) or a tracing filter such
    /// as `info,agent::collectors=debug`. RUST_LOG, if set, overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = crate::logging::parse_filter)]
    pub log_level: String,
}

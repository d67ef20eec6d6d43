//! The eBPF telemetry agent: kernel probes drained into HDR histograms and
//! served as Prometheus metrics. See docs/design.md for the shape and reasons.

// The binary needs these; everything else is the crate's own.
pub mod cli;
pub mod config;
pub mod logging;
pub mod reload;

mod attach;
mod bpf;
mod btf;
mod by_slot;
mod collectors;
mod exposition;
mod histogram;
mod http;
mod k8s;
mod kernel_features;
mod node;
mod privileges;
mod probes;
mod push;
mod self_metrics;
mod shutdown;
mod stage_cpu;
mod target;
mod tracefs;

/// Every eBPF and agent metric starts with this.
pub(crate) const PREFIX: &str = "ebpf_agent";

use cli::{Cli, Command};

/// The command the user chose, node mode's configuration already merged
/// from flags, environment and config file.
pub enum Invocation {
    Node(Box<config::Loaded>),
    Attach(cli::AttachArgs),
    BenchFloor(node::FloorHooks),
}

impl Invocation {
    /// `run_argv`: the arguments after `agent run` (none for a bare `agent`).
    pub fn new(
        cli: Cli,
        run_argv: Vec<std::ffi::OsString>,
        env: config::Env,
    ) -> Result<Invocation, config::ConfigError> {
        Ok(match cli.command {
            None | Some(Command::Run(_)) => {
                Invocation::Node(Box::new(config::load(run_argv, env)?))
            }
            Some(Command::Attach(args)) => Invocation::Attach(args),
            Some(Command::BenchFloor {
                classic,
                sched,
                process,
                block,
                tcp_resets,
            }) => Invocation::BenchFloor(match () {
                _ if classic => node::FloorHooks::ClassicSyscalls,
                _ if sched => node::FloorHooks::Sched,
                _ if process => node::FloorHooks::Process,
                _ if block => node::FloorHooks::Block,
                _ if tcp_resets => node::FloorHooks::TcpResets,
                _ => node::FloorHooks::RawSyscalls,
            }),
        })
    }
}

/// Runs the command the user chose.
pub async fn run(invocation: Invocation) -> anyhow::Result<()> {
    match invocation {
        Invocation::Node(config) => {
            if let Some(file) = config.file() {
                tracing::info!("configuration: flags, EBPF_AGENT_* environment and {file}");
            }
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            node::run(*config).await
        }
        Invocation::Attach(args) => attach::run(args).await,
        Invocation::BenchFloor(hooks) => node::bench_floor(hooks).await,
    }
}

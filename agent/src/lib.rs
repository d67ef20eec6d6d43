//! The eBPF telemetry agent: kernel probes drained into HDR histograms and
//! served as Prometheus metrics. See docs/design.md for the shape and reasons.

pub mod aggregate;
pub mod attach;
pub mod bpf;
pub mod btf;
pub mod cli;
pub mod collectors;
mod errno_table;
pub mod export;
pub mod exposition;
pub mod histogram;
pub mod logging;
pub mod names;
pub mod node;
pub mod privileges;
pub mod probes;
pub mod shutdown;
pub mod stats;
mod syscall_table;
pub mod target;
pub mod tcp;
pub mod tracefs;

use cli::{Cli, Command};

/// Runs the command the user chose.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => node::run(cli::RunArgs::default()).await,
        Some(Command::Run(args)) => node::run(args).await,
        Some(Command::Attach(args)) => attach::run(args).await,
        Some(Command::BenchFloor { classic, sched }) => node::bench_floor(classic, sched).await,
    }
}

//! Developer tasks: `cargo xtask setup|run|test|lint|matrix|bench`.
//!
//! Every task that needs the eBPF toolchain calls `setup` first, so a fresh
//! machine needs nothing but this repository and `cargo`.

mod bench;
mod cmd;
mod deploy_tools;
mod lint;
mod matrix;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run, test and benchmark the agent")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: nightly rust-src, LLVM 22, bpf-linker, test tools.
    Setup {
        /// Also install the Debian tools the tests and benchmarks use.
        #[arg(long)]
        test_tools: bool,
    },
    /// Build the agent (release) and run it; arguments after `--` go to the agent.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: lints, unit tests and end-to-end tests against the real kernel.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// cargo fmt --check and clippy -D warnings, for the host crates and the eBPF crate.
    Lint,
    /// Boot the matrix kernels (5.10, 6.1, 6.12) under qemu and run the core end-to-end tests in each.
    Matrix,
    /// Measure overhead against a baseline and a peer in one interleaved run.
    Bench(bench::BenchArgs),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().task {
        Task::Setup { test_tools } => setup::setup(test_tools),
        Task::Run { args } => {
            setup::setup(false)?;
            cmd::cargo(&["build", "--release", "-p", "agent"])?;
            let agent = cmd::workspace_root().join("target/release/agent");
            cmd::exec(&agent, &args)
        }
        Task::Test { args } => {
            setup::setup(true)?;
            lint::lint()?;
            cmd::test(&args)?;
            // A filtered run (`-- --test tcp`) is about this kernel only.
            if args.is_empty() {
                matrix::matrix()?;
            }
            Ok(())
        }
        Task::Matrix => {
            setup::setup(true)?;
            cmd::build_binaries()?;
            matrix::matrix()
        }
        Task::Lint => {
            setup::setup(false)?;
            lint::lint()
        }
        Task::Bench(args) => {
            setup::setup(true)?;
            bench::bench(args)
        }
    }
}

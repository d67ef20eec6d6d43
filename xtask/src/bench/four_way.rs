//! The four configurations a probe's bench compares (sched, block): nothing,
//! empty programs on the same hooks (the floor), the agent running only that
//! probe, and a bpftrace peer; and how each is attached.

use super::{Background, READY_TIMEOUT, start_agent, start_bpftrace};
use anyhow::Result;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Config {
    Baseline,
    Floor,
    Agent,
    Bpftrace,
}

pub const CONFIGS: [Config; 4] = [
    Config::Baseline,
    Config::Floor,
    Config::Agent,
    Config::Bpftrace,
];

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor => "floor",
            Config::Agent => "agent",
            Config::Bpftrace => "bpftrace",
        }
    }
}

impl Config {
    /// Its position in [`CONFIGS`] (and in the results `interleaved` returns).
    pub fn index(self) -> usize {
        CONFIGS.iter().position(|&c| c == self).expect("in CONFIGS")
    }
}

/// (median, min, max) over the rounds of each configuration's `of`.
pub fn spread<M>(results: &[Vec<M>], of: impl Fn(&M) -> f64) -> Vec<(f64, f64, f64)> {
    results
        .iter()
        .map(|ms| {
            let v: Vec<f64> = ms.iter().map(&of).collect();
            let (lo, hi) = super::min_max(&v);
            (super::median(&v), lo, hi)
        })
        .collect()
}

/// What a bench attaches: `agent bench-floor --<probe>`, `agent run --probes
/// <probe>`, and bpftrace running `program`.
pub struct Setup<'a> {
    pub probe: &'a str,
    pub bpftrace_program: &'a str,
}

impl Setup<'_> {
    /// Starts what `config` needs and waits until its probes are attached;
    /// the address is the agent's metrics endpoint.
    pub fn attach(
        &self,
        config: Config,
        agent: &Path,
    ) -> Result<Option<(Background, Option<SocketAddr>)>> {
        Ok(Some(match config {
            Config::Baseline => return Ok(None),
            Config::Floor => {
                let flag = format!("--{}", self.probe);
                let mut cmd = Command::new(agent);
                cmd.args(["bench-floor", &flag]);
                let name = format!("agent bench-floor {flag}");
                let mut p = Background::spawn(&name, cmd, libc::SIGTERM)?;
                p.wait_for_line(READY_TIMEOUT, |l| l.trim() == "ready")?;
                (p, None)
            }
            Config::Agent => {
                let (p, addr) = start_agent(agent, &["run", "--strict", "--probes", self.probe])?;
                (p, Some(addr))
            }
            Config::Bpftrace => {
                let p = start_bpftrace(self.bpftrace_program)?;
                (p, None)
            }
        }))
    }
}

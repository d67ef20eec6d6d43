//! Userspace halves of the eBPF probes: attach, drain, aggregate. One file per
//! probe, named after its kernel counterpart in agent-ebpf.

pub mod syscalls;

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::programs::TracePoint;

/// Loads and attaches a classic tracepoint program.
pub fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the object"))?
        .try_into()?;
    prog.load()
        .map_err(|e| crate::bpf::explain(anyhow::Error::new(e)))
        .with_context(|| format!("loading {program}"))?;
    prog.attach(category, name)
        .map_err(|e| crate::bpf::explain(anyhow::Error::new(e)))
        .with_context(|| format!("attaching to tracepoint {category}/{name}"))?;
    Ok(())
}

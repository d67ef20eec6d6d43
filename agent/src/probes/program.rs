//! Loading and attaching one program of the eBPF object, with errors that
//! say what the user should do.

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::programs::{Program, ProgramError, RawTracePoint, TracePoint};

/// Loads and attaches a classic tracepoint program (needs tracefs).
pub(crate) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<()> {
    let prog: &mut TracePoint = find(ebpf, program)?.try_into()?;
    explained(prog.load(), || format!("loading {program}"))?;
    explained(prog.attach(category, name), || {
        format!("attaching to tracepoint {category}/{name}")
    })?;
    Ok(())
}

/// Loads and attaches a raw tracepoint program (no tracefs, no BTF needed).
pub(crate) fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, name: &str) -> Result<()> {
    let prog: &mut RawTracePoint = find(ebpf, program)?.try_into()?;
    explained(prog.load(), || format!("loading {program}"))?;
    explained(prog.attach(name), || {
        format!("attaching to raw tracepoint {name}")
    })?;
    Ok(())
}

fn find<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut Program> {
    ebpf.program_mut(program)
        .with_context(|| format!("program {program} missing from the object"))
}

/// Adds what the user should do (bpf::explain) and what we were doing.
fn explained<T>(r: Result<T, ProgramError>, doing: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| crate::bpf::explain(anyhow::Error::new(e)))
        .with_context(doing)
}

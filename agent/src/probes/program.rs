//! Loading and attaching one program of the eBPF object, with errors that
//! say what the user should do.

use anyhow::{Context, Result};
use aya::Btf;
use aya::Ebpf;
use aya::programs::{BtfTracePoint, Program, ProgramError, RawTracePoint, TracePoint};
use std::sync::Mutex;

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

/// Whether this kernel loaded a probe's tp_btf programs (None: no probe has
/// tried; true once any probe did), for the `tp_btf` kernel feature.
static TP_BTF: Mutex<Option<bool>> = Mutex::new(None);

/// Whether the kernel loaded a probe's tp_btf programs; None if no probe
/// with tp_btf programs has started.
pub(crate) fn tp_btf_loaded() -> Option<bool> {
    *super::lock(&TP_BTF)
}

/// Attaches the tp_btf programs (`{program}_btf`: direct loads, cheaper) of
/// every (tracepoint, program) hook, or the raw tracepoint programs (a helper
/// call per read) if the kernel refuses to load any of them: all or none, so
/// one probe never mixes the two. Returns whether tp_btf is used.
pub(crate) fn attach_btf_or_raw(
    ebpf: &mut Ebpf,
    probe: &str,
    hooks: &[(&str, &str)],
) -> Result<bool> {
    let loaded = load_btf(ebpf, hooks);
    let mut tp_btf = super::lock(&TP_BTF);
    *tp_btf = Some(tp_btf.unwrap_or(false) || loaded.is_ok());
    drop(tp_btf);
    match loaded {
        Ok(()) => {
            for (tp, prog) in hooks {
                let prog: &mut BtfTracePoint = find(ebpf, &format!("{prog}_btf"))?.try_into()?;
                explained(prog.attach(), || format!("attaching tp_btf/{tp}"))?;
            }
            tracing::debug!("{probe} probe on tp_btf");
            Ok(true)
        }
        Err(e) => {
            tracing::info!("{probe} probe on raw tracepoints (tp_btf unavailable: {e:#})");
            for (tp, prog) in hooks {
                attach_raw_tracepoint(ebpf, prog, tp)?;
            }
            Ok(false)
        }
    }
}

/// Loads every hook's tp_btf program, so that either all or none attach.
fn load_btf(ebpf: &mut Ebpf, hooks: &[(&str, &str)]) -> Result<()> {
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    for (tp, prog) in hooks {
        let prog: &mut BtfTracePoint = find(ebpf, &format!("{prog}_btf"))?.try_into()?;
        prog.load(tp, &btf)
            .with_context(|| format!("loading tp_btf/{tp}"))?;
    }
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

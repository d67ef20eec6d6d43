//! Loading the embedded eBPF object, privilege checks with actionable errors,
//! the kernel's loss counters, and running a program on a chosen CPU.

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};
use aya::{Ebpf, EbpfLoader};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The eBPF programs, built by build.rs from agent-ebpf and embedded here.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-probes"));

/// What the object is loaded with: the values of its globals (frozen
/// `.rodata`, so the verifier prunes what they turn off) and map sizes.
/// Shared settings are set here; each probe's `prepare` adds its own.
#[derive(Default)]
pub(crate) struct LoadPlan {
    globals: Vec<(&'static str, Vec<u8>)>,
    map_sizes: Vec<(&'static str, u32)>,
}

impl LoadPlan {
    /// Sets global `name` (replacing an earlier value).
    pub(crate) fn global<T: aya::Pod>(&mut self, name: &'static str, value: &T) {
        // SAFETY: T is Pod: plain bytes with no padding the kernel could misread.
        let bytes =
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
        self.globals.retain(|(n, _)| *n != name);
        self.globals.push((name, bytes.to_vec()));
    }

    /// Sets the number of entries of map `name`.
    pub(crate) fn map_size(&mut self, name: &'static str, entries: u32) {
        self.map_sizes.retain(|(n, _)| *n != name);
        self.map_sizes.push((name, entries));
    }

    /// Sizes preallocated per-CPU map `name`: `wanted` entries of
    /// `value_bytes` on every possible CPU, or fewer when that would take more
    /// than `budget` bytes (logged). A size right for a 2-CPU VM takes
    /// hundreds of MiB on a big node, charged to the agent's memory cgroup
    /// (its container's limit) when the map is created.
    pub(crate) fn per_cpu_map_size(
        &mut self,
        name: &'static str,
        wanted: u32,
        value_bytes: usize,
        budget: usize,
    ) {
        let cpus = possible_cpus();
        let entries = per_cpu_entries(wanted, value_bytes, budget, cpus);
        if entries < wanted {
            tracing::info!(
                "{name}: {entries} keys instead of {wanted}, so that its values on {cpus} possible CPUs stay within {} MiB (a full map is counted)",
                budget >> 20
            );
        }
        self.map_size(name, entries);
    }
}

/// Keys a per-CPU map may preallocate: `wanted`, or as many values of
/// `value_bytes` on `cpus` CPUs as fit in `budget`, but at least
/// [`MIN_PER_CPU_ENTRIES`] (a node that big can afford them).
fn per_cpu_entries(wanted: u32, value_bytes: usize, budget: usize, cpus: usize) -> u32 {
    // The kernel rounds each CPU's value up to 8 bytes.
    let per_key = value_bytes.next_multiple_of(8).max(8) * cpus.max(1);
    let fit = u32::try_from(budget / per_key).unwrap_or(u32::MAX);
    fit.max(MIN_PER_CPU_ENTRIES).min(wanted)
}

/// The fewest keys [`per_cpu_entries`] leaves a map.
const MIN_PER_CPU_ENTRIES: u32 = 64;

/// CPUs the kernel allocates per-CPU map values for (possible, not online).
fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or_else(|(path, e)| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        tracing::warn!("reading {path}: {e}; sizing per-CPU maps for {n} CPUs");
        n
    })
}

pub(crate) fn load(plan: &LoadPlan) -> Result<Ebpf> {
    check_privileges(&[])?;
    raise_memlock();
    let mut loader = EbpfLoader::new();
    for (name, bytes) in &plan.globals {
        loader.override_global(name, bytes.as_slice(), true);
    }
    for &(name, entries) in &plan.map_sizes {
        loader.map_max_entries(name, entries);
    }
    loader.load(OBJECT).map_err(|e| explain(e.into()))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (64 KiB by
/// default): lift it. Later kernels charge the memory cgroup, and raising it
/// needs CAP_SYS_RESOURCE, so a refusal is only worth a debug line (loading
/// then explains an ENOMEM/EPERM itself).
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads only `unlimited`.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot lift RLIMIT_MEMLOCK ({}); only kernels before 5.11 need it",
            io::Error::last_os_error()
        );
    }
}

/// Loads only the empty floor programs' object (same object, nothing resized).
pub fn load_plain() -> Result<Ebpf> {
    check_privileges(&[])?;
    raise_memlock();
    EbpfLoader::new()
        .load(OBJECT)
        .map_err(|e| explain(e.into()))
}

/// Turns the kernel's bare errno into what the user should do.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    let errno = err
        .chain()
        .find_map(|e| e.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => err.context(
            "the kernel refused a BPF operation (not permitted): run the agent as root, or \
             with CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8)",
        ),
        Some(libc::ENOSYS) => {
            err.context("this kernel has no BPF support (CONFIG_BPF_SYSCALL is off)")
        }
        Some(libc::ENOMEM) => err.context(
            "the kernel could not allocate BPF maps: lower --ring-buffer-bytes or raise the \
             memory limit (RLIMIT_MEMLOCK on kernels before 5.11, else the cgroup limit)",
        ),
        _ => err,
    }
}

/// Fails early with a clear message naming the missing capabilities
/// (crate::privileges has the rules). `tracefs_probes`: the chosen probes
/// that read tracefs.
pub fn check_privileges(tracefs_probes: &[&str]) -> Result<()> {
    crate::privileges::check(tracefs_probes)
}

/// The kernel-side loss counters (`agent_common::counters`), summed over CPUs.
pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelCounters")
    }
}

impl KernelCounters {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map("COUNTERS")
            .context("COUNTERS map missing from the object")?;
        Ok(KernelCounters {
            map: PerCpuArray::try_from(map)?,
        })
    }

    pub fn get(&self, index: u32) -> u64 {
        match self.map.get(&index, 0) {
            Ok(per_cpu) => per_cpu.iter().sum(),
            Err(e) => {
                tracing::warn!(index, error = %e, "cannot read kernel counter");
                0
            }
        }
    }
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zeroed: the kernel rejects (EINVAL) a bpf_attr whose
    /// bytes past the command's last field are not zero, and implicit padding
    /// holds whatever the stack held.
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// Runs a raw tracepoint program once on `cpu` (kernel >= 5.10).
pub fn run_on_cpu(prog: BorrowedFd<'_>, cpu: u32) -> io::Result<()> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        flags: BPF_F_TEST_RUN_ON_CPU,
        cpu,
        ..Default::default()
    };
    // SAFETY: attr is a valid, initialised bpf_attr prefix and outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The kernel's pid_max: the largest thread id plus one.
pub fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn small_nodes_get_every_key_they_ask_for() {
        assert_eq!(per_cpu_entries(2048, 688, 32 * MIB, 2), 2048);
        assert_eq!(per_cpu_entries(1024, 272, 8 * MIB, 16), 1024);
    }

    #[test]
    fn big_nodes_get_what_fits_the_budget() {
        // 32 MiB / (688 B x 64 CPUs) = 762.
        assert_eq!(per_cpu_entries(2048, 688, 32 * MIB, 64), 762);
        const { assert!(762 * 688 * 64 <= 32 * MIB && 763 * 688 * 64 > 32 * MIB) };
        // 8 MiB / (272 B x 128 CPUs) = 240.
        assert_eq!(per_cpu_entries(1024, 272, 8 * MIB, 128), 240);
    }

    #[test]
    fn never_below_the_minimum_and_odd_values_round_up() {
        assert_eq!(
            per_cpu_entries(2048, 688, 32 * MIB, 8192),
            MIN_PER_CPU_ENTRIES
        );
        // 12-byte values take 16 bytes a CPU: 1024 / 16 = 64 on one CPU.
        assert_eq!(per_cpu_entries(1000, 12, 1024, 1), 64);
        assert_eq!(per_cpu_entries(1000, 12, 4096, 0), 256);
        // Never more than asked for, even below the minimum.
        assert_eq!(per_cpu_entries(10, 688, 0, 64), 10);
    }
}

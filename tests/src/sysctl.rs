//! Kernel settings (procfs, sysfs) set for a while and put back: the
//! privilege tests need `kernel.bpf_stats_enabled` off (as on a fresh
//! machine), the kernel-cost benchmarks need it on, and `bench block`
//! confines the unbound workqueues to one CPU.

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// A setting's file and its value as it was; restored on drop.
pub struct Restore {
    path: String,
    was: String,
}

impl Restore {
    /// Writes `value` to the setting at `path` until dropped.
    pub fn set(path: &str, value: &str) -> std::io::Result<Restore> {
        let was = std::fs::read_to_string(path)?.trim().to_string();
        std::fs::write(path, value)?;
        Ok(Restore {
            path: path.to_string(),
            was,
        })
    }

    /// The value before [`Restore::set`].
    pub fn was(&self) -> &str {
        &self.was
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.was) {
            eprintln!("could not restore {} to {}: {e}", self.path, self.was);
        }
    }
}

/// `kernel.bpf_stats_enabled` as it was; restored on drop.
pub struct BpfStats(#[allow(dead_code)] Restore);

impl BpfStats {
    /// Sets the kernel's BPF run-time statistics on or off until dropped.
    pub fn set(on: bool) -> std::io::Result<BpfStats> {
        Restore::set(BPF_STATS, if on { "1" } else { "0" }).map(BpfStats)
    }
}

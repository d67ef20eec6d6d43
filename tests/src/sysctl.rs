//! `kernel.bpf_stats_enabled` set for a while and put back: the privilege
//! tests need it off (as on a fresh machine), the kernel-cost benchmarks on.

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The setting as it was; restored on drop.
pub struct BpfStats(String);

impl BpfStats {
    /// Sets the kernel's BPF run-time statistics on or off until dropped.
    pub fn set(on: bool) -> std::io::Result<BpfStats> {
        let was = std::fs::read_to_string(BPF_STATS)?;
        std::fs::write(BPF_STATS, if on { "1" } else { "0" })?;
        Ok(BpfStats(was.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.0) {
            eprintln!("could not restore {BPF_STATS} to {}: {e}", self.0);
        }
    }
}

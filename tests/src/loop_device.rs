//! A loop device over a file in a private temp dir, detached (`losetup -d`)
//! and its file removed on drop, also when the test fails.

use std::path::PathBuf;
use std::process::Command;

pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: String,
    file: PathBuf,
}

impl LoopDevice {
    /// A `mib` MiB device with direct I/O on: the loop driver then passes
    /// each request to the backing file as one O_DIRECT read or write,
    /// instead of through the page cache.
    pub fn new(mib: u64) -> LoopDevice {
        LoopDevice::create(&std::env::temp_dir(), mib, true)
    }

    /// A `mib` MiB device backed by a file in /dev/shm (tmpfs), through the
    /// page cache: its I/O never reaches a disk, so each request costs the
    /// same (the benchmarks).
    pub fn in_memory(mib: u64) -> LoopDevice {
        LoopDevice::create(std::path::Path::new("/dev/shm"), mib, false)
    }

    fn create(dir: &std::path::Path, mib: u64, direct_io: bool) -> LoopDevice {
        crate::require_root();
        let file = dir.join(format!(
            "loop-{}-{}.img",
            std::process::id(),
            crate::free_port()
        ));
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(mib << 20))
            .unwrap_or_else(|e| panic!("creating {}: {e}", file.display()));
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(format!(
                "--direct-io={}",
                if direct_io { "on" } else { "off" }
            ))
            .arg(&file)
            .output()
            .expect("run losetup (util-linux)");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !path.starts_with("/dev/loop") {
            let _ = std::fs::remove_file(&file);
            panic!(
                "losetup -f --show failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        LoopDevice { path, file }
    }

    /// `loopN`, as /proc/diskstats names it.
    pub fn name(&self) -> &str {
        self.path.trim_start_matches("/dev/")
    }

    /// The kernel's dev_t (major << 20 | minor), as block tracepoints print it.
    pub fn dev(&self) -> u64 {
        let sys = format!("/sys/class/block/{}/dev", self.name());
        let text = std::fs::read_to_string(&sys).unwrap();
        let (major, minor) = text.trim().split_once(':').unwrap();
        major.parse::<u64>().unwrap() << 20 | minor.parse::<u64>().unwrap()
    }

    /// Puts an I/O scheduler (`mq-deadline`, ...) in front of the device:
    /// every request is then inserted into it before it is issued.
    pub fn set_scheduler(&self, scheduler: &str) {
        let sys = format!("/sys/block/{}/queue/scheduler", self.name());
        std::fs::write(&sys, scheduler)
            .unwrap_or_else(|e| panic!("writing {scheduler} to {sys}: {e}"));
        let now = std::fs::read_to_string(&sys).unwrap_or_default();
        assert!(
            now.contains(&format!("[{scheduler}]")),
            "{sys} says {now:?} after writing {scheduler}"
        );
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

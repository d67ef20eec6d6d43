//! Device names for the kernel's dev_t (major << 20 | minor): the names
//! /proc/diskstats gives them, so the probe's `device` label matches
//! node_exporter's `node_disk_*{device}`. Re-read when an unknown device
//! shows up (a new loop device, a hot-plugged disk).

use std::collections::HashMap;
use std::path::PathBuf;

pub(super) struct Devices {
    path: PathBuf,
    names: HashMap<u32, String>,
}

impl Devices {
    pub(super) fn new(procfs: &std::path::Path) -> Devices {
        Devices {
            path: procfs.join("diskstats"),
            names: HashMap::new(),
        }
    }

    /// The name of `dev`; "major:minor" if /proc/diskstats does not list it
    /// even after a re-read (the device is gone).
    pub(super) fn name(&mut self, dev: u32) -> String {
        if !self.names.contains_key(&dev) {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => self.names = parse(&text),
                Err(e) => tracing::warn!("reading {}: {e}", self.path.display()),
            }
        }
        self.names
            .get(&dev)
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", dev >> 20, dev & 0xfffff))
    }
}

/// `major minor name ...` lines of /proc/diskstats; others are skipped.
fn parse(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let major: u32 = f.next()?.parse().ok()?;
            let minor: u32 = f.next()?.parse().ok()?;
            let name = f.next()?;
            (major < 1 << 12 && minor < 1 << 20).then(|| (major << 20 | minor, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_kernel_dev_t() {
        let m = parse(
            " 254       0 vda 1 2 3\n   7       3 loop3 0 0\n 259 1048575 nvme9n9 1\nbad line\n",
        );
        assert_eq!(m[&(254 << 20)], "vda");
        assert_eq!(m[&(7 << 20 | 3)], "loop3");
        assert_eq!(m[&(259 << 20 | 0xfffff)], "nvme9n9");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn unknown_devices_are_major_minor() {
        let dir = std::env::temp_dir().join(format!("block-devices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("diskstats"), "   7       3 loop3 0 0\n").unwrap();
        let mut d = Devices::new(&dir);
        assert_eq!(d.name(7 << 20 | 3), "loop3");
        assert_eq!(d.name(8 << 20 | 16), "8:16");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

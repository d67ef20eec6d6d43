//! Kernel cgroup ids back to cgroup paths. `bpf_get_current_cgroup_id()` is
//! the cgroup v2 (kernfs) id, which is also the inode number of the cgroup's
//! directory: a walk of the v2 hierarchy with readdir (no stat needed: the
//! directory entries carry the inode) maps every live id to its path.

use anyhow::{Result, bail};
use std::collections::HashMap;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup v2 hierarchy at `cgroupfs`, or at `cgroupfs/unified` (the
/// hybrid layout of systemd hosts that still mount v1 controllers).
pub fn find_v2_root(cgroupfs: &Path) -> Result<PathBuf> {
    for candidate in [cgroupfs.to_path_buf(), cgroupfs.join("unified")] {
        if is_cgroup2(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(
        "no cgroup v2 hierarchy at {0} or {0}/unified: container attribution reads the kernel's \
         cgroup v2 ids, so it needs one mounted (point --cgroupfs at it, or turn it off with \
         --container-labels off)",
        cgroupfs.display()
    )
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a writable statfs.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC }
}

/// The low 32 bits of a cgroup id: what syscall records carry. Unique among
/// live cgroups (the kernel allocates them cyclically; the high 32 bits only
/// count wraps).
pub fn low32(id: u64) -> u32 {
    id as u32
}

/// Live cgroups by (low 32 bits of) id, as of the last walk.
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    paths: HashMap<u32, PathBuf>,
}

impl CgroupIndex {
    pub fn new(root: PathBuf) -> Self {
        CgroupIndex {
            root,
            paths: HashMap::new(),
        }
    }

    /// Re-reads the whole hierarchy. Cgroups that vanish mid-walk are skipped.
    pub fn walk(&mut self) {
        self.paths.clear();
        if let Ok(meta) = std::fs::metadata(&self.root) {
            use std::os::unix::fs::MetadataExt;
            self.paths.insert(low32(meta.ino()), PathBuf::from("/"));
        }
        let mut stack = vec![(self.root.clone(), PathBuf::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let rel = rel.join(e.file_name());
                self.paths.insert(low32(e.ino()), rel.clone());
                stack.push((e.path(), rel));
            }
        }
    }

    /// Path of a cgroup relative to the hierarchy root ("/kubepods/..."), as
    /// of the last walk.
    pub fn path(&self, id: u32) -> Option<&Path> {
        self.paths.get(&id).map(PathBuf::as_path)
    }

    /// Whether the cgroup at `rel` still exists with this id.
    pub fn alive(&self, id: u32, rel: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let full = self.root.join(rel.strip_prefix("/").unwrap_or(rel));
        std::fs::metadata(full).is_ok_and(|m| low32(m.ino()) == id)
    }
}

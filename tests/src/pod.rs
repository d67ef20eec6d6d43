//! Fake Kubernetes pods for container attribution: real cgroup v2
//! directories named the way the kubelet and containerd name them, and a
//! kubelet-style log tree under a test root.

use crate::process::cgroup2_root;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// A fake pod: its container cgroup and its kubelet log entries.
pub struct Pod {
    pub namespace: &'static str,
    pub name: String,
    pub container: &'static str,
    pub cgroup: PathBuf,
    /// The cgroup directories this test created, deepest first.
    created: Vec<PathBuf>,
}

impl Pod {
    /// `systemd`: the systemd cgroup driver with containerd's scope names;
    /// otherwise the cgroupfs driver's layout.
    pub fn create(
        logs: &Path,
        namespace: &'static str,
        container: &'static str,
        systemd: bool,
    ) -> Pod {
        // Unique per pod: tests run in parallel, and two pods sharing a
        // cgroup would count each other's work.
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let n = std::process::id();
        let k = NEXT.fetch_add(1, Relaxed);
        let uid = format!("{n:08x}-{k:04x}-4000-8000-{:012x}", systemd as u8);
        let id = format!("{n:08x}{k:08x}{:048x}", systemd as u8 + 7);
        let root = cgroup2_root();
        let dirs = if systemd {
            let uid_ = uid.replace('-', "_");
            vec![
                "kubepods.slice".to_string(),
                "kubepods-burstable.slice".into(),
                format!("kubepods-burstable-pod{uid_}.slice"),
                format!("cri-containerd-{id}.scope"),
            ]
        } else {
            vec![
                "kubepods".to_string(),
                "besteffort".into(),
                format!("pod{uid}"),
                id.clone(),
            ]
        };
        let mut path = root;
        let mut created = Vec::new();
        for d in dirs {
            path.push(d);
            if !path.exists() {
                std::fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
                created.push(path.clone());
            }
        }
        created.reverse();
        let name = format!("{namespace}-app-{n}-{k}");
        std::fs::create_dir_all(logs.join(format!("pods/{namespace}_{name}_{uid}/{container}")))
            .unwrap();
        std::fs::create_dir_all(logs.join("containers")).unwrap();
        std::fs::write(
            logs.join(format!(
                "containers/{name}_{namespace}_{container}-{id}.log"
            )),
            "",
        )
        .unwrap();
        Pod {
            namespace,
            name,
            container,
            cgroup: path,
            created,
        }
    }

    pub fn labels(&self) -> [(&str, &str); 3] {
        [
            ("namespace", self.namespace),
            ("pod", &self.name),
            ("container", self.container),
        ]
    }

    pub fn enter(&self, pid: &str) {
        std::fs::write(self.cgroup.join("cgroup.procs"), pid)
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.cgroup.display()));
    }

    /// Removes the cgroups (they must be empty: the workload has exited).
    pub fn remove(&mut self) {
        for dir in self.created.drain(..) {
            std::fs::remove_dir(&dir)
                .unwrap_or_else(|e| panic!("removing cgroup {}: {e}", dir.display()));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for dir in &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A kubelet-style log root for fake pods, fresh under the temp dir and
/// removed on drop.
pub struct PodLogs(PathBuf);

impl PodLogs {
    /// `tag` keeps tests' roots apart.
    pub fn new(tag: &str) -> PodLogs {
        let path = std::env::temp_dir().join(format!("kubelet-logs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        PodLogs(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `agent run` with container labels from these pods, no /proc
    /// collectors, and `extra` arguments.
    pub fn agent(&self, extra: &[&str]) -> crate::Agent {
        let logs = self.0.to_str().unwrap();
        let mut args = vec!["--container-labels", "on", "--pod-logs", logs];
        args.extend_from_slice(&["--collectors", "none"]);
        args.extend_from_slice(extra);
        crate::Agent::start(&args)
    }
}

impl Drop for PodLogs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

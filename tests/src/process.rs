//! The processes the tests run besides the agent: the workload helper
//! (src/bin/workload.rs) and where cgroups live.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The workload helper binary of this crate (built beside the test binaries:
/// target/<profile>/workload, while tests run from target/<profile>/deps).
pub fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("workload");
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build -p tests --bins`",
        path.display()
    );
    path
}

/// The cgroup v2 hierarchy: /sys/fs/cgroup on v2 hosts, its `unified`
/// subdirectory on hybrid ones (this machine).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let root = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]));
    root.expect("no cgroup2 mount: container attribution needs cgroup v2 (the kernel's cgroup ids are v2 ids)")
}

/// A workload child (src/bin/workload.rs), stopped at "ready" until `go`.
pub struct Workload {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    /// "go" was said (a `bursts` workload takes more lines after it).
    going: bool,
}

impl Workload {
    pub fn start(args: &[&str]) -> Workload {
        let mut child = Command::new(workload_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start workload");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut w = Workload {
            child,
            stdout,
            going: false,
        };
        let first = w.line();
        assert_eq!(first, "ready", "workload said {first:?}");
        w
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Lets the workload run, waits until it has exited successfully, and
    /// returns what it printed before "done".
    pub fn go(mut self) -> Vec<String> {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut printed = Vec::new();
        loop {
            let line = self.line();
            if line == "done" {
                break;
            }
            assert!(!line.is_empty(), "workload ended without \"done\"");
            printed.push(line);
        }
        assert!(self.child.wait().unwrap().success());
        printed
    }

    /// Lets the workload run and waits for it to end, however it ends (a
    /// workload the test expects the kernel to kill).
    pub fn release(mut self) -> std::process::ExitStatus {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        self.child.wait().unwrap()
    }

    /// A `bursts` workload: `n` getppid() calls, returning once they are made.
    pub fn burst(&mut self, n: u64) {
        let stdin = self.child.stdin.as_mut().unwrap();
        if !std::mem::replace(&mut self.going, true) {
            stdin.write_all(b"go\n").unwrap();
        }
        stdin.write_all(format!("{n}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        assert_eq!(self.line(), "burst");
    }

    /// The next line the workload printed.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

/// A memory cgroup with a limit, removed on drop: on cgroup v2 where the
/// memory controller is enabled there, else on cgroup v1's memory hierarchy.
pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    pub fn new(name: &str, limit_bytes: u64) -> MemoryCgroup {
        let v2 = cgroup2_root();
        let v2_memory = std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"));
        let (parent, limit_file) = if v2_memory {
            (v2, "memory.max")
        } else {
            (
                PathBuf::from("/sys/fs/cgroup/memory"),
                "memory.limit_in_bytes",
            )
        };
        let dir = parent.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create memory cgroup {}: {e}", dir.display()));
        std::fs::write(dir.join(limit_file), limit_bytes.to_string())
            .unwrap_or_else(|e| panic!("cannot set {limit_file} in {}: {e}", dir.display()));
        MemoryCgroup { dir }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: &str) {
        std::fs::write(self.dir.join("cgroup.procs"), pid)
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

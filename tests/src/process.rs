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
        let mut w = Workload { child, stdout };
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

    /// The next line the workload printed.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

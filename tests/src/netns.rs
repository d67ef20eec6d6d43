//! Test hosts: network namespaces the test creates, removed on drop. Traffic
//! stays inside them (or on a veth pair to them), never leaves the machine.

use std::os::fd::AsRawFd;
use std::process::Command;

pub struct Netns {
    pub name: String,
}

const HINT: &str = "needs iproute2 and nftables: `cargo xtask setup --test-tools`";

impl Netns {
    /// A fresh namespace `agent-<tag>-<id>` with loopback up (an old one of
    /// that name, left by a killed run, is removed first).
    pub fn create(tag: &str, id: u32) -> Netns {
        let name = format!("agent-{tag}-{id}");
        let _ = sh(&format!("ip netns del {name} 2>/dev/null"));
        must(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace (no shell); panics if it fails.
    pub fn exec(&self, cmd: &[&str]) {
        let ok = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "test host setup failed: {cmd:?} in {} ({HINT})",
            self.name
        );
    }

    /// A counter of the namespace's /proc/net/snmp, e.g. ("Tcp", "RetransSegs").
    pub fn snmp(&self, group: &str, field: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat", "/proc/net/snmp"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip ({e}): {HINT}"));
        let text = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{group}:");
        let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (rows.next(), rows.next());
        let (Some(names), Some(values)) = (names, values) else {
            panic!("no {group} rows in the namespace's /proc/net/snmp: {text}");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == field)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {group} {field} in /proc/net/snmp: {text}"))
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it makes
    /// live there (and stay there when they outlive the thread).
    pub fn spawn<T, F>(&self, f: F) -> std::thread::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid namespace fd; setns only changes this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

/// Runs `cmd` with `sh -c`; true when it succeeded.
pub fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` with `sh -c`; panics if it fails.
pub fn must(cmd: &str) {
    assert!(sh(cmd), "test host setup failed: {cmd} ({HINT})");
}

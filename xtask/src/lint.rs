//! Formatting and clippy for the host crates and, with its own target, the eBPF crate.

use crate::cmd::{cargo, run, workspace_root};
use anyhow::Result;
use std::process::Command;

pub fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--release",
        "--locked",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The eBPF crate is checked for its real target, as aya-template does.
    run(Command::new("cargo")
        .current_dir(workspace_root().join("agent-ebpf"))
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"]))
}

//! Small helpers to run commands, echoing them first so a user sees what happens.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Run a command to completion, failing if it does not exit 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Run a command and return its stdout; `None` if it cannot start or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(cargo_bin())
        .args(args)
        .current_dir(workspace_root()))
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Replace this process with `program args...` (signals go straight to it).
pub fn exec(program: &Path, args: &[String]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    eprintln!("xtask: $ {}", show(&cmd));
    Err(cmd.exec()).with_context(|| format!("cannot exec {}", program.display()))
}

/// All tests run in the release profile so the eBPF object is built once and the
/// end-to-end tests drive the same agent binary a user runs.
pub fn test(extra: &[String]) -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "agent",
        "-p",
        "tests",
        "--bins",
    ])?;
    let agent = workspace_root().join("target/release/agent");
    let mut cmd = Command::new(cargo_bin());
    cmd.current_dir(workspace_root())
        .args([
            "test",
            "--release",
            "--locked",
            "--workspace",
            "--exclude",
            "agent-ebpf",
        ])
        .env("AGENT_BIN", &agent)
        .env("RUST_BACKTRACE", "1")
        // The end-to-end tests share the kernel and the agent's port: one at a time.
        .args(["--", "--test-threads=1"])
        .args(extra);
    run(&mut cmd)
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

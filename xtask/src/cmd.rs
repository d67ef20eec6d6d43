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

/// The agent and the tests' helper binaries (workload, ...), release, as
/// the lock file pins them.
pub fn build_binaries() -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "agent",
        "-p",
        "tests",
        "--bins",
    ])
}

/// All tests run in the release profile so the eBPF object is built once and the
/// end-to-end tests drive the same agent binary a user runs.
pub fn test(extra: &[String]) -> Result<()> {
    build_binaries()?;
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
            // Every test binary runs even after one fails: the summary then
            // lists every failure, not only the first binary's.
            "--no-fail-fast",
        ])
        .env("AGENT_BIN", &agent)
        .env("RUST_BACKTRACE", "1")
        // The end-to-end tests share the kernel and the agent's port: one at a time.
        .args(["--", "--test-threads=1"])
        .args(extra);
    let (passed, failed, status) = run_counting(&mut cmd)?;
    // One closing line for every test binary together (cargo's last line is
    // the doc-tests' own, which usually count none).
    println!("{passed} passed, {failed} failed");
    if !status.success() {
        bail!("`{}` failed ({status})", show(&cmd));
    }
    Ok(())
}

/// Runs cargo test, echoing its output, and adds up its "test result" lines.
fn run_counting(cmd: &mut Command) -> Result<(u64, u64, std::process::ExitStatus)> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: $ {}", show(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = test_result(&line) {
            passed += p;
            failed += f;
        }
    }
    Ok((passed, failed, child.wait()?))
}

/// (passed, failed) from "test result: ok. 4 passed; 0 failed; ...".
fn test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((count("passed")?, count("failed")?))
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_cargo_test_result_lines() {
        let ok = "test result: ok. 80 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.57s";
        assert_eq!(super::test_result(ok), Some((80, 0)));
        let bad = "test result: FAILED. 6 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.87s";
        assert_eq!(super::test_result(bad), Some((6, 1)));
        assert_eq!(super::test_result("running 3 tests"), None);
    }
}

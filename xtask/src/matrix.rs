//! The kernel matrix (`cargo xtask matrix`, and the end of `cargo xtask test`):
//! boots Debian's 5.10, 6.1 and 6.12 kernels (pinned) under qemu with
//! virtme-ng, sharing this machine's root read-only, and runs a core set of the
//! end-to-end tests, built already, against each. Results are written into a
//! folder the guest may write (`--rwdir`) and judged there: vng's console and
//! exit code are unreliable here. Software emulation only: this machine's KVM
//! cannot run stock kernels. One guest at a time.

use crate::cmd::{self, run};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What booting the guests needs: qemu, `depmod` (virtme-ng indexes the
/// kernel package's modules) and busybox (its initramfs).
pub const PACKAGES: &[&str] = &["qemu-system-x86", "kmod", "busybox-static"];

/// virtme-ng from PyPI, in a virtualenv of its own.
const VNG: (&str, &str) = ("virtme-ng", "1.42");

/// A kernel of the matrix: a Debian package, pinned, and its suite.
struct Kernel {
    name: &'static str,
    package: &'static str,
    version: &'static str,
    /// `deb` line of its suite (the fetch uses its own apt configuration,
    /// so the system's sources stay as they are).
    suite: &'static str,
}

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

const KERNELS: [Kernel; 3] = [
    Kernel {
        name: "5.10",
        package: "linux-image-5.10.0-46-amd64-unsigned",
        version: "5.10.262-1",
        suite: "http://deb.debian.org/debian-security bullseye-security main",
    },
    Kernel {
        name: "6.1",
        package: "linux-image-6.1.0-57-amd64-unsigned",
        version: "6.1.192-3",
        suite: "http://deb.debian.org/debian-security bookworm-security main",
    },
    Kernel {
        name: "6.12",
        package: "linux-image-6.12.118+deb12-amd64-unsigned",
        version: "6.12.118-1~deb12u1",
        suite: "http://deb.debian.org/debian-security bookworm-security main",
    },
];

/// The core set run on every kernel: (test binary, test name).
const CORE: [(&str, &str, &str); 5] = [
    (
        "strict",
        "kernel",
        "every_probe_attaches_with_strict_and_the_kernel_is_described",
    ),
    (
        "syscalls",
        "syscalls",
        "pid_mode_reports_exact_counts_errors_and_latency",
    ),
    (
        "tcp",
        "tcp",
        "pid_mode_counts_successes_and_refusals_exactly",
    ),
    (
        "runqueue",
        "sched",
        "contention_on_one_cpu_shows_as_run_queue_latency",
    ),
    (
        "attach",
        "attach",
        "command_is_traced_from_its_first_instruction_and_its_exit_code_kept",
    ),
];

/// A guest that has not written its last result by then is stuck.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

fn matrix_dir() -> PathBuf {
    cmd::workspace_root().join("target/matrix")
}

fn vng_venv() -> PathBuf {
    matrix_dir().join("venv")
}

/// setup's part: virtme-ng in its virtualenv, when missing.
pub fn install() -> Result<()> {
    let venv = vng_venv();
    let pip = venv.join("bin/pip");
    let want = format!("{}=={}", VNG.0, VNG.1);
    let freeze = cmd::output(&pip.to_string_lossy(), &["freeze"]).unwrap_or_default();
    if freeze.lines().any(|l| l == want) {
        eprintln!("xtask: setup: {want} present in {}", venv.display());
        return Ok(());
    }
    eprintln!(
        "xtask: setup: installing {want} from PyPI into {} (boots the matrix kernels)",
        venv.display()
    );
    run(Command::new("/usr/bin/python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv))
    .context("cannot create virtme-ng's virtualenv; is python3-venv installed?")?;
    run(Command::new(&pip).args(["install", "--quiet", "--disable-pip-version-check", &want]))
        .context("pip install virtme-ng failed")
}

/// The pinned kernel packages, fetched once into target/matrix/kernels and
/// unpacked there (never installed); returns each one's vmlinuz.
fn fetch_kernels() -> Result<Vec<PathBuf>> {
    let dir = matrix_dir().join("kernels");
    let apt = dir.join("apt");
    let mut images = Vec::new();
    let mut updated = false;
    for k in &KERNELS {
        let root = dir.join(format!("{}_{}", k.package, k.version));
        let done = root.join(".unpacked");
        if !done.exists() {
            if !updated {
                apt_update(&apt)?;
                updated = true;
            }
            eprintln!("xtask: matrix: fetching {} {}", k.package, k.version);
            let debs = apt.join("debs");
            std::fs::create_dir_all(&debs)?;
            run(Command::new("apt-get")
                .args(apt_options(&apt))
                .args(["download", "-q", &format!("{}={}", k.package, k.version)])
                .current_dir(&debs))
            .with_context(|| {
                format!(
                    "cannot download {} {}: if the archive dropped it, pin a newer one in xtask/src/matrix.rs",
                    k.package, k.version
                )
            })?;
            let deb = find_file(&debs, &format!("{}_", k.package), ".deb")?;
            std::fs::create_dir_all(&root)?;
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            std::fs::remove_file(&deb)?;
            std::fs::write(&done, "")?;
        }
        images.push(find_file(&root.join("boot"), "vmlinuz-", "")?);
    }
    Ok(images)
}

/// An apt configuration of its own (sources, lists, cache under `apt`).
fn apt_options(apt: &Path) -> Vec<String> {
    let at = |p: &str| apt.join(p).to_string_lossy().into_owned();
    vec![
        format!("-oDir::Etc::SourceList={}", at("sources.list")),
        format!("-oDir::Etc::SourceParts={}", at("sources.list.d")),
        format!("-oDir::State::Lists={}", at("lists")),
        format!("-oDir::Cache={}", at("cache")),
        "-oDir::State::status=/dev/null".to_string(),
        // The download lands in a folder the _apt user cannot write.
        "-oAPT::Sandbox::User=root".to_string(),
    ]
}

fn apt_update(apt: &Path) -> Result<()> {
    for d in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let mut suites: Vec<&str> = KERNELS.iter().map(|k| k.suite).collect();
    suites.dedup();
    let sources: String = suites
        .iter()
        .map(|s| format!("deb [signed-by={KEYRING}] {s}\n"))
        .collect();
    std::fs::write(apt.join("sources.list"), sources)?;
    run(Command::new("apt-get")
        .args(apt_options(apt))
        .args(["update", "-q"]))
    .context("apt-get update for the matrix kernels failed")
}

fn find_file(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .with_context(|| format!("no {prefix}*{suffix} in {}", dir.display()))
}

/// The core set's test binaries as cargo built them (`cargo xtask test`
/// built them already; this only asks cargo where they are).
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut binaries: Vec<&str> = CORE.iter().map(|(_, bin, _)| *bin).collect();
    binaries.dedup();
    let mut args = vec![
        "test",
        "--release",
        "--locked",
        "-p",
        "tests",
        "--no-run",
        "--message-format=json",
    ];
    for b in &binaries {
        args.extend(["--test", b]);
    }
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(&args)
        .current_dir(cmd::workspace_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        if let Some(exe) = msg["executable"].as_str()
            && msg["target"]["kind"][0] == "test"
            && binaries.contains(&name)
        {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if found.len() != binaries.len() {
        bail!("cargo did not report every test binary of {binaries:?}: {found:?}");
    }
    Ok(found)
}

/// The script the guest runs: what the tests need that virtme-ng's init does
/// not do, then each test of the core set, its output and exit code written
/// to `out`.
fn guest_script(out: &Path, binaries: &[(String, PathBuf)]) -> String {
    let agent = cmd::workspace_root().join("target/release/agent");
    let mut s =
        String::from("#!/bin/sh\n# Written by `cargo xtask matrix`; runs inside the guest.\n");
    let _ = writeln!(s, "OUT={}", out.display());
    s.push_str(
        "uname -r > $OUT/release\n\
         ip link set lo up\n\
         mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing\n\
         export RUST_BACKTRACE=1\n",
    );
    let _ = writeln!(s, "export AGENT_BIN={}", agent.display());
    for (label, bin, test) in CORE {
        let exe = &binaries.iter().find(|(b, _)| b == bin).expect("found").1;
        let _ = writeln!(
            s,
            "timeout 240 {} --exact {test} --test-threads=1 > $OUT/{label}.log 2>&1; echo $? > $OUT/{label}.rc",
            exe.display()
        );
    }
    s.push_str("echo done > $OUT/done\n");
    s
}

/// One kernel's outcome: (test label, passed) and why it failed, if it did.
struct Outcome {
    results: Vec<(&'static str, bool)>,
    seconds: u64,
}

/// Boots `image` once and runs the core set in it.
fn run_guest(k: &Kernel, image: &Path, binaries: &[(String, PathBuf)]) -> Result<Outcome> {
    let out = matrix_dir().join("out").join(k.name);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let script = out.join("guest.sh");
    std::fs::write(&script, guest_script(&out, binaries))?;
    let vng = vng_venv().join("bin/vng");
    let path = format!(
        "{}:{}",
        vng_venv().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(&vng);
    cmd.arg("--run")
        .arg(image)
        .args([
            "--disable-kvm",
            "--force-9p",
            "--memory",
            "2G",
            "--cpus",
            "2",
        ])
        .arg("--rwdir")
        .arg(&out)
        .arg("--exec")
        .arg(format!("sh {}", script.display()))
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out.join("console.log"))?)
        .stderr(std::fs::File::create(out.join("vng.log"))?);
    eprintln!(
        "xtask: matrix: booting {} ({}) under qemu, software emulation; console: {}",
        k.name,
        image.display(),
        out.join("console.log").display()
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context("cannot start vng (run `cargo xtask setup --test-tools`)")?;
    // vng's exit code says nothing here: wait for it, bounded, then judge the files.
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > GUEST_TIMEOUT {
            eprintln!(
                "xtask: matrix: {} guest still running after {GUEST_TIMEOUT:?}: killed",
                k.name
            );
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let seconds = started.elapsed().as_secs();
    let release = std::fs::read_to_string(out.join("release")).unwrap_or_default();
    if !release.trim().is_empty() {
        eprintln!("xtask: matrix: {} booted {}", k.name, release.trim());
    }
    let results = CORE
        .iter()
        .map(|(label, _, _)| {
            let rc = std::fs::read_to_string(out.join(format!("{label}.rc"))).unwrap_or_default();
            let passed = rc.trim() == "0";
            if !passed {
                let log = out.join(format!("{label}.log"));
                eprintln!(
                    "xtask: matrix: {} {label} FAILED (exit {:?}); output: {}\n{}",
                    k.name,
                    rc.trim(),
                    log.display(),
                    tail(&log, 40)
                );
            }
            (*label, passed)
        })
        .collect();
    Ok(Outcome { results, seconds })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|_| "(no output: the guest did not run it)".into());
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `cargo xtask matrix`: every kernel, a table, and an error if anything failed.
pub fn matrix() -> Result<()> {
    let started = Instant::now();
    let binaries = test_binaries()?;
    let images = fetch_kernels()?;
    let mut outcomes = Vec::new();
    for (k, image) in KERNELS.iter().zip(&images) {
        outcomes.push(run_guest(k, image, &binaries)?);
    }
    println!("{}", table(&outcomes));
    println!(
        "kernel matrix: {} kernels in {} s",
        KERNELS.len(),
        started.elapsed().as_secs()
    );
    let failed: usize = outcomes
        .iter()
        .map(|o| o.results.iter().filter(|(_, p)| !p).count())
        .sum();
    if failed > 0 {
        bail!(
            "kernel matrix: {failed} failed (logs under {})",
            matrix_dir().join("out").display()
        );
    }
    Ok(())
}

/// kernel x test, pass or FAIL.
fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from("| kernel | package |");
    for (label, _, _) in CORE {
        let _ = write!(s, " {label} |");
    }
    s.push_str(" time |\n|---|---|");
    s.push_str(&"---|".repeat(CORE.len() + 1));
    for (k, o) in KERNELS.iter().zip(outcomes) {
        let _ = write!(s, "\n| {} | {} {} |", k.name, k.package, k.version);
        for (_, passed) in &o.results {
            s.push_str(if *passed { " pass |" } else { " FAIL |" });
        }
        let _ = write!(s, " {} s |", o.seconds);
    }
    s
}

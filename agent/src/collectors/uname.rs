//! uname(2) as node_uname_info, node_exporter's uname collector: the
//! kernel's release and version are what dashboards show per node.
//! (nodename and domainname are the agent's UTS namespace's: in a container,
//! run with the host's, as docs/kubernetes.md says.)

use super::family::{Family, Labels};
use super::{Registration, Source};
use anyhow::Result;
use std::ffi::CStr;

/// `--collectors uname`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "uname",
    default: true,
    build: |_, _| Box::new(Uname),
    options: super::no_options,
};

fn text(field: &[libc::c_char]) -> String {
    // SAFETY: the kernel NUL-terminates every utsname field; the slice is
    // the whole array, so the search stays inside it.
    let bytes: &[u8] = unsafe { &*(field as *const [libc::c_char] as *const [u8]) };
    CStr::from_bytes_until_nul(bytes)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

/// The labels, in node_exporter's (alphabetical) order.
pub fn labels() -> Result<Labels> {
    // SAFETY: utsname is plain bytes; uname fills it or fails.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok([
        ("domainname", &u.domainname[..]),
        ("machine", &u.machine),
        ("nodename", &u.nodename),
        ("release", &u.release),
        ("sysname", &u.sysname),
        ("version", &u.version),
    ]
    .into_iter()
    .map(|(name, field)| (name.into(), text(field)))
    .collect())
}

#[derive(Debug)]
pub struct Uname;

impl Source for Uname {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let mut f = Family::gauge(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
        );
        f.push_labels(labels()?, 1.0);
        out.push(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_running_kernels() {
        let l = labels().unwrap();
        let get = |k| &l.iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(get("sysname"), "Linux");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(get("release"), release.trim());
        assert!(!get("machine").is_empty());
        let names: Vec<_> = l.iter().map(|(n, _)| n.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}

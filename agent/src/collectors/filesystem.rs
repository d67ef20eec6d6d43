//! statfs() on the mounts in <procfs>/1/mounts (falling back to
//! <procfs>/mounts): node_filesystem_*{device,fstype,mountpoint}, as
//! node_exporter's filesystem collector.
//!
//! statfs() on a dead NFS server blocks for ever, so every call runs on its
//! own thread and the scrape waits at most --filesystem-timeout-ms for all of
//! them together; a mount that did not answer reports device_error 1 and is
//! not asked again until its pending call returns.

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::Result;
use regex::Regex;
use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--collectors filesystem`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "filesystem",
    default: true,
    build: |a, _| {
        let o = &a.options;
        Box::new(Filesystem::new(
            &a.procfs,
            &a.rootfs,
            Filters {
                mount_exclude: o.filesystem_mount_exclude.clone(),
                type_exclude: o.filesystem_type_exclude.clone(),
            },
            std::time::Duration::from_millis(o.filesystem_timeout_ms),
        ))
    },
    options: |o| {
        format!(
            "{} {} {}",
            o.filesystem_mount_exclude.as_str(),
            o.filesystem_type_exclude.as_str(),
            o.filesystem_timeout_ms
        )
    },
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub readonly: bool,
}

/// Parses a mounts file (fstab format). Fields escape space, tab, newline and
/// backslash as octal (`\040`); they are decoded so labels show real paths.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (device, mountpoint, fstype, options) =
                (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(Mount {
                device: unescape(device),
                mountpoint: unescape(mountpoint),
                fstype: unescape(fstype),
                readonly: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// Decodes `\NNN` octal escapes; anything else is kept as it is.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], code) {
            (b'\\', Some(d)) => {
                let n = d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0'));
                out.push(n as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Space and inode counts of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub size: f64,
    pub free: f64,
    pub avail: f64,
    pub files: f64,
    pub files_free: f64,
}

/// statfs(2), in node_exporter's units: block counts times f_bsize.
pub fn statfs(path: &Path) -> io::Result<Usage> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statfs only writes into the zeroed struct we own.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bsize = buf.f_bsize as f64;
    Ok(Usage {
        size: buf.f_blocks as f64 * bsize,
        free: buf.f_bfree as f64 * bsize,
        avail: buf.f_bavail as f64 * bsize,
        files: buf.f_files as f64,
        files_free: buf.f_ffree as f64,
    })
}

#[derive(Debug, Clone)]
pub struct Filters {
    pub mount_exclude: Regex,
    pub type_exclude: Regex,
}

impl Filters {
    fn wanted(&self, m: &Mount) -> bool {
        !self.mount_exclude.is_match(&m.mountpoint) && !self.type_exclude.is_match(&m.fstype)
    }
}

type StatFn = fn(&Path) -> io::Result<Usage>;

#[derive(Debug)]
pub struct Filesystem {
    mounts: [PathBuf; 2],
    rootfs: PathBuf,
    filters: Filters,
    timeout: Duration,
    stat: StatFn,
    /// Mount points whose statfs() has not returned yet.
    stuck: Arc<Mutex<HashSet<String>>>,
}

/// A statfs() in flight.
enum Pending {
    Running(Receiver<io::Result<Usage>>),
    Done(io::Result<Usage>),
    Stuck,
}

impl Filesystem {
    pub fn new(procfs: &Path, rootfs: &Path, filters: Filters, timeout: Duration) -> Filesystem {
        Filesystem {
            mounts: [procfs.join("1/mounts"), procfs.join("mounts")],
            rootfs: rootfs.to_path_buf(),
            filters,
            timeout,
            stat: statfs,
            stuck: Arc::default(),
        }
    }

    /// The mounts to report: filtered, each label set once (bind mounts and
    /// stacked mounts repeat them), in mount order.
    fn mounts(&self) -> Result<Vec<Mount>> {
        let text = read(&self.mounts[0]).or_else(|_| read(&self.mounts[1]))?;
        let mut seen = HashSet::new();
        Ok(parse_mounts(&text)
            .into_iter()
            .filter(|m| self.filters.wanted(m))
            .filter(|m| seen.insert((m.device.clone(), m.mountpoint.clone(), m.fstype.clone())))
            .collect())
    }

    fn start(&self, mountpoint: &str) -> Pending {
        let stuck = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
        if stuck.contains(mountpoint) {
            return Pending::Stuck;
        }
        drop(stuck);
        let path = self.rootfs.join(mountpoint.trim_start_matches('/'));
        let (tx, rx) = mpsc::channel();
        let (stat, stuck, key) = (self.stat, self.stuck.clone(), mountpoint.to_string());
        let spawned = std::thread::Builder::new()
            .name("statfs".into())
            .spawn(move || {
                let result = stat(&path);
                // Under the lock, so `wait` either sees the result or has
                // marked the mount stuck and gets it unmarked here.
                let mut stuck = stuck.lock().unwrap_or_else(|p| p.into_inner());
                stuck.remove(&key);
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => Pending::Running(rx),
            Err(e) => Pending::Done(Err(e)),
        }
    }

    fn wait(&self, mountpoint: &str, pending: Pending, deadline: Instant) -> io::Result<Usage> {
        let rx = match pending {
            Pending::Running(rx) => rx,
            Pending::Done(result) => return result,
            Pending::Stuck => return Err(io::ErrorKind::TimedOut.into()),
        };
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(result) => result,
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::other("statfs thread died")),
            Err(RecvTimeoutError::Timeout) => {
                let mut stuck = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
                if let Ok(result) = rx.try_recv() {
                    return result;
                }
                stuck.insert(mountpoint.to_string());
                tracing::warn!(
                    "statfs({mountpoint}) did not answer within {:?}; reporting node_filesystem_device_error 1 until it does",
                    self.timeout
                );
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }
}

/// Filesystems whose statfs() can block on a server or a user-space daemon.
fn may_hang(fstype: &str) -> bool {
    const REMOTE: [&str; 12] = [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "lustre",
        "gpfs",
        "virtiofs",
    ];
    fstype.starts_with("fuse") || REMOTE.contains(&fstype)
}

pub fn families(stats: &[(Mount, io::Result<Usage>)]) -> Vec<Family> {
    let mut size = Family::gauge("node_filesystem_size_bytes", "Filesystem size in bytes.");
    let mut free = Family::gauge(
        "node_filesystem_free_bytes",
        "Filesystem free space in bytes.",
    );
    let mut avail = Family::gauge(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
    );
    let mut files = Family::gauge("node_filesystem_files", "Filesystem total file nodes.");
    let mut files_free = Family::gauge(
        "node_filesystem_files_free",
        "Filesystem total free file nodes.",
    );
    let mut readonly = Family::gauge("node_filesystem_readonly", "Filesystem read-only status.");
    let mut error = Family::gauge(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
    );
    for (m, usage) in stats {
        let labels = [
            ("device", m.device.as_str()),
            ("fstype", m.fstype.as_str()),
            ("mountpoint", m.mountpoint.as_str()),
        ];
        error.push(&labels, if usage.is_ok() { 0.0 } else { 1.0 });
        // Like node_exporter, a mount that could not be read has only device_error.
        let Ok(u) = usage else { continue };
        size.push(&labels, u.size);
        free.push(&labels, u.free);
        avail.push(&labels, u.avail);
        files.push(&labels, u.files);
        files_free.push(&labels, u.files_free);
        readonly.push(&labels, if m.readonly { 1.0 } else { 0.0 });
    }
    vec![size, free, avail, files, files_free, readonly, error]
}

impl Source for Filesystem {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let mounts = self.mounts()?;
        // Start every statfs() that can hang first, so the timeout bounds the
        // total wait. Local filesystems answer from memory: a thread each
        // (most of this collector's time when measured) buys nothing there.
        let pending: Vec<Pending> = mounts
            .iter()
            .map(|m| match may_hang(&m.fstype) {
                true => self.start(&m.mountpoint),
                false => Pending::Done((self.stat)(
                    &self.rootfs.join(m.mountpoint.trim_start_matches('/')),
                )),
            })
            .collect();
        let deadline = Instant::now() + self.timeout;
        let stats: Vec<_> = mounts
            .into_iter()
            .zip(pending)
            .map(|(m, p)| {
                let usage = self.wait(&m.mountpoint, p, deadline);
                if let Err(e) = &usage {
                    tracing::debug!("statfs({}): {e}", m.mountpoint);
                }
                (m, usage)
            })
            .collect();
        out.extend(families(&stats));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;
    use crate::collectors::{FILESYSTEM_MOUNT_EXCLUDE, FILESYSTEM_TYPE_EXCLUDE};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn fixture(stat: StatFn, timeout: Duration) -> Filesystem {
        let procfs = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/collectors/fixtures/proc"
        ));
        let filters = Filters {
            mount_exclude: Regex::new(FILESYSTEM_MOUNT_EXCLUDE).unwrap(),
            type_exclude: Regex::new(FILESYSTEM_TYPE_EXCLUDE).unwrap(),
        };
        Filesystem {
            stat,
            ..Filesystem::new(procfs, Path::new("/"), filters, timeout)
        }
    }

    static NFS_CALLS: AtomicUsize = AtomicUsize::new(0);

    /// A fake statfs: 1 GiB with 4 KiB blocks; /nfs hangs for 1 s; /run fails.
    fn fake(path: &Path) -> io::Result<Usage> {
        match path.to_str() {
            Some("/nfs") => {
                NFS_CALLS.fetch_add(1, SeqCst);
                std::thread::sleep(Duration::from_secs(1));
            }
            Some("/run") => return Err(io::ErrorKind::PermissionDenied.into()),
            _ => {}
        }
        Ok(Usage {
            size: 1073741824.0,
            free: 4096.0 * 100.0,
            avail: 4096.0 * 50.0,
            files: 1000.0,
            files_free: 10.0,
        })
    }

    #[test]
    fn only_remote_and_fuse_filesystems_get_a_thread() {
        for t in ["nfs4", "cifs", "fuse.sshfs", "fuseblk", "ceph", "9p"] {
            assert!(may_hang(t), "{t}");
        }
        for t in ["ext4", "xfs", "tmpfs", "btrfs", "vfat"] {
            assert!(!may_hang(t), "{t}");
        }
    }

    #[test]
    fn parses_mounts_with_escapes() {
        let m = parse_mounts(include_str!("fixtures/proc/1/mounts"));
        assert_eq!(m.len(), 10);
        assert_eq!(m[5].mountpoint, "/mnt/my data");
        assert!(m[5].readonly && !m[2].readonly);
        assert_eq!(unescape(r"a\134b\011c\12x"), "a\\b\tc\\12x");
    }

    fn mountpoints(f: &[Family], name: &str) -> Vec<String> {
        let fam = find(f, name).unwrap();
        fam.samples.iter().map(|s| s.labels[2].1.clone()).collect()
    }

    #[test]
    fn filters_dedupes_and_reports_errors_and_hung_mounts() {
        let fs = fixture(fake, Duration::from_millis(200));
        let mut f = Vec::new();
        let start = Instant::now();
        fs.collect(&mut f).unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "waited for the hung mount"
        );
        // /proc, /sys, credentials, cgroup2 and overlay are excluded; the
        // repeated /mnt/my data line is reported once.
        assert_eq!(
            mountpoints(&f, "node_filesystem_device_error"),
            ["/", "/run", "/mnt/my data", "/nfs"]
        );
        assert_eq!(
            mountpoints(&f, "node_filesystem_size_bytes"),
            ["/", "/mnt/my data"]
        );
        let error = find(&f, "node_filesystem_device_error").unwrap();
        let root = [
            ("device", "/dev/vda"),
            ("fstype", "ext4"),
            ("mountpoint", "/"),
        ];
        assert_eq!(error.get(&root), Some(0.0));
        assert_eq!(
            error.get(&[
                ("device", "server:/export"),
                ("fstype", "nfs4"),
                ("mountpoint", "/nfs")
            ]),
            Some(1.0)
        );
        assert_eq!(
            find(&f, "node_filesystem_avail_bytes").unwrap().get(&root),
            Some(204800.0)
        );
        let data = [
            ("device", "/dev/vdb1"),
            ("fstype", "ext4"),
            ("mountpoint", "/mnt/my data"),
        ];
        assert_eq!(
            find(&f, "node_filesystem_readonly").unwrap().get(&data),
            Some(1.0)
        );

        // While the first call hangs, /nfs is not asked again, and still
        // reports the error.
        assert!(fs.stuck.lock().unwrap().contains("/nfs"));
        let mut f = Vec::new();
        fs.collect(&mut f).unwrap();
        assert_eq!(NFS_CALLS.load(SeqCst), 1);
        assert_eq!(mountpoints(&f, "node_filesystem_device_error").len(), 4);
        // Once it returns, it is asked again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs.stuck.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the hung call never cleared");
            std::thread::sleep(Duration::from_millis(50));
        }
        fs.collect(&mut Vec::new()).unwrap();
        assert_eq!(NFS_CALLS.load(SeqCst), 2);
    }

    #[test]
    fn real_statfs_of_root() {
        let u = statfs(Path::new("/")).unwrap();
        assert!(u.size > 0.0 && u.free <= u.size && u.avail <= u.free);
        assert!(statfs(Path::new("/nonexistent/path")).is_err());
    }
}

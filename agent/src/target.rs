//! Validating the process a user asks to trace, with errors that say what to do.

use anyhow::{Result, bail};
use std::path::Path;

/// PF_KTHREAD in /proc/<pid>/stat's flags field.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Checks that `pid` names a live user-space process (not a thread, not a
/// kernel thread) under `proc_root`, and returns it as the tgid to filter on.
pub fn validate(proc_root: &Path, pid: u32) -> Result<u32> {
    if pid == 0 {
        bail!(
            "--pid 0 is not a process (0 is the kernel's idle task); give the PID of a running process"
        );
    }
    let status = match std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no such process: PID {pid} is not running (check with `ps -p {pid}`)")
        }
        Err(e) => bail!("cannot read /proc/{pid}/status: {e}"),
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let tgid: u32 = field("Tgid:").parse().unwrap_or(pid);
    if tgid != pid {
        bail!("PID {pid} is a thread of process {tgid}; trace the process with --pid {tgid}");
    }
    let stat =
        std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).unwrap_or_default();
    if kernel_thread(&stat) {
        bail!(
            "PID {pid} ({}) is a kernel thread: it makes no syscalls to trace; give a user-space process",
            field("Name:")
        );
    }
    Ok(pid)
}

/// The traced process itself, not its number: a pidfd, which becomes
/// readable when that process exits and never refers to a later process
/// that reuses the PID.
pub struct Exit(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl Exit {
    /// Opens a pidfd for `pid` (Linux 5.3+). Call it right after
    /// [`validate`], before attaching.
    pub fn watch(pid: u32) -> Result<Exit> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            bail!("cannot watch PID {pid} for its exit (pidfd_open, Linux 5.3+): {e}");
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the fd, so it outlives the registration.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(std::io::Error::from)?;
        Ok(Exit(fd))
    }

    /// Returns once the process has exited.
    pub async fn exited(&self) {
        // A poll error also means the pidfd is no longer usable: treat as gone.
        let _ = self.0.readable().await;
    }
}

/// Whether a /proc/<pid>/stat line has PF_KTHREAD set.
fn kernel_thread(stat: &str) -> bool {
    crate::collectors::process::parse_stat(stat).is_ok_and(|s| s.flags & PF_KTHREAD != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_thread_flag() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0";
        let user = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 50 1000 256";
        assert!(kernel_thread(kthread));
        assert!(!kernel_thread(user));
        assert!(!kernel_thread("garbage"));
    }

    #[test]
    fn real_processes() {
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        assert_eq!(validate(proc_root, me).unwrap(), me);
        let e = validate(proc_root, 0).unwrap_err().to_string();
        assert!(e.contains("not a process"), "{e}");
        let e = validate(proc_root, 2).unwrap_err().to_string(); // kthreadd
        assert!(e.contains("kernel thread"), "{e}");
        let e = validate(proc_root, 999_999_999).unwrap_err().to_string();
        assert!(e.contains("no such process"), "{e}");
    }

    #[test]
    fn thread_ids_point_at_their_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let tid = rx.recv().unwrap();
        let e = validate(Path::new("/proc"), tid).unwrap_err().to_string();
        assert!(e.contains(&format!("--pid {}", std::process::id())), "{e}");
        t.join().unwrap();
    }
}

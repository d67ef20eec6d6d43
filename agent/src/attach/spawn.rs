//! `attach -- CMD`: the command is forked, then held in `pre_exec` (blocked
//! reading a pipe) until the probes are attached with its PID as the filter,
//! then released to exec. Its tgid survives exec, so it is traced from its
//! first instruction.

use anyhow::{Context, Result, bail};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::thread::JoinHandle;

/// A forked command waiting to exec.
pub struct Held {
    pub pid: u32,
    release: OwnedFd,
    spawner: JoinHandle<io::Result<Child>>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks `argv` and returns once the child is waiting to exec. Dropping the
/// result without [`Held::release`] makes the child exit without exec'ing.
pub fn hold(argv: &[String]) -> Result<Held> {
    let (program, args) = argv.split_first().context("no command given after --")?;
    let (pid_r, pid_w) = pipe().context("creating a pipe")?;
    let (go_r, go_w) = pipe().context("creating a pipe")?;
    let fds = (
        pid_r.as_raw_fd(),
        pid_w.as_raw_fd(),
        go_r.as_raw_fd(),
        go_w.as_raw_fd(),
    );
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure runs in the forked child and only makes
    // async-signal-safe calls (close, getpid, write, read) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            let (pid_r, pid_w, go_r, go_w) = fds;
            libc::close(pid_r);
            libc::close(go_w);
            let pid = libc::getpid().to_ne_bytes();
            libc::write(pid_w, pid.as_ptr().cast(), pid.len());
            libc::close(pid_w);
            let mut byte = 0u8;
            loop {
                match libc::read(go_r, (&mut byte as *mut u8).cast(), 1) {
                    1 => break,
                    -1 if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                    // The agent gave up (its end closed): do not run the command.
                    _ => return Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                }
            }
            libc::close(go_r);
            Ok(())
        });
    }
    // Command::spawn returns only once the child has exec'd, so it runs on its
    // own thread; it keeps the child's pipe ends open until then.
    let spawner = std::thread::Builder::new()
        .name("attach-spawn".into())
        .spawn(move || {
            let child = cmd.spawn();
            drop((pid_w, go_r));
            child
        })
        .context("starting the spawner thread")?;
    let mut buf = [0u8; 4];
    let mut pid_r = std::fs::File::from(pid_r);
    if pid_r.read_exact(&mut buf).is_err() {
        // The fork itself failed: the spawner says why.
        let err = match spawner.join() {
            Ok(Err(e)) => e.to_string(),
            _ => "the child did not start".to_string(),
        };
        bail!("cannot run `{program}`: {err}");
    }
    Ok(Held {
        pid: i32::from_ne_bytes(buf) as u32,
        release: go_w,
        spawner,
    })
}

impl Held {
    /// Lets the child exec; fails (clearly) if the command cannot run.
    pub fn release(self, program: &str) -> Result<Child> {
        let mut go = std::fs::File::from(self.release);
        std::io::Write::write_all(&mut go, b"g").context("releasing the command")?;
        drop(go);
        match self.spawner.join() {
            Ok(Ok(child)) => Ok(child),
            Ok(Err(e)) => bail!("cannot run `{program}`: {e}"),
            Err(_) => bail!("cannot run `{program}`: the spawner thread panicked"),
        }
    }
}

/// What the agent exits with for the command's status: its exit code, or
/// 128 + the signal that killed it (as shells do).
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (1, None),
    }
}

/// Waits for the child on a thread; the receiver yields its exit status.
pub fn wait(mut child: Child) -> tokio::sync::oneshot::Receiver<ExitStatus> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(status);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_command_runs_only_when_released() {
        let argv: Vec<String> = ["sh", "-c", "exit 7"].map(String::from).into();
        let held = hold(&argv).unwrap();
        assert!(held.pid > 0);
        let stat = std::fs::read_to_string(format!("/proc/{}/comm", held.pid)).unwrap();
        assert_ne!(stat.trim(), "sh", "not exec'd before release");
        let status = held.release("sh").unwrap().wait().unwrap();
        assert_eq!(exit_code(status), (7, None));
    }

    #[test]
    fn a_missing_command_is_a_clear_error() {
        let argv = vec!["/no/such/command".to_string()];
        let e = hold(&argv)
            .unwrap()
            .release("/no/such/command")
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot run `/no/such/command`"),
            "{e}"
        );
    }

    #[test]
    fn signals_map_to_128_plus() {
        assert_eq!(exit_code(ExitStatus::from_raw(9)), (137, Some(9)));
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), (3, None));
    }
}

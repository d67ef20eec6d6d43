//! Capabilities belong to each thread, not to the process, and the agent's
//! threads (runtime workers, the syscall flusher) exist before the drop. So,
//! like libpsx or Go's AllThreadsSyscall, every other thread is signalled to
//! drop its own in a handler that makes only raw syscalls
//! (async-signal-safe; the `caps` crate allocates, so it cannot be used there),
//! and /proc/self/task is checked until no thread holds more than asked.

use anyhow::{Result, bail};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Capabilities to keep (bit n = capability n), read by the handler.
static KEEP: AtomicU64 = AtomicU64::new(0);
/// Handlers that finished, and the errno of the first that failed.
static DONE: AtomicUsize = AtomicUsize::new(0);
static FAILED_ERRNO: AtomicI32 = AtomicI32::new(0);

const CAPSET_V3: u32 = 0x2008_0522;
const CAP_SETPCAP: u32 = 8;
/// The highest capability number to drop from the bounding set; the
/// kernel rejects higher ones with EINVAL, which is skipped.
const LAST_CAP: u32 = 63;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

pub fn drop_to(keep: u64) -> Result<()> {
    KEEP.store(keep, SeqCst);
    install_handler()?;
    // This thread first, so threads it starts from now on inherit the drop.
    if let Err(errno) = drop_this_thread() {
        bail!(
            "dropping capabilities: {}",
            std::io::Error::from_raw_os_error(errno)
        );
    }
    for _round in 0..5 {
        let holders = threads_holding(keep)?;
        if holders.is_empty() {
            return Ok(());
        }
        let before = DONE.load(SeqCst);
        let mut sent = 0;
        for tid in &holders {
            // SAFETY: plain syscall; a thread that exited meanwhile gives ESRCH.
            if unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), *tid, signal()) } == 0 {
                sent += 1;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while DONE.load(SeqCst) - before < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let errno = FAILED_ERRNO.load(SeqCst);
        if errno != 0 {
            bail!(
                "a thread could not drop its capabilities: {}",
                std::io::Error::from_raw_os_error(errno)
            );
        }
    }
    let holders = threads_holding(keep)?;
    bail!(
        "threads {holders:?} still hold capabilities after the drop; refusing to run with \
         more privileges than --keep-capabilities allows"
    )
}

fn install_handler() -> Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe.
    // It stays installed: a late signal must not hit the default action
    // (terminate).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: errno is thread-local; restored so the interrupted code
    // does not see ours.
    let errno = unsafe { *libc::__errno_location() };
    if let Err(e) = drop_this_thread() {
        let _ = FAILED_ERRNO.compare_exchange(0, e, SeqCst, SeqCst);
    }
    DONE.fetch_add(1, SeqCst);
    unsafe { *libc::__errno_location() = errno };
}

/// Raw syscalls only: this runs in a signal handler.
fn drop_this_thread() -> Result<(), i32> {
    let keep = KEEP.load(SeqCst);
    let last_errno = || unsafe { *libc::__errno_location() };
    let mut header = Header {
        version: CAPSET_V3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and data are the v3 layout capget expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(last_errno());
    }
    // Dropping from the bounding set needs CAP_SETPCAP, so it goes first.
    if data[0].effective & (1 << CAP_SETPCAP) != 0 {
        for cap in (0..=LAST_CAP).filter(|c| keep & (1 << c) == 0) {
            // SAFETY: plain prctl; EINVAL means no such capability here.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 && last_errno() != libc::EINVAL {
                return Err(last_errno());
            }
        }
    }
    // SAFETY: plain prctl calls.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(last_errno());
    }
    for (i, d) in data.iter_mut().enumerate() {
        let keep = (keep >> (32 * i)) as u32;
        d.effective &= keep;
        d.permitted &= keep;
        d.inheritable &= keep;
    }
    header.pid = 0;
    // SAFETY: as for capget.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(last_errno());
    }
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Threads whose permitted set exceeds `keep` or without no_new_privs.
fn threads_holding(keep: u64) -> Result<Vec<i32>> {
    let mut holders = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")?.filter_map(|t| t.ok()) {
        // A thread that exits meanwhile holds nothing any more.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let permitted = super::status_caps(&status, "CapPrm:").unwrap_or(u64::MAX);
        let nnp = status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"]));
        if (permitted & !keep != 0 || !nnp)
            && let Ok(tid) = task.file_name().to_string_lossy().parse()
        {
            holders.push(tid);
        }
    }
    Ok(holders)
}

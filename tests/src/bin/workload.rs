//! A process the end-to-end tests trace: it waits for "go" on stdin, makes an
//! exact number of known syscalls, prints "done" and exits.
//!
//!   workload syscalls N M    N getppid() calls and M fchdir(-1) calls (EBADF)
//!   workload storm T N       T threads, N getppid() calls each (overload)
//!   workload unknown N       N calls of syscall number 9999 (ENOSYS)
//!   workload paced N RATE    N getppid() calls at RATE per second (1 ms steps)
//!   workload spray A B       one call of each syscall number in A..B (ENOSYS)
//!   workload fail MS         fchdir(-1) calls (EBADF) for MS milliseconds; prints
//!                            "failed=N"
//!   workload spin T MS CPU   T threads busy for MS ms, pinned to CPU (-1: not
//!                            pinned); prints their thread ids before "ready"...
//!                            after "ready", as "tids=1,2,3"
//!   workload connect SYNCNT ADDR N [ADDR N ...]
//!                            N blocking connects to each ADDR, all at once, one
//!                            thread each (TCP_SYNCNT = SYNCNT if > 0); prints
//!                            what connect() returned: "success=.. ECONNREFUSED=.."
//!
//!   workload bursts          after "go", one line per burst: N getppid() calls,
//!                            answered "burst"; "end" ends it
//!   workload procs BIN N K J
//!                            N runs of BIN (fork and exec, waited for), K
//!                            forked children that exit with code 3, J forked
//!                            children killed by SIGKILL; prints
//!                            "execs=N exit3=K killed=J"
//!   workload blockio DEV N M
//!                            N O_DIRECT 4 KiB reads and M O_DIRECT 64 KiB writes
//!                            on the block device DEV, at distinct aligned offsets
//!
//!   workload hog MB          touches MB MiB of fresh memory, page by page (in a
//!                            small memory cgroup: the OOM killer's victim)
//!
//!   workload demo N M PORT K
//!                            no "ready"/"go": at once N getppid() and M fchdir(-1)
//!                            calls, sleeps 200 ms, K connects to 127.0.0.1:PORT,
//!                            then exits with code 3 and prints nothing (it runs
//!                            under `agent attach -- ...`, whose stdout it shares)
//!
//! getppid and fchdir are used because neither Rust's runtime nor libc calls
//! them on their own, so the counts the agent reports must be exact.

use std::io::{BufRead, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("usage: workload syscalls N M | storm THREADS N"))
    };
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    if mode == "demo" {
        demo(num(2), num(3), num(4) as u16, num(5));
    }
    let spinners = (mode == "spin").then(|| Spinners::start(num(2) as usize, num(3), &args[4]));
    println!("ready");
    if let Some(s) = &spinners {
        println!(
            "tids={}",
            s.tids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    match mode {
        "syscalls" => {
            getppid_loop(num(2));
            for _ in 0..num(3) {
                let rc = unsafe { libc::syscall(libc::SYS_fchdir, -1) };
                assert_eq!(rc, -1);
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EBADF)
                );
            }
        }
        "bursts" => {
            for l in std::io::stdin().lock().lines() {
                let l = l.unwrap();
                if l.trim() == "end" {
                    break;
                }
                getppid_loop(l.trim().parse().expect("a count of getppid calls"));
                println!("burst");
                std::io::stdout().flush().unwrap();
            }
            // Ended by the test closing stdin: nobody reads a "done".
            std::process::exit(0);
        }
        "storm" => {
            let (threads, n) = (num(2), num(3));
            let handles: Vec<_> = (0..threads)
                .map(|_| std::thread::spawn(move || getppid_loop(n)))
                .collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
        }
        "paced" => paced(num(2), num(3)),
        "spray" => {
            for nr in num(2)..num(3) {
                let rc = unsafe { libc::syscall(nr as libc::c_long) };
                assert_eq!(rc, -1, "syscall {nr} exists");
            }
        }
        "unknown" => {
            for _ in 0..num(2) {
                let rc = unsafe { libc::syscall(9999) };
                assert_eq!(rc, -1);
            }
        }
        "fail" => {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(num(2));
            let mut failed = 0u64;
            while std::time::Instant::now() < until {
                unsafe { libc::syscall(libc::SYS_fchdir, -1) };
                failed += 1;
            }
            println!("failed={failed}");
        }
        "connect" => connects(&args[2..]),
        "hog" => hog(num(2)),
        "procs" => procs(&args[2], num(3), num(4), num(5)),
        "blockio" => block_io(&args[2], num(3), num(4)),
        "spin" => spinners.unwrap().run(),
        _ => panic!("unknown mode {mode:?}"),
    }
    println!("done");
    std::io::stdout().flush().unwrap();
}

fn demo(n: u64, m: u64, port: u16, k: u64) -> ! {
    getppid_loop(n);
    for _ in 0..m {
        unsafe { libc::syscall(libc::SYS_fchdir, -1) };
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..k {
        assert_eq!(connect_once(addr, 0), "success");
    }
    std::process::exit(3);
}

fn procs(bin: &str, n: u64, k: u64, j: u64) {
    for _ in 0..n {
        let status = std::process::Command::new(bin).status().expect("run BIN");
        assert!(status.success(), "{bin}: {status}");
    }
    let fork_and_wait = |child: fn() -> !, kill: bool| -> i32 {
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            child();
        }
        if kill {
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    };
    let mut exit3 = 0;
    for _ in 0..k {
        let status = fork_and_wait(|| unsafe { libc::_exit(3) }, false);
        exit3 += u64::from(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
    }
    let mut killed = 0;
    for _ in 0..j {
        let status = fork_and_wait(
            || loop {
                unsafe { libc::pause() };
            },
            true,
        );
        killed += u64::from(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    }
    println!("execs={n} exit3={exit3} killed={killed}");
}

/// O_DIRECT needs buffers and offsets aligned to the logical block size.
fn block_io(dev: &str, reads: u64, writes: u64) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const READ: usize = 4096;
    const WRITE: usize = 65536;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .unwrap_or_else(|e| panic!("open {dev}: {e}"));
    let layout = std::alloc::Layout::from_size_align(WRITE, 4096).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!ptr.is_null());
    // SAFETY: `ptr` holds WRITE initialized bytes until dealloc.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, WRITE) };
    for i in 0..reads {
        let n = file.read_at(&mut buf[..READ], i * READ as u64).unwrap();
        assert_eq!(n, READ);
    }
    for i in 0..writes {
        let n = file.write_at(buf, i * WRITE as u64).unwrap();
        assert_eq!(n, WRITE);
    }
    drop(file);
    unsafe { std::alloc::dealloc(ptr, layout) };
}

fn hog(mib: u64) {
    let mut held = Vec::new();
    for _ in 0..mib {
        // One page in every 4 KiB written, so each MiB is really charged.
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        held.push(chunk);
    }
    std::hint::black_box(&held);
}

fn paced(n: u64, rate: u64) {
    let start = std::time::Instant::now();
    let per_ms = (rate / 1000).max(1);
    let mut done = 0;
    while done < n {
        let step = per_ms.min(n - done);
        getppid_loop(step);
        done += step;
        let due = std::time::Duration::from_micros(done * 1_000_000 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

fn getppid_loop(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

fn connects(args: &[String]) {
    let syncnt: i32 = args[0].parse().expect("SYNCNT");
    let mut threads = Vec::new();
    for pair in args[1..].chunks(2) {
        let addr: std::net::SocketAddr = pair[0].parse().expect("ADDR");
        let n: usize = pair[1].parse().expect("N");
        threads.extend((0..n).map(|_| std::thread::spawn(move || connect_once(addr, syncnt))));
    }
    let mut results = std::collections::BTreeMap::<String, u32>::new();
    for t in threads {
        *results.entry(t.join().unwrap()).or_default() += 1;
    }
    let summary: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", summary.join(" "));
}

/// One blocking connect with libc, so TCP_SYNCNT can be set before it.
fn connect_once(addr: std::net::SocketAddr, syncnt: i32) -> String {
    use std::os::fd::FromRawFd;
    let (family, storage, len) = sockaddr(addr);
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let _close = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    if syncnt > 0 {
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_SYNCNT,
                (&syncnt as *const i32).cast(),
                4,
            )
        };
        assert_eq!(rc, 0, "TCP_SYNCNT: {}", std::io::Error::last_os_error());
    }
    let rc = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc == 0 {
        return "success".into();
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(e) => format!("errno{e}"),
        None => "unknown".into(),
    }
}

fn sockaddr(addr: std::net::SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                size_of::<libc::sockaddr_in>() as u32,
            )
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                size_of::<libc::sockaddr_in6>() as u32,
            )
        }
    }
}

/// Busy threads created (and pinned) up front, so their ids are known before
/// they start; they spin once released.
struct Spinners {
    tids: Vec<u32>,
    go: std::sync::Arc<std::sync::Barrier>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start(threads: usize, ms: u64, cpu: &str) -> Spinners {
        let cpu: i32 = cpu.parse().expect("CPU");
        let go = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
        let (tx, rx) = std::sync::mpsc::channel();
        let handles = (0..threads)
            .map(|_| {
                let (go, tx) = (go.clone(), tx.clone());
                std::thread::spawn(move || {
                    if cpu >= 0 {
                        pin_to(cpu as usize);
                    }
                    tx.send(unsafe { libc::gettid() } as u32).unwrap();
                    go.wait();
                    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                    while std::time::Instant::now() < end {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let tids = (0..threads).map(|_| rx.recv().unwrap()).collect();
        Spinners { tids, go, handles }
    }

    fn run(self) {
        self.go.wait();
        self.handles.into_iter().for_each(|h| h.join().unwrap());
    }
}

fn pin_to(cpu: usize) {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

//! A process the end-to-end tests trace: it waits for "go" on stdin, makes an
//! exact number of known syscalls, prints "done" and exits.
//!
//!   workload syscalls N M    N getppid() calls and M fchdir(-1) calls (EBADF)
//!   workload storm T N       T threads, N getppid() calls each (overload)
//!   workload unknown N       N calls of syscall number 9999 (ENOSYS)
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
    println!("ready");
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
        "storm" => {
            let (threads, n) = (num(2), num(3));
            let handles: Vec<_> = (0..threads)
                .map(|_| std::thread::spawn(move || getppid_loop(n)))
                .collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
        }
        "unknown" => {
            for _ in 0..num(2) {
                let rc = unsafe { libc::syscall(9999) };
                assert_eq!(rc, -1);
            }
        }
        _ => panic!("unknown mode {mode:?}"),
    }
    println!("done");
    std::io::stdout().flush().unwrap();
}

fn getppid_loop(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

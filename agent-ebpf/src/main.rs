//! Kernel programs of the agent. One module per probe; they capture, filter and
//! stage, and leave every decision userspace can make to userspace.
#![no_std]
#![no_main]

mod block;
mod cgroup;
mod counters;
mod filter;
mod floor;
mod follow;
mod oom;
mod process;
mod sched;
mod syscalls;
mod task;
mod tcp;
mod tcp_peer;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any reachable panic.
    loop {}
}

/// GPL-compatible: tracing helpers such as `bpf_probe_read_kernel` are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

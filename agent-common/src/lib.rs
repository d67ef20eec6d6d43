//! Records, keys and constants shared by the eBPF programs and the agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding and no `bool`, so the
//! kernel and userspace agree on the layout byte for byte.
#![cfg_attr(not(test), no_std)]

pub mod block;
pub mod buckets;
pub mod counters;
pub mod oom;
pub mod process;
pub mod sched;
pub mod syscalls;
pub mod task;
pub mod tcp;

/// Implements `aya::Pod` for the userspace side (feature `user`).
#[macro_export]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `repr(C)`, `Copy`, made only of integers, and has
            // explicit padding fields, so every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

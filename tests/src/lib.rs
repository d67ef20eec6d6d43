//! Harness for the end-to-end tests and the benchmarks (`cargo xtask bench`
//! uses it as the `harness` crate): start the real agent binary, scrape it
//! over HTTP like Prometheus, parse the exposition, run real peer tools.
//!
//! Tests that cannot run (not root, binary missing, tool missing) panic with
//! the reason: nothing here skips silently.

pub mod agent;
pub mod bpf_maps;
pub mod exposition;
pub mod http;
pub mod loop_device;
pub mod netns;
pub mod otlp;
pub mod pod;
pub mod process;
pub mod prometheus;
pub mod receiver;
pub mod sysctl;
pub mod tools;
pub mod web;

pub use agent::{Agent, agent_bin, require_root, wait_ready};
pub use exposition::{Exposition, Sample};
pub use http::{HttpResponse, free_port, http_get, http_get_accept};
pub use loop_device::LoopDevice;
pub use netns::Netns;
pub use otlp::OtlpReceiver;
pub use pod::{Pod, PodLogs};
pub use process::{MemoryCgroup, Workload, cgroup2_root, workload_bin};
pub use receiver::Receiver;
pub use tools::{Bpftrace, openmetrics_check, promtool_check};

// Empty: lets the agent declare this crate as a build-dependency so cargo
// tracks changes to it. The programs live in the `agent-probes` binary.
#![no_std]

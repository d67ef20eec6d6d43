//! The running set of node collectors, changeable while the agent runs
//! (SIGHUP reload). A collector whose options did not change keeps its
//! source and counter guard, so its series go on exactly as before; only
//! collectors turned on, off or given new options are touched.

use super::{CollectorArgs, CollectorName, Entry, NodeCollectors, check_procfs};
use anyhow::Result;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

type Shared = Arc<Mutex<Arc<NodeCollectors>>>;

/// The registry's view: whichever set is current when a scrape starts (a
/// scrape in flight finishes with the set it began with).
#[derive(Debug)]
struct Current(Shared);

impl Collector for Current {
    fn encode(&self, enc: DescriptorEncoder) -> std::fmt::Result {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        set.encode(enc)
    }
}

/// Changes which node collectors run, and with which options.
#[derive(Debug)]
pub struct NodeSet {
    current: Shared,
    target_pid: Option<u32>,
    /// The running entries, each with the options it was built from.
    entries: Vec<(String, Arc<Entry>)>,
}

/// The node collectors' registry, and the handle to change them later.
pub(crate) fn registry(
    args: &CollectorArgs,
    target_pid: Option<u32>,
) -> Result<(Registry, NodeSet)> {
    let current: Shared = Arc::new(Mutex::new(Arc::new(NodeCollectors {
        sources: Vec::new(),
    })));
    let mut set = NodeSet {
        current: current.clone(),
        target_pid,
        entries: Vec::new(),
    };
    set.reconfigure(args)?;
    let mut r = Registry::default();
    r.register_collector(Box::new(Current(current)));
    Ok((r, set))
}

impl NodeSet {
    /// Runs the collectors `args` enables from the next scrape on. Returns
    /// what changed, for the log (empty: nothing did).
    pub fn reconfigure(&mut self, args: &CollectorArgs) -> Result<Vec<String>> {
        let enabled = args.enabled();
        if !enabled.is_empty() {
            check_procfs(&args.procfs)?;
        }
        let mut changes = Vec::new();
        let entries: Vec<(String, Arc<Entry>)> = enabled
            .into_iter()
            .map(|name| {
                let options = options(name, args);
                let old = self.entries.iter().find(|(_, e)| e.name == name);
                match old {
                    Some((o, entry)) if *o == options => (options, entry.clone()),
                    _ => {
                        let what = if old.is_some() {
                            "restarted with new options"
                        } else {
                            "started"
                        };
                        changes.push(format!("collector {} {what}", name.as_str()));
                        let entry = Entry::new(name, (name.0.build)(args, self.target_pid));
                        (options, Arc::new(entry))
                    }
                }
            })
            .collect();
        for (_, old) in &self.entries {
            if !entries.iter().any(|(_, e)| e.name == old.name) {
                changes.push(format!("collector {} stopped", old.name.as_str()));
            }
        }
        let sources = entries.iter().map(|(_, e)| e.clone()).collect();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(NodeCollectors { sources });
        self.entries = entries;
        Ok(changes)
    }
}

/// Everything collector `name` is built from: it is rebuilt when this changes.
fn options(name: CollectorName, args: &CollectorArgs) -> String {
    format!(
        "{:?} {:?} {:?} {}",
        args.procfs,
        args.sysfs,
        args.rootfs,
        (name.0.options)(&args.options)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CollectorArgs,
    }

    fn args(flags: &[&str]) -> CollectorArgs {
        Cli::parse_from(std::iter::once("agent").chain(flags.iter().copied())).args
    }

    fn render(r: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, r).unwrap();
        text
    }

    #[test]
    fn turning_a_collector_off_keeps_the_others_untouched() {
        let (r, mut set) = registry(&args(&[]), None).unwrap();
        assert!(render(&r).contains("node_cpu_seconds_total{"));
        let before = set.entries.clone();
        let changes = set.reconfigure(&args(&["--no-collector", "cpu"])).unwrap();
        assert_eq!(changes, ["collector cpu stopped"]);
        let text = render(&r);
        assert!(!text.contains("node_cpu_seconds_total"), "{text}");
        assert!(text.contains("node_load1 "));
        for (_, e) in &set.entries {
            let (_, old) = before.iter().find(|(_, o)| o.name == e.name).unwrap();
            assert!(Arc::ptr_eq(old, e), "{:?} was rebuilt", e.name);
        }
        assert!(
            set.reconfigure(&args(&["--no-collector", "cpu"]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn new_options_rebuild_only_the_collector_that_uses_them() {
        let (_, mut set) = registry(&args(&["--collectors", "diskstats,cpu"]), None).unwrap();
        let cpu = set.entries[0].1.clone();
        let changes = set
            .reconfigure(&args(&[
                "--collectors",
                "diskstats,cpu,loadavg",
                "--diskstats-exclude",
                "^sda$",
            ]))
            .unwrap();
        assert_eq!(
            changes,
            [
                "collector loadavg started",
                "collector diskstats restarted with new options"
            ]
        );
        assert!(Arc::ptr_eq(&cpu, &set.entries[0].1));
    }

    #[test]
    fn a_bad_procfs_fails_and_changes_nothing() {
        let (r, mut set) = registry(
            &args(&["--collectors", "none", "--procfs", "/nonexistent"]),
            None,
        )
        .unwrap();
        let e = set
            .reconfigure(&args(&["--procfs", "/nonexistent"]))
            .unwrap_err();
        assert!(format!("{e:#}").contains("--procfs"));
        assert!(set.entries.is_empty() && !render(&r).contains("node_"));
    }
}

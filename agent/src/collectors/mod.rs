//! Classic /proc collectors, compatible with node_exporter 1.5 (names,
//! labels, units, types), plus per-process metrics. Everything is read at
//! scrape time. See docs/metrics.md, "Node (/proc) metrics".
//!
//! One file per /proc source, registered in [`COLLECTORS`] (its name, how it
//! is built from the flags). Each source implements [`Source`]; a single
//! prometheus-client `Collector` runs the enabled sources in turn, because the
//! per-collector `ebpf_agent_scrape_collector_*` families must come once,
//! after every source has run.

mod conntrack;
mod cpu;
mod cpufreq;
mod diskstats;
mod entropy;
mod family;
mod filefd;
mod filesystem;
mod hwmon;
mod interrupts;
pub(crate) mod live;
mod loadavg;
mod meminfo;
mod monotonic;
mod netdev;
mod netstat;
mod os;
mod powersupplyclass;
mod pressure;
pub(crate) mod process;
mod schedstat;
mod sockstat;
mod softnet;
mod text_format;
mod textfile;
mod thermal_zone;
mod time;
mod timex;
mod uname;
mod vmstat;

use anyhow::{Context, Result, bail};
use family::Family;
use monotonic::CounterGuard;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use regex::Regex;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

/// node_exporter's diskstats exclusion: partitions (their I/O is counted on
/// the whole disk too) and RAM/loop/floppy devices. Newer node_exporters
/// spell it like this; 1.5 had `ram` where this has `z?ram`.
pub const DISKSTATS_EXCLUDE: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
/// node_exporter 1.5's default mount points to skip (upstream, not Debian's patch).
pub const FILESYSTEM_MOUNT_EXCLUDE: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter 1.5's default pseudo/virtual filesystem types to skip.
pub const FILESYSTEM_TYPE_EXCLUDE: &str = r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// node_exporter's default /proc/vmstat fields.
pub const VMSTAT_FIELDS: &str = r"^(oom_kill|pgpg|pswp|pg.*fault).*";
/// node_exporter 1.5's default netstat fields (`Protocol_Field`).
pub const NETSTAT_FIELDS: &str = r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// One /proc collector, registered once, in its own file (as node_exporter's
/// `registerCollector`).
pub(crate) struct Registration {
    /// As named on the command line and in the `collector` label.
    pub name: &'static str,
    /// On unless asked for (`--collectors default`), as node_exporter's
    /// default-enabled collectors.
    pub default: bool,
    /// Builds the source from the flags (`process` also takes the traced PID).
    pub build: fn(&CollectorArgs, Option<u32>) -> Box<dyn Source>,
    /// The collector's own options as text: a reload rebuilds it when they
    /// (or the filesystem roots) change.
    pub options: fn(&CollectorOptions) -> String,
}

/// Every collector, in the order they are scraped.
pub(crate) const COLLECTORS: [&Registration; 26] = [
    &cpu::COLLECTOR,
    &loadavg::COLLECTOR,
    &meminfo::COLLECTOR,
    &netdev::COLLECTOR,
    &diskstats::COLLECTOR,
    &pressure::COLLECTOR,
    &filesystem::COLLECTOR,
    &vmstat::COLLECTOR,
    &netstat::COLLECTOR,
    &sockstat::COLLECTOR,
    &filefd::COLLECTOR,
    &uname::COLLECTOR,
    &os::COLLECTOR,
    &time::COLLECTOR,
    &timex::COLLECTOR,
    &softnet::COLLECTOR,
    &conntrack::COLLECTOR,
    &entropy::COLLECTOR,
    &schedstat::COLLECTOR,
    &hwmon::COLLECTOR,
    &thermal_zone::COLLECTOR,
    &cpufreq::COLLECTOR,
    &powersupplyclass::COLLECTOR,
    &interrupts::COLLECTOR,
    &process::COLLECTOR,
    // Last: it must not repeat a family the others export.
    &textfile::COLLECTOR,
];

/// For collectors built from the filesystem roots alone.
fn no_options(_: &CollectorOptions) -> String {
    String::new()
}

/// A collector named on the command line (one of [`COLLECTORS`]).
#[derive(Clone, Copy)]
pub struct CollectorName(&'static Registration);

impl CollectorName {
    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    pub(crate) fn all() -> impl Iterator<Item = CollectorName> {
        COLLECTORS.into_iter().map(CollectorName)
    }

    #[cfg(test)]
    pub(crate) fn named(name: &str) -> CollectorName {
        parse_collector_name(name).unwrap()
    }
}

impl PartialEq for CollectorName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::fmt::Debug for CollectorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn valid_names() -> String {
    COLLECTORS.map(|c| c.name).join(", ")
}

fn off_by_default() -> String {
    let off: Vec<_> = COLLECTORS
        .iter()
        .filter(|c| !c.default)
        .map(|c| c.name)
        .collect();
    off.join(", ")
}

fn parse_collector_name(s: &str) -> Result<CollectorName, String> {
    CollectorName::all()
        .find(|c| c.as_str() == s.trim())
        .ok_or_else(|| format!("unknown collector `{s}`; valid names: {}", valid_names()))
}

/// A `--collectors` value: a comma-separated list of names and `default`
/// (the collectors on by default), or `all`, or `none`.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorList(pub Vec<CollectorName>);

fn parse_collector_list(s: &str) -> Result<CollectorList, String> {
    match s.trim() {
        "all" => Ok(CollectorList(CollectorName::all().collect())),
        "none" => Ok(CollectorList(Vec::new())),
        "" => Err(format!(
            "empty list; give names ({}), `default`, `all` or `none`",
            valid_names()
        )),
        list => {
            let mut out = Vec::new();
            for item in list.split(',') {
                match item.trim() {
                    "default" => out.extend(CollectorName::all().filter(|c| c.0.default)),
                    name => out.push(parse_collector_name(name)?),
                }
            }
            Ok(CollectorList(out))
        }
    }
}

fn parse_regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| format!("not a valid regular expression: {e}"))
}

/// Node collector options (flattened into `agent run`).
#[derive(clap::Args, Debug, Clone)]
pub struct CollectorArgs {
    /// Where the host's procfs is mounted (in a container: the host's /proc).
    #[arg(long, default_value = "/proc")]
    pub procfs: PathBuf,

    /// Where the host's sysfs is mounted (in a container: the host's /sys).
    #[arg(long, default_value = "/sys")]
    pub sysfs: PathBuf,

    /// Where the host's root filesystem is mounted; statfs() on mount points
    /// is done below it (in a container: the host's / mounted read-only).
    #[arg(long, default_value = "/")]
    pub rootfs: PathBuf,

    /// Node collectors to run, comma separated, or `all`, or `none`.
    #[arg(long, value_name = "LIST", default_value = "default", value_parser = parse_collector_list,
          help = format!("Node collectors to run, comma separated: {}; `default` for those on by default (all but {}), `all`, or `none`", valid_names(), off_by_default()))]
    pub collectors: CollectorList,

    /// Turns one node collector off (repeatable); applied after --collectors.
    #[arg(long = "no-collector", value_name = "NAME", value_parser = parse_collector_name)]
    pub no_collector: Vec<CollectorName>,

    #[command(flatten)]
    pub options: Box<CollectorOptions>,
}

/// Per-collector options. Boxed: compiled regexes are large, and `agent
/// run`'s arguments sit in an enum beside argument-less subcommands.
#[derive(clap::Args, Debug, Clone)]
pub struct CollectorOptions {
    /// Also export virtual network devices (lo, bridges, veth, bonds,
    /// tunnels: those without <sysfs>/class/net/DEV/device).
    #[arg(long)]
    pub netdev_virtual: bool,

    /// Network devices to leave out (regex on the name), on top of the
    /// virtual-device rule.
    #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
    pub netdev_exclude: Option<Regex>,

    /// Block devices to leave out (regex on the name). Default: partitions
    /// and ram/zram/loop/floppy devices, as node_exporter.
    #[arg(long, value_name = "REGEX", default_value = DISKSTATS_EXCLUDE, value_parser = parse_regex)]
    pub diskstats_exclude: Regex,

    /// Mount points to leave out (regex), as node_exporter's default.
    #[arg(long, value_name = "REGEX", default_value = FILESYSTEM_MOUNT_EXCLUDE, value_parser = parse_regex)]
    pub filesystem_mount_exclude: Regex,

    /// Filesystem types to leave out (regex), as node_exporter's default.
    #[arg(long, value_name = "REGEX", default_value = FILESYSTEM_TYPE_EXCLUDE, value_parser = parse_regex)]
    pub filesystem_type_exclude: Regex,

    /// Longest wait for statfs() on all mounts together; a mount that has not
    /// answered by then reports node_filesystem_device_error 1 and is skipped
    /// until its call returns (a hung NFS server must not hang the scrape).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub filesystem_timeout_ms: u64,

    /// /proc/vmstat fields to export (regex), as node_exporter's default.
    #[arg(long, value_name = "REGEX", default_value = VMSTAT_FIELDS, value_parser = parse_regex)]
    pub vmstat_fields: Regex,

    /// /proc/net/{netstat,snmp,snmp6} fields to export (regex on
    /// `Protocol_Field`), as node_exporter's default.
    #[arg(long, visible_alias = "collector.netstat.fields", value_name = "REGEX", default_value = NETSTAT_FIELDS, value_parser = parse_regex)]
    pub netstat_fields: Regex,

    /// Directory whose *.prom files (Prometheus text format) are exported
    /// at every scrape, as node_exporter's textfile collector. No default.
    #[arg(
        long,
        visible_alias = "collector.textfile.directory",
        value_name = "DIR"
    )]
    pub textfile_directory: Option<PathBuf>,

    /// Power supplies to leave out (regex on the name), as node_exporter's
    /// --collector.powersupply.ignored-supplies.
    #[arg(long, visible_alias = "collector.powersupply.ignored-supplies", value_name = "REGEX", default_value = "^$", value_parser = parse_regex)]
    pub powersupply_ignored_supplies: Regex,
}

impl CollectorArgs {
    /// The collectors to run, in a stable order, without duplicates.
    pub fn enabled(&self) -> Vec<CollectorName> {
        CollectorName::all()
            .filter(|c| self.collectors.0.contains(c) && !self.no_collector.contains(c))
            .collect()
    }
}

/// A /proc source, read at every scrape.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Appends this scrape's families. Families pushed before an error are
    /// still exported (the process collector keeps the agent's own series
    /// when the traced process is gone); the error marks the scrape failed.
    fn collect(&self, out: &mut Vec<Family>) -> Result<()>;

    /// `collect`, knowing the families the collectors before this one wrote
    /// in this scrape: the textfile collector must not repeat one of them.
    fn collect_after(&self, _earlier: &HashSet<String>, out: &mut Vec<Family>) -> Result<()> {
        self.collect(out)
    }

    /// Whether `collect_after` needs the families of the sources before it
    /// (registered last, it sees all of them).
    fn after_others(&self) -> bool {
        false
    }
}

fn check_procfs(procfs: &Path) -> Result<()> {
    let stat = procfs.join("stat");
    std::fs::metadata(&stat).with_context(|| {
        format!(
            "{} is not a procfs mount (cannot read {}): point --procfs at one, or turn the node collectors off with --collectors none",
            procfs.display(),
            stat.display()
        )
    })?;
    Ok(())
}

#[derive(Debug)]
struct Entry {
    name: CollectorName,
    source: Box<dyn Source>,
    guard: Mutex<CounterGuard>,
    /// Whether the last scrape failed: failures are logged at warn once per
    /// outage, then at debug, so a missing file does not flood the log.
    failing: AtomicBool,
}

impl Entry {
    fn new(name: CollectorName, source: Box<dyn Source>) -> Entry {
        Entry {
            name,
            source,
            guard: Mutex::new(CounterGuard::default()),
            failing: AtomicBool::new(false),
        }
    }

    /// Runs the source; returns its families (counters made monotonic) and
    /// whether it succeeded.
    fn scrape(&self, earlier: &HashSet<String>) -> (Vec<Family>, bool) {
        let mut families = Vec::new();
        let result = self.source.collect_after(earlier, &mut families);
        self.guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&mut families);
        let name = self.name.as_str();
        match result {
            Ok(()) => {
                if self.failing.swap(false, Relaxed) {
                    tracing::info!("collector {name} works again");
                }
                (families, true)
            }
            Err(e) => {
                if self.failing.swap(true, Relaxed) {
                    tracing::debug!("collector {name} failed: {e:#}");
                } else {
                    tracing::warn!(
                        "collector {name} failed (reported as ebpf_agent_scrape_collector_success 0; logged again at debug): {e:#}"
                    );
                }
                (families, false)
            }
        }
    }
}

#[derive(Debug)]
struct NodeCollectors {
    sources: Vec<std::sync::Arc<Entry>>,
}

impl Collector for NodeCollectors {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let mut duration = Family::gauge(
            "ebpf_agent_scrape_collector_duration_seconds",
            "Time a node collector took to read its sources during this scrape",
        );
        let mut success = Family::gauge(
            "ebpf_agent_scrape_collector_success",
            "Whether a node collector read its sources (1) or failed (0) during this scrape",
        );
        // The names written so far, for the textfile collector (only built
        // when one needs them: it is a few hundred strings per scrape).
        let need = self.sources.iter().any(|e| e.source.after_others());
        let mut earlier = HashSet::new();
        for entry in &self.sources {
            let start = Instant::now();
            let (families, ok) = entry.scrape(&earlier);
            if need {
                earlier.extend(families.iter().map(|f| f.name.to_string()));
            }
            let labels = [("collector", entry.name.as_str())];
            duration.push(&labels, start.elapsed().as_secs_f64());
            success.push(&labels, if ok { 1.0 } else { 0.0 });
            for f in &families {
                f.encode(&mut enc)?;
            }
        }
        duration.encode(&mut enc)?;
        success.encode(&mut enc)
    }
}

/// Reads a whole /proc or /sys file, naming it in the error. Not UTF-8
/// strict: device names and mount points are bytes, and one odd name must
/// not fail the whole file.
pub(crate) fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Parses a decimal counter field, naming what it was in the error (lazily:
/// building the name for every field would cost more than the parsing).
pub(crate) fn number(field: Option<&str>, what: impl std::fmt::Display) -> Result<u64> {
    let Some(s) = field else {
        bail!("{what}: field missing")
    };
    s.parse()
        .with_context(|| format!("{what}: `{s}` is not a number"))
}

/// USER_HZ: the unit of the tick counts in /proc/stat and /proc/<pid>/stat.
pub(crate) fn user_hz() -> f64 {
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A fresh, empty directory for one test.
    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("agent-collectors-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: CollectorArgs,
    }

    fn parse(args: &[&str]) -> Result<CollectorArgs, String> {
        let argv = std::iter::once("agent").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn default_collectors_by_default_and_flags_turn_them_off() {
        let defaults = parse(&[]).unwrap().enabled();
        assert_eq!(defaults.len(), COLLECTORS.len() - 1);
        assert!(!defaults.contains(&CollectorName::named("interrupts")));
        let more = parse(&["--collectors", "default,interrupts"]).unwrap();
        assert_eq!(more.enabled().len(), COLLECTORS.len());
        let all = parse(&["--collectors", "all"]).unwrap();
        assert_eq!(all.enabled(), CollectorName::all().collect::<Vec<_>>());
        let a = parse(&["--collectors", "meminfo,cpu", "--no-collector", "cpu"]).unwrap();
        assert_eq!(a.enabled(), [CollectorName::named("meminfo")]);
        let a = parse(&["--no-collector", "process", "--no-collector", "filesystem"]).unwrap();
        assert_eq!(a.enabled().len(), COLLECTORS.len() - 3);
        assert!(
            parse(&["--collectors", "none"])
                .unwrap()
                .enabled()
                .is_empty()
        );
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = parse(&["--collectors", "cpu,bogus"]).unwrap_err();
        assert!(e.contains("unknown collector `bogus`"), "{e}");
        assert!(
            e.contains("cpu, loadavg, meminfo, netdev, diskstats"),
            "{e}"
        );
        let e = parse(&["--no-collector", "nope"]).unwrap_err();
        assert!(e.contains("valid names"), "{e}");
        assert!(parse(&["--collectors", ""]).unwrap_err().contains("empty"));
        let e = parse(&["--diskstats-exclude", "("]).unwrap_err();
        assert!(e.contains("regular expression"), "{e}");
    }

    #[test]
    fn default_filters_are_node_exporters() {
        let a = parse(&[]).unwrap();
        for dev in [
            "sda1",
            "nvme0n1p2",
            "loop0",
            "ram0",
            "zram0",
            "vdb3",
            "xvda1",
        ] {
            assert!(a.options.diskstats_exclude.is_match(dev), "{dev}");
        }
        for dev in ["sda", "nvme0n1", "vda", "dm-0", "md0", "mmcblk0"] {
            assert!(!a.options.diskstats_exclude.is_match(dev), "{dev}");
        }
        assert!(
            a.options
                .filesystem_mount_exclude
                .is_match("/proc/sys/fs/binfmt_misc")
        );
        assert!(
            a.options
                .filesystem_mount_exclude
                .is_match("/run/credentials/x.service")
        );
        assert!(!a.options.filesystem_mount_exclude.is_match("/run"));
        assert!(!a.options.filesystem_mount_exclude.is_match("/home"));
        assert!(a.options.filesystem_type_exclude.is_match("cgroup2"));
        assert!(!a.options.filesystem_type_exclude.is_match("ext4"));
        assert!(a.options.vmstat_fields.is_match("pgmajfault"));
        assert!(!a.options.vmstat_fields.is_match("nr_free_pages"));
        assert!(a.options.netdev_exclude.is_none() && !a.options.netdev_virtual);
        assert!(a.options.netstat_fields.is_match("TcpExt_ListenDrops"));
        assert!(!a.options.netstat_fields.is_match("Tcp_MaxConn"));
        // node_exporter's spelling of the flag is accepted too.
        let a = parse(&["--collector.netstat.fields", "^Tcp_.*"]).unwrap();
        assert_eq!(a.options.netstat_fields.as_str(), "^Tcp_.*");
    }

    #[test]
    fn files_with_non_utf8_names_are_read() {
        let dir = temp_dir("non-utf8");
        let path = dir.join("dev");
        std::fs::write(&path, b"  eth\xff0: 1 2\n").unwrap();
        assert_eq!(read(&path).unwrap(), "  eth\u{fffd}0: 1 2\n");
        assert!(
            read(&dir.join("missing"))
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn a_wrong_procfs_is_a_startup_error_with_a_hint() {
        let a = parse(&["--procfs", "/nonexistent"]).unwrap();
        let e = format!("{:#}", live::registry(&a, None).map(|_| ()).unwrap_err());
        assert!(e.contains("--procfs"), "{e}");
        let a = parse(&["--procfs", "/nonexistent", "--collectors", "none"]).unwrap();
        assert!(live::registry(&a, None).is_ok());
    }

    #[derive(Debug)]
    struct Broken;

    impl Source for Broken {
        fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
            out.push(Family::gauge("partial", "kept").with(&[], 1.0));
            bail!("cannot read /proc/nothing")
        }
    }

    #[test]
    fn a_failing_collector_reports_success_0_and_the_scrape_goes_on() {
        let collectors = NodeCollectors {
            sources: vec![
                Entry::new(CollectorName::named("vmstat"), Box::new(Broken)).into(),
                Entry::new(
                    CollectorName::named("loadavg"),
                    Box::new(loadavg::Loadavg::new(Path::new("/proc"))),
                )
                .into(),
            ],
        };
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(collectors));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for want in [
            "ebpf_agent_scrape_collector_success{collector=\"vmstat\"} 0",
            "ebpf_agent_scrape_collector_success{collector=\"loadavg\"} 1",
            "ebpf_agent_scrape_collector_duration_seconds{collector=\"loadavg\"} ",
            "node_load1 ",
            "partial 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_real_proc_renders_with_every_collector() {
        let a = parse(&["--collectors", "all"]).unwrap();
        let (r, _) = live::registry(&a, Some(std::process::id())).unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for c in CollectorName::all() {
            let want = format!(
                "ebpf_agent_scrape_collector_success{{collector=\"{}\"}} 1",
                c.as_str()
            );
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
        assert!(text.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}"));
        assert!(text.contains("node_memory_MemTotal_bytes "));
        assert!(text.contains(&format!(
            "process_threads{{pid=\"{}\"}}",
            std::process::id()
        )));
    }
}

//! Container and pod attribution without the API server: the kernel's cgroup
//! id → cgroup path (cgroupfs) → container id and pod uid (container.rs) →
//! namespace, pod and container names (the kubelet's log directories).
//!
//! Every distinct label set gets a [`Slot`]; aggregates keep one entry per
//! slot. Slot 0 is the host: processes outside any container, exported with
//! empty container labels. Label sets pass a sticky budget (past it, new ones
//! share the `other` slot and the events are counted as folded). When all the
//! cgroups of a label set are gone, its series are kept for a retention period
//! (so a restarted container continues its counters), then retired: the slot
//! is reused under a new generation and aggregates drop the old data.

pub mod args;
pub mod cgroupfs;
pub mod container;
pub mod pods;

use cgroupfs::CgroupIndex;
use container::ContainerRef;
use pods::PodLogs;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A label set's place in the aggregates. A retired slot's index is reused
/// with a higher generation, so stale data is recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub index: u32,
    pub generation: u32,
}

impl Slot {
    pub const HOST: Slot = Slot {
        index: 0,
        generation: 0,
    };
}

/// The labels a container can carry (`--container-label-names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelName {
    Namespace,
    Pod,
    Container,
    PodUid,
    ContainerId,
}

impl LabelName {
    pub const ALL: [LabelName; 5] = [
        LabelName::Namespace,
        LabelName::Pod,
        LabelName::Container,
        LabelName::PodUid,
        LabelName::ContainerId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LabelName::Namespace => "namespace",
            LabelName::Pod => "pod",
            LabelName::Container => "container",
            LabelName::PodUid => "pod_uid",
            LabelName::ContainerId => "container_id",
        }
    }

    pub fn parse(s: &str) -> Result<LabelName, String> {
        LabelName::ALL
            .into_iter()
            .find(|l| l.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown container label `{s}`; valid: {}",
                    LabelName::ALL.map(LabelName::as_str).join(", ")
                )
            })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The cgroup v2 hierarchy (see `cgroupfs::find_v2_root`).
    pub cgroup_root: PathBuf,
    /// The kubelet's log root (normally /var/log).
    pub pod_logs: PathBuf,
    pub labels: Vec<LabelName>,
    /// Container label sets with their own series.
    pub budget: usize,
    /// How long a label set's series outlive its last cgroup.
    pub retention: Duration,
}

/// Shortest gap between two walks of the cgroup tree on lookups of unknown ids.
const MIN_WALK_GAP: Duration = Duration::from_millis(200);

/// (name, value) label pairs of one series, as prometheus-client encodes them.
pub type Labels = Vec<(&'static str, Cow<'static, str>)>;

/// A container's label values, in `Options::labels` order.
pub type Values = Arc<[String]>;

#[derive(Debug)]
pub struct Attribution {
    names: Vec<&'static str>,
    inner: Mutex<Resolver>,
}

#[derive(Debug)]
struct Cached {
    slot: Slot,
    /// Relative cgroup path; None when the id was not found (already gone).
    path: Option<PathBuf>,
    /// A container whose pod metadata was missing: looked up again later.
    incomplete: bool,
    /// Housekeeping rounds that found the cgroup gone.
    missing: u8,
}

#[derive(Debug)]
struct SlotEntry {
    values: Values,
    generation: u32,
    live: bool,
    /// Cached cgroups mapped to this slot.
    cgroups: u32,
    idle_since: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    container: u64,
    host: u64,
    unknown: u64,
    walks: u64,
    folded_events: u64,
    retired: u64,
}

/// Cgroup id to slot, with its caches. Obtained through [`Attribution::lock`].
#[derive(Debug)]
pub struct Resolver {
    opts: Options,
    index: CgroupIndex,
    pods: PodLogs,
    last_walk: Option<Instant>,
    cgroups: HashMap<u32, Cached>,
    slots: Vec<SlotEntry>,
    free: Vec<u32>,
    by_values: HashMap<Values, u32>,
    other: Option<Slot>,
    memo: Option<(u32, Slot)>,
    counts: Counts,
    /// Cgroups dropped as gone, with their slot, one list per consumer
    /// ([`GoneFeed`]: the run-queue and block probes delete their kernel map
    /// entries) until it takes them. None asked, none kept.
    gone: Vec<Vec<(u32, Slot)>>,
}

/// One consumer's list of gone cgroups ([`Attribution::track_gone`]): each
/// consumer is told of every gone cgroup once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoneFeed(usize);

impl Attribution {
    pub fn new(opts: Options) -> Attribution {
        let names = opts.labels.iter().map(|l| l.as_str()).collect();
        let host_values: Values = opts.labels.iter().map(|_| String::new()).collect();
        Attribution {
            names,
            inner: Mutex::new(Resolver {
                index: CgroupIndex::new(opts.cgroup_root.clone()),
                pods: PodLogs::new(opts.pod_logs.clone()),
                opts,
                last_walk: None,
                cgroups: HashMap::new(),
                slots: vec![SlotEntry {
                    values: host_values,
                    generation: 0,
                    live: true,
                    cgroups: 0,
                    idle_since: None,
                }],
                free: Vec::new(),
                by_values: HashMap::new(),
                other: None,
                memo: None,
                counts: Counts::default(),
                gone: Vec::new(),
            }),
        }
    }

    /// The resolver, locked once for a batch of lookups.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Resolver> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start keeping a list of gone cgroups for a new consumer, who takes
    /// it with [`Resolver::take_gone`].
    pub fn track_gone(&self) -> GoneFeed {
        let mut r = self.lock();
        r.gone.push(Vec::new());
        GoneFeed(r.gone.len() - 1)
    }

    /// Events attributed to the shared `other` label set (budget spent).
    pub fn folded_events(&self) -> u64 {
        self.lock().counts.folded_events
    }

    /// Current label values of every live slot, for an exporter.
    pub fn labeler(&self) -> Labeler {
        let r = self.lock();
        Labeler {
            names: self.names.clone(),
            slots: r
                .slots
                .iter()
                .map(|s| s.live.then(|| (s.generation, s.values.clone())))
                .collect(),
        }
    }

    /// Drops cgroups that are gone and retires label sets idle past the
    /// retention. Call every few seconds, off the hot path.
    pub fn housekeep(&self, now: Instant) {
        self.lock().housekeep(now);
    }
}

impl Resolver {
    /// The slot of a cgroup id (low 32 bits; 0 means "not recorded").
    pub fn slot(&mut self, cgroup: u32) -> Slot {
        let slot = match self.memo {
            Some((id, slot)) if id == cgroup => slot,
            _ => {
                let slot = match self.cgroups.get(&cgroup) {
                    Some(c) => c.slot,
                    None => self.resolve(cgroup),
                };
                // Only what is cached: an id not found yet is looked up again.
                if self.cgroups.contains_key(&cgroup) {
                    self.memo = Some((cgroup, slot));
                }
                slot
            }
        };
        if Some(slot) == self.other {
            self.counts.folded_events += 1;
        }
        slot
    }

    /// Cgroups found gone since this consumer's last call, with the slot
    /// they had.
    pub fn take_gone(&mut self, feed: GoneFeed) -> Vec<(u32, Slot)> {
        self.gone
            .get_mut(feed.0)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn resolve(&mut self, cgroup: u32) -> Slot {
        if cgroup == 0 {
            return Slot::HOST; // attribution was off when the record was made
        }
        let walked = self.index.path(cgroup).is_none()
            && self.last_walk.is_none_or(|t| t.elapsed() >= MIN_WALK_GAP);
        if walked {
            self.index.walk();
            self.last_walk = Some(Instant::now());
            self.counts.walks += 1;
        }
        let Some(path) = self.index.path(cgroup).map(PathBuf::from) else {
            // The events still count, under the host's labels, and the miss
            // is counted.
            self.counts.unknown += 1;
            if walked {
                // A fresh walk did not find it: gone before we looked (a
                // short-lived cgroup). Remembered until housekeeping, so it
                // costs one walk.
                self.cache(cgroup, Slot::HOST, None, false);
            }
            // Otherwise a walk ran moments ago for another id (two containers
            // starting together): look again once the gap has passed, rather
            // than label this one the host's until housekeeping.
            return Slot::HOST;
        };
        let cref = container::parse(&path.to_string_lossy());
        let (values, incomplete) = self.values(&cref);
        let slot = match values {
            None => {
                self.counts.host += 1;
                Slot::HOST
            }
            Some(values) => {
                self.counts.container += 1;
                self.slot_for(values)
            }
        };
        self.cache(cgroup, slot, Some(path), incomplete);
        slot
    }

    fn cache(&mut self, cgroup: u32, slot: Slot, path: Option<PathBuf>, incomplete: bool) {
        if slot != Slot::HOST {
            let e = &mut self.slots[slot.index as usize];
            e.cgroups += 1;
            e.idle_since = None;
        }
        self.cgroups.insert(
            cgroup,
            Cached {
                slot,
                path,
                incomplete,
                missing: 0,
            },
        );
    }

    /// Label values of a container (None: not a container, or nothing to say
    /// about it), and whether its pod metadata was missing.
    fn values(&self, cref: &ContainerRef) -> (Option<Values>, bool) {
        if !cref.is_container() {
            return (None, false);
        }
        let by_container = cref.id.as_deref().and_then(|id| self.pods.container(id));
        let (namespace, pod, container) = match by_container {
            Some(names) => names,
            None => {
                let pod = cref.pod_uid.as_deref().and_then(|uid| self.pods.pod(uid));
                let (ns, pod) = pod.unwrap_or_default();
                // Outside Kubernetes (plain Docker): the short container id.
                let container = match (&cref.pod_uid, &cref.id) {
                    (None, Some(id)) => id[..12].to_owned(),
                    _ => String::new(),
                };
                (ns, pod, container)
            }
        };
        let incomplete = cref.pod_uid.is_some() && pod.is_empty();
        let values: Values = self
            .opts
            .labels
            .iter()
            .map(|l| match l {
                LabelName::Namespace => namespace.clone(),
                LabelName::Pod => pod.clone(),
                LabelName::Container => container.clone(),
                LabelName::PodUid => cref.pod_uid.clone().unwrap_or_default(),
                LabelName::ContainerId => cref.id.clone().unwrap_or_default(),
            })
            .collect();
        // All empty would collide with the host's series.
        if values.iter().all(String::is_empty) {
            return (None, incomplete);
        }
        (Some(values), incomplete)
    }

    fn slot_for(&mut self, values: Values) -> Slot {
        if let Some(&index) = self.by_values.get(&values) {
            return self.current(index);
        }
        let used = self.by_values.len();
        if used >= self.opts.budget {
            return self.other_slot();
        }
        let index = self.allocate(values.clone());
        self.by_values.insert(values, index);
        self.current(index)
    }

    fn other_slot(&mut self) -> Slot {
        if let Some(slot) = self.other {
            return slot;
        }
        let values: Values = self.opts.labels.iter().map(|_| "other".into()).collect();
        let index = self.allocate(values);
        let slot = self.current(index);
        self.other = Some(slot);
        slot
    }

    fn allocate(&mut self, values: Values) -> u32 {
        match self.free.pop() {
            Some(index) => {
                let e = &mut self.slots[index as usize];
                e.values = values;
                e.generation += 1;
                e.live = true;
                e.cgroups = 0;
                e.idle_since = None;
                index
            }
            None => {
                self.slots.push(SlotEntry {
                    values,
                    generation: 0,
                    live: true,
                    cgroups: 0,
                    idle_since: None,
                });
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn current(&self, index: u32) -> Slot {
        Slot {
            index,
            generation: self.slots[index as usize].generation,
        }
    }

    fn housekeep(&mut self, now: Instant) {
        self.memo = None;
        let mut released = Vec::new();
        let mut gone = Vec::new();
        self.cgroups.retain(|&id, c| {
            // (keep, gone): an incomplete container is dropped to be looked
            // up again, but it is not gone.
            let (keep, is_gone) = match &c.path {
                None => (false, true), // unknown: gone before it was looked up
                Some(_) if c.incomplete => (false, false),
                Some(path) if self.index.alive(id, path) => {
                    c.missing = 0;
                    (true, false)
                }
                // Gone: keep one more round so records still in flight
                // resolve to the same labels.
                Some(_) => {
                    c.missing += 1;
                    (c.missing < 2, c.missing >= 2)
                }
            };
            if !keep && c.slot != Slot::HOST {
                released.push(c.slot);
            }
            if is_gone {
                gone.push((id, c.slot));
            }
            keep
        });
        for list in &mut self.gone {
            list.extend_from_slice(&gone);
        }
        for slot in released {
            let e = &mut self.slots[slot.index as usize];
            if e.generation == slot.generation {
                e.cgroups = e.cgroups.saturating_sub(1);
                if e.cgroups == 0 {
                    e.idle_since = Some(now);
                }
            }
        }
        let retention = self.opts.retention;
        for (index, e) in self.slots.iter_mut().enumerate().skip(1) {
            let idle_long = e
                .idle_since
                .is_some_and(|t| now.duration_since(t) >= retention);
            let is_other = self.other.is_some_and(|o| o.index as usize == index);
            if e.live && e.cgroups == 0 && idle_long && !is_other {
                e.live = false;
                self.by_values.remove(&e.values);
                self.free.push(index as u32);
                self.counts.retired += 1;
            }
        }
    }
}

/// Runs [`Attribution::housekeep`] on a thread until `stop` flips: often
/// enough that a gone cgroup is dropped (two rounds) well within the retention.
pub fn spawn_housekeeping(attribution: Arc<Attribution>, stop: tokio::sync::watch::Receiver<bool>) {
    let retention = attribution.lock().opts.retention;
    let every = (retention / 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
    std::thread::Builder::new()
        .name("cgroup-housekeeping".into())
        .spawn(move || {
            let step = Duration::from_millis(50);
            let mut next = Instant::now() + every;
            while !*stop.borrow() {
                std::thread::sleep(step);
                if Instant::now() >= next {
                    attribution.housekeep(Instant::now());
                    next = Instant::now() + every;
                }
            }
        })
        .expect("spawning a thread at startup");
}

/// The labeler for a scrape: per slot with attribution, host-only without.
pub fn labeler(attribution: Option<&Attribution>) -> Labeler {
    attribution.map_or_else(Labeler::off, Attribution::labeler)
}

/// Label values per slot, taken once per scrape.
#[derive(Debug, Clone)]
pub struct Labeler {
    names: Vec<&'static str>,
    slots: Vec<Option<(u32, Values)>>,
}

impl Labeler {
    /// No attribution: one host slot, no labels.
    pub fn off() -> Labeler {
        Labeler {
            names: Vec::new(),
            slots: vec![Some((0, Arc::from([])))],
        }
    }

    /// The container labels of a slot, or None if it was retired (its data is
    /// stale and must not be exported).
    pub fn labels(&self, slot: Slot) -> Option<Labels> {
        let (generation, values) = self.slots.get(slot.index as usize)?.as_ref()?;
        (*generation == slot.generation).then(|| {
            self.names
                .iter()
                .copied()
                .zip(values.iter().map(|v| Cow::Owned(v.clone())))
                .collect()
        })
    }
}

/// The attribution's own metrics (lookups, cache size, label sets).
#[derive(Debug)]
pub struct Metrics(pub Arc<Attribution>);

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let (counts, cgroups, series) = {
            let r = self.0.lock();
            let series = r.slots.iter().skip(1).filter(|s| s.live).count();
            (r.counts, r.cgroups.len(), series)
        };
        let mut m = enc.encode_descriptor(
            "cgroup_lookups",
            "Cgroup ids resolved to labels: container, host (not in a container), or unknown (not found: gone before it was looked up, or created after the last walk of the tree and looked up again after 200 ms; its events count under host labels)",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [
            ("container", counts.container),
            ("host", counts.host),
            ("unknown", counts.unknown),
        ] {
            m.encode_family(&[("result", result)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        let mut m = enc.encode_descriptor(
            "cgroup_tree_walks",
            "Walks of the cgroup v2 tree to find ids not seen before",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&counts.walks, None)?;
        let mut m = enc.encode_descriptor(
            "container_cgroups",
            "Cgroups the attribution cache holds now (gone ones are dropped within two housekeeping rounds)",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(cgroups as i64))?;
        let mut m = enc.encode_descriptor(
            "container_label_sets",
            "Container label sets with their own series now (the budget caps it; \"other\" included)",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(series as i64))?;
        let mut m = enc.encode_descriptor(
            "container_label_sets_retired",
            "Container label sets whose series were removed after their last cgroup was gone for the retention period",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&counts.retired, None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    const UID: &str = "0a1b2c3d-0000-4000-8000-0000000000aa";

    /// A directory tree standing in for the cgroup v2 hierarchy (directory
    /// inode numbers are cgroup ids there too) plus a kubelet log tree.
    struct Fixture {
        root: PathBuf,
    }

    impl Fixture {
        fn new(tag: &str) -> Fixture {
            let root = std::env::temp_dir().join(format!("attr-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("cg/system.slice/ssh.service")).unwrap();
            std::fs::create_dir_all(root.join("log/containers")).unwrap();
            Fixture { root }
        }

        /// A container cgroup (cgroupfs driver layout) with its log link; its id.
        fn container(&self, pod: &str, name: &str, id_byte: u8) -> (u32, PathBuf) {
            let id = format!("{id_byte:02x}").repeat(32);
            let dir = self.root.join(format!("cg/kubepods/pod{UID}/{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            let log = format!("log/containers/{pod}_shop_{name}-{id}.log");
            std::fs::write(self.root.join(log), "").unwrap();
            (self.id(&dir), dir)
        }

        fn id(&self, dir: &Path) -> u32 {
            cgroupfs::low32(std::fs::metadata(dir).unwrap().ino())
        }

        fn attribution(&self, budget: usize) -> Attribution {
            Attribution::new(Options {
                cgroup_root: self.root.join("cg"),
                pod_logs: self.root.join("log"),
                labels: vec![LabelName::Namespace, LabelName::Pod, LabelName::Container],
                budget,
                retention: Duration::ZERO,
            })
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn values(a: &Attribution, slot: Slot) -> Option<Vec<String>> {
        let labels = a.labeler().labels(slot)?;
        Some(labels.into_iter().map(|(_, v)| v.into_owned()).collect())
    }

    #[test]
    fn host_container_and_unknown_ids() {
        let f = Fixture::new("kinds");
        let (id, _) = f.container("cart-0", "redis", 0xab);
        let host = f.id(&f.root.join("cg/system.slice/ssh.service"));
        let a = f.attribution(10);
        let slot = a.lock().slot(id);
        assert_ne!(slot, Slot::HOST);
        assert_eq!(values(&a, slot).unwrap(), ["shop", "cart-0", "redis"]);
        assert_eq!(a.lock().slot(id), slot, "cached");
        assert_eq!(a.lock().slot(host), Slot::HOST);
        assert_eq!(a.lock().slot(0), Slot::HOST);
        assert_eq!(a.lock().slot(u32::MAX - 7), Slot::HOST, "not a live cgroup");
        let c = a.lock().counts;
        assert_eq!((c.container, c.host, c.unknown), (1, 1, 1));
        assert_eq!(values(&a, Slot::HOST).unwrap(), ["", "", ""]);
    }

    #[test]
    fn a_new_cgroup_found_within_the_walk_gap_is_looked_up_again() {
        let f = Fixture::new("gap");
        let (first, _) = f.container("cart-0", "redis", 0x05);
        let a = f.attribution(10);
        assert_ne!(a.lock().slot(first), Slot::HOST); // walks
        // Created just after that walk: not in it, and too soon for another.
        let (second, _) = f.container("cart-0", "app", 0x06);
        assert_eq!(a.lock().slot(second), Slot::HOST);
        assert!(
            !a.lock().cgroups.contains_key(&second),
            "not cached as gone"
        );
        a.lock().last_walk = None; // as if MIN_WALK_GAP had passed
        let slot = a.lock().slot(second);
        assert_eq!(values(&a, slot).unwrap(), ["shop", "cart-0", "app"]);
    }

    #[test]
    fn budget_folds_into_other_and_counts_events() {
        let f = Fixture::new("budget");
        let (first, _) = f.container("cart-0", "redis", 0x01);
        let (second, _) = f.container("cart-0", "app", 0x02);
        let a = f.attribution(1);
        let s1 = a.lock().slot(first);
        let other = a.lock().slot(second);
        assert_ne!(s1, other);
        assert_eq!(values(&a, other).unwrap(), ["other", "other", "other"]);
        a.lock().slot(second);
        a.lock().slot(first);
        assert_eq!(a.folded_events(), 2);
    }

    #[test]
    fn removed_cgroups_are_dropped_and_their_label_sets_retired() {
        let f = Fixture::new("retire");
        let (id, dir) = f.container("cart-0", "redis", 0x03);
        let a = f.attribution(10);
        let (runq, block) = (a.track_gone(), a.track_gone());
        let slot = a.lock().slot(id);
        let now = Instant::now();
        a.housekeep(now);
        assert_eq!(a.lock().cgroups.len(), 1, "alive: kept");
        std::fs::remove_dir(&dir).unwrap();
        a.housekeep(now);
        assert!(
            values(&a, slot).is_some(),
            "one grace round for records in flight"
        );
        a.housekeep(now);
        assert!(a.lock().cgroups.is_empty());
        // Every consumer is told, once.
        assert_eq!(a.lock().take_gone(runq), [(id, slot)]);
        assert_eq!(a.lock().take_gone(block), [(id, slot)]);
        assert_eq!(a.lock().take_gone(block), []);
        assert_eq!(values(&a, slot), None, "retired (retention 0)");
        assert_eq!(a.lock().counts.retired, 1);
        // The container comes back (a new cgroup): a new generation of the slot.
        let (id, _) = f.container("cart-0", "redis", 0x03);
        a.lock().last_walk = None; // as if MIN_WALK_GAP had passed
        let again = a.lock().slot(id);
        assert_eq!(again.index, slot.index);
        assert_ne!(again.generation, slot.generation);
        assert_eq!(values(&a, again).unwrap(), ["shop", "cart-0", "redis"]);
    }
}

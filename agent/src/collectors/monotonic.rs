//! Keeps exported counters from ever going down.
//!
//! Kernel counters do go backwards: 32-bit fields wrap, a device removed and
//! re-added under the same name starts from zero, per-CPU idle/iowait time
//! jitters back on NO_HZ kernels, and a sum over a process's live threads
//! drops when a thread exits. A counter that decreases reads as a reset to
//! Prometheus, which then adds the whole previous value to `rate()`: a spike.
//!
//! On a decrease the series' offset grows by the drop, so the exported value
//! holds and then follows the new raw value upwards. That loses at most the
//! increase between the last read and the drop (one scrape interval's worth)
//! and never invents increase, unlike treating every decrease as a reset
//! (wrong for jitter and for thread exits, where the raw value did not go to 0).

use super::family::{Family, Kind, Labels};
use std::collections::HashMap;

#[derive(Debug)]
struct Track {
    last_raw: f64,
    offset: f64,
    /// The scrape that last saw this series; older ones are forgotten.
    seen: u64,
}

/// Per-series offsets for one collector's counter families.
#[derive(Debug, Default)]
pub struct CounterGuard {
    series: HashMap<(String, Labels), Track>,
    scrape: u64,
}

impl CounterGuard {
    /// Rewrites the counter samples of one scrape in place. Series absent
    /// from this scrape are dropped, so vanished devices do not pile up.
    pub fn apply(&mut self, families: &mut [Family]) {
        self.scrape += 1;
        let scrape = self.scrape;
        for family in families.iter_mut().filter(|f| f.kind == Kind::Counter) {
            for sample in &mut family.samples {
                let key = (family.name.to_string(), sample.labels.clone());
                let track = self.series.entry(key).or_insert(Track {
                    last_raw: sample.value,
                    offset: 0.0,
                    seen: scrape,
                });
                if sample.value < track.last_raw {
                    track.offset += track.last_raw - sample.value;
                }
                track.last_raw = sample.value;
                track.seen = scrape;
                sample.value += track.offset;
            }
        }
        self.series.retain(|_, t| t.seen == scrape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(guard: &mut CounterGuard, dev: &str, raw: f64, gauge: f64) -> (f64, f64) {
        let mut f = vec![
            Family::counter("c_total", "c").with(&[("device", dev)], raw),
            Family::gauge("g", "g").with(&[], gauge),
        ];
        guard.apply(&mut f);
        (f[0].samples[0].value, f[1].samples[0].value)
    }

    #[test]
    fn counter_wrap_and_reset_never_decrease() {
        let mut g = CounterGuard::default();
        let exported: Vec<f64> = [100.0, 150.0, 10.0, 30.0, 4_294_967_200.0, 50.0, 60.0]
            .iter()
            .map(|&raw| scrape(&mut g, "eth0", raw, 0.0).0)
            .collect();
        // 150 -> 10 (reset): holds at 150, then follows +20.
        // 4294967200 -> 50 (32-bit wrap): holds, then follows +10.
        assert_eq!(
            exported,
            [
                100.0,
                150.0,
                150.0,
                170.0,
                4_294_967_340.0,
                4_294_967_340.0,
                4_294_967_350.0
            ]
        );
        assert!(exported.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn gauges_are_left_alone() {
        let mut g = CounterGuard::default();
        assert_eq!(scrape(&mut g, "eth0", 5.0, 10.0).1, 10.0);
        assert_eq!(scrape(&mut g, "eth0", 6.0, 3.0).1, 3.0);
    }

    #[test]
    fn series_are_tracked_separately_and_forgotten_when_gone() {
        let mut g = CounterGuard::default();
        scrape(&mut g, "a", 100.0, 0.0);
        assert_eq!(
            scrape(&mut g, "b", 5.0, 0.0).0,
            5.0,
            "b is not held at a's value"
        );
        // "a" vanished for a scrape: it comes back as a new series.
        assert_eq!(scrape(&mut g, "a", 1.0, 0.0).0, 1.0);
        assert_eq!(g.series.len(), 1);
    }
}

//! adjtimex(2), read only: the kernel's clock discipline (NTP/PTP sync
//! state, offset, frequency, error bounds), as node_exporter's timex
//! collector, with its units.

use super::family::Family;
use super::{Registration, Source};
use anyhow::Result;

/// `--collectors timex`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "timex",
    default: true,
    build: |_, _| Box::new(Timex),
    options: super::no_options,
};

/// adjtimex's return value when the clock is not synchronized.
const TIME_ERROR: i32 = 5;
/// Status bit: offset and jitter are in ns instead of µs.
const STA_NANO: i32 = 0x2000;
/// Frequencies are ppm with a 16-bit fraction (adjtimex(2), NOTES).
const PPM16FRAC: f64 = 1_000_000.0 * 65536.0;

/// What adjtimex reports, in its own units.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub state: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
    pub status: i32,
    pub constant: i64,
    pub tick: i64,
    pub ppsfreq: i64,
    pub jitter: i64,
    pub shift: i32,
    pub stabil: i64,
    pub jitcnt: i64,
    pub calcnt: i64,
    pub errcnt: i64,
    pub stbcnt: i64,
    pub tai: i32,
}

pub fn read() -> Result<Reading> {
    // SAFETY: modes 0 only reads; the kernel fills the struct.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return Err(anyhow::Error::from(std::io::Error::last_os_error()).context("adjtimex"));
    }
    Ok(Reading {
        state,
        offset: t.offset as i64,
        freq: t.freq as i64,
        maxerror: t.maxerror as i64,
        esterror: t.esterror as i64,
        status: t.status,
        constant: t.constant as i64,
        tick: t.tick as i64,
        ppsfreq: t.ppsfreq as i64,
        jitter: t.jitter as i64,
        shift: t.shift,
        stabil: t.stabil as i64,
        jitcnt: t.jitcnt as i64,
        calcnt: t.calcnt as i64,
        errcnt: t.errcnt as i64,
        stbcnt: t.stbcnt as i64,
        tai: t.tai,
    })
}

pub fn families(r: &Reading) -> Vec<Family> {
    let divisor = if r.status & STA_NANO != 0 { 1e9 } else { 1e6 };
    let g = |name, help, v: f64| Family::gauge(name, help).with(&[], v);
    let c = |name, help, v: i64| Family::counter(name, help).with(&[], v as f64);
    vec![
        g(
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            if r.state == TIME_ERROR { 0.0 } else { 1.0 },
        ),
        g(
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            r.offset as f64 / divisor,
        ),
        g(
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            1.0 + r.freq as f64 / PPM16FRAC,
        ),
        g(
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            r.maxerror as f64 / 1e6,
        ),
        g(
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            r.esterror as f64 / 1e6,
        ),
        g(
            "node_timex_status",
            "Value of the status array bits.",
            r.status as f64,
        ),
        g(
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            r.constant as f64,
        ),
        g(
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            r.tick as f64 / 1e6,
        ),
        g(
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            r.ppsfreq as f64 / PPM16FRAC,
        ),
        g(
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            r.jitter as f64 / divisor,
        ),
        g(
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            r.shift as f64,
        ),
        g(
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            r.stabil as f64 / PPM16FRAC,
        ),
        c(
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            r.jitcnt,
        ),
        c(
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            r.calcnt,
        ),
        c(
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            r.errcnt,
        ),
        c(
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            r.stbcnt,
        ),
        g(
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            r.tai as f64,
        ),
    ]
}

#[derive(Debug)]
pub struct Timex;

impl Source for Timex {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        out.extend(families(&read()?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    #[test]
    fn units_follow_the_nano_bit() {
        let r = Reading {
            state: TIME_ERROR,
            offset: 1500,
            freq: 65536 * 10,
            maxerror: 16_000_000,
            tick: 10_000,
            status: 0x40 | STA_NANO,
            jitter: 2_000_000_000,
            ..Reading::default()
        };
        let f = families(&r);
        let v = |n| find(&f, n).unwrap().samples[0].value;
        assert_eq!(v("node_timex_sync_status"), 0.0);
        assert_eq!(v("node_timex_offset_seconds"), 1.5e-6);
        assert_eq!(v("node_timex_pps_jitter_seconds"), 2.0);
        assert_eq!(v("node_timex_frequency_adjustment_ratio"), 1.00001);
        assert_eq!(v("node_timex_maxerror_seconds"), 16.0);
        assert_eq!(v("node_timex_tick_seconds"), 0.01);
        assert_eq!(v("node_timex_status"), 8256.0);
        let micro = families(&Reading {
            offset: 1500,
            ..Reading::default()
        });
        assert_eq!(
            find(&micro, "node_timex_offset_seconds").unwrap().samples[0].value,
            1.5e-3
        );
        assert_eq!(
            find(&micro, "node_timex_sync_status").unwrap().samples[0].value,
            1.0
        );
    }

    #[test]
    fn the_kernel_answers() {
        let r = read().unwrap();
        assert!(r.tick > 0);
        assert_eq!(families(&r).len(), 17);
    }
}

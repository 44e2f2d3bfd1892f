//! Latency histograms and error tallies.
//!
//! Every task keeps its own [`Latency`] and [`Errors`] and hands them back
//! when it ends, so the hot path never touches shared state; the figures are
//! merged once at the end of a phase.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track exactly (60 s, in microseconds);
/// anything slower is clamped to it, which still counts it as "over 1 s".
const MAX_US: u64 = 60_000_000;

/// A latency distribution in microseconds, 3 significant digits.
///
/// The histogram (about 130 KiB) is only allocated on the first sample:
/// the fleet keeps several per node (one per phase), most of which stay
/// empty, and 500 nodes would otherwise cost a quarter of a gigabyte.
#[derive(Clone)]
pub struct Latency {
    hist: Option<Histogram<u64>>,
    over_100ms: u64,
    over_1s: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Latency {
            hist: None,
            over_100ms: 0,
            over_1s: 0,
        }
    }

    fn hist_mut(&mut self) -> &mut Histogram<u64> {
        // 1 us .. 60 s at 3 significant digits cannot fail to build.
        self.hist.get_or_insert_with(|| {
            Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
        })
    }

    /// Builds the histogram now and writes every page of it, so that the
    /// first answers recorded do not pay for allocating and faulting in
    /// ~150 KB (64 workers x several histograms, at the start of a timed
    /// run, made its first ~0.2 s tens of milliseconds late).
    pub fn prepare(&mut self) {
        self.hist_mut().reset();
    }

    /// Records one latency; slower-than-100 ms and slower-than-1 s answers
    /// are counted exactly, not read back from the (bucketed) histogram.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().clamp(1, MAX_US as u128) as u64;
        self.hist_mut().saturating_record(us);
        if d > Duration::from_millis(100) {
            self.over_100ms += 1;
        }
        if d > Duration::from_secs(1) {
            self.over_1s += 1;
        }
    }

    pub fn merge(&mut self, other: &Latency) {
        if let Some(h) = &other.hist {
            // Same bounds on both sides: adding cannot fail.
            let _ = self.hist_mut().add(h);
        }
        self.over_100ms += other.over_100ms;
        self.over_1s += other.over_1s;
    }

    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    pub fn summary(&self) -> LatencySummary {
        let Some(h) = self.hist.as_ref().filter(|h| !h.is_empty()) else {
            return LatencySummary::default();
        };
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            over_100ms: self.over_100ms,
            over_1s: self.over_1s,
        }
    }

    /// Points of the percentile distribution (quantile, latency in us) for
    /// plotting, from the median out to the maximum.
    pub fn distribution(&self) -> Vec<(f64, u64)> {
        let Some(h) = self.hist.as_ref().filter(|h| !h.is_empty()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // Evenly spaced in log(1/(1-q)), the usual HDR percentile plot axis.
        let steps_per_decade = 20;
        let max_decades = (self.count() as f64).log10().ceil().max(1.0) as i32;
        for i in 0..=(max_decades * steps_per_decade) {
            let q = 1.0 - 10f64.powf(-(i as f64) / steps_per_decade as f64);
            out.push((q, h.value_at_quantile(q)));
        }
        out.push((1.0 - 10f64.powi(-max_decades - 1), h.max()));
        out
    }
}

/// Percentiles of one latency distribution, as reported and written to JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Answers slower than 100 ms.
    pub over_100ms: u64,
    /// Answers slower than 1 s: nsqd's deadline; such an nsqd disconnects.
    pub over_1s: u64,
}

/// Failures counted by kind (`connect_refused`, `reset`, `timeout`,
/// `status_404`, `bad_body`, `error_response`, ...).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: &str) {
        *self.0.entry(kind.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Maps an I/O error to an error kind name.
pub fn io_kind(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connect_refused",
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => "reset",
        TimedOut => "timeout",
        AddrInUse | AddrNotAvailable => "no_local_port",
        _ => "io_other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_distribution() {
        let mut l = Latency::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_us, 1);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p90_us, 900);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1.0);
        assert_eq!((s.over_100ms, s.over_1s), (0, 0));
    }

    #[test]
    fn slow_answers_counted_exactly_and_merged() {
        let mut a = Latency::new();
        a.record(Duration::from_millis(100)); // not over 100 ms
        a.record(Duration::from_millis(101));
        let mut b = Latency::new();
        b.record(Duration::from_secs(2));
        b.record(Duration::from_secs(3600)); // clamped, still counted
        a.merge(&b);
        let s = a.summary();
        assert_eq!((s.count, s.over_100ms, s.over_1s), (4, 3, 2));
        assert!(s.max_us >= 59_000_000);
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
        assert!(Latency::new().distribution().is_empty());
    }

    #[test]
    fn distribution_is_monotonic_and_ends_at_max() {
        let mut l = Latency::new();
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        let d = l.distribution();
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(d.last().map(|p| p.1), Some(l.summary().max_us));
    }

    #[test]
    fn errors_merge() {
        let mut a = Errors::default();
        a.add("reset");
        let mut b = Errors::default();
        b.add("reset");
        b.add("timeout");
        a.merge(&b);
        assert_eq!(a.0["reset"], 2);
        assert_eq!(a.total(), 3);
    }
}

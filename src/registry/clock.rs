//! The registry's notion of time.
//!
//! Liveness (inactive producers, tombstones) is decided on a monotonic clock
//! so that a wall-clock jump can neither resurrect nor hide a producer; the
//! wall clock is only used to *report* times (`/debug` shows Unix
//! nanoseconds, as the original does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds on the registry's monotonic clock. Never 0 for a real instant,
/// so 0 can mean "never" in compact fields.
pub type Nanos = u64;

/// Converts a duration to [`Nanos`], saturating (a 500-year timeout is "forever").
pub fn duration_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Monotonic clock with a fixed mapping to Unix time taken at start.
#[derive(Debug)]
pub struct Clock {
    base: Instant,
    base_unix_nanos: i64,
    /// Time skipped by tests (always 0 in the server); lets unit tests cross
    /// a timeout without sleeping.
    skipped: AtomicU64,
    /// Tests only: when set, real time is ignored and only `advance` moves the clock.
    #[cfg(test)]
    frozen: std::sync::atomic::AtomicBool,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let base_unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Clock {
            base: Instant::now(),
            base_unix_nanos,
            skipped: AtomicU64::new(0),
            #[cfg(test)]
            frozen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The current instant.
    pub fn now(&self) -> Nanos {
        #[cfg(test)]
        if self.frozen.load(Ordering::Relaxed) {
            return self.skipped.load(Ordering::Relaxed) + 1;
        }
        duration_nanos(self.base.elapsed()) + self.skipped.load(Ordering::Relaxed) + 1
    }

    /// The Unix time (ns) of an instant of this clock.
    pub fn to_unix_nanos(&self, t: Nanos) -> i64 {
        self.base_unix_nanos
            .saturating_add(i64::try_from(t).unwrap_or(i64::MAX))
    }

    /// Stops real time; from now on only [`Clock::advance`] moves the clock (tests only).
    #[cfg(test)]
    pub fn freeze(&self) {
        let now = self.now();
        self.skipped.store(now - 1, Ordering::Relaxed);
        self.frozen.store(true, Ordering::Relaxed);
    }

    /// Moves the clock forward (tests only).
    #[cfg(test)]
    pub fn advance(&self, d: Duration) {
        self.skipped.fetch_add(duration_nanos(d), Ordering::Relaxed);
    }
}

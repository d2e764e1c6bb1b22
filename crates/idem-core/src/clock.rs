//! The clock seam: every deadline of a backend comes from one clock, and tests can inject one they step.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of "now" for deadlines, as a duration since the clock's own epoch.
///
/// A backend reads one clock for all its deadlines. Only differences between readings of the same clock are
/// meaningful, except for [`SystemClock`], whose epoch is the Unix epoch so that several processes agree.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Returns the current time since the clock's epoch.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock, counted from the clock's creation. It never goes backwards, but readings
/// mean nothing to another process, so only single-process backends (memory) use it.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// Starts a monotonic clock at zero.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// The wall clock, counted from the Unix epoch. Processes on one host agree on it, so file-backed stores
/// (SQLite) use it. A wall clock stepped backwards makes deadlines later; one stepped forwards ends leases early.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        // A clock set before 1970 reads as the epoch rather than panicking.
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// A clock that only moves when told to, for tests that step time exactly. Clones share one reading.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// Starts a manual clock at `start`, truncated to whole milliseconds.
    pub fn new(start: Duration) -> Self {
        Self {
            millis: Arc::new(AtomicU64::new(start.as_millis() as u64)),
        }
    }

    /// Moves the clock forward by `step`, truncated to whole milliseconds.
    pub fn advance(&self, step: Duration) {
        self.millis.fetch_add(step.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `now`, truncated to whole milliseconds. Setting it backwards is allowed, for tests of
    /// wall clocks that step back.
    pub fn set(&self, now: Duration) {
        self.millis.store(now.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(Duration::from_secs(10));
        let other = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(other.now(), Duration::from_millis(11_500));
        other.set(Duration::from_secs(1));
        assert_eq!(clock.now(), Duration::from_secs(1));
    }
}

//! Validated lease and retention durations.

use std::time::Duration;

use crate::error::{Error, InputField, Result};

/// A validated time to live: at least 1 ms, at most [`Ttl::MAX`], counted in whole milliseconds.
///
/// Zero is rejected rather than read as "forever". A duration with a fraction of a millisecond is rounded up,
/// because every backend keeps deadlines in milliseconds. The upper bound keeps `now + ttl` far from overflow
/// on every backend, including SQLite's signed 64-bit millisecond timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u64);

impl Ttl {
    /// The largest accepted TTL: 100 years of 365 days.
    pub const MAX: Ttl = Ttl(100 * 365 * 24 * 60 * 60 * 1000);

    /// Validates a duration.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `duration` is zero or longer than [`Ttl::MAX`].
    pub fn new(duration: Duration) -> Result<Self> {
        if duration.is_zero() {
            return Err(Error::invalid(
                InputField::Ttl,
                "it is zero; a TTL must be at least 1 ms (zero never means forever)",
            ));
        }
        let millis = duration.as_nanos().div_ceil(1_000_000);
        if millis > u128::from(Self::MAX.0) {
            return Err(Error::invalid(
                InputField::Ttl,
                format!("{duration:?} is longer than the maximum of 100 years; pass a shorter duration"),
            ));
        }
        Ok(Self(millis as u64))
    }

    /// Validates a whole number of seconds.
    ///
    /// # Errors
    /// As [`Ttl::new`].
    pub fn from_secs(secs: u64) -> Result<Self> {
        Self::new(Duration::from_secs(secs))
    }

    /// Validates a whole number of milliseconds.
    ///
    /// # Errors
    /// As [`Ttl::new`].
    pub fn from_millis(millis: u64) -> Result<Self> {
        Self::new(Duration::from_millis(millis))
    }

    /// The TTL in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// The TTL as a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = Error;

    fn try_from(duration: Duration) -> Result<Self> {
        Self::new(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_rejected() {
        let error = Ttl::new(Duration::ZERO).unwrap_err();
        assert!(matches!(
            error,
            Error::InvalidInput {
                field: InputField::Ttl,
                ..
            }
        ));
    }

    #[test]
    fn fractions_round_up() {
        assert_eq!(Ttl::new(Duration::from_nanos(1)).unwrap().as_millis(), 1);
        assert_eq!(Ttl::new(Duration::from_micros(1500)).unwrap().as_millis(), 2);
    }

    #[test]
    fn huge_values_rejected_without_overflow() {
        assert!(Ttl::new(Duration::MAX).is_err());
        assert!(Ttl::from_secs(u64::MAX).is_err());
        assert_eq!(Ttl::new(Ttl::MAX.as_duration()).unwrap(), Ttl::MAX);
        assert!(Ttl::new(Ttl::MAX.as_duration() + Duration::from_millis(1)).is_err());
    }
}

//! Time newtypes. The protocol cores never read a clock: callers pass time in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Wall-clock time as milliseconds since the Unix epoch, as carried in envelopes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The virtual wall-clock time at which tests, harnesses and simulators start
    /// unless told otherwise (2024-11-19 07:06:40 UTC): the one such constant.
    pub const VIRTUAL_START: UnixMillis = UnixMillis(1_732_000_000_000);

    /// Converts a `SystemTime` (read by the caller). Times before the epoch become 0;
    /// times past `u64::MAX` ms saturate.
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis())
            .unwrap_or(0);
        Self(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Absolute distance between two instants.
    pub fn abs_diff(self, other: UnixMillis) -> Duration {
        Duration::from_millis(self.0.abs_diff(other.0))
    }

    /// `self + duration`, saturating at `u64::MAX` ms.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_converts_and_saturates_before_epoch() {
        let t = UNIX_EPOCH + Duration::from_millis(1_234);
        assert_eq!(UnixMillis::from_system_time(t), UnixMillis(1_234));
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(UnixMillis::from_system_time(before), UnixMillis(0));
    }

    #[test]
    fn differences_never_underflow() {
        let a = UnixMillis(100);
        let b = UnixMillis(250);
        assert_eq!(b.saturating_since(a), Duration::from_millis(150));
        assert_eq!(a.saturating_since(b), Duration::ZERO);
        assert_eq!(a.abs_diff(b), Duration::from_millis(150));
        assert_eq!(
            UnixMillis(u64::MAX).saturating_add(Duration::from_secs(1)),
            UnixMillis(u64::MAX)
        );
    }
}

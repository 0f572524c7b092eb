//! [`RttEstimate`]: a peer's round-trip time, smoothed and with its recent minimum.

use std::time::Duration;

/// Samples the minimum is taken over.
const MIN_WINDOW: usize = 8;

/// Round trips to one peer: an exponentially weighted moving average (weight 1/8 per
/// sample, as TCP's SRTT) for what a message will take, and the minimum of the last
/// 8 samples for the path's propagation delay (queueing only adds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttEstimate {
    smoothed_us: u64,
    recent: [u64; MIN_WINDOW],
    samples: u64,
}

impl RttEstimate {
    /// Adds one measured round trip.
    pub fn record(&mut self, rtt: Duration) {
        let sample = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.smoothed_us = if self.samples == 0 {
            sample
        } else {
            // 7/8 old + 1/8 new, in integers.
            (self.smoothed_us.saturating_mul(7) / 8).saturating_add(sample / 8)
        };
        self.recent[(self.samples % MIN_WINDOW as u64) as usize] = sample;
        self.samples = self.samples.saturating_add(1);
    }

    /// Samples recorded so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The smoothed round trip, or `None` before the first sample.
    pub fn smoothed(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros(self.smoothed_us))
    }

    /// The least of the recent samples, or `None` before the first.
    pub fn min(&self) -> Option<Duration> {
        let filled = usize::try_from(self.samples)
            .unwrap_or(MIN_WINDOW)
            .min(MIN_WINDOW);
        self.recent[..filled]
            .iter()
            .min()
            .map(|us| Duration::from_micros(*us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_and_minimum_by_hand() {
        let mut rtt = RttEstimate::default();
        assert_eq!((rtt.smoothed(), rtt.min()), (None, None));
        rtt.record(Duration::from_micros(800));
        assert_eq!(rtt.smoothed(), Some(Duration::from_micros(800)));
        rtt.record(Duration::from_micros(1_600));
        // 800 * 7 / 8 + 1600 / 8 = 700 + 200.
        assert_eq!(rtt.smoothed(), Some(Duration::from_micros(900)));
        assert_eq!(rtt.min(), Some(Duration::from_micros(800)));
    }

    #[test]
    fn the_minimum_forgets_samples_older_than_its_window() {
        let mut rtt = RttEstimate::default();
        rtt.record(Duration::from_micros(100));
        for _ in 0..MIN_WINDOW {
            rtt.record(Duration::from_micros(5_000));
        }
        assert_eq!(rtt.min(), Some(Duration::from_micros(5_000)));
        assert_eq!(rtt.samples(), MIN_WINDOW as u64 + 1);
    }
}

//! How long the log's `fdatasync`s take: a histogram with fixed buckets, cumulative since the log
//! was opened, which the server exports on `/metrics` (the durable step's latency). Recording
//! costs one clock read pair per sync, next to a system call that takes a tenth of a millisecond
//! or more.

use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; a last, unbounded bucket holds the rest.
pub const SYNC_BUCKET_BOUNDS_US: [u64; 12] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 102_400, 1_000_000,
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncTimings {
    /// `counts[i]`: syncs that took at most `SYNC_BUCKET_BOUNDS_US[i]` µs and more than the bound
    /// before it; the last entry counts those above every bound. Not cumulative.
    pub counts: [u64; SYNC_BUCKET_BOUNDS_US.len() + 1],
    /// Sum of every recorded duration, in nanoseconds (saturating).
    pub total_ns: u64,
}

impl SyncTimings {
    pub fn record(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = SYNC_BUCKET_BOUNDS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(SYNC_BUCKET_BOUNDS_US.len());
        self.counts[bucket] += 1;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.total_ns = self.total_ns.saturating_add(nanos);
    }

    /// Syncs recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_of_their_upper_bound() {
        let mut timings = SyncTimings::default();
        for micros in [0, 50, 51, 150, 1_000_000, 1_000_001, 5_000_000] {
            timings.record(Duration::from_micros(micros));
        }
        let mut expected = [0; SYNC_BUCKET_BOUNDS_US.len() + 1];
        expected[0] = 2; // 0 and 50
        expected[1] = 1; // 51
        expected[2] = 1; // 150
        expected[11] = 1; // 1 s
        expected[12] = 2; // past every bound
        assert_eq!(timings.counts, expected);
        assert_eq!(timings.count(), 7);
        assert_eq!(timings.total_ns, 7_000_252 * 1_000);
    }
}

//! When `gangway connect --reconnect` tries again: exponential backoff with a little jitter.
//!
//! Retry `k` (counted since the last stable connection) waits `0.5 s × 2^(k-1)`, at most 30 s,
//! less a random 0–25 %: a server that restarts is not met by all of its clients in the same
//! instant, and the wait never exceeds the stated bound. A connection that stays open for
//! [`STABLE_AFTER`] resets the count, so a server that accepts and drops every connection at once
//! still meets growing delays (and `--max-retries`).

use std::time::Duration;

use gangway::proto::RandomSource;

/// The wait before the first retry.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(500);

/// The longest wait.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(30);

/// How long a connection must stay open for the next failure to start over at [`FIRST_DELAY`].
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(5);

/// The retry schedule of one `gangway connect`.
pub(crate) struct Backoff {
    /// Retries made since the last stable connection.
    retries: u32,
    /// `--max-retries`; `None`: unlimited.
    max_retries: Option<u32>,
    random: Box<dyn RandomSource>,
}

impl Backoff {
    pub(crate) fn new(max_retries: Option<u32>, random: Box<dyn RandomSource>) -> Backoff {
        Backoff {
            retries: 0,
            max_retries,
            random,
        }
    }

    /// A connection stayed up long enough: the next failure starts the schedule over.
    pub(crate) fn reset(&mut self) {
        self.retries = 0;
    }

    /// Retries made so far (since the last reset).
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// The limit, if any.
    pub(crate) fn max_retries(&self) -> Option<u32> {
        self.max_retries
    }

    /// Count one more retry and return how long to wait before it, or `None` when the limit is
    /// reached.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self.max_retries.is_some_and(|max| self.retries >= max) {
            return None;
        }
        let ceiling = ceiling(self.retries);
        self.retries += 1;
        let mut byte = [0u8];
        self.random.fill(&mut byte);
        // Up to a quarter off: 0/1024 to 255/1024 of the ceiling.
        let off = ceiling.mul_f64(f64::from(byte[0]) / 1024.0);
        Some(ceiling.saturating_sub(off))
    }
}

/// The wait before retry `done + 1`, without jitter: 0.5 s doubling, at most [`MAX_DELAY`].
fn ceiling(done: u32) -> Duration {
    // 2^6 × 0.5 s is already over the maximum; a larger shift would only overflow.
    FIRST_DELAY.saturating_mul(1 << done.min(6)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gangway::proto::SeededRandom;

    #[test]
    fn delays_double_from_half_a_second_up_to_thirty() {
        let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
        for (done, secs) in expected.iter().enumerate() {
            let done = u32::try_from(done).expect("small");
            assert_eq!(ceiling(done), Duration::from_secs_f64(*secs), "{done}");
        }
        assert_eq!(ceiling(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn jitter_takes_at_most_a_quarter_off() {
        let mut backoff = Backoff::new(None, Box::new(SeededRandom::new(7)));
        for done in 0..40 {
            let delay = backoff.next_delay().expect("unlimited");
            let ceiling = ceiling(done);
            assert!(
                delay <= ceiling && delay >= ceiling.mul_f64(0.75),
                "{delay:?}"
            );
        }
        assert_eq!(backoff.retries(), 40);
    }

    #[test]
    fn max_retries_ends_the_schedule_until_reset() {
        let mut backoff = Backoff::new(Some(2), Box::new(SeededRandom::new(1)));
        assert!(backoff.next_delay().is_some());
        let second = backoff.next_delay().expect("second retry");
        assert!(second > Duration::from_millis(700), "{second:?}");
        assert_eq!(backoff.next_delay(), None);
        assert_eq!(backoff.retries(), 2);
        backoff.reset();
        let first = backoff.next_delay().expect("after a stable connection");
        assert!(first <= FIRST_DELAY, "{first:?}");
    }

    #[test]
    fn zero_retries_never_waits() {
        let mut backoff = Backoff::new(Some(0), Box::new(SeededRandom::new(1)));
        assert_eq!(backoff.next_delay(), None);
    }
}

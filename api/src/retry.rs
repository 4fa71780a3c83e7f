//! Retrying against the API server: [`Backoff`], the delay before the next try, and
//! [`RepeatGate`], bounded-rate reporting of a failure that repeats (the first failure of a streak
//! is logged at once, later ones at most once per interval with the count of those not logged,
//! and the first success after a streak says how long the streak was). Every loop that talks to
//! the API server uses both (slice publishing, leader election; watches use kube-runtime's
//! watcher backoff and a gate). Pure: the caller passes the clock, sleeps and logs.

use std::time::{Duration, Instant};

/// How often a repeating failure is logged at most.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Exponential retry delay: `min`, doubling after every failure, at most `max`; back to `min`
/// after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The delay before the next try after a failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The state of one failure streak.
#[derive(Debug, Clone)]
pub struct RepeatGate {
    every: Duration,
    last_logged: Option<Instant>,
    streak: u64,
    suppressed: u64,
}

impl Default for RepeatGate {
    fn default() -> Self {
        Self::new(DEFAULT_REPEAT_INTERVAL)
    }
}

impl RepeatGate {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_logged: None,
            streak: 0,
            suppressed: 0,
        }
    }

    /// Records a failure at `now`. `Some(n)` means: log this one, saying `n` failures since the
    /// last logged one were not logged.
    pub fn failure(&mut self, now: Instant) -> Option<u64> {
        self.streak += 1;
        let due = self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if due {
            self.last_logged = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Records a success. `Some(n)` means: log that it recovered after `n` failures in a row.
    pub fn success(&mut self) -> Option<u64> {
        let streak = std::mem::take(&mut self.streak);
        self.last_logged = None;
        self.suppressed = 0;
        (streak > 0).then_some(streak)
    }

    /// Failures since the last success.
    pub fn streak(&self) -> u64 {
        self.streak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn a_streak_is_logged_once_per_interval_with_the_count_in_between() {
        let t0 = Instant::now();
        let mut g = RepeatGate::new(Duration::from_secs(30));
        let at = |s: u64| t0 + Duration::from_millis(s);
        assert_eq!(g.failure(at(0)), Some(0));
        // 1000 failures in the next 29.9 s: none logged.
        assert!((1..=1000).all(|i| g.failure(at(i * 29)).is_none()));
        assert_eq!(g.failure(at(30_000)), Some(1000));
        assert_eq!(g.failure(at(30_001)), None);
        assert_eq!(g.streak(), 1003);
        assert_eq!(g.success(), Some(1003));
        assert_eq!(g.success(), None);
        // A new streak is logged at once again.
        assert_eq!(g.failure(at(30_002)), Some(0));
    }
}

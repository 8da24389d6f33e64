//! The per-peer timer table, jitter and reconnect backoff.
//!
//! The FSM never reads a clock: every deadline here is computed from a `now`
//! the caller passed in, and the caller learns the next deadline from
//! [`Timers::next`] (surfaced as `Fsm::poll_timeout`). Randomness for
//! RFC 4271 §10 jitter comes in through the [`Jitter`] trait for the same
//! reason: tests replay exact schedules, the shell plugs in a real RNG.

use std::fmt;
use std::time::{Duration, Instant};

/// The timers a peer runs, RFC 4271 §8 and §10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// ConnectRetryTimer (§8): retry an outbound connection that did not
    /// complete, or go from Active back to Connect.
    ConnectRetry,
    /// HoldTimer (§4.4): no message from the peer for this long ends the
    /// session.
    Hold,
    /// KeepaliveTimer (§4.4): send a KEEPALIVE when nothing else was sent.
    Keepalive,
    /// IdleHoldTimer (§8.1.1, DampPeerOscillations): the backoff wait in
    /// Idle after a failure before the automatic restart.
    IdleHold,
    /// The HoldTimer of a second (candidate) connection waiting for the
    /// peer's OPEN, as the RFC's second FSM would run it in OpenSent.
    CandidateHold,
    /// SendHoldTimer (RFC 9687): the peer has not taken any of our data
    /// for this long.
    SendHold,
}

impl TimerKind {
    /// All timer kinds, in table order.
    pub const ALL: [TimerKind; 6] = [
        TimerKind::ConnectRetry,
        TimerKind::Hold,
        TimerKind::Keepalive,
        TimerKind::IdleHold,
        TimerKind::CandidateHold,
        TimerKind::SendHold,
    ];

    fn index(self) -> usize {
        match self {
            TimerKind::ConnectRetry => 0,
            TimerKind::Hold => 1,
            TimerKind::Keepalive => 2,
            TimerKind::IdleHold => 3,
            TimerKind::CandidateHold => 4,
            TimerKind::SendHold => 5,
        }
    }

    /// The RFC 4271 name of the timer.
    pub fn name(self) -> &'static str {
        match self {
            TimerKind::ConnectRetry => "ConnectRetryTimer",
            TimerKind::Hold => "HoldTimer",
            TimerKind::Keepalive => "KeepaliveTimer",
            TimerKind::IdleHold => "IdleHoldTimer",
            TimerKind::CandidateHold => "HoldTimer (second connection)",
            TimerKind::SendHold => "SendHoldTimer",
        }
    }
}

impl fmt::Display for TimerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One deadline per [`TimerKind`]; `None` means stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timers {
    deadlines: [Option<Instant>; 6],
}

impl Timers {
    /// Arms (or re-arms) `kind` to fire at `at`.
    pub fn arm(&mut self, kind: TimerKind, at: Instant) {
        if let Some(slot) = self.deadlines.get_mut(kind.index()) {
            *slot = Some(at);
        }
    }

    /// Stops `kind`.
    pub fn stop(&mut self, kind: TimerKind) {
        if let Some(slot) = self.deadlines.get_mut(kind.index()) {
            *slot = None;
        }
    }

    /// When `kind` fires, if armed.
    pub fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        self.deadlines.get(kind.index()).copied().flatten()
    }

    /// Whether `kind` is armed.
    pub fn is_armed(&self, kind: TimerKind) -> bool {
        self.deadline(kind).is_some()
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The earliest timer due at `now`, stopped as it is returned. Ties go
    /// to table order, so a Hold expiry wins over a Keepalive due at the
    /// same instant (the session is dead; no point sending a KEEPALIVE).
    pub fn pop_expired(&mut self, now: Instant) -> Option<TimerKind> {
        let kind = TimerKind::ALL
            .into_iter()
            .filter(|k| self.deadline(*k).is_some_and(|at| at <= now))
            .min_by_key(|k| self.deadline(*k))?;
        self.stop(kind);
        Some(kind)
    }

    /// The armed timers, in table order (for status and tests).
    pub fn armed(&self) -> Vec<(TimerKind, Instant)> {
        TimerKind::ALL
            .into_iter()
            .filter_map(|k| self.deadline(k).map(|at| (k, at)))
            .collect()
    }
}

/// A source of jitter factors for RFC 4271 §10: "the value ... SHOULD be
/// multiplied by a random value uniformly distributed in [0.75, 1.0]".
///
/// The FSM clamps whatever it gets into that range, so a buggy source can
/// shorten a timer by a quarter at most, never lengthen it or make it zero.
pub trait Jitter: fmt::Debug + Send {
    /// A factor in `[0.75, 1.0]`.
    fn factor(&mut self) -> f64;
}

/// No jitter: every factor is 1.0. For tests and for deterministic runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn factor(&mut self) -> f64 {
        1.0
    }
}

/// Replays a fixed list of factors, cycling; for tests.
#[derive(Debug, Clone)]
pub struct ScriptedJitter {
    factors: Vec<f64>,
    next: usize,
}

impl ScriptedJitter {
    /// A source returning `factors` in order, then again from the start.
    /// An empty list behaves as [`NoJitter`].
    pub fn new(factors: Vec<f64>) -> Self {
        Self { factors, next: 0 }
    }
}

impl Jitter for ScriptedJitter {
    fn factor(&mut self) -> f64 {
        let f = self.factors.get(self.next).copied().unwrap_or(1.0);
        self.next = if self.factors.is_empty() {
            0
        } else {
            (self.next + 1) % self.factors.len()
        };
        f
    }
}

/// Lowest jitter factor RFC 4271 §10 allows.
pub const JITTER_MIN: f64 = 0.75;

/// `d` scaled by `factor` clamped into `[0.75, 1.0]` (NaN counts as 1.0).
pub fn jittered(d: Duration, factor: f64) -> Duration {
    let f = if factor.is_nan() {
        1.0
    } else {
        factor.clamp(JITTER_MIN, 1.0)
    };
    d.mul_f64(f)
}

/// Exponential backoff before an automatic restart after a failure:
/// `initial`, doubling per consecutive failure, capped at `max`, each wait
/// jittered by the caller's factor.
///
/// Why: a peer that keeps rejecting us (wrong AS, refused connection) must
/// not be hammered once a second forever, yet the first retry after a
/// one-off failure should be quick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next wait (before jitter), doubling the one after it.
    pub fn next_wait(&mut self, factor: f64) -> Duration {
        let wait = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        jittered(wait, factor)
    }

    /// Back to the initial wait (after a session that stayed up).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The largest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait the next failure will use, before jitter.
    pub fn peek(&self) -> Duration {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_expired_returns_earliest_then_next() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.arm(TimerKind::Keepalive, t0 + Duration::from_secs(30));
        t.arm(TimerKind::Hold, t0 + Duration::from_secs(90));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(t.pop_expired(t0 + Duration::from_secs(29)), None);
        let late = t0 + Duration::from_secs(100);
        assert_eq!(t.pop_expired(late), Some(TimerKind::Keepalive));
        assert_eq!(t.pop_expired(late), Some(TimerKind::Hold));
        assert_eq!(t.pop_expired(late), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn hold_wins_a_tie_with_keepalive() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.arm(TimerKind::Keepalive, t0);
        t.arm(TimerKind::Hold, t0);
        assert_eq!(t.pop_expired(t0), Some(TimerKind::Hold));
    }

    #[test]
    fn jitter_is_clamped() {
        let d = Duration::from_secs(100);
        assert_eq!(jittered(d, 2.0), d);
        assert_eq!(jittered(d, 0.0), Duration::from_secs(75));
        assert_eq!(jittered(d, f64::NAN), d);
        assert_eq!(jittered(d, 0.8), Duration::from_secs(80));
    }

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        let waits: Vec<u64> = (0..9).map(|_| b.next_wait(1.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 120, 120]);
        b.reset();
        assert_eq!(b.next_wait(1.0), Duration::from_secs(1));
    }

    proptest::proptest! {
        /// Whatever the jitter source says, each wait stays within
        /// [0.75, 1.0] of a nominal value that doubles up to the cap.
        #[test]
        fn backoff_waits_stay_in_bounds(
            factors in proptest::collection::vec(-1.0f64..3.0, 1..40),
            initial_ms in 1u64..5_000,
            max_s in 1u64..600,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = Duration::from_secs(max_s);
            let mut b = Backoff::new(initial, max);
            let mut nominal = initial.min(max);
            for f in factors {
                let w = b.next_wait(f);
                proptest::prop_assert!(w <= nominal);
                proptest::prop_assert!(w >= nominal.mul_f64(JITTER_MIN) - Duration::from_nanos(1));
                nominal = nominal.saturating_mul(2).min(max);
            }
        }
    }

    #[test]
    fn scripted_jitter_cycles() {
        let mut j = ScriptedJitter::new(vec![0.75, 0.9]);
        assert_eq!([j.factor(), j.factor(), j.factor()], [0.75, 0.9, 0.75]);
        let mut empty = ScriptedJitter::new(vec![]);
        assert_eq!(empty.factor(), 1.0);
    }
}

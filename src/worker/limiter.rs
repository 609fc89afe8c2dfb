//! Pacing per business number: Meta allows 80 messages/s per number by default (up to 1,000
//! for high-throughput numbers); sending faster only earns 130429 errors.
//!
//! Each number has a lane: claimed messages get send times spaced 1/rate apart, and are handed
//! to the HTTP threads only when due. Pacing at hand-off (rather than a token bucket at claim
//! time) keeps a number at its rate even when its messages share the HTTP threads with other
//! numbers' traffic, and an idle number's first message still goes out at once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How far ahead of its lane a number may claim: a second of messages keeps every number's
/// lane fed even when the worker's main thread is busy, and bounds what one number can hold.
const HORIZON: f64 = 1.0;

/// A lane claims again only once less than this much is scheduled ahead of it, and then up to
/// a full horizon: a number with a long queue is claimed for twice a second in batches of half
/// its rate, not one message at a time as each slot opens (each claim reads the due queue).
const REFILL_BELOW: f64 = 0.5;

struct Lane {
    rate: f64,
    next: Instant,
    /// Release times within the last second (never more than `rate` of them).
    recent: VecDeque<Instant>,
    queued: usize,
    sent: u64,
    throttled: u64,
}

pub struct Pacer {
    lanes: HashMap<String, Lane>,
    rates: HashMap<String, f64>,
    default_rate: f64,
}

impl Pacer {
    pub fn new(default_rate: f64) -> Pacer {
        Pacer {
            lanes: HashMap::new(),
            rates: HashMap::new(),
            default_rate: default_rate.max(1.0),
        }
    }

    pub fn set_default_rate(&mut self, rate: f64) {
        self.default_rate = rate.max(1.0);
    }

    /// Per-number rates read from wa.phone_numbers (numbers not listed use the default).
    pub fn set_rates(&mut self, rates: HashMap<String, f64>) {
        self.rates = rates;
        for (phone, lane) in self.lanes.iter_mut() {
            lane.rate = self.rates.get(phone).copied().unwrap_or(self.default_rate);
        }
    }

    fn rate_of(&self, phone: &str) -> f64 {
        self.rates.get(phone).copied().unwrap_or(self.default_rate)
    }

    /// What a number never seen before may claim: one horizon of its rate.
    pub fn default_budget(&self) -> i32 {
        (self.default_rate * HORIZON).ceil() as i32
    }

    /// How many more messages each known number may claim (up to HORIZON ahead of its
    /// lane), and the numbers that may claim none now.
    pub fn budgets(&mut self) -> (Vec<String>, Vec<i32>, Vec<String>) {
        let now = Instant::now();
        let (mut phones, mut budgets, mut exhausted) = (Vec::new(), Vec::new(), Vec::new());
        for (phone, lane) in self.lanes.iter() {
            let ahead = lane.next.saturating_duration_since(now).as_secs_f64();
            let budget = (lane.rate * (HORIZON - ahead)).ceil() as i64;
            let budget = budget.clamp(0, i32::MAX as i64) as i32;
            if budget <= 0 || ahead > REFILL_BELOW {
                exhausted.push(phone.clone());
            } else {
                phones.push(phone.clone());
                budgets.push(budget);
            }
        }
        (phones, budgets, exhausted)
    }

    /// The time at which the next message of this number may be sent.
    pub fn schedule(&mut self, phone: &str) -> Instant {
        let now = Instant::now();
        let rate = self.rate_of(phone);
        let lane = self.lanes.entry(phone.to_string()).or_insert_with(|| Lane {
            rate,
            next: now,
            recent: VecDeque::new(),
            queued: 0,
            sent: 0,
            throttled: 0,
        });
        if lane.next < now {
            lane.next = now;
        }
        let at = lane.next;
        lane.next += Duration::from_secs_f64(1.0 / lane.rate);
        lane.queued += 1;
        at
    }

    /// Whether a due message of this number may go to the HTTP threads now; if not, when.
    /// No more than `rate` messages of a number are released in any one-second window, so a
    /// number whose messages were delayed catches up only as far as its rate allows.
    pub fn try_release(&mut self, phone: &str, now: Instant) -> Result<(), Instant> {
        let at = self.release_at(phone, now);
        if at > now {
            return Err(at);
        }
        let Some(lane) = self.lanes.get_mut(phone) else {
            return Ok(());
        };
        lane.recent.push_back(now);
        lane.queued = lane.queued.saturating_sub(1);
        lane.sent += 1;
        Ok(())
    }

    /// When the pacing next allows a message of this number.
    pub fn release_at(&mut self, phone: &str, now: Instant) -> Instant {
        let Some(lane) = self.lanes.get_mut(phone) else {
            return now;
        };
        let window = Duration::from_secs(1);
        while lane
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            lane.recent.pop_front();
        }
        if lane.recent.len() as f64 >= lane.rate.floor().max(1.0) {
            lane.recent.front().map(|t| *t + window).unwrap_or(now)
        } else {
            now
        }
    }

    /// Meta said 130429 (or similar): hold this number back for a moment.
    pub fn throttled(&mut self, phone: &str, pause: Duration) {
        let now = Instant::now();
        if let Some(lane) = self.lanes.get_mut(phone) {
            lane.throttled += 1;
            if lane.next < now + pause {
                lane.next = now + pause;
            }
        }
    }

    /// When a number that cannot claim now will be able to.
    pub fn next_opening(&self) -> Option<Duration> {
        let now = Instant::now();
        let refill = Duration::from_secs_f64(REFILL_BELOW);
        self.lanes
            .values()
            .filter(|l| l.next > now + refill)
            .map(|l| l.next.saturating_duration_since(now).saturating_sub(refill))
            .min()
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let now = Instant::now();
        let mut m = serde_json::Map::new();
        for (phone, lane) in &self.lanes {
            m.insert(
                phone.clone(),
                serde_json::json!({
                    "rate_per_sec": lane.rate,
                    "scheduled_ahead_ms": lane.next.saturating_duration_since(now).as_millis() as u64,
                    "queued": lane.queued,
                    "sent": lane.sent,
                    "throttled": lane.throttled,
                }),
            );
        }
        serde_json::Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_one_number_are_spaced_at_its_rate() {
        let mut p = Pacer::new(80.0);
        let first = p.schedule("1");
        let times: Vec<Instant> = (0..79).map(|_| p.schedule("1")).collect();
        let span = times.last().unwrap().duration_since(first).as_secs_f64();
        assert!((span - 79.0 / 80.0).abs() < 0.01, "{span}");
        // One more puts the lane a full horizon (one second) ahead: nothing more to claim.
        p.schedule("1");
        let (_, _, exhausted) = p.budgets();
        assert_eq!(
            exhausted,
            vec!["1".to_string()],
            "a second of messages is already scheduled"
        );
        // Another number is not affected.
        let other = p.schedule("2");
        assert!(other.duration_since(first) < Duration::from_millis(50));
    }

    #[test]
    fn a_lane_is_refilled_once_less_than_half_a_horizon_is_scheduled() {
        let mut p = Pacer::new(100.0);
        for _ in 0..60 {
            p.schedule("1");
        }
        // 0.6 s scheduled: nothing to claim yet, and the opening is about 0.1 s away.
        let (phones, _, exhausted) = p.budgets();
        assert!(phones.is_empty() && exhausted == vec!["1".to_string()]);
        let opening = p.next_opening().unwrap();
        assert!(
            opening > Duration::from_millis(50) && opening <= Duration::from_millis(100),
            "{opening:?}"
        );
        // Another number's lane, 0.4 s scheduled: claims up to a full horizon.
        for _ in 0..40 {
            p.schedule("2");
        }
        let (phones, budgets, _) = p.budgets();
        assert_eq!(phones, vec!["2".to_string()]);
        assert!((60..=61).contains(&budgets[0]), "{budgets:?}");
    }

    #[test]
    fn no_more_than_the_rate_is_released_in_any_second() {
        let mut p = Pacer::new(80.0);
        let now = Instant::now();
        for _ in 0..100 {
            p.schedule("1");
        }
        let released = (0..100).filter(|_| p.try_release("1", now).is_ok()).count();
        assert_eq!(released, 80);
        assert!(
            p.try_release("1", now + Duration::from_millis(999))
                .is_err()
        );
        assert!(p.try_release("1", now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_throttled_number_waits() {
        let mut p = Pacer::new(80.0);
        p.schedule("1");
        p.throttled("1", Duration::from_secs(1));
        let next = p.schedule("1");
        assert!(next.duration_since(Instant::now()) > Duration::from_millis(900));
    }
}

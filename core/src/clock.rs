//! Time, injectable: windows, lateness and schedules read the time from a [`Clock`] so
//! tests are deterministic. Schedules say when the batch layer runs next.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct MockClock {
    micros: AtomicI64,
}

impl MockClock {
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(MockClock {
            micros: AtomicI64::new(start.timestamp_micros()),
        })
    }

    pub fn advance(&self, by: Duration) {
        self.micros.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }
}

impl Clock for MockClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.micros.load(Ordering::SeqCst)).expect("mock time in range")
    }
}

/// A cron expression evaluated in UTC.
#[derive(Debug, Clone)]
pub struct CronSchedule(cron::Schedule);

impl CronSchedule {
    pub fn parse(expr: &str) -> Result<Self, String> {
        cron::Schedule::from_str(expr).map(CronSchedule).map_err(|e| {
            format!(
                "`{expr}` is not a cron expression ({e}): expected \"sec min hour day-of-month month \
                 day-of-week [year]\", e.g. \"0 */5 * * * *\" for every five minutes"
            )
        })
    }
}

/// When the batch layer runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<CronSchedule>),
}

impl Schedule {
    /// The first run time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
            Schedule::Cron(c) => c.0.after(&after).next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_give_the_next_run() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:03:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let every = Schedule::Every(Duration::from_secs(300));
        assert_eq!(every.next_after(t).unwrap().to_rfc3339(), "2026-11-21T10:08:10+00:00");
        let cron = Schedule::Cron(Box::new(CronSchedule::parse("0 */5 * * * *").unwrap()));
        assert_eq!(cron.next_after(t).unwrap().to_rfc3339(), "2026-11-21T10:05:00+00:00");
        assert!(
            CronSchedule::parse("every tuesday")
                .unwrap_err()
                .contains("not a cron expression")
        );
    }

    #[test]
    fn the_mock_clock_moves_when_told() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = MockClock::new(t);
        assert_eq!(clock.now(), t);
        clock.advance(Duration::from_secs(61));
        assert_eq!(clock.now().to_rfc3339(), "2026-11-21T10:01:01+00:00");
    }
}

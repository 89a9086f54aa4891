//! When a persona is due: slots from its cadence in its time zone, a stable per-persona
//! jitter, and what happens to slots missed while the daemon was down. Pure functions of
//! their inputs, so every replica computes the same slots.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::persona::Cadence;

/// A cadence ready for computing slots: cron expressions parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    Hourly,
    Daily,
    Weekdays,
    Cron(Box<croner::Cron>),
}

impl Rule {
    /// The rule of a cadence (`None` for a cron expression that does not parse, which
    /// validation keeps out of the store).
    pub fn of(cadence: &Cadence) -> Option<Self> {
        Some(match cadence {
            Cadence::Hourly => Self::Hourly,
            Cadence::Daily => Self::Daily,
            Cadence::Weekdays => Self::Weekdays,
            Cadence::Cron(expr) => Self::Cron(Box::new(expr.parse().ok()?)),
        })
    }

    /// The shortest time between two slots: jitter must stay well below it, or a
    /// persona's slot would drift past the next one.
    pub fn period(&self) -> Duration {
        match self {
            Self::Hourly => Duration::from_secs(3600),
            Self::Daily | Self::Weekdays => Duration::from_secs(86_400),
            Self::Cron(cron) => {
                // The smallest gap among the next few occurrences from a fixed instant.
                let start = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("2026-01-01");
                let mut gaps = Vec::new();
                let mut at = start;
                for _ in 0..8 {
                    let Ok(next) = cron.find_next_occurrence(&at, false) else {
                        break;
                    };
                    if at != start {
                        gaps.push((next - at).to_std().unwrap_or_default());
                    }
                    at = next;
                }
                gaps.into_iter().min().unwrap_or(Duration::from_secs(86_400))
            }
        }
    }
}

/// The jitter of a persona: its stable offset, within at most half its cadence's period.
pub fn jitter_within(persona_id: Uuid, max: Duration, period: Duration) -> Duration {
    jitter(persona_id, max.min(period / 2))
}

/// What to do with a slot that passed while nobody ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run once for all missed slots (if within the starting deadline), then go on.
    One,
    /// Skip missed slots; wait for the next one.
    None,
}

/// A stable offset in `[0, max)` derived from the persona id, so personas sharing a slot
/// spread out the same way on every replica and after every restart.
pub fn jitter(persona_id: Uuid, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(persona_id.as_bytes());
    let value = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    Duration::from_millis(value % (max.as_millis().max(1) as u64))
}

/// The next slot of `cadence` strictly after `after` (cron), or when the persona is due
/// again after its last activity (interval cadences: `hourly` ≥ 1 h, `daily` ≥ 24 h,
/// `weekdays` ≥ 24 h and Mon–Fri in the persona's zone). A persona never active is due
/// at `after`. `None` if a cron expression has no further occurrence.
pub fn next_slot(
    rule: &Rule,
    zone: Tz,
    after: DateTime<Utc>,
    last_active: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match rule {
        Rule::Cron(cron) => {
            let next = cron.find_next_occurrence(&after.with_timezone(&zone), false).ok()?;
            Some(next.with_timezone(&Utc))
        }
        Rule::Hourly => Some(last_active.map_or(after, |t| crate::time::after(t, Duration::from_secs(3600)))),
        Rule::Daily => Some(last_active.map_or(after, |t| crate::time::after(t, Duration::from_secs(86_400)))),
        Rule::Weekdays => {
            let due = last_active.map_or(after, |t| crate::time::after(t, Duration::from_secs(86_400)));
            Some(next_weekday_instant(due, zone))
        }
    }
}

/// `at` if it falls on Mon–Fri in `zone`, else the start of the following Monday there.
fn next_weekday_instant(at: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
    let local = at.with_timezone(&zone);
    let skip = match local.weekday() {
        Weekday::Sat => 2,
        Weekday::Sun => 1,
        _ => return at,
    };
    let monday = local
        .date_naive()
        .checked_add_days(chrono::Days::new(skip))
        .unwrap_or(local.date_naive());
    // Midnight may not exist on a DST day: take the first instant that does.
    (0..3)
        .find_map(|hour| {
            zone.from_local_datetime(&monday.and_time(NaiveTime::from_hms_opt(hour, 0, 0).expect("valid")))
                .earliest()
        })
        .map_or(at, |t| t.with_timezone(&Utc))
}

/// The latest cron slot at or before `now`: the one slot that stands for all missed ones.
/// `None` for interval cadences.
pub fn latest_slot(rule: &Rule, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let Rule::Cron(cron) = rule else { return None };
    let previous = cron.find_previous_occurrence(&now.with_timezone(&zone), true).ok()?;
    Some(previous.with_timezone(&Utc))
}

/// Whether the latest missed slot `missed` still runs (`Some`) or is skipped (`None`:
/// `catch_up = none`, or it is older than the starting deadline), as with Kubernetes
/// CronJobs. Missed slots never run one by one: they coalesce into this one.
pub fn catch_up(
    missed: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUp,
    starting_deadline: Duration,
) -> Option<DateTime<Utc>> {
    if missed >= now {
        return Some(missed);
    }
    let late = (now - missed).to_std().unwrap_or_default();
    match policy {
        CatchUp::One if late <= starting_deadline => Some(missed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn cron(expr: &str) -> Rule {
        Rule::of(&Cadence::Cron(expr.into())).unwrap()
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn cron_runs_in_the_persona_zone() {
        let cron = cron("0 9 * * *");
        // 09:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(
            next_slot(&cron, BERLIN, utc("2026-01-10T00:00:00Z"), None),
            Some(utc("2026-01-10T08:00:00Z"))
        );
        assert_eq!(
            next_slot(&cron, BERLIN, utc("2026-07-10T00:00:00Z"), None),
            Some(utc("2026-07-10T07:00:00Z"))
        );
    }

    #[test]
    fn a_slot_in_the_skipped_hour_runs_once_after_the_gap() {
        // 2026-03-29: Berlin jumps from 02:00 to 03:00 (01:00 UTC).
        let cron = cron("30 2 * * *");
        let slot = next_slot(&cron, BERLIN, utc("2026-03-28T12:00:00Z"), None).unwrap();
        assert_eq!(
            slot,
            utc("2026-03-29T01:00:00Z"),
            "the first instant after the gap (03:00 local)"
        );
        let after = next_slot(&cron, BERLIN, slot, None).unwrap();
        assert_eq!(
            after,
            utc("2026-03-30T00:30:00Z"),
            "and once only: next is the following day"
        );
    }

    #[test]
    fn a_repeated_hour_runs_once() {
        // 2026-10-25: Berlin goes from 03:00 back to 02:00 (01:00 UTC); 02:30 happens twice.
        let cron = cron("30 2 * * *");
        let first = next_slot(&cron, BERLIN, utc("2026-10-24T12:00:00Z"), None).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        let second = next_slot(&cron, BERLIN, first, None).unwrap();
        assert_eq!(
            second,
            utc("2026-10-26T01:30:00Z"),
            "not again at 01:30 UTC the same night"
        );
    }

    #[test]
    fn hourly_and_daily_count_from_the_last_activity() {
        let last = utc("2026-05-04T10:15:00Z");
        let now = utc("2026-05-04T10:20:00Z");
        assert_eq!(
            next_slot(&Rule::Hourly, BERLIN, now, Some(last)),
            Some(utc("2026-05-04T11:15:00Z"))
        );
        assert_eq!(
            next_slot(&Rule::Daily, BERLIN, now, Some(last)),
            Some(utc("2026-05-05T10:15:00Z"))
        );
        assert_eq!(
            next_slot(&Rule::Daily, BERLIN, now, None),
            Some(now),
            "never active: due now"
        );
    }

    #[test]
    fn weekdays_wait_for_monday_in_the_persona_zone() {
        // Friday 2026-05-08 09:00 Berlin + 24 h = Saturday → Monday 00:00 Berlin (22:00 UTC Sunday).
        let friday = utc("2026-05-08T07:00:00Z");
        let slot = next_slot(&Rule::Weekdays, BERLIN, friday, Some(friday)).unwrap();
        assert_eq!(slot, utc("2026-05-10T22:00:00Z"));
        // Sunday 2026-05-10 23:30 UTC is already Monday 01:30 in Berlin: due as computed…
        let sunday_night = utc("2026-05-10T23:30:00Z");
        let last = sunday_night - chrono::Duration::hours(24);
        assert_eq!(
            next_slot(&Rule::Weekdays, BERLIN, sunday_night, Some(last)),
            Some(sunday_night)
        );
        // …but still Sunday 16:30 in Los Angeles: Monday 00:00 there (07:00 UTC).
        let los_angeles = chrono_tz::America::Los_Angeles;
        assert_eq!(
            next_slot(&Rule::Weekdays, los_angeles, sunday_night, Some(last)),
            Some(utc("2026-05-11T07:00:00Z"))
        );
    }

    #[test]
    fn jitter_stays_below_half_the_period() {
        let every_two_minutes = cron("*/2 * * * *");
        assert_eq!(every_two_minutes.period(), Duration::from_secs(120));
        assert_eq!(cron("0 9 * * MON-FRI").period(), Duration::from_secs(86_400));
        for i in 0..50 {
            let j = jitter_within(Uuid::from_u128(i), Duration::from_secs(600), every_two_minutes.period());
            assert!(j < Duration::from_secs(60), "{j:?}");
        }
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        let id = Uuid::from_u128(42);
        let max = Duration::from_secs(300);
        assert_eq!(jitter(id, max), jitter(id, max));
        assert!(jitter(id, max) < max);
        assert_eq!(jitter(id, Duration::ZERO), Duration::ZERO);
        let spread: std::collections::HashSet<_> = (0..50).map(|i| jitter(Uuid::from_u128(i), max)).collect();
        assert!(spread.len() > 40, "personas sharing a slot spread out");
    }

    #[test]
    fn the_latest_slot_stands_for_the_missed_ones() {
        let hourly = cron("0 * * * *");
        assert_eq!(
            latest_slot(&hourly, BERLIN, utc("2026-05-04T12:20:00Z")),
            Some(utc("2026-05-04T12:00:00Z"))
        );
        assert_eq!(
            latest_slot(&hourly, BERLIN, utc("2026-05-04T12:00:00Z")),
            Some(utc("2026-05-04T12:00:00Z"))
        );
        assert_eq!(latest_slot(&Rule::Daily, BERLIN, utc("2026-05-04T12:00:00Z")), None);
    }

    #[test]
    fn missed_slots_coalesce_or_are_skipped() {
        let now = utc("2026-05-04T12:00:00Z");
        let hour_ago = utc("2026-05-04T11:00:00Z");
        let deadline = Duration::from_secs(2 * 3600);
        assert_eq!(catch_up(hour_ago, now, CatchUp::One, deadline), Some(hour_ago));
        assert_eq!(catch_up(hour_ago, now, CatchUp::None, deadline), None);
        assert_eq!(
            catch_up(utc("2026-05-03T12:00:00Z"), now, CatchUp::One, deadline),
            None,
            "past the deadline"
        );
        assert_eq!(catch_up(now, now, CatchUp::None, deadline), Some(now));
    }
}

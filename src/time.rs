//! Time helpers shared by every module: one clock, one precision, one duration syntax.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The current time at the precision both stores keep (microseconds), so a value read
/// back from SQLite or PostgreSQL compares equal to the value written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The latest time we compute: 9999-12-31T23:59:59.999999Z. SQLite keeps timestamps as
/// RFC 3339 text, which sorts chronologically only for four-digit years, so "never" must
/// not go past it.
pub fn latest() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_micro_opt(23, 59, 59, 999_999))
        .expect("a valid date")
        .and_utc()
}

/// The earliest time we compute: 0001-01-01T00:00:00Z (four-digit years, as for [`latest`]).
pub fn earliest() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(1, 1, 1)
        .expect("a valid date")
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

/// `at + span`, saturating at [`latest`] instead of panicking or wrapping (a configured
/// duration can be absurdly long).
pub fn after(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_add_signed(span))
        .map_or_else(latest, |t| t.min(latest()))
}

/// A monotonic clock's instant a span later, saturating: a span past what the clock can
/// hold (an `expires_in` of 2⁶⁴ − 1 seconds, say) means "a century on", never a panic.
pub fn instant_after<I: MonotonicInstant>(at: I, span: Duration) -> I {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    at.checked_add_span(span)
        .or_else(|| at.checked_add_span(CENTURY.min(span)))
        .unwrap_or(at)
}

/// The monotonic instants of std and tokio, for [`instant_after`].
pub trait MonotonicInstant: Copy {
    fn checked_add_span(self, span: Duration) -> Option<Self>;
}

impl MonotonicInstant for std::time::Instant {
    fn checked_add_span(self, span: Duration) -> Option<Self> {
        self.checked_add(span)
    }
}

impl MonotonicInstant for tokio::time::Instant {
    fn checked_add_span(self, span: Duration) -> Option<Self> {
        self.checked_add(span)
    }
}

/// `at - span`, saturating at [`earliest`].
pub fn before(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_sub_signed(span))
        .map_or_else(earliest, |t| t.max(earliest()))
}

/// A duration written the way operators write them in config files: `500ms`, `30s`,
/// `5m`, `24h`, `7d`, or a sum like `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// The grammar of a point in time as the API, the CLI and the OpenAPI document take it
/// (anchored; ECMA and Rust regex alike): a span back from now of one to three parts
/// (`7d`, `1h30m`, each part at most four digits, so at most ~82 years), a calendar date
/// with a four-digit year from 0001 (`2026-11-01`; February 29 only in leap years), or
/// such a date with an RFC 3339 time and offset (`2026-11-01T08:00:00Z`,
/// `…T08:00:00.5+01:00`). Anything the pattern admits parses: the pattern is the contract.
pub fn instant_pattern() -> &'static str {
    static PATTERN: LazyLock<String> = LazyLock::new(|| {
        let year = "(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})";
        let leap_year = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)";
        let month_day = "((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)";
        let date = format!("({year}-{month_day}|{leap_year}-02-29)");
        let time = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
        let span = "([0-9]{1,4}(ms|s|m|h|d)){1,3}";
        format!("^({span}|{date}|{date}T{time})$")
    });
    &PATTERN
}

/// Parses a point in time as people write it (see [`instant_pattern`]): a span back from
/// `now` (`7d`, `12h`), an RFC 3339 timestamp (`2026-11-01T00:00:00Z`), or a UTC date
/// (`2026-11-01`). Results are kept within [`earliest`]..=[`latest`].
pub fn parse_instant(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    static GRAMMAR: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(instant_pattern()).expect("the instant pattern is a valid regex"));
    let refuse = || {
        format!(
            "`{text}` is not a time: write a span back from now (7d, 12h), an RFC 3339 timestamp \
             (2026-11-01T00:00:00Z) or a date (2026-11-01)"
        )
    };
    if !GRAMMAR.is_match(text) {
        return Err(refuse());
    }
    let at = if text.as_bytes()[0].is_ascii_digit() && text.len() >= 10 && text.as_bytes()[4] == b'-' {
        match DateTime::parse_from_rfc3339(text) {
            Ok(at) => at.with_timezone(&Utc),
            Err(_) => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| refuse())?
                .and_time(chrono::NaiveTime::MIN)
                .and_utc(),
        }
    } else {
        before(now, text.parse::<HumanDuration>().map_err(|_| refuse())?.0)
    };
    Ok(at.clamp(earliest(), latest()))
}

/// The longest duration a config value may name.
const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 86_400);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = "expected a duration like 500ms, 30s, 5m, 24h, 7d or 1h30m";
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("empty duration; {expected}"));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("`{text}` is not a duration; {expected}"));
            }
            let value: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("`{text}` is too large; {expected}"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ms" => Duration::from_millis(value),
                "s" => Duration::from_secs(value),
                "m" => Duration::from_secs(value.saturating_mul(60)),
                "h" => Duration::from_secs(value.saturating_mul(3600)),
                "d" => Duration::from_secs(value.saturating_mul(86_400)),
                "" => return Err(format!("`{text}` lacks a unit; {expected}")),
                other => return Err(format!("unknown unit `{other}` in `{text}`; {expected}")),
            };
            total = total.saturating_add(part);
        }
        // Nothing this program waits for is longer; beyond it a typo is likelier than intent
        // (and date arithmetic would overflow).
        if total > MAX_DURATION {
            return Err(format!("`{text}` is longer than 100 years; {expected}"));
        }
        Ok(Self(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 || d.is_zero() {
            return write!(f, "{}ms", d.as_millis());
        }
        let secs = d.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if secs.is_multiple_of(size) {
                return write!(f, "{}{unit}", secs / size);
            }
        }
        write!(f, "{secs}s")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instant_grammar_admits_only_what_parses() {
        let now = Utc::now();
        for good in [
            "7d",
            "1h30m",
            "9999d9999d9999d",
            "2026-11-01",
            "2028-02-29",
            "2000-02-29",
            "0004-02-29",
            "2026-11-01T08:00:00Z",
            "2026-11-01T08:00:00.123456789+01:00",
            "9999-12-31T23:59:59-23:59",
        ] {
            assert!(parse_instant(good, now).is_ok(), "{good} should parse");
        }
        for bad in [
            "",
            " 7d",
            "7",
            "99999d",
            "1d1d1d1d",
            "2026-02-29",
            "2100-02-29",
            "2026-04-31",
            "0000-01-01",
            "+2026-01-01",
            "2026-11-01T24:00:00Z",
            "2026-11-01 08:00:00Z",
            "2026-11-01T08:00:00",
        ] {
            assert!(parse_instant(bad, now).is_err(), "{bad:?} should be refused");
        }
        // Offsets past the ends are kept within the range both stores sort correctly.
        let early = parse_instant("0001-01-01T00:00:00+01:00", now).unwrap();
        assert_eq!(early, earliest());
        let late = parse_instant("9999-12-31T23:59:59-23:59", now).unwrap();
        assert_eq!(late, latest());
    }

    #[test]
    fn absurd_durations_are_refused() {
        let err = "99999999999999999d".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("longer than 100 years"), "{err}");
        assert!("36500d".parse::<HumanDuration>().is_ok());
    }

    #[test]
    fn parses_units_and_sums() {
        assert_eq!("500ms".parse::<HumanDuration>().unwrap().0, Duration::from_millis(500));
        assert_eq!("24h".parse::<HumanDuration>().unwrap().0, Duration::from_secs(86_400));
        assert_eq!("1h30m".parse::<HumanDuration>().unwrap().0, Duration::from_secs(5400));
        assert_eq!("7d".parse::<HumanDuration>().unwrap().0, Duration::from_secs(604_800));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!("30".parse::<HumanDuration>().unwrap_err().contains("lacks a unit"));
        assert!("3w".parse::<HumanDuration>().unwrap_err().contains("unknown unit `w`"));
        assert!("".parse::<HumanDuration>().is_err());
        assert!("h".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn time_arithmetic_saturates() {
        let at = now();
        assert_eq!(after(at, Duration::from_secs(60)), at + chrono::Duration::seconds(60));
        assert_eq!(before(at, Duration::from_secs(60)), at - chrono::Duration::seconds(60));
        assert_eq!(after(at, Duration::MAX), latest());
        assert_eq!(before(at, Duration::MAX), earliest());
        // Still four-digit years, so SQLite's text timestamps keep sorting.
        assert!(after(at, Duration::MAX).to_rfc3339().starts_with("9999-12-31T23:59:59"));
        assert!(
            before(at, Duration::MAX)
                .to_rfc3339()
                .starts_with("0001-01-01T00:00:00")
        );
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(HumanDuration::from_secs(86_400).to_string(), "1d");
        assert_eq!(HumanDuration::from_secs(90).to_string(), "90s");
        assert_eq!(HumanDuration(Duration::from_millis(1500)).to_string(), "1500ms");
    }
}

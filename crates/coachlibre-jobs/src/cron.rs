//! Cron expressions read in a time zone.
//!
//! Five fields, `minute hour day-of-month month day-of-week`, each `*`, a number, a range
//! `a-b`, a step `*/n` or `a-b/n`, or a comma list of those; months and week days also by
//! English abbreviation (`jan`, `mon`); Sunday is 0 or 7. `@hourly`, `@daily`, `@weekly`,
//! `@monthly` and `@yearly` are shorthands. As in Vixie cron, when both day fields are
//! restricted a day matches if either does.
//!
//! Daylight-saving changes, in the schedule's own zone:
//! - a wall-clock time skipped when clocks go forward fires once, at the first instant after
//!   the gap (a 02:30 daily job runs at 03:00 that day, not never);
//! - a wall-clock time that happens twice when clocks go back fires once, the first time,
//!   unless the schedule runs every hour (hour field `*`): then it fires in both passes, so an
//!   "every 15 minutes" schedule has no hour-long hole.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why an expression or a zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead to look for the next firing (a 29 February on a Monday is rare, not never).
const HORIZON_DAYS: i64 = 366 * 8;

impl std::str::FromStr for Cron {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, CronError> {
        let expanded = match s.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(CronError(format!(
                "'{s}' has {} fields; a cron expression has five: minute hour \
                 day-of-month month day-of-week (e.g. '0 9 * * mon-fri')",
                fields.len()
            )));
        };
        let weekdays = field(weekday, "day-of-week", 0, 7, &WEEKDAYS)?;
        // Sunday is 0 or 7.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Self {
            minutes: field(minute, "minute", 0, 59, &[])?,
            hours: narrow(field(hour, "hour", 0, 23, &[])?),
            days: narrow(field(day, "day-of-month", 1, 31, &[])?),
            months: u16::try_from(field(month, "month", 1, 12, &MONTHS)?).unwrap_or(0),
            weekdays: u8::try_from(weekdays).unwrap_or(0),
            days_restricted: !day.starts_with('*'),
            weekdays_restricted: !weekday.starts_with('*'),
        })
    }
}

fn narrow(bits: u64) -> u32 {
    u32::try_from(bits).unwrap_or(0)
}

/// Parse one field into a bit set of the values it allows.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, CronError> {
    let bad = |why: &str| CronError(format!("{name} field '{text}': {why}"));
    let value = |v: &str| -> Result<u32, CronError> {
        let lower = v.to_ascii_lowercase();
        // Names count from `min` (months from 1, week days from 0).
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(min + u32::try_from(i).unwrap_or(0));
        }
        let n: u32 = v
            .parse()
            .map_err(|_| bad(&format!("'{v}' is not a number")))?;
        if n < min || n > max {
            return Err(bad(&format!("{n} is outside {min}-{max}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad("the step must be a number"))?;
                if step == 0 {
                    return Err(bad("the step must be at least 1"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(bad(&format!("the range {a}-{b} is backwards")));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15` means from 5 to the end, every 15.
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    /// Whether a calendar day matches the day fields.
    fn day_matches(&self, d: NaiveDate) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    fn every_hour(&self) -> bool {
        self.hours == (1 << 24) - 1
    }

    /// The first instant strictly after `after` at which the expression fires in `tz`, or
    /// `None` if it never does (e.g. 30 February).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // Start a little before `after`'s wall time: around a backward change, wall times just
        // before it may still be ahead in real time.
        let start = after.with_timezone(&tz).naive_local() - Duration::hours(3);
        let mut best: Option<DateTime<Utc>> = None;
        let mut day = start.date();
        let last = day + Duration::days(HORIZON_DAYS);
        while day <= last {
            if let Some(b) = best
                && NaiveDateTime::from(day)
                    > b.with_timezone(&tz).naive_local() + Duration::hours(3)
            {
                break;
            }
            if self.day_matches(day) {
                for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for minute in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                        let Some(local) = day.and_hms_opt(hour, minute, 0) else {
                            continue;
                        };
                        if local < start {
                            continue;
                        }
                        for instant in self.instants(local, tz) {
                            if instant > after && best.is_none_or(|b| instant < b) {
                                best = Some(instant);
                            }
                        }
                    }
                }
            }
            day += Duration::days(1);
        }
        best
    }

    /// The instants at which wall time `local` fires (see the module docs).
    fn instants(&self, local: NaiveDateTime, tz: Tz) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(first, second) => {
                if self.every_hour() {
                    vec![first.with_timezone(&Utc), second.with_timezone(&Utc)]
                } else {
                    vec![first.with_timezone(&Utc)]
                }
            }
            LocalResult::None => {
                // In a gap: the first wall time after it (gaps are whole minutes, ≤ 2 h here).
                (1..=180)
                    .map(|m| local + Duration::minutes(m))
                    .find_map(|l| match tz.from_local_datetime(&l) {
                        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
                        LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
                        LocalResult::None => None,
                    })
                    .into_iter()
                    .collect()
            }
        }
    }
}

/// An IANA time zone by name.
pub fn zone(name: &str) -> Result<Tz, CronError> {
    name.parse::<Tz>().map_err(|_| {
        CronError(format!(
            "unknown time zone '{name}': use an IANA name such as Europe/Paris or UTC"
        ))
    })
}

/// Parse `expr`, check `tz`, and return the first firing after `after`.
pub fn first_after(expr: &str, tz: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, CronError> {
    let cron: Cron = expr.parse()?;
    let tz = zone(tz)?;
    cron.next_after(after, tz)
        .ok_or_else(|| CronError(format!("'{expr}' never fires (no such date)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: &str, after: &str) -> String {
        first_after(expr, tz, utc(after)).unwrap().to_rfc3339()
    }

    #[test]
    fn fields_parse_and_refuse_clearly() {
        assert!("*/15 9-17 * * mon-fri".parse::<Cron>().is_ok());
        assert!("0 0 1,15 jan,jul *".parse::<Cron>().is_ok());
        assert!("@daily".parse::<Cron>().is_ok());
        let e = "* * *".parse::<Cron>().unwrap_err().to_string();
        assert!(e.contains("five"), "{e}");
        let e = "60 * * * *".parse::<Cron>().unwrap_err().to_string();
        assert!(e.contains("minute") && e.contains("0-59"), "{e}");
        assert!("*/0 * * * *".parse::<Cron>().is_err());
        assert!("5-1 * * * *".parse::<Cron>().is_err());
        assert!("* * * * funday".parse::<Cron>().is_err());
        assert!(zone("Mars/Olympus").is_err());
        let e = first_after("0 0 30 2 *", "UTC", Utc::now()).unwrap_err();
        assert!(e.to_string().contains("never"), "{e}");
    }

    #[test]
    fn next_firing_in_utc() {
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-01-01T10:07:00Z"),
            "2026-01-01T10:15:00+00:00"
        );
        // Strictly after.
        assert_eq!(
            next("0 9 * * *", "UTC", "2026-01-01T09:00:00Z"),
            "2026-01-02T09:00:00+00:00"
        );
        // Weekdays: 2026-01-03 is a Saturday.
        assert_eq!(
            next("0 9 * * mon-fri", "UTC", "2026-01-03T00:00:00Z"),
            "2026-01-05T09:00:00+00:00"
        );
        // Sunday as 7.
        assert_eq!(
            next("0 9 * * 7", "UTC", "2026-01-03T00:00:00Z"),
            "2026-01-04T09:00:00+00:00"
        );
        // Both day fields restricted: either matches (the 1st, or a Friday).
        assert_eq!(
            next("0 0 1 * fri", "UTC", "2026-01-01T12:00:00Z"),
            "2026-01-02T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
    }

    #[test]
    fn local_time_is_kept_across_daylight_saving_changes() {
        // Paris: UTC+1 in winter, UTC+2 from 29 March 2026 02:00 to 25 October 2026 03:00.
        assert_eq!(
            next("0 9 * * *", "Europe/Paris", "2026-03-28T12:00:00Z"),
            "2026-03-29T07:00:00+00:00",
            "09:00 in summer time"
        );
        assert_eq!(
            next("0 9 * * *", "Europe/Paris", "2026-03-27T12:00:00Z"),
            "2026-03-28T08:00:00+00:00",
            "09:00 in winter time"
        );
        assert_eq!(
            next("0 9 * * *", "Europe/Paris", "2026-10-25T06:00:00Z"),
            "2026-10-25T08:00:00+00:00",
            "back to winter time"
        );
    }

    #[test]
    fn a_skipped_wall_time_fires_after_the_gap() {
        // 02:30 does not exist in Paris on 29 March 2026: it fires at 03:00 CEST (01:00 UTC).
        assert_eq!(
            next("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00Z"),
            "2026-03-29T01:00:00+00:00"
        );
        // And the next day as usual.
        assert_eq!(
            next("30 2 * * *", "Europe/Paris", "2026-03-29T01:00:00Z"),
            "2026-03-30T00:30:00+00:00"
        );
    }

    #[test]
    fn a_repeated_wall_time_fires_once_unless_hourly() {
        // 02:30 happens twice in Paris on 25 October 2026 (00:30 and 01:30 UTC).
        assert_eq!(
            next("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z"),
            "2026-10-25T00:30:00+00:00"
        );
        assert_eq!(
            next("30 2 * * *", "Europe/Paris", "2026-10-25T00:30:00Z"),
            "2026-10-26T01:30:00+00:00",
            "not again in the second pass"
        );
        // Every 30 minutes keeps firing through the repeated hour.
        let mut t = utc("2026-10-24T23:50:00Z");
        let cron: Cron = "*/30 * * * *".parse().unwrap();
        let tz = zone("Europe/Paris").unwrap();
        let mut fired = Vec::new();
        for _ in 0..6 {
            t = cron.next_after(t, tz).unwrap();
            fired.push(t.format("%H:%M").to_string());
        }
        assert_eq!(
            fired,
            ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30"]
        );
    }
}

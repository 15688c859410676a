//! Dates and times in a client's words, read by code rather than by the model: "tomorrow at
//! 8", "demain à 8h30", "next Monday at 7pm", "le 12 avril", "in 2 hours", "dans 3 jours".
//!
//! A small model cannot be trusted to turn "tomorrow at 8" into a timestamp in the client's
//! time zone; this can. English and French; what is not understood is `None`, never a guess.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// A moment the client named: a day, and the time of day when they gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub date: NaiveDate,
    pub time: Option<NaiveTime>,
}

impl Moment {
    /// The instant in `tz`, at `default` when no time was said. A time that does not exist
    /// (the hour skipped when clocks go forward) moves forward by the gap; an ambiguous one
    /// (the hour repeated when they go back) is the first.
    pub fn instant(self, tz: Tz, default: NaiveTime) -> DateTime<Utc> {
        let local = self.date.and_time(self.time.unwrap_or(default));
        let mut probe = local;
        for _ in 0..4 {
            if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                return t.with_timezone(&Utc);
            }
            probe += Duration::minutes(30);
        }
        Utc.from_utc_datetime(&local)
    }
}

/// The first date or time named in `text`, relative to `now` in the client's `tz`. Meant for a
/// text already known to ask for a moment (a reminder, a deadline): "in 55 minutes" is read as
/// a moment, whatever came before it.
pub fn parse(text: &str, now: DateTime<Utc>, tz: Tz) -> Option<Moment> {
    let local = now.with_timezone(&tz);
    let today = local.date_naive();
    let words = tokens(text);
    if let Some(m) = relative(&words, local.naive_local()) {
        return Some(m);
    }
    let date = day(&words, today);
    let time = time_of_day(&words);
    match (date, time) {
        (Some(date), time) => Some(Moment { date, time }),
        // A time alone is the next one: today if still ahead, else tomorrow.
        (None, Some(t)) => {
            let date = if t > local.time() {
                today
            } else {
                today.succ_opt()?
            };
            Some(Moment {
                date,
                time: Some(t),
            })
        }
        (None, None) => None,
    }
}

/// Lowercase words, apostrophes and hyphens kept inside words, `:` kept inside times.
fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['’', '\''], "'")
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, ':' | '\'' | '-' | '/')))
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches(|c| c == '-' || c == '\'').to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// "in 2 hours", "dans 3 jours", "in a week".
fn relative(words: &[String], now: chrono::NaiveDateTime) -> Option<Moment> {
    let i = words.iter().position(|w| w == "in" || w == "dans")?;
    let n = match words.get(i + 1)?.as_str() {
        "a" | "an" | "one" | "un" | "une" => 1,
        w => w.parse::<i64>().ok().filter(|n| (1..=1000).contains(n))?,
    };
    let unit = words.get(i + 2)?.trim_end_matches('s');
    let span = match unit {
        "minute" | "min" => Duration::minutes(n),
        "hour" | "heure" | "h" => Duration::hours(n),
        "day" | "jour" => Duration::days(n),
        "week" | "semaine" => Duration::weeks(n),
        _ => return None,
    };
    let at = now + span;
    let time = matches!(unit, "minute" | "min" | "hour" | "heure" | "h").then(|| at.time());
    Some(Moment {
        date: at.date(),
        time: time.or_else(|| time_of_day(words)),
    })
}

const MONTHS: [&[&str]; 12] = [
    &["january", "jan", "janvier", "janv"],
    &["february", "feb", "février", "fevrier", "févr", "fevr"],
    &["march", "mar", "mars"],
    &["april", "apr", "avril", "avr"],
    &["may", "mai"],
    &["june", "jun", "juin"],
    &["july", "jul", "juillet", "juil"],
    &["august", "aug", "août", "aout"],
    &["september", "sep", "sept", "septembre"],
    &["october", "oct", "octobre"],
    &["november", "nov", "novembre"],
    &["december", "dec", "décembre", "decembre", "déc"],
];

fn month(w: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|names| names.contains(&w))
        .and_then(|i| u32::try_from(i + 1).ok())
}

fn weekday(w: &str) -> Option<Weekday> {
    Some(match w {
        "monday" | "lundi" => Weekday::Mon,
        "tuesday" | "mardi" => Weekday::Tue,
        "wednesday" | "mercredi" => Weekday::Wed,
        "thursday" | "jeudi" => Weekday::Thu,
        "friday" | "vendredi" => Weekday::Fri,
        "saturday" | "samedi" => Weekday::Sat,
        "sunday" | "dimanche" => Weekday::Sun,
        _ => return None,
    })
}

/// The day named: relative words, a weekday (the next one), a day and month (the next one,
/// unless a year is given), or an ISO date.
fn day(words: &[String], today: NaiveDate) -> Option<NaiveDate> {
    let joined = words.join(" ");
    if joined.contains("day after tomorrow")
        || joined.contains("après-demain")
        || joined.contains("apres-demain")
    {
        return today.checked_add_signed(Duration::days(2));
    }
    for (i, w) in words.iter().enumerate() {
        match w.as_str() {
            "today" | "tonight" | "aujourd'hui" => return Some(today),
            "ce" if words.get(i + 1).is_some_and(|n| n == "soir") => return Some(today),
            "tomorrow" | "demain" => return today.succ_opt(),
            _ => {}
        }
        if let Some(wd) = weekday(w) {
            let ahead =
                (7 + wd.num_days_from_monday() - today.weekday().num_days_from_monday()) % 7;
            let ahead = if ahead == 0 { 7 } else { ahead };
            return today.checked_add_signed(Duration::days(i64::from(ahead)));
        }
        if let Ok(d) = NaiveDate::parse_from_str(w, "%Y-%m-%d") {
            return Some(d);
        }
        if let Some(m) = month(w) {
            // "12 April" / "12 avril" / "le 1er mai", or "April 12".
            let before = i.checked_sub(1).and_then(|j| day_number(&words[j]));
            let after = words.get(i + 1).and_then(|n| day_number(n));
            let Some(d) = before.or(after) else { continue };
            let year_word = words.get(i + 1 + usize::from(after.is_some()));
            let year = year_word
                .and_then(|y| y.parse::<i32>().ok())
                .filter(|y| (2000..=2200).contains(y));
            if let Some(y) = year {
                return NaiveDate::from_ymd_opt(y, m, d);
            }
            let this = NaiveDate::from_ymd_opt(today.year(), m, d)?;
            return if this >= today {
                Some(this)
            } else {
                NaiveDate::from_ymd_opt(today.year() + 1, m, d)
            };
        }
        // "12/04" day first, as in French and most of the world.
        if let Some((d, m)) = w.split_once('/')
            && let (Ok(d), Ok(m)) = (d.parse::<u32>(), m.parse::<u32>())
            && let Some(this) = NaiveDate::from_ymd_opt(today.year(), m, d)
        {
            return if this >= today {
                Some(this)
            } else {
                NaiveDate::from_ymd_opt(today.year() + 1, m, d)
            };
        }
    }
    None
}

fn day_number(w: &str) -> Option<u32> {
    let digits = w.trim_end_matches(|c: char| c.is_alphabetic());
    let suffix = &w[digits.len()..];
    if !matches!(suffix, "" | "st" | "nd" | "rd" | "th" | "er") {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

/// The time of day: "8:30", "8h30", "20h", "8am", "8 pm", "at 8", "à 8", noon, midnight;
/// "du soir" / "in the evening" after an hour below 12 adds 12.
fn time_of_day(words: &[String]) -> Option<NaiveTime> {
    let evening = words.windows(2).any(|w| {
        matches!(
            (w[0].as_str(), w[1].as_str()),
            ("du", "soir") | ("de", "l'après-midi") | ("the", "evening") | ("the", "afternoon")
        )
    });
    for (i, w) in words.iter().enumerate() {
        match w.as_str() {
            "noon" | "midi" => return NaiveTime::from_hms_opt(12, 0, 0),
            "midnight" | "minuit" => return NaiveTime::from_hms_opt(0, 0, 0),
            _ => {}
        }
        let next = words.get(i + 1).map(String::as_str);
        let after_at =
            i > 0 && matches!(words[i - 1].as_str(), "at" | "à" | "a" | "vers" | "around");
        let (body, suffix) = match w.find(|c: char| !c.is_ascii_digit()) {
            Some(k) => w.split_at(k),
            None => (w.as_str(), ""),
        };
        let Ok(hour) = body.parse::<u32>() else {
            continue;
        };
        // "under 4 h", "en moins de 4h", "in 3h": a duration, not a time.
        let before = &words[i.saturating_sub(2)..i];
        if before.iter().any(|b| {
            matches!(
                b.as_str(),
                "under" | "sous" | "moins" | "than" | "within" | "in" | "en"
            )
        }) {
            continue;
        }
        let (hour, minute) = match suffix {
            "am" | "a.m" => (hour % 12, 0),
            "pm" | "p.m" => (hour % 12 + 12, 0),
            "h" => (hour, 0),
            s if s.starts_with('h') || s.starts_with(':') => {
                let Ok(m) = s[1..].parse::<u32>() else {
                    continue;
                };
                (hour, m)
            }
            "" => match next {
                Some("am") => (hour % 12, 0),
                Some("pm") => (hour % 12 + 12, 0),
                Some("o'clock") => (hour, 0),
                Some("h" | "heures" | "heure") if after_at => (hour, 0),
                _ if after_at => (hour, 0),
                _ => continue,
            },
            _ => continue,
        };
        let hour = if evening && hour < 12 {
            hour + 12
        } else {
            hour
        };
        if let Some(t) = NaiveTime::from_hms_opt(hour, minute, 0) {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn moment(text: &str) -> Option<(String, Option<String>)> {
        // Saturday 5 December 2026, 14:00 in Paris.
        let now = at("2026-12-05T13:00:00Z");
        parse(text, now, chrono_tz::Europe::Paris).map(|m| {
            (
                m.date.to_string(),
                m.time.map(|t| t.format("%H:%M").to_string()),
            )
        })
    }

    fn is(date: &str, time: Option<&str>) -> Option<(String, Option<String>)> {
        Some((date.to_owned(), time.map(str::to_owned)))
    }

    #[test]
    fn english_and_french_days_and_times() {
        for (text, date, time) in [
            ("remind me tomorrow at 8", "2026-12-06", Some("08:00")),
            ("rappelle-moi demain à 8h", "2026-12-06", Some("08:00")),
            ("demain à 8h30", "2026-12-06", Some("08:30")),
            ("Demain matin 7:15", "2026-12-06", Some("07:15")),
            ("next Monday at 7pm", "2026-12-07", Some("19:00")),
            ("lundi prochain à 7h du soir", "2026-12-07", Some("19:00")),
            ("on Saturday", "2026-12-12", None),
            ("marathon under 4 h on 12 April", "2027-04-12", None),
            ("le 12 avril 2027", "2027-04-12", None),
            ("marathon en moins de 4h le 12 avril", "2027-04-12", None),
            ("le 1er mai", "2027-05-01", None),
            ("December 24th at noon", "2026-12-24", Some("12:00")),
            ("le 24/12 à 20h", "2026-12-24", Some("20:00")),
            ("2027-01-03", "2027-01-03", None),
            ("après-demain", "2026-12-07", None),
            ("ce soir à 9", "2026-12-05", Some("09:00")),
            ("at 6pm", "2026-12-05", Some("18:00")),
            ("à 9h", "2026-12-06", Some("09:00")),
            ("in 2 hours", "2026-12-05", Some("16:00")),
            ("dans 3 jours", "2026-12-08", None),
            ("in a week at 8am", "2026-12-12", Some("08:00")),
        ] {
            assert_eq!(moment(text), is(date, time), "{text}");
        }
    }

    #[test]
    fn what_is_not_a_moment_is_none() {
        assert_eq!(moment("I ran 10 km, 55 minutes"), None);
        assert_eq!(moment("my knee hurts"), None);
        assert_eq!(moment("60 to 90 g per hour"), None);
        assert_eq!(moment("le 31 février"), None);
        assert_eq!(moment("at 25h"), None);
    }

    #[test]
    fn instants_respect_the_zone_and_its_clock_changes() {
        let paris = chrono_tz::Europe::Paris;
        let eight = NaiveTime::from_hms_opt(8, 0, 0).unwrap();
        let m = Moment {
            date: NaiveDate::from_ymd_opt(2026, 12, 6).unwrap(),
            time: Some(eight),
        };
        assert_eq!(m.instant(paris, eight), at("2026-12-06T07:00:00Z"));
        // 02:30 does not exist in Paris on 2026-03-29: it becomes 03:00 local.
        let gap = Moment {
            date: NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(),
            time: NaiveTime::from_hms_opt(2, 30, 0),
        };
        assert_eq!(gap.instant(paris, eight), at("2026-03-29T01:00:00Z"));
        // 02:30 happens twice on 2026-10-25: the first.
        let twice = Moment {
            date: NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(),
            time: NaiveTime::from_hms_opt(2, 30, 0),
        };
        assert_eq!(twice.instant(paris, eight), at("2026-10-25T00:30:00Z"));
    }
}

//! Property tests of monthly maintenance windows (`weeksOfMonth`,
//! `offsetDays`): the schedule's openings are compared with a brute-force
//! computation that lists every day of each month and scans minute by minute
//! for the first instant at or after a local time (which is the DST rule of
//! the windows: a skipped time opens when the gap ends, a repeated one at its
//! first occurrence). Time zones with both transitions: Europe/Berlin and
//! America/New_York, and UTC.
//!
//! The number of cases is small by default; set `SOFORT_PROPTEST_CASES` to
//! search harder.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use sofort::api::{MaintenanceWindow, Weekday};
use sofort::core::window::Schedule;

fn cases() -> u32 {
    std::env::var("SOFORT_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

const ZONES: [&str; 3] = ["UTC", "Europe/Berlin", "America/New_York"];

#[derive(Debug, Clone)]
struct Case {
    days: Vec<Weekday>,
    /// 1..=5, 0 for Last.
    weeks: Vec<u8>,
    offset: u32,
    start: (i8, i8),
    end: (i8, i8),
    zone: &'static str,
    /// Minutes after 2026-01-01T00:00Z.
    from_min: i64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::subsequence(Weekday::ALL.to_vec(), 1..=3),
        proptest::sample::subsequence(vec![1u8, 2, 3, 4, 5, 0], 1..=2),
        prop_oneof![Just(0u32), 0u32..=27],
        (0i8..24, prop_oneof![Just(0i8), Just(30i8), 0i8..60]),
        (0i8..24, prop_oneof![Just(0i8), Just(30i8), 0i8..60]),
        proptest::sample::select(ZONES.to_vec()),
        0i64..(5 * 365 * 24 * 60),
    )
        .prop_map(|(days, weeks, offset, start, end, zone, from_min)| Case {
            days,
            weeks,
            offset,
            start,
            end,
            zone,
            from_min,
        })
}

fn hhmm((h, m): (i8, i8)) -> String {
    format!("{h:02}:{m:02}")
}

impl Case {
    fn window(&self) -> MaintenanceWindow {
        MaintenanceWindow {
            days: self.days.clone(),
            start: hhmm(self.start),
            end: hhmm(self.end),
            time_zone: self.zone.into(),
            weeks_of_month: self
                .weeks
                .iter()
                .map(|w| match w {
                    0 => IntOrString::String("Last".into()),
                    n => IntOrString::Int(i32::from(*n)),
                })
                .collect(),
            offset_days: self.offset,
        }
    }

    fn from(&self) -> Timestamp {
        let base: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap_or_default();
        base.checked_add(SignedDuration::from_mins(self.from_min))
            .unwrap_or(base)
    }

    fn valid(&self) -> bool {
        self.start != self.end || self.start == (0, 0)
    }
}

/// Every local date an occurrence starts on, for the months `first..=last`
/// (year, month): each day of the month is listed and the occurrences of each
/// weekday counted from the start of the month.
fn opening_dates(c: &Case, first: (i16, i8), months: i32) -> Vec<Date> {
    let mut out = Vec::new();
    let Ok(mut month) = Date::new(first.0, first.1, 1) else {
        return out;
    };
    for _ in 0..months {
        for wd in &c.days {
            let all: Vec<Date> = (1..=month.days_in_month())
                .filter_map(|d| Date::new(month.year(), month.month(), d).ok())
                .filter(|d| d.weekday() == wd.to_jiff())
                .collect();
            for w in &c.weeks {
                let picked = match w {
                    0 => all.last(),
                    n => all.get(usize::from(*n) - 1),
                };
                if let Some(d) = picked
                    && let Ok(d) = d.checked_add(Span::new().days(i64::from(c.offset)))
                {
                    out.push(d);
                }
            }
        }
        match month.checked_add(Span::new().months(1)) {
            Ok(m) => month = m,
            Err(_) => break,
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The first instant whose local time is at or after `dt`, by a minute scan.
fn first_instant_at_or_after(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    let naive = jiff::tz::offset(0).to_timestamp(dt).ok()?;
    let mut t = naive.checked_sub(SignedDuration::from_hours(15)).ok()?;
    for _ in 0..(31 * 60) {
        if tz.to_datetime(t) >= dt {
            return Some(t);
        }
        t = t.checked_add(SignedDuration::from_mins(1)).ok()?;
    }
    None
}

/// The brute-force open intervals, merged, sorted.
fn brute_intervals(c: &Case, from: Timestamp) -> Vec<(Timestamp, Timestamp)> {
    let Ok(tz) = TimeZone::get(c.zone) else {
        return Vec::new();
    };
    let local = tz.to_datetime(from).date();
    let first = local.checked_sub(Span::new().months(2)).unwrap_or(local);
    let (Ok(st), Ok(en)) = (
        Time::new(c.start.0, c.start.1, 0, 0),
        Time::new(c.end.0, c.end.1, 0, 0),
    ) else {
        return Vec::new();
    };
    let mut raw = Vec::new();
    for d in opening_dates(c, (first.year(), first.month()), 16) {
        let end_day = if en <= st { d.tomorrow().ok() } else { Some(d) };
        let s = first_instant_at_or_after(&tz, d.to_datetime(st));
        let e = end_day.and_then(|e| first_instant_at_or_after(&tz, e.to_datetime(en)));
        if let (Some(s), Some(e)) = (s, e)
            && s < e
        {
            raw.push((s, e));
        }
    }
    raw.sort();
    let mut merged: Vec<(Timestamp, Timestamp)> = Vec::new();
    for (s, e) in raw {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// The next three openings are exactly the brute-force ones: none
    /// skipped, none invented, the same instants through DST changes and
    /// month ends.
    #[test]
    fn openings_match_a_brute_force_scan(c in case()) {
        prop_assume!(c.valid());
        let s = Schedule::new(&[c.window()], &[]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let from = c.from();
        let brute: Vec<_> = brute_intervals(&c, from).into_iter().filter(|iv| iv.1 > from).collect();
        let mut at = from;
        for (k, want) in brute.iter().take(3).enumerate() {
            let got = s.next_opening(at);
            prop_assert!(got.is_some(), "opening {k} missing, want {want:?}");
            let got = got.map(|iv| (iv.start, iv.end)).unwrap_or_default();
            prop_assert_eq!(got, *want, "opening {} from {}", k, at);
            at = got.1;
        }
    }

    /// Every opening lies on an allowed day: the local date it starts on,
    /// less the offset, is a listed occurrence of a listed weekday.
    #[test]
    fn every_opening_lies_on_an_allowed_day(c in case()) {
        prop_assume!(c.valid());
        let s = Schedule::new(&[c.window()], &[]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let tz = TimeZone::get(c.zone).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut at = c.from();
        for _ in 0..4 {
            let Some(iv) = s.next_opening(at) else { break };
            let day = tz.to_datetime(iv.start).date();
            let anchor = day
                .checked_sub(Span::new().days(i64::from(c.offset)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let allowed = opening_dates(&c, (anchor.year(), anchor.month()), 2);
            // The start may be the first of merged days or after a skipped hour: same local date.
            prop_assert!(
                allowed.contains(&day) || iv.start < at,
                "{} (local {day}) is not an allowed day: {allowed:?}", iv.start
            );
            at = iv.end;
        }
    }

    /// Open exactly at the instants inside a brute-force interval.
    #[test]
    fn is_open_agrees_with_the_brute_force_intervals(c in case(), probes in proptest::collection::vec(0i64..(90 * 24 * 60), 8)) {
        prop_assume!(c.valid());
        let s = Schedule::new(&[c.window()], &[]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let from = c.from();
        let brute = brute_intervals(&c, from);
        for p in probes {
            let t = from.checked_add(SignedDuration::from_mins(p)).unwrap_or(from);
            let want = brute.iter().any(|(s, e)| *s <= t && t < *e);
            prop_assert_eq!(s.is_open(t), want, "at {}", t);
        }
    }
}

//! Maintenance windows and blackouts: when routine work may start.
//!
//! A [`Schedule`] is the union of a policy's weekly (or monthly) windows minus its blackouts.
//! Empty `maintenanceWindows` means always open (blackouts still apply).
//!
//! # Rules
//!
//! * A window belongs to the day it **starts** on. `Fri 22:00-05:00` opens Friday
//!   22:00 local time and closes Saturday 05:00, so it is open on Saturday at 03:00
//!   but not on Monday at 03:00.
//! * `end` at or before `start` wraps past midnight. `start == end` (normally
//!   `00:00-00:00`) is a full day: from `start` to the same wall-clock time on the
//!   next day.
//! * Lengths are **wall-clock**: both ends are local times, so `22:00-05:00` lasts
//!   6 h on the night clocks spring forward and 8 h on the night they fall back.
//! * Daylight-saving changes, for both ends of a window:
//!   - a local time inside a **skipped** hour (spring forward) moves to the first
//!     valid instant after the gap (`02:30` on the Zurich spring night becomes
//!     `03:00` CEST);
//!   - a local time inside a **repeated** hour (fall back) uses its **first**
//!     occurrence (`02:30` on the Zurich autumn night is `02:30` CEST, `00:30Z`).
//! * **Monthly windows** (`weeksOfMonth`): the window opens only on the listed
//!   occurrences of its `days` within the local month, `1`-`5` or `Last`
//!   (`days: [Tue], weeksOfMonth: [2]` is the second Tuesday). A month with
//!   only four occurrences has no window for `5`; `Last` is the fourth or the
//!   fifth. `offsetDays` shifts the opening day that many days after the day
//!   picked, across month ends (`[2]` + 3 is the Friday after Patch Tuesday;
//!   the second Tuesday of January + 20 days is in February). The occurrence
//!   is counted on local dates, so the daylight-saving rules below apply to the
//!   shifted day as to any other.
//! * Windows overlap or touch: they merge into one open interval, so the time
//!   remaining is measured to the end of the merged interval.
//! * Blackouts are absolute `[start, end)` ranges and always win: they cut open
//!   intervals, and [`Schedule::next_opening`] skips them.
//!
//! All functions are pure; the clock is always an argument.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{Blackout, MAX_OFFSET_DAYS, MaintenanceWindow, Weekday};

/// Furthest into the future the schedule looks for an opening.
pub const HORIZON_DAYS: i64 = 800;

/// A window or blackout that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Unknown IANA time-zone name.
    #[error(
        "maintenanceWindows[{index}].timeZone {zone:?} is not a known IANA time zone; use a name such as Europe/Zurich or UTC"
    )]
    TimeZone {
        /// Index of the window.
        index: usize,
        /// The name given.
        zone: String,
    },
    /// A time of day that is not `HH:MM`.
    #[error(
        "maintenanceWindows[{index}].{field} {value:?} is not a time of day; use HH:MM (24 h), for example 22:00"
    )]
    TimeOfDay {
        /// Index of the window.
        index: usize,
        /// `start` or `end`.
        field: &'static str,
        /// The text given.
        value: String,
    },
    /// A `weeksOfMonth` entry that is not 1 to 5 or `Last`, or one listed twice.
    #[error("maintenanceWindows[{index}].weeksOfMonth[{pos}] {value:?} {why}")]
    WeekOfMonth {
        /// Index of the window.
        index: usize,
        /// Index in `weeksOfMonth`.
        pos: usize,
        /// The value given.
        value: String,
        /// What is wrong and how to fix it.
        why: &'static str,
    },
    /// `weeksOfMonth` without `days`, or `offsetDays` without `weeksOfMonth`
    /// or beyond [`crate::api::MAX_OFFSET_DAYS`].
    #[error("maintenanceWindows[{index}].{field}: {why}")]
    Monthly {
        /// Index of the window.
        index: usize,
        /// `weeksOfMonth` or `offsetDays`.
        field: &'static str,
        /// What is wrong and how to fix it.
        why: String,
    },
    /// A blackout that ends before it starts.
    #[error("blackouts[{index}] ends at or before its start; the end must be later than the start")]
    Blackout {
        /// Index of the blackout.
        index: usize,
    },
}

/// One open interval `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// Opening instant.
    pub start: Timestamp,
    /// Closing instant (exclusive).
    pub end: Timestamp,
    /// Time-zone name of the window that opens this interval (`None` when no
    /// windows are configured).
    pub zone: Option<String>,
}

impl Interval {
    /// Whether `at` lies inside.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

#[derive(Debug, Clone)]
struct Window {
    days: [bool; 7],
    /// `None`: every week.
    monthly: Option<Monthly>,
    start: Time,
    end: Time,
    tz: TimeZone,
    zone: String,
}

impl Window {
    /// Whether an occurrence of this window starts on the local date `day`.
    fn opens_on(&self, day: Date) -> bool {
        match &self.monthly {
            None => self.days[weekday_index(day.weekday())],
            Some(m) => m
                .anchor(day)
                .is_some_and(|a| self.days[weekday_index(a.weekday())] && m.picks(a)),
        }
    }
}

/// The monthly part of a window: which occurrences of its weekdays within a
/// month it opens on (`weeksOfMonth`), shifted by `offsetDays`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Monthly {
    /// `nth[k]`: the `k+1`-th occurrence is listed.
    nth: [bool; 5],
    /// `Last` is listed.
    last: bool,
    /// `offsetDays`.
    offset: i32,
}

impl Monthly {
    /// The day a window opening on `day` counts from: `offset` days earlier.
    fn anchor(&self, day: Date) -> Option<Date> {
        day.checked_sub(jiff::Span::new().days(self.offset)).ok()
    }

    /// Whether `anchor` is a listed occurrence of its weekday in its month.
    fn picks(&self, anchor: Date) -> bool {
        let k = ((anchor.day() - 1) / 7) as usize;
        let last = anchor
            .checked_add(jiff::Span::new().days(7))
            .map_or(true, |next| next.month() != anchor.month());
        self.nth.get(k).copied().unwrap_or(false) || (self.last && last)
    }
}

/// One `weeksOfMonth` entry: `Some(1..=5)`, `Some(0)` for `Last`; `None` when
/// it is neither.
fn week_of_month(v: &IntOrString) -> Option<u8> {
    match v {
        IntOrString::Int(n @ 1..=5) => u8::try_from(*n).ok(),
        IntOrString::String(s) if s == "Last" => Some(0),
        _ => None,
    }
}

/// `weeksOfMonth` and `offsetDays` of window `index`, compiled.
fn compile_monthly(
    index: usize,
    w: &MaintenanceWindow,
) -> Result<Option<Monthly>, Vec<WindowError>> {
    let mut errors = Vec::new();
    let mut m = Monthly {
        nth: [false; 5],
        last: false,
        offset: 0,
    };
    for (pos, v) in w.weeks_of_month.iter().enumerate() {
        let value = match v {
            IntOrString::Int(n) => n.to_string(),
            // Echo only what is short enough to be a mistyped week.
            IntOrString::String(s) if s.chars().count() <= 8 => s.clone(),
            IntOrString::String(s) => format!("<{} characters>", s.chars().count()),
        };
        let mut bad = |why| {
            errors.push(WindowError::WeekOfMonth {
                index,
                pos,
                value: value.clone(),
                why,
            })
        };
        let slot = match week_of_month(v) {
            None => {
                bad("is not a week of the month; use 1, 2, 3, 4, 5 or Last");
                continue;
            }
            Some(0) => &mut m.last,
            Some(n) => &mut m.nth[usize::from(n) - 1],
        };
        if *slot {
            bad("is listed twice; remove the duplicate");
        }
        *slot = true;
    }
    if !w.weeks_of_month.is_empty() && w.days.is_empty() {
        errors.push(WindowError::Monthly {
            index,
            field: "weeksOfMonth",
            why: "needs days: list the weekdays whose occurrences it counts, for example days: [Tue] with weeksOfMonth: [2] for the second Tuesday".into(),
        });
    }
    if w.offset_days > MAX_OFFSET_DAYS {
        errors.push(WindowError::Monthly {
            index,
            field: "offsetDays",
            why: format!(
                "{} is more than {MAX_OFFSET_DAYS}; an offset of four weeks or more reaches the next occurrence, pick a later week instead",
                w.offset_days
            ),
        });
    } else if w.offset_days > 0 && w.weeks_of_month.is_empty() {
        errors.push(WindowError::Monthly {
            index,
            field: "offsetDays",
            why: "counts from a day picked by weeksOfMonth; set weeksOfMonth, or for a weekly window change days instead".into(),
        });
    }
    m.offset = i32::try_from(w.offset_days.min(MAX_OFFSET_DAYS)).unwrap_or(0);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((!w.weeks_of_month.is_empty()).then_some(m))
}

#[derive(Debug, Clone)]
struct Cut {
    start: Timestamp,
    end: Timestamp,
    reason: Option<String>,
}

/// The union of weekly windows minus blackouts.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    windows: Vec<Window>,
    blackouts: Vec<Cut>,
}

/// Parses `HH:MM`.
pub fn parse_time_of_day(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    Time::new(h, m, 0, 0).ok()
}

fn weekday_index(d: jiff::civil::Weekday) -> usize {
    d.to_monday_zero_offset() as usize
}

/// Resolves a local date and time to an instant, with the DST rules of this module.
pub fn resolve_local(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // `after` applied to a skipped local time lands before the transition;
            // the first valid instant after the gap is the transition itself.
            let probe = after.to_timestamp(dt).ok()?;
            tz.following(probe).next().map(|t| t.timestamp())
        }
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
    }
}

/// Wall-clock length of a window on an ordinary day (no daylight-saving
/// change); `None` when a time of day does not parse.
pub fn window_length(w: &MaintenanceWindow) -> Option<Duration> {
    let mins = |t: Time| i64::from(t.hour()) * 60 + i64::from(t.minute());
    let s = mins(parse_time_of_day(&w.start)?);
    let e = mins(parse_time_of_day(&w.end)?);
    let len = if e > s { e - s } else { e + 24 * 60 - s };
    Some(Duration::from_secs(len.unsigned_abs() * 60))
}

/// One window, compiled; every problem of it on failure.
fn compile_window(index: usize, w: &MaintenanceWindow) -> Result<Window, Vec<WindowError>> {
    let mut errors = Vec::new();
    let tz = TimeZone::get(&w.time_zone).map_err(|_| WindowError::TimeZone {
        index,
        zone: w.time_zone.clone(),
    });
    let mut time = |field: &'static str, value: &str| {
        let t = parse_time_of_day(value);
        if t.is_none() {
            errors.push(WindowError::TimeOfDay {
                index,
                field,
                value: value.to_string(),
            });
        }
        t
    };
    let (start, end) = (time("start", &w.start), time("end", &w.end));
    let monthly = compile_monthly(index, w)
        .map_err(|e| errors.extend(e))
        .ok()
        .flatten();
    let tz = match tz {
        Ok(tz) => Some(tz),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let (Some(start), Some(end), Some(tz), true) = (start, end, tz, errors.is_empty()) else {
        return Err(errors);
    };
    let mut days = [w.days.is_empty(); 7];
    for d in &w.days {
        days[weekday_index(d.to_jiff())] = true;
    }
    Ok(Window {
        days,
        monthly,
        start,
        end,
        tz,
        zone: w.time_zone.clone(),
    })
}

impl Schedule {
    /// Compiles windows and blackouts; fails on unknown time zones, bad times of
    /// day, or blackouts that end before they start (the first such problem).
    pub fn new(windows: &[MaintenanceWindow], blackouts: &[Blackout]) -> Result<Self, WindowError> {
        Schedule::parse(windows, blackouts).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Compiles windows and blackouts, reporting every problem (never an
    /// empty list on `Err`). This is the one place that parses a time of day,
    /// looks up a time zone and checks a blackout's order.
    pub fn parse(
        windows: &[MaintenanceWindow],
        blackouts: &[Blackout],
    ) -> Result<Self, Vec<WindowError>> {
        let mut out = Schedule::default();
        let mut errors = Vec::new();
        for (index, w) in windows.iter().enumerate() {
            match compile_window(index, w) {
                Ok(window) => out.windows.push(window),
                Err(e) => errors.extend(e),
            }
        }
        for (index, b) in blackouts.iter().enumerate() {
            if b.end.0 <= b.start.0 {
                errors.push(WindowError::Blackout { index });
                continue;
            }
            out.blackouts.push(Cut {
                start: b.start.0,
                end: b.end.0,
                reason: b.reason.clone(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        out.blackouts.sort_by_key(|c| c.start);
        Ok(out)
    }

    /// A schedule that is always open.
    pub fn always_open() -> Self {
        Schedule::default()
    }

    /// True when no windows are configured (always open outside blackouts).
    pub fn is_always_open(&self) -> bool {
        self.windows.is_empty()
    }

    /// The blackout holding at `at`, with its reason and end.
    pub fn blackout_at(&self, at: Timestamp) -> Option<(Timestamp, Option<&str>)> {
        self.blackouts
            .iter()
            .find(|c| c.start <= at && at < c.end)
            .map(|c| (c.end, c.reason.as_deref()))
    }

    /// Merged open intervals (blackouts cut out) overlapping `[from - 2d, from + days]`,
    /// sorted. Intervals ending after the returned `safe` instant may be truncated.
    fn intervals(&self, from: Timestamp, days: i64) -> (Vec<Interval>, Timestamp) {
        let lo = from
            .saturating_sub(SignedDuration::from_hours(48))
            .unwrap_or(from);
        let hi = from
            .saturating_add(SignedDuration::from_hours(24 * days))
            .unwrap_or(Timestamp::MAX);
        // Occurrences not generated start on a later local date: at least
        // `days - 2` days after `from` whatever the offset.
        let safe = from
            .saturating_add(SignedDuration::from_hours(24 * (days - 2)))
            .unwrap_or(Timestamp::MAX);
        let mut raw: Vec<Interval> = Vec::new();
        if self.windows.is_empty() {
            raw.push(Interval {
                start: lo,
                end: hi,
                zone: None,
            });
        }
        for w in &self.windows {
            let first: Date = w.tz.to_datetime(lo).date();
            let mut day = first.yesterday().unwrap_or(first);
            let last: Date = w.tz.to_datetime(hi).date();
            while day <= last {
                if w.opens_on(day) {
                    let end_day = if w.end <= w.start {
                        day.tomorrow().ok()
                    } else {
                        Some(day)
                    };
                    let s = resolve_local(&w.tz, day.to_datetime(w.start));
                    let e = end_day.and_then(|d| resolve_local(&w.tz, d.to_datetime(w.end)));
                    if let (Some(s), Some(e)) = (s, e)
                        && s < e
                        && e > lo
                    {
                        raw.push(Interval {
                            start: s,
                            end: e,
                            zone: Some(w.zone.clone()),
                        });
                    }
                }
                match day.tomorrow() {
                    Ok(d) => day = d,
                    Err(_) => break,
                }
            }
        }
        raw.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut merged: Vec<Interval> = Vec::with_capacity(raw.len());
        for iv in raw {
            match merged.last_mut() {
                Some(last) if iv.start <= last.end => {
                    if iv.end > last.end {
                        last.end = iv.end;
                    }
                }
                _ => merged.push(iv),
            }
        }
        if self.blackouts.is_empty() {
            return (merged, safe);
        }
        let mut out = Vec::with_capacity(merged.len());
        for iv in merged {
            let mut pieces = vec![iv];
            for c in &self.blackouts {
                let mut next = Vec::with_capacity(pieces.len() + 1);
                for p in pieces {
                    if c.end <= p.start || c.start >= p.end {
                        next.push(p);
                        continue;
                    }
                    if p.start < c.start {
                        next.push(Interval {
                            start: p.start,
                            end: c.start,
                            zone: p.zone.clone(),
                        });
                    }
                    if c.end < p.end {
                        next.push(Interval {
                            start: c.end,
                            end: p.end,
                            zone: p.zone.clone(),
                        });
                    }
                }
                pieces = next;
            }
            out.extend(pieces);
        }
        (out, safe)
    }

    /// The first open interval that ends after `at` and satisfies `accept`, looking
    /// further ahead until [`HORIZON_DAYS`].
    fn find(&self, at: Timestamp, accept: impl Fn(&Interval) -> bool) -> Option<Interval> {
        let mut days = 9;
        loop {
            let (ivs, safe) = self.intervals(at, days);
            let at_horizon = days >= HORIZON_DAYS;
            for iv in ivs.into_iter().filter(|iv| iv.end > at) {
                // Beyond `safe` the list may be incomplete or cut short: look further.
                if iv.start >= safe || (iv.end >= safe && !at_horizon) {
                    break;
                }
                if accept(&iv) {
                    return Some(iv);
                }
            }
            if at_horizon {
                return None;
            }
            days = (days * 4).min(HORIZON_DAYS);
        }
    }

    /// Whether work may start at `at` (inside a window, outside blackouts).
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.current_window(at).is_some()
    }

    /// The open interval containing `at`.
    pub fn current_window(&self, at: Timestamp) -> Option<Interval> {
        self.find(at, |_| true).filter(|iv| iv.contains(at))
    }

    /// The open interval containing `at`, else the next one.
    pub fn next_opening(&self, at: Timestamp) -> Option<Interval> {
        self.find(at, |_| true)
    }

    /// Time left in the open interval containing `at`; `None` when closed.
    pub fn remaining(&self, at: Timestamp) -> Option<Duration> {
        self.current_window(at)
            .and_then(|iv| iv.end.duration_since(at).try_into().ok())
    }

    /// The first instant at or after `at` that is open with at least `min_remaining`
    /// left, and the interval it lies in.
    pub fn next_usable(
        &self,
        at: Timestamp,
        min_remaining: Duration,
    ) -> Option<(Timestamp, Interval)> {
        let need = SignedDuration::try_from(min_remaining).unwrap_or(SignedDuration::MAX);
        let iv = self.find(at, |iv| {
            let from = iv.start.max(at);
            iv.end.duration_since(from) >= need
        })?;
        Some((iv.start.max(at), iv))
    }
}

/// Short weekday name.
pub fn weekday_name(d: jiff::civil::Weekday) -> &'static str {
    Weekday::ALL
        .iter()
        .find(|w| w.to_jiff() == d)
        .map(|w| match w {
            Weekday::Mon => "Mon",
            Weekday::Tue => "Tue",
            Weekday::Wed => "Wed",
            Weekday::Thu => "Thu",
            Weekday::Fri => "Fri",
            Weekday::Sat => "Sat",
            Weekday::Sun => "Sun",
        })
        .unwrap_or("?")
}

/// Formats an instant for people, in `zone` when it is known: `Tue 2026-12-01 22:00 Europe/Zurich`.
pub fn human_time(at: Timestamp, zone: Option<&str>) -> String {
    let zone = zone.unwrap_or("UTC");
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    let dt = tz.to_datetime(at);
    format!(
        "{} {} {:02}:{:02} {}",
        weekday_name(dt.weekday()),
        dt.date(),
        dt.hour(),
        dt.minute(),
        zone
    )
}

#[cfg(test)]
#[path = "window_monthly_tests.rs"]
mod monthly_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hhmm_parsing() {
        let t = |h, m| Time::new(h, m, 0, 0).ok();
        assert_eq!(parse_time_of_day("22:00"), t(22, 0));
        assert_eq!(parse_time_of_day("00:00"), t(0, 0));
        assert_eq!(parse_time_of_day("24:00"), None);
        assert_eq!(parse_time_of_day("7:00"), None);
        assert_eq!(parse_time_of_day("07:60"), None);
    }

    #[test]
    fn window_lengths_wrap_past_midnight() {
        let len = |s, e| window_length(&win(&[], s, e, "UTC")).map(|d| d.as_secs() / 60);
        assert_eq!(len("22:00", "05:00"), Some(7 * 60));
        assert_eq!(len("01:00", "06:00"), Some(5 * 60));
        assert_eq!(len("00:00", "00:00"), Some(24 * 60));
        assert_eq!(len("25:00", "05:00"), None);
    }

    #[test]
    fn parse_reports_every_problem() {
        let t = |s: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(s.parse().unwrap());
        let errors = Schedule::parse(
            &[
                win(&[], "25:00", "05:00", "Mars/Olympus"),
                win(&[], "22:00", "05:00", "UTC"),
            ],
            &[Blackout {
                start: t("2026-12-27T00:00:00Z"),
                end: t("2026-12-24T00:00:00Z"),
                reason: None,
            }],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(matches!(errors[2], WindowError::Blackout { index: 0 }));
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KTime;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn win(days: &[Weekday], start: &str, end: &str, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            time_zone: tz.into(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        }
    }

    fn sched(ws: &[MaintenanceWindow]) -> Schedule {
        Schedule::new(ws, &[]).unwrap()
    }

    use Weekday::*;
    const WEEKDAYS: &[Weekday] = &[Mon, Tue, Wed, Thu, Fri];

    #[test]
    fn overnight_window_belongs_to_its_start_day() {
        let s = sched(&[win(&[Fri], "22:00", "05:00", "Europe/Zurich")]);
        // 2026-11-28 is a Saturday; 03:00 CET is 02:00Z.
        assert!(s.is_open(ts("2026-11-28T02:00:00Z")));
        // Monday 03:00 is not: the window starts Fridays only.
        assert!(!s.is_open(ts("2026-11-30T02:00:00Z")));
        // Friday 21:59 closed, 22:00 open, Saturday 05:00 closed (end exclusive).
        assert!(!s.is_open(ts("2026-11-27T20:59:00Z")));
        assert!(s.is_open(ts("2026-11-27T21:00:00Z")));
        assert!(!s.is_open(ts("2026-11-28T04:00:00Z")));
        let iv = s.current_window(ts("2026-11-28T02:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-11-27T21:00:00Z"));
        assert_eq!(iv.end, ts("2026-11-28T04:00:00Z"));
        assert_eq!(
            s.remaining(ts("2026-11-28T02:00:00Z")),
            Some(Duration::from_secs(7200))
        );
    }

    #[test]
    fn next_opening_finds_the_next_weekday_window() {
        let s = sched(&[win(WEEKDAYS, "22:00", "05:00", "Europe/Zurich")]);
        // Saturday noon: the next window opens Monday 22:00.
        let iv = s.next_opening(ts("2026-11-28T11:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-11-30T21:00:00Z"));
        assert_eq!(iv.zone.as_deref(), Some("Europe/Zurich"));
        // Inside a window, next_opening is the current one.
        let iv = s.next_opening(ts("2026-11-27T22:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-11-27T21:00:00Z"));
    }

    #[test]
    fn spring_forward_zurich_overnight_window_is_six_hours() {
        // Clocks go 02:00 -> 03:00 on Sunday 2026-03-29.
        let s = sched(&[win(&[Sat], "22:00", "05:00", "Europe/Zurich")]);
        let iv = s.next_opening(ts("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-03-28T21:00:00Z")); // 22:00 CET
        assert_eq!(iv.end, ts("2026-03-29T03:00:00Z")); // 05:00 CEST
        assert_eq!(
            iv.end.duration_since(iv.start),
            SignedDuration::from_hours(6)
        );
    }

    #[test]
    fn fall_back_zurich_overnight_window_is_eight_hours() {
        // Clocks go 03:00 -> 02:00 on Sunday 2026-10-25.
        let s = sched(&[win(&[Sat], "22:00", "05:00", "Europe/Zurich")]);
        let iv = s.next_opening(ts("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-10-24T20:00:00Z")); // 22:00 CEST
        assert_eq!(iv.end, ts("2026-10-25T04:00:00Z")); // 05:00 CET
        assert_eq!(
            iv.end.duration_since(iv.start),
            SignedDuration::from_hours(8)
        );
    }

    #[test]
    fn start_in_skipped_hour_moves_to_end_of_gap() {
        let s = sched(&[win(&[Sun], "02:30", "04:00", "Europe/Zurich")]);
        let iv = s.next_opening(ts("2026-03-28T12:00:00Z")).unwrap();
        // 02:30 does not exist; the window opens at 03:00 CEST = 01:00Z.
        assert_eq!(iv.start, ts("2026-03-29T01:00:00Z"));
        assert_eq!(iv.end, ts("2026-03-29T02:00:00Z"));
    }

    #[test]
    fn start_in_repeated_hour_uses_first_occurrence() {
        let s = sched(&[win(&[Sun], "02:30", "04:00", "Europe/Zurich")]);
        let iv = s.next_opening(ts("2026-10-24T12:00:00Z")).unwrap();
        // First 02:30 is CEST (+02:00) = 00:30Z; 04:00 CET = 03:00Z.
        assert_eq!(iv.start, ts("2026-10-25T00:30:00Z"));
        assert_eq!(iv.end, ts("2026-10-25T03:00:00Z"));
    }

    #[test]
    fn new_york_transitions() {
        // Spring: 2026-03-08 02:00 EST -> 03:00 EDT. Fall: 2026-11-01 02:00 EDT -> 01:00 EST.
        let s = sched(&[win(&[Sat], "23:00", "06:00", "America/New_York")]);
        let spring = s.next_opening(ts("2026-03-07T12:00:00Z")).unwrap();
        assert_eq!(spring.start, ts("2026-03-08T04:00:00Z"));
        assert_eq!(spring.end, ts("2026-03-08T10:00:00Z"));
        assert_eq!(
            spring.end.duration_since(spring.start),
            SignedDuration::from_hours(6)
        );
        let fall = s.next_opening(ts("2026-10-31T12:00:00Z")).unwrap();
        assert_eq!(fall.start, ts("2026-11-01T03:00:00Z"));
        assert_eq!(fall.end, ts("2026-11-01T11:00:00Z"));
        assert_eq!(
            fall.end.duration_since(fall.start),
            SignedDuration::from_hours(8)
        );
        // Gap start: 02:15 on the spring night becomes 03:00 EDT = 07:00Z.
        let g = sched(&[win(&[Sun], "02:15", "05:00", "America/New_York")]);
        assert_eq!(
            g.next_opening(ts("2026-03-07T12:00:00Z")).unwrap().start,
            ts("2026-03-08T07:00:00Z")
        );
        // Fold start: 01:30 on the fall night is the first (EDT) one = 05:30Z.
        let f = sched(&[win(&[Sun], "01:30", "05:00", "America/New_York")]);
        assert_eq!(
            f.next_opening(ts("2026-10-31T12:00:00Z")).unwrap().start,
            ts("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn full_day_window_and_end_before_start() {
        let full = sched(&[win(&[Wed], "00:00", "00:00", "UTC")]);
        let iv = full.next_opening(ts("2026-12-01T12:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-12-02T00:00:00Z"));
        assert_eq!(iv.end, ts("2026-12-03T00:00:00Z"));
        // Full day in Zurich on the fall-back day lasts 25 h.
        let z = sched(&[win(&[Sun], "00:00", "00:00", "Europe/Zurich")]);
        let iv = z.next_opening(ts("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(
            iv.end.duration_since(iv.start),
            SignedDuration::from_hours(25)
        );
        // end < start wraps into the next day.
        let wrap = sched(&[win(&[Wed], "18:00", "02:00", "UTC")]);
        let iv = wrap.next_opening(ts("2026-12-01T12:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-12-02T18:00:00Z"));
        assert_eq!(iv.end, ts("2026-12-03T02:00:00Z"));
    }

    #[test]
    fn every_day_full_windows_merge_into_one_long_interval() {
        let s = sched(&[win(&[], "00:00", "00:00", "UTC")]);
        let r = s.remaining(ts("2026-12-01T12:00:00Z")).unwrap();
        assert!(r > Duration::from_secs(30 * 86400), "{r:?}");
    }

    #[test]
    fn union_of_touching_windows() {
        let s = sched(&[
            win(&[Mon], "22:00", "02:00", "UTC"),
            win(&[Tue], "02:00", "04:00", "UTC"),
        ]);
        // Monday 2026-11-30 23:00Z: open until Tuesday 04:00.
        assert_eq!(
            s.remaining(ts("2026-11-30T23:00:00Z")),
            Some(Duration::from_secs(5 * 3600))
        );
    }

    fn blackout(start: &str, end: &str) -> Blackout {
        Blackout {
            start: KTime(ts(start)),
            end: KTime(ts(end)),
            reason: Some("holidays".into()),
        }
    }

    #[test]
    fn blackouts_override_windows_and_are_skipped() {
        let s = Schedule::new(
            &[win(WEEKDAYS, "22:00", "05:00", "Europe/Zurich")],
            &[blackout(
                "2026-12-24T00:00:00+01:00",
                "2026-12-27T00:00:00+01:00",
            )],
        )
        .unwrap();
        // Thu 2026-12-24 23:00 local is inside the blackout.
        assert!(!s.is_open(ts("2026-12-24T22:00:00Z")));
        assert_eq!(
            s.blackout_at(ts("2026-12-24T22:00:00Z")).unwrap().1,
            Some("holidays")
        );
        // Wed 23 Dec window is cut at midnight local.
        let iv = s.current_window(ts("2026-12-23T22:00:00Z")).unwrap();
        assert_eq!(iv.end, ts("2026-12-23T23:00:00Z"));
        // Next opening from Christmas Eve: Sunday 27th is not a weekday; Monday 28th 22:00.
        let iv = s.next_opening(ts("2026-12-24T12:00:00Z")).unwrap();
        assert_eq!(iv.start, ts("2026-12-28T21:00:00Z"));
    }

    #[test]
    fn next_usable_respects_min_remaining() {
        let s = sched(&[win(&[], "22:00", "23:00", "UTC")]);
        // 22:40 has 20 min left, not enough for 37 min: next day 22:00.
        let (at, _) = s
            .next_usable(ts("2026-12-01T22:40:00Z"), Duration::from_secs(37 * 60))
            .unwrap();
        assert_eq!(at, ts("2026-12-02T22:00:00Z"));
        // 22:10 with 50 min left is usable right away.
        let (at, _) = s
            .next_usable(ts("2026-12-01T22:10:00Z"), Duration::from_secs(37 * 60))
            .unwrap();
        assert_eq!(at, ts("2026-12-01T22:10:00Z"));
        // A window shorter than needed is never usable.
        assert!(
            s.next_usable(ts("2026-12-01T00:00:00Z"), Duration::from_secs(2 * 3600))
                .is_none()
        );
    }

    #[test]
    fn always_open_minus_blackouts() {
        let s = Schedule::new(
            &[],
            &[blackout("2026-12-24T00:00:00Z", "2026-12-27T00:00:00Z")],
        )
        .unwrap();
        assert!(s.is_open(ts("2026-12-01T00:00:00Z")));
        assert!(!s.is_open(ts("2026-12-25T00:00:00Z")));
        assert_eq!(
            s.next_opening(ts("2026-12-25T00:00:00Z")).unwrap().start,
            ts("2026-12-27T00:00:00Z")
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            Schedule::new(&[win(&[], "22:00", "05:00", "Mars/Olympus")], &[]),
            Err(WindowError::TimeZone { .. })
        ));
        assert!(matches!(
            Schedule::new(&[win(&[], "25:00", "05:00", "UTC")], &[]),
            Err(WindowError::TimeOfDay { field: "start", .. })
        ));
        assert!(matches!(
            Schedule::new(
                &[],
                &[blackout("2026-12-27T00:00:00Z", "2026-12-24T00:00:00Z")]
            ),
            Err(WindowError::Blackout { index: 0 })
        ));
        // Extreme instants do not panic.
        let s = sched(&[win(WEEKDAYS, "22:00", "05:00", "Europe/Zurich")]);
        let _ = s.next_opening(Timestamp::MAX);
        let _ = s.next_opening(Timestamp::MIN);
    }

    #[test]
    fn human_time_names_day_and_zone() {
        assert_eq!(
            human_time(ts("2026-12-01T21:00:00Z"), Some("Europe/Zurich")),
            "Tue 2026-12-01 22:00 Europe/Zurich"
        );
    }
}

//! Monthly windows (`weeksOfMonth`, `offsetDays`): month boundaries, months
//! with four or five occurrences, `Last`, daylight-saving changes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::api::Weekday::{self, *};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn week(n: i32) -> IntOrString {
    IntOrString::Int(n)
}

fn last() -> IntOrString {
    IntOrString::String("Last".into())
}

fn monthly(
    days: &[Weekday],
    weeks: Vec<IntOrString>,
    offset: u32,
    times: (&str, &str),
    tz: &str,
) -> Schedule {
    let w = MaintenanceWindow {
        days: days.to_vec(),
        start: times.0.into(),
        end: times.1.into(),
        time_zone: tz.into(),
        weeks_of_month: weeks,
        offset_days: offset,
    };
    Schedule::new(&[w], &[]).unwrap()
}

/// The starts of the next `n` openings from `from`.
fn starts(s: &Schedule, from: &str, n: usize) -> Vec<Timestamp> {
    let mut at = ts(from);
    let mut out = Vec::new();
    for _ in 0..n {
        let iv = s.next_opening(at).unwrap();
        out.push(iv.start);
        at = iv.end;
    }
    out
}

#[test]
fn second_tuesday_opens_once_a_month() {
    let s = monthly(&[Tue], vec![week(2)], 0, ("22:00", "04:00"), "UTC");
    assert_eq!(
        starts(&s, "2026-11-01T00:00:00Z", 3),
        [
            ts("2026-11-10T22:00:00Z"),
            ts("2026-12-08T22:00:00Z"),
            ts("2027-01-12T22:00:00Z"),
        ]
    );
    // The first Tuesday of December is not a second Tuesday.
    assert!(!s.is_open(ts("2026-12-01T23:00:00Z")));
}

#[test]
fn patch_tuesday_plus_three_is_the_friday_after_and_ends_after_midnight() {
    let s = monthly(&[Tue], vec![week(2)], 3, ("22:00", "04:00"), "UTC");
    let iv = s.next_opening(ts("2026-12-01T00:00:00Z")).unwrap();
    assert_eq!(iv.start, ts("2026-12-11T22:00:00Z"));
    assert_eq!(iv.end, ts("2026-12-12T04:00:00Z"));
    // Open on Saturday at 02:00 (the window started Friday), not Saturday night.
    assert!(s.is_open(ts("2026-12-12T02:00:00Z")));
    assert!(!s.is_open(ts("2026-12-12T22:30:00Z")));
    // Patch Tuesday itself is not open.
    assert!(!s.is_open(ts("2026-12-08T23:00:00Z")));
}

#[test]
fn an_offset_past_the_month_end_lands_in_the_next_month() {
    // Second Tuesday of January 2027 is the 12th; + 20 days is 1 February.
    let s = monthly(&[Tue], vec![week(2)], 20, ("01:00", "03:00"), "UTC");
    let got = starts(&s, "2027-01-02T00:00:00Z", 2);
    assert_eq!(
        got,
        [ts("2027-02-01T01:00:00Z"), ts("2027-03-01T01:00:00Z")]
    );
    // Last Tuesday of December 2026 (the 29th) + 5 days is Sunday 3 January 2027.
    let s = monthly(&[Tue], vec![last()], 5, ("01:00", "03:00"), "UTC");
    assert_eq!(
        s.next_opening(ts("2026-12-20T00:00:00Z")).unwrap().start,
        ts("2027-01-03T01:00:00Z")
    );
}

#[test]
fn a_fifth_occurrence_skips_months_with_four() {
    // December 2026 has five Tuesdays; January and February 2027 four; March five.
    let s = monthly(&[Tue], vec![week(5)], 0, ("10:00", "12:00"), "UTC");
    assert_eq!(
        starts(&s, "2026-12-01T00:00:00Z", 2),
        [ts("2026-12-29T10:00:00Z"), ts("2027-03-30T10:00:00Z")]
    );
    // Last is the fourth when there is no fifth.
    let s = monthly(&[Tue], vec![last()], 0, ("10:00", "12:00"), "UTC");
    assert_eq!(
        starts(&s, "2026-12-01T00:00:00Z", 3),
        [
            ts("2026-12-29T10:00:00Z"),
            ts("2027-01-26T10:00:00Z"),
            ts("2027-02-23T10:00:00Z"),
        ]
    );
}

#[test]
fn last_in_february_of_a_leap_year() {
    // February 2028 has 29 days and five Tuesdays; its last Monday is the 28th.
    let tue = monthly(&[Tue], vec![last()], 0, ("00:00", "00:00"), "UTC");
    assert_eq!(
        tue.next_opening(ts("2028-02-01T12:00:00Z")).unwrap().start,
        ts("2028-02-29T00:00:00Z")
    );
    let mon = monthly(&[Mon], vec![last()], 1, ("00:00", "00:00"), "UTC");
    // Last Monday + 1 day: 31 January + 1 is 1 February, then 28 February + 1
    // is Tuesday the 29th, not 1 March.
    assert_eq!(
        starts(&mon, "2028-01-15T00:00:00Z", 2),
        [ts("2028-02-01T00:00:00Z"), ts("2028-02-29T00:00:00Z")]
    );
}

#[test]
fn several_days_and_weeks_combine() {
    // First and third Monday and Thursday of December 2026.
    let s = monthly(
        &[Mon, Thu],
        vec![week(1), week(3)],
        0,
        ("20:00", "22:00"),
        "UTC",
    );
    let days: Vec<String> = starts(&s, "2026-12-01T00:00:00Z", 4)
        .iter()
        .map(|t| t.to_string()[..10].to_string())
        .collect();
    assert_eq!(
        days,
        ["2026-12-03", "2026-12-07", "2026-12-17", "2026-12-21"]
    );
}

#[test]
fn spring_forward_berlin_last_sunday_of_march() {
    // 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist and becomes 03:00 CEST.
    let s = monthly(&[Sun], vec![last()], 0, ("02:30", "04:00"), "Europe/Berlin");
    let iv = s.next_opening(ts("2026-03-01T00:00:00Z")).unwrap();
    assert_eq!(iv.start, ts("2026-03-29T01:00:00Z"));
    assert_eq!(iv.end, ts("2026-03-29T02:00:00Z"));
}

#[test]
fn fall_back_berlin_window_spanning_the_repeated_hour() {
    // 2026-10-25 03:00 CEST -> 02:00 CET: 01:30-04:00 lasts 3.5 h of wall clock + 1 h.
    let s = monthly(&[Sun], vec![last()], 0, ("01:30", "04:00"), "Europe/Berlin");
    let iv = s.next_opening(ts("2026-10-01T00:00:00Z")).unwrap();
    assert_eq!(iv.start, ts("2026-10-24T23:30:00Z")); // 01:30 CEST
    assert_eq!(iv.end, ts("2026-10-25T03:00:00Z")); // 04:00 CET
    // An overnight window from the Saturday before, by offset from the fourth Friday.
    let s = monthly(
        &[Fri],
        vec![week(4)],
        1,
        ("22:00", "05:00"),
        "Europe/Berlin",
    );
    let iv = s.next_opening(ts("2026-10-01T00:00:00Z")).unwrap();
    assert_eq!(iv.start, ts("2026-10-24T20:00:00Z")); // Sat 22:00 CEST
    assert_eq!(iv.end, ts("2026-10-25T04:00:00Z")); // Sun 05:00 CET: 8 h
}

#[test]
fn new_york_offset_onto_the_spring_forward_day() {
    // First Saturday of March 2026 is the 7th; + 1 is Sunday the 8th, when 02:15 is skipped.
    let s = monthly(
        &[Sat],
        vec![week(1)],
        1,
        ("02:15", "05:00"),
        "America/New_York",
    );
    let iv = s.next_opening(ts("2026-03-01T00:00:00Z")).unwrap();
    assert_eq!(iv.start, ts("2026-03-08T07:00:00Z")); // 03:00 EDT
    assert_eq!(iv.end, ts("2026-03-08T09:00:00Z")); // 05:00 EDT
    // The fall-back Sunday, 1 November 2026, is the first Sunday: 01:30 is the EDT one.
    let s = monthly(
        &[Sun],
        vec![week(1)],
        0,
        ("01:30", "03:00"),
        "America/New_York",
    );
    let iv = s.next_opening(ts("2026-10-20T00:00:00Z")).unwrap();
    assert_eq!(iv.start, ts("2026-11-01T05:30:00Z"));
    assert_eq!(iv.end, ts("2026-11-01T08:00:00Z"));
}

#[test]
fn next_usable_skips_to_next_month_when_the_window_is_too_short_now() {
    let s = monthly(&[Tue], vec![week(2)], 3, ("22:00", "04:00"), "UTC");
    let need = Duration::from_secs(3600);
    // Friday 11 December 03:30: 30 min left, so the next one is in January.
    let (at, _) = s.next_usable(ts("2026-12-12T03:30:00Z"), need).unwrap();
    assert_eq!(at, ts("2027-01-15T22:00:00Z"));
}

fn problems(w: MaintenanceWindow) -> Vec<WindowError> {
    Schedule::parse(&[w], &[]).unwrap_err()
}

fn base() -> MaintenanceWindow {
    MaintenanceWindow {
        days: vec![Tue],
        start: "22:00".into(),
        end: "04:00".into(),
        time_zone: "UTC".into(),
        weeks_of_month: vec![week(2)],
        offset_days: 3,
    }
}

#[test]
fn impossible_monthly_windows_are_refused_with_their_field() {
    let mut w = base();
    w.weeks_of_month = vec![week(2), week(0), IntOrString::String("2nd".into()), week(2)];
    let e = problems(w);
    let pos: Vec<(usize, String)> = e
        .iter()
        .filter_map(|e| match e {
            WindowError::WeekOfMonth { pos, why, .. } => Some((*pos, why.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(pos.len(), 3, "{e:?}");
    assert_eq!(pos[0].0, 1);
    assert_eq!(pos[1].0, 2);
    assert!(pos[2].1.contains("twice"), "{pos:?}");
    let mut w = base();
    w.days.clear();
    assert!(matches!(
        problems(w)[..],
        [WindowError::Monthly {
            field: "weeksOfMonth",
            ..
        }]
    ));
    let mut w = base();
    w.offset_days = 28;
    assert!(matches!(
        problems(w)[..],
        [WindowError::Monthly {
            field: "offsetDays",
            ..
        }]
    ));
    let mut w = base();
    w.weeks_of_month.clear();
    assert!(matches!(
        problems(w)[..],
        [WindowError::Monthly {
            field: "offsetDays",
            ..
        }]
    ));
    // A long text is not echoed.
    let mut w = base();
    w.weeks_of_month = vec![IntOrString::String("x".repeat(300))];
    let text = problems(w)[0].to_string();
    assert!(
        text.contains("<300 characters>") && !text.contains("xxx"),
        "{text}"
    );
    // The largest offset is fine.
    let mut w = base();
    w.offset_days = MAX_OFFSET_DAYS;
    assert!(Schedule::parse(&[w], &[]).is_ok());
}

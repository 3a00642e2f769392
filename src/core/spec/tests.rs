use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::api::{self, MaintenanceWindow, PatchSpec};
use crate::core::budget::MaxUnavailable;

#[test]
fn suggests_close_time_zone_names() {
    assert_eq!(
        suggest_time_zone("Europe/Zurch").as_deref(),
        Some("Europe/Zurich")
    );
    assert_eq!(
        suggest_time_zone("america/new_york").as_deref(),
        Some("America/New_York")
    );
    assert_eq!(suggest_time_zone("Nowhere/Xyzzyqwerty"), None);
}

#[test]
fn every_default_is_a_valid_duration() {
    let re = regex::Regex::new(api::DURATION_PATTERN).unwrap();
    for d in [
        api::DEFAULT_DRAIN_TIMEOUT,
        api::DEFAULT_REBOOT_TIMEOUT,
        api::DEFAULT_PATCH_TIMEOUT,
        api::DEFAULT_SETTLE,
    ] {
        assert!(crate::core::duration::parse(d).is_ok(), "{d}");
        assert!(re.is_match(d), "{d} does not match the CRD's pattern");
    }
}

#[test]
fn a_default_spec_parses_to_the_documented_defaults() {
    let p = parse(&PatchPolicySpec::new("r1"));
    assert!(p.is_valid(), "{:?}", p.problems);
    assert_eq!(p.spec.drain_timeout, Duration::from_secs(15 * 60));
    assert_eq!(p.spec.reboot_timeout, Duration::from_secs(20 * 60));
    assert_eq!(p.spec.settle, Duration::from_secs(120));
    assert_eq!(p.spec.patch_timeout, Duration::ZERO);
    assert_eq!(p.spec.lead_time, Duration::ZERO);
    assert_eq!(p.spec.min_remaining, Duration::from_secs(37 * 60));
    assert_eq!(p.spec.max_unavailable, MaxUnavailable::Count(1));
    assert!(p.spec.schedule.is_always_open());
    assert!(p.spec.patch.is_none());
}

#[test]
fn patch_adds_its_timeout_to_the_window_needed() {
    let mut spec = PatchPolicySpec::new("r1");
    spec.patch = Some(PatchSpec {
        command: vec!["true".into()],
        timeout: api::DEFAULT_PATCH_TIMEOUT.into(),
    });
    let p = parse(&spec);
    assert_eq!(p.spec.patch_timeout, Duration::from_secs(30 * 60));
    assert_eq!(p.spec.min_remaining, Duration::from_secs(67 * 60));
    assert_eq!(p.spec.patch.map(|r| r.timeout_seconds), Some(30 * 60));
}

#[test]
fn bad_fields_fall_back_to_defaults_and_are_all_reported() {
    let mut spec = PatchPolicySpec::new("r1");
    spec.drain.timeout = "soon".into();
    spec.reboot.timeout = "0s".into();
    spec.rollout.max_unavailable = IntOrString::String("3".into());
    spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "25:00".into(),
        end: "05:00".into(),
        time_zone: "Europe/Zurch".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    let p = parse(&spec);
    let paths: Vec<&str> = p.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.maintenanceWindows[0].start",
            "spec.maintenanceWindows[0].timeZone",
            "spec.rollout.maxUnavailable",
            "spec.drain.timeout",
            "spec.reboot.timeout",
        ]
    );
    assert!(
        p.problems[1]
            .message
            .contains("did you mean Europe/Zurich?")
    );
    assert!(p.problems[2].message.contains("number in quotes"));
    // Unparsable: the default. Parsed but refused (zero): kept as given.
    assert_eq!(p.spec.drain_timeout, Duration::from_secs(15 * 60));
    assert_eq!(p.spec.reboot_timeout, Duration::ZERO);
    assert_eq!(p.spec.max_unavailable, MaxUnavailable::Count(1));
    assert!(p.spec.schedule.is_always_open());
}

#[test]
fn added_problems_skip_paths_already_reported() {
    let mut spec = PatchPolicySpec::new("r1");
    spec.rollout.settle = "later".into();
    let mut p = parse(&spec);
    p.add_problems([
        problem("spec.rollout.settle", "does not match the pattern"),
        problem("spec.revision", "is too long"),
    ]);
    let paths: Vec<&str> = p.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["spec.rollout.settle", "spec.revision"]);
    assert!(p.problems[0].message.contains("invalid duration"));
}

#[test]
fn monthly_window_problems_name_their_field() {
    let mut spec = PatchPolicySpec::new("r1");
    spec.maintenance_windows = vec![
        MaintenanceWindow {
            days: vec![],
            start: "22:00".into(),
            end: "04:00".into(),
            time_zone: "UTC".into(),
            weeks_of_month: vec![IntOrString::Int(2), IntOrString::Int(2)],
            offset_days: 30,
        },
        MaintenanceWindow {
            days: vec![api::Weekday::Tue],
            start: "22:00".into(),
            end: "04:00".into(),
            time_zone: "UTC".into(),
            weeks_of_month: vec![IntOrString::String("Lst".into())],
            offset_days: 0,
        },
    ];
    let p = parse(&spec);
    let paths: Vec<&str> = p.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.maintenanceWindows[0].weeksOfMonth[1]",
            "spec.maintenanceWindows[0].weeksOfMonth",
            "spec.maintenanceWindows[0].offsetDays",
            "spec.maintenanceWindows[1].weeksOfMonth[0]",
        ],
        "{:?}",
        p.problems
    );
    assert!(p.problems[3].message.contains("1, 2, 3, 4, 5 or Last"));
    // A broken window leaves the schedule always open (nothing starts: the spec is invalid).
    assert!(p.spec.schedule.is_always_open());
}

#[test]
fn revision_is_optional_only_on_a_standing_policy() {
    let mut spec = PatchPolicySpec::new("");
    let paths = |s: &PatchPolicySpec| -> Vec<String> {
        parse(s).problems.into_iter().map(|p| p.path).collect()
    };
    assert_eq!(paths(&spec), ["spec.revision"]);
    spec.trigger = api::Trigger::RebootRequired;
    assert!(paths(&spec).is_empty());
    // Spaces are refused either way.
    spec.revision = " ".into();
    assert_eq!(paths(&spec), ["spec.revision"]);
}

#[test]
fn min_round_interval_is_parsed_and_checked() {
    let mut spec = PatchPolicySpec::new("r1");
    spec.rollout.min_round_interval = Some("24h".into());
    let p = parse(&spec);
    assert!(p.is_valid(), "{:?}", p.problems);
    assert_eq!(p.spec.min_round_interval, Duration::from_secs(24 * 3600));
    spec.rollout.min_round_interval = Some("a day".into());
    let p = parse(&spec);
    assert_eq!(
        p.problems
            .iter()
            .map(|p| p.path.as_str())
            .collect::<Vec<_>>(),
        ["spec.rollout.minRoundInterval"]
    );
}

//! One table, three judges: every case goes through `sofort validate`, the
//! CRD (its schema's bounds and its CEL rules, evaluated locally as the API
//! server does), and the controller (decoding, then `decide()`), and the
//! three must agree. The CRD cannot check everything (time-zone names, for
//! one), so a case may be `Semantic`: the API server admits it and both
//! `sofort validate` and the controller refuse it.

use serde_json::{Value, json};
use sofort::api::{PatchPolicy, decode_policy};
use sofort::controller::ParsedPolicy;
use sofort::core::rollout::{NodeView, decide_with};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// All three accept.
    Valid,
    /// All three refuse.
    Refused,
    /// The CRD admits it; `sofort validate` and the controller refuse it.
    Semantic,
}
use Expect::*;

fn base() -> Value {
    json!({
        "apiVersion": "sofort.dev/v1alpha1",
        "kind": "PatchPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "revision": "2026-11-27",
            "maintenanceWindows": [{"days": ["Sat"], "start": "01:00", "end": "06:00", "timeZone": "Europe/Zurich"}],
            "rollout": {"maxUnavailable": 2, "settle": "2m"},
            "drain": {"timeout": "15m"},
            "reboot": {"timeout": "20m"},
        }
    })
}

fn with(pointer: &str, v: Value) -> Result<Value, String> {
    let mut doc = base();
    let (parent, key) = pointer.rsplit_once('/').ok_or("bad pointer")?;
    let mut cur = &mut doc;
    for seg in parent.split('/').skip(1) {
        cur = if let Ok(i) = seg.parse::<usize>() {
            cur.get_mut(i).ok_or(format!("no index {seg}"))?
        } else {
            let map = cur.as_object_mut().ok_or("not an object")?;
            map.entry(seg.to_string()).or_insert_with(|| json!({}))
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(key.to_string(), v);
        }
        Value::Array(a) => {
            let i: usize = key.parse().map_err(|_| "bad index")?;
            a[i] = v;
        }
        _ => return Err("cannot set".into()),
    }
    Ok(doc)
}

fn crd_schema() -> Result<Value, Box<dyn std::error::Error>> {
    let crd = sofort::cmd::crd::patch_policy_crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or("no schema")?;
    Ok(serde_json::to_value(schema)?)
}

/// The API server's verdict: structural schema (bounds, types) and CEL rules.
fn crd_admits(schema: &Value, doc: &Value) -> Result<bool, String> {
    let mut problems = Vec::new();
    sofort::cmd::validate::SchemaChecker::default().check(doc, schema, &mut problems);
    let cel = kube::core::cel::Validator::new().validate(schema, doc, None);
    if let Err(errors) = &cel
        && errors.as_slice().iter().any(|e| {
            matches!(
                e.kind,
                kube::core::cel::ErrorKind::CompilationFailure
                    | kube::core::cel::ErrorKind::UnsupportedReference
            )
        })
    {
        return Err(format!("a CEL rule cannot be evaluated: {errors:?}"));
    }
    Ok(problems.is_empty() && cel.is_ok())
}

fn validate_accepts(doc: &Value) -> Result<bool, serde_json::Error> {
    let report = sofort::cmd::validate::validate_yaml_text(&serde_json::to_string(doc)?);
    Ok(report.policies == 1 && report.problems.is_empty())
}

/// The controller's verdict: it decodes the object, parses its spec once
/// (as for every new resourceVersion), then decides with that parse; an
/// invalid spec halts with reason InvalidSpec.
fn controller_accepts(doc: &Value) -> bool {
    let policy: PatchPolicy = match decode_policy(doc) {
        Ok(p) => p,
        Err(_) => return false,
    };
    let parsed = ParsedPolicy::new(policy);
    let nodes = vec![NodeView {
        name: "n1".into(),
        ready: true,
        boot_id: Some("b0".into()),
        ..NodeView::default()
    }];
    let now = "2026-11-28T02:00:00Z".parse().unwrap_or_default();
    let plan = decide_with(&parsed.policy, &parsed.config, &nodes, &[], now);
    !plan
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "InvalidSpec")
}

#[test]
fn validate_crd_and_controller_agree_on_every_case() -> TestResult {
    let long = |n: usize| "a".repeat(n);
    let cases: Vec<(&str, Value, Expect)> = vec![
        ("base policy", base(), Valid),
        // maxUnavailable: integers within int32, percentages; never a number in quotes.
        (
            "maxUnavailable 1",
            with("/spec/rollout/maxUnavailable", json!(1))?,
            Valid,
        ),
        (
            "maxUnavailable int32 max",
            with("/spec/rollout/maxUnavailable", json!(2147483647))?,
            Valid,
        ),
        (
            "maxUnavailable 3000000000",
            with("/spec/rollout/maxUnavailable", json!(3_000_000_000u64))?,
            Refused,
        ),
        (
            "maxUnavailable 0",
            with("/spec/rollout/maxUnavailable", json!(0))?,
            Refused,
        ),
        (
            "maxUnavailable -1",
            with("/spec/rollout/maxUnavailable", json!(-1))?,
            Refused,
        ),
        (
            "maxUnavailable \"3\"",
            with("/spec/rollout/maxUnavailable", json!("3"))?,
            Refused,
        ),
        (
            "maxUnavailable 25%",
            with("/spec/rollout/maxUnavailable", json!("25%"))?,
            Valid,
        ),
        (
            "maxUnavailable 100%",
            with("/spec/rollout/maxUnavailable", json!("100%"))?,
            Valid,
        ),
        (
            "maxUnavailable 0%",
            with("/spec/rollout/maxUnavailable", json!("0%"))?,
            Refused,
        ),
        (
            "maxUnavailable 05%",
            with("/spec/rollout/maxUnavailable", json!("05%"))?,
            Refused,
        ),
        (
            "maxUnavailable 101%",
            with("/spec/rollout/maxUnavailable", json!("101%"))?,
            Refused,
        ),
        (
            "maxUnavailable half",
            with("/spec/rollout/maxUnavailable", json!("half"))?,
            Refused,
        ),
        // Counts beyond int32 / u32.
        (
            "maxFailedNodes int32 max",
            with("/spec/rollout/maxFailedNodes", json!(2147483647))?,
            Valid,
        ),
        (
            "maxFailedNodes above int32",
            with("/spec/rollout/maxFailedNodes", json!(3_000_000_000u64))?,
            Refused,
        ),
        (
            "maxFailedNodes above u32",
            with("/spec/rollout/maxFailedNodes", json!(5_000_000_000u64))?,
            Refused,
        ),
        (
            "maxFailedNodes -1",
            with("/spec/rollout/maxFailedNodes", json!(-1))?,
            Refused,
        ),
        (
            "gracePeriodSeconds 30",
            with("/spec/drain/gracePeriodSeconds", json!(30))?,
            Valid,
        ),
        (
            "gracePeriodSeconds above int32",
            with("/spec/drain/gracePeriodSeconds", json!(3_000_000_000u64))?,
            Refused,
        ),
        // Timestamps: within what the controller's time type holds.
        (
            "blackout in 2026",
            with(
                "/spec/blackouts",
                json!([{"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}]),
            )?,
            Valid,
        ),
        (
            "blackout to 9999-01-01",
            with(
                "/spec/blackouts",
                json!([{"start": "2026-12-24T00:00:00Z", "end": "9999-01-01T00:00:00Z"}]),
            )?,
            Valid,
        ),
        (
            "blackout to 9999-12-31",
            with(
                "/spec/blackouts",
                json!([{"start": "2026-12-24T00:00:00Z", "end": "9999-12-31T23:59:59Z"}]),
            )?,
            Refused,
        ),
        (
            "blackout with offset past the end",
            with(
                "/spec/blackouts",
                json!([{"start": "2026-12-24T00:00:00Z", "end": "9999-12-30T23:00:00-05:00"}]),
            )?,
            Refused,
        ),
        (
            "blackout ending before it starts",
            with(
                "/spec/blackouts",
                json!([{"start": "2026-12-27T00:00:00Z", "end": "2026-12-24T00:00:00Z"}]),
            )?,
            Refused,
        ),
        // Monthly windows: weeksOfMonth 1-5 or Last, once each, with days;
        // offsetDays 0-27 with weeksOfMonth.
        (
            "second Saturday",
            with("/spec/maintenanceWindows/0/weeksOfMonth", json!([2]))?,
            Valid,
        ),
        (
            "second and last Saturday",
            with(
                "/spec/maintenanceWindows/0/weeksOfMonth",
                json!([2, "Last"]),
            )?,
            Valid,
        ),
        (
            "patch Tuesday + 3",
            with(
                "/spec/maintenanceWindows/0",
                json!({"days": ["Tue"], "weeksOfMonth": [2], "offsetDays": 3, "start": "22:00", "end": "04:00", "timeZone": "Europe/Berlin"}),
            )?,
            Valid,
        ),
        (
            "last + 27 days",
            with(
                "/spec/maintenanceWindows/0",
                json!({"days": ["Tue"], "weeksOfMonth": ["Last"], "offsetDays": 27, "start": "22:00", "end": "04:00"}),
            )?,
            Valid,
        ),
        (
            "offsetDays 28",
            with(
                "/spec/maintenanceWindows/0",
                json!({"days": ["Tue"], "weeksOfMonth": [2], "offsetDays": 28, "start": "22:00", "end": "04:00"}),
            )?,
            Refused,
        ),
        (
            "offsetDays -1",
            with(
                "/spec/maintenanceWindows/0",
                json!({"days": ["Tue"], "weeksOfMonth": [2], "offsetDays": -1, "start": "22:00", "end": "04:00"}),
            )?,
            Refused,
        ),
        (
            "offsetDays without weeksOfMonth",
            with("/spec/maintenanceWindows/0/offsetDays", json!(3))?,
            Refused,
        ),
        (
            "offsetDays 0 without weeksOfMonth",
            with("/spec/maintenanceWindows/0/offsetDays", json!(0))?,
            Valid,
        ),
        (
            "weeksOfMonth without days",
            with(
                "/spec/maintenanceWindows/0",
                json!({"weeksOfMonth": [2], "start": "22:00", "end": "04:00"}),
            )?,
            Refused,
        ),
        (
            "weeksOfMonth 0",
            with("/spec/maintenanceWindows/0/weeksOfMonth", json!([0]))?,
            Refused,
        ),
        (
            "weeksOfMonth 6",
            with("/spec/maintenanceWindows/0/weeksOfMonth", json!([6]))?,
            Refused,
        ),
        (
            "weeksOfMonth \"2\"",
            with("/spec/maintenanceWindows/0/weeksOfMonth", json!(["2"]))?,
            Refused,
        ),
        (
            "weeksOfMonth last",
            with("/spec/maintenanceWindows/0/weeksOfMonth", json!(["last"]))?,
            Refused,
        ),
        (
            "weeksOfMonth 2 twice",
            with("/spec/maintenanceWindows/0/weeksOfMonth", json!([2, 1, 2]))?,
            Refused,
        ),
        (
            "weeksOfMonth Last twice",
            with(
                "/spec/maintenanceWindows/0/weeksOfMonth",
                json!(["Last", "Last"]),
            )?,
            Refused,
        ),
        (
            "weeksOfMonth empty",
            with("/spec/maintenanceWindows/0/weeksOfMonth", json!([]))?,
            Valid,
        ),
        // pausedUntil: a timestamp the controller's time type holds.
        (
            "pausedUntil next week",
            with("/spec/pausedUntil", json!("2026-12-08T06:00:00+01:00"))?,
            Valid,
        ),
        (
            "pausedUntil in the past",
            with("/spec/pausedUntil", json!("2020-01-01T00:00:00Z"))?,
            Valid,
        ),
        (
            "pausedUntil 9999-12-31",
            with("/spec/pausedUntil", json!("9999-12-31T00:00:00Z"))?,
            Refused,
        ),
        (
            "pausedUntil not a time",
            with("/spec/pausedUntil", json!("tomorrow"))?,
            Refused,
        ),
        // Lengths and list sizes the code relies on.
        (
            "revision 128",
            with("/spec/revision", json!(long(128)))?,
            Valid,
        ),
        (
            "revision 129",
            with("/spec/revision", json!(long(129)))?,
            Refused,
        ),
        (
            "settle too long",
            with("/spec/rollout/settle", json!("1s".repeat(33)))?,
            Refused,
        ),
        (
            "sortBy item too long",
            with("/spec/rollout/order/sortBy", json!([long(318)]))?,
            Refused,
        ),
        (
            "nine sortBy keys",
            with(
                "/spec/rollout/order/sortBy",
                json!((0..9).map(|i| format!("k{i}")).collect::<Vec<_>>()),
            )?,
            Refused,
        ),
        (
            "patch command item too long",
            with("/spec/patch", json!({"command": [long(4097)]}))?,
            Refused,
        ),
        (
            "advisory details too long",
            with(
                "/spec/notify",
                json!({"advisory": {"summary": "s", "details": long(4097)}}),
            )?,
            Refused,
        ),
        (
            "blackout reason too long",
            with(
                "/spec/blackouts",
                json!([{"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z", "reason": long(257)}]),
            )?,
            Refused,
        ),
        (
            "33 windows",
            with(
                "/spec/maintenanceWindows",
                json!(
                    (0..33)
                        .map(|_| json!({"start": "01:00", "end": "06:00"}))
                        .collect::<Vec<_>>()
                ),
            )?,
            Refused,
        ),
        // Types and enums.
        (
            "urgent as a string",
            with("/spec/urgent", json!("yes"))?,
            Refused,
        ),
        (
            "unknown onTimeout",
            with("/spec/drain/onTimeout", json!("Retry"))?,
            Refused,
        ),
        (
            "window start 24:00",
            with("/spec/maintenanceWindows/0/start", json!("24:00"))?,
            Refused,
        ),
        (
            "window start equals end",
            with("/spec/maintenanceWindows/0/end", json!("01:00"))?,
            Refused,
        ),
        (
            "window timeZone empty",
            with("/spec/maintenanceWindows/0/timeZone", json!(""))?,
            Refused,
        ),
        (
            "window timeZone left out (UTC)",
            with(
                "/spec/maintenanceWindows",
                json!([{"days": ["Sat"], "start": "01:00", "end": "06:00"}]),
            )?,
            Valid,
        ),
        (
            "window 00:00 to 00:00 (a whole day)",
            with(
                "/spec/maintenanceWindows",
                json!([{"start": "00:00", "end": "00:00", "timeZone": "UTC"}]),
            )?,
            Valid,
        ),
        (
            "patch without a command",
            with("/spec/patch", json!({"command": []}))?,
            Refused,
        ),
        // What only code can check.
        (
            "window day listed twice",
            with("/spec/maintenanceWindows/0/days", json!(["Sat", "Sat"]))?,
            Semantic,
        ),
        (
            "windows shorter than minWindowRemaining",
            with("/spec/rollout/minWindowRemaining", json!("6h"))?,
            Semantic,
        ),
        (
            "windows shorter than the timeouts",
            with("/spec/reboot/timeout", json!("5h"))?,
            Semantic,
        ),
        (
            "zero patch timeout",
            with("/spec/patch", json!({"command": ["true"], "timeout": "0s"}))?,
            Semantic,
        ),
        (
            "announce lead time zero",
            with("/spec/announce", json!({"leadTime": "0s"}))?,
            Valid,
        ),
        (
            "maxUnavailable \"3%\"",
            with("/spec/rollout/maxUnavailable", json!("3%"))?,
            Valid,
        ),
        (
            "unknown time zone",
            with("/spec/maintenanceWindows/0/timeZone", json!("Europe/Zurch"))?,
            Semantic,
        ),
        (
            "settle garbage that fits the pattern",
            with("/spec/rollout/settle", json!("1.5.5s"))?,
            Refused,
        ),
        (
            "zero drain timeout",
            with("/spec/drain/timeout", json!("0s"))?,
            Semantic,
        ),
        (
            "bad label key in sortBy",
            with("/spec/rollout/order/sortBy", json!(["Bad Key"]))?,
            Semantic,
        ),
    ];
    let schema = crd_schema()?;
    let mut disagreements = Vec::new();
    for (name, doc, expect) in &cases {
        let crd = crd_admits(&schema, doc)?;
        let validate = validate_accepts(doc)?;
        let controller = controller_accepts(doc);
        let want = match expect {
            Valid => (true, true, true),
            Refused => (false, false, false),
            Semantic => (true, false, false),
        };
        if (crd, validate, controller) != want {
            disagreements.push(format!(
                "{name}: expected {expect:?}, got crd={crd} validate={validate} controller={controller}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    Ok(())
}

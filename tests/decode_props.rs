//! Bounded fuzzing of the policy decoder and `sofort validate` with property
//! tests: arbitrary JSON shaped like policies (huge numbers, long strings,
//! wrong types, far timestamps), arbitrary YAML, deeply nested YAML. Each case
//! must finish without a panic, with work linear in the input, and with a
//! decode error that never repeats the input's text.
//!
//! The number of cases is small by default; set `SOFORT_PROPTEST_CASES`
//! to search harder.

use proptest::prelude::*;
use serde_json::{Value, json};
use sofort::api::decode_policy;
use sofort::cmd::validate::{MAX_PROBLEMS_PER_DOCUMENT, validate_yaml_text};

fn cases() -> u32 {
    std::env::var("SOFORT_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

/// A marker that must never come back in a decode error.
const MARK: &str = "ZQXSECRET";

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        Just(json!(3_000_000_000u64)),
        Just(json!(1e300)),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("2026-12-24T00:00:00+01:00")),
        Just(json!("25%")),
        Just(json!("3")),
        Just(json!("15m")),
        (0usize..6000).prop_map(|n| json!(format!("{MARK}{}", "x".repeat(n)))),
        "[ -~]{0,40}".prop_map(|s| json!(format!("{MARK}{s}"))),
    ]
}

/// Any JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "/spec/revision",
    "/spec/urgent",
    "/spec/maintenanceWindows",
    "/spec/maintenanceWindows/0",
    "/spec/maintenanceWindows/0/start",
    "/spec/maintenanceWindows/0/timeZone",
    "/spec/blackouts",
    "/spec/blackouts/0/end",
    "/spec/rollout/maxUnavailable",
    "/spec/rollout/maxFailedNodes",
    "/spec/rollout/order/sortBy",
    "/spec/drain/gracePeriodSeconds",
    "/spec/patch/command",
    "/spec/notify/advisory/details",
    "/spec/notify/webhooks",
    "/spec/nodeSelector/matchLabels",
];

fn base() -> Value {
    json!({
        "apiVersion": "sofort.dev/v1alpha1",
        "kind": "PatchPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "revision": "r1",
            "maintenanceWindows": [{"start": "01:00", "end": "06:00"}],
            "blackouts": [{"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}],
            "rollout": {"maxUnavailable": 1, "order": {}},
            "drain": {},
            "notify": {"advisory": {"summary": "s"}},
        }
    })
}

/// A policy with some fields replaced by arbitrary values.
fn policy_like() -> impl Strategy<Value = Value> {
    prop::collection::vec((0..FIELDS.len(), any_json()), 1..5).prop_map(|edits| {
        let mut doc = base();
        for (i, v) in edits {
            let (parent, key) = FIELDS[i].rsplit_once('/').unwrap_or(("", FIELDS[i]));
            if let Some(p) = doc.pointer_mut(parent) {
                match p {
                    Value::Object(m) => {
                        m.insert(key.to_string(), v);
                    }
                    Value::Array(a) => {
                        if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                            *slot = v;
                        }
                    }
                    _ => {}
                }
            }
        }
        doc
    })
}

/// Work bound: a constant per input byte, plus a constant.
fn assert_linear(input: &str, work: usize) -> Result<(), TestCaseError> {
    prop_assert!(
        work <= 4 * input.len() + 1_000,
        "work {work} for {} bytes of input",
        input.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn decoder_never_panics_nor_repeats_the_input(doc in policy_like()) {
        if let Err(e) = decode_policy(&doc) {
            prop_assert!(!e.to_string().contains(MARK), "input text in {e}");
            prop_assert!(e.to_string().len() < 1_000);
        }
    }

    #[test]
    fn validate_handles_policy_shaped_json(doc in policy_like()) {
        let text = serde_json::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let report = validate_yaml_text(&text);
        prop_assert_eq!(report.policies, 1);
        prop_assert!(report.problems.len() <= MAX_PROBLEMS_PER_DOCUMENT + 1);
        assert_linear(&text, report.work)?;
    }

    #[test]
    fn validate_handles_arbitrary_yaml(text in "[ -~\n]{0,400}") {
        let report = validate_yaml_text(&text);
        assert_linear(&text, report.work)?;
    }

    #[test]
    fn validate_is_linear_on_deeply_nested_yaml(depth in 1usize..20_000, flow in any::<bool>()) {
        let nested = if flow {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            (0..depth.min(2_000)).map(|i| format!("{}a:\n", " ".repeat(i))).collect()
        };
        let text = format!(
            "apiVersion: sofort.dev/v1alpha1\nkind: PatchPolicy\nmetadata:\n  name: p\nspec:\n  revision: r1\n  nodeSelector: {nested}\n"
        );
        let report = validate_yaml_text(&text);
        assert_linear(&text, report.work)?;
        // The parser's work grows with the square of the flow depth: deeper
        // than the bound is refused before parsing.
        if flow && depth > sofort::cmd::validate::MAX_FLOW_DEPTH {
            prop_assert!(
                report.problems.iter().any(|p| p.problem.message.contains("nested more than")),
                "{:?}", report.problems
            );
        }
    }
}

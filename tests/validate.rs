//! Every example is valid; every broken policy is rejected at the right field.

use serde_json::{Value, json};
use sofort::cmd::validate::validate_yaml_text;

#[test]
fn every_example_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let report = validate_yaml_text(&text);
        assert!(
            report.problems.is_empty(),
            "{}: {:#?}",
            path.display(),
            report.problems
        );
        seen += report.policies;
    }
    assert!(seen >= 4, "expected the example policies, found {seen}");
}

fn base() -> Value {
    json!({
        "apiVersion": "sofort.dev/v1alpha1",
        "kind": "PatchPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "revision": "r1",
            "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/worker": ""}},
            "maintenanceWindows": [{"days": ["Mon"], "start": "22:00", "end": "05:00", "timeZone": "Europe/Zurich"}],
            "blackouts": [{"start": "2026-12-24T00:00:00+01:00", "end": "2026-12-27T00:00:00+01:00"}],
            "announce": {"leadTime": "48h"},
            "rollout": {"maxUnavailable": 1, "order": {"groupBy": "topology.kubernetes.io/zone", "sortBy": ["sofort.dev/priority"]}, "settle": "2m"},
            "drain": {"timeout": "15m"},
            "reboot": {"timeout": "20m"},
            "patch": {"command": ["true"], "timeout": "10m"},
            "notify": {
                "webhooks": [{"name": "status", "urlSecretRef": {"namespace": "sofort-system", "name": "s", "key": "url"}}],
                "advisory": {"summary": "maintenance", "details": "CVE-1"}
            }
        }
    })
}

/// Sets (or, with `None`, removes) the value at a JSON pointer.
fn with(pointer: &str, v: Option<Value>) -> Value {
    let mut doc = base();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no parent {parent}"));
    match (target, v) {
        (Value::Object(m), Some(v)) => {
            m.insert(key.to_string(), v);
        }
        (Value::Object(m), None) => {
            m.remove(key);
        }
        (Value::Array(a), Some(v)) => a[key.parse::<usize>().unwrap()] = v,
        (t, _) => panic!("cannot set {key} in {t}"),
    }
    doc
}

#[test]
fn base_policy_is_valid() {
    let report = validate_yaml_text(&serde_yaml::to_string(&base()).unwrap());
    assert_eq!(report.policies, 1);
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

#[test]
fn templates_with_known_variables_are_valid() {
    let doc = with(
        "/spec/notify/webhooks/0/template",
        Some(json!(
            "{{sofort}} {event}: {summary} on {nodes} servers ({updated} done, {failed} failed: {failed_nodes}) {node} {window} {expected_done} {details} {text} {policy} {revision}"
        )),
    );
    let report = validate_yaml_text(&serde_yaml::to_string(&doc).unwrap());
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

#[test]
fn broken_policies_are_rejected_at_their_field() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "empty revision",
            with("/spec/revision", Some(json!(""))),
            "spec.revision",
            "must not be empty",
        ),
        (
            "blank revision",
            with("/spec/revision", Some(json!("  "))),
            "spec.revision",
            "must not be empty",
        ),
        (
            "missing revision",
            with("/spec/revision", None),
            "spec.revision",
            "is required",
        ),
        (
            "unknown time zone",
            with(
                "/spec/maintenanceWindows/0/timeZone",
                Some(json!("Europe/Zurch")),
            ),
            "spec.maintenanceWindows[0].timeZone",
            "did you mean Europe/Zurich?",
        ),
        (
            "nonsense time zone",
            with(
                "/spec/maintenanceWindows/0/timeZone",
                Some(json!("Mars/Olympus")),
            ),
            "spec.maintenanceWindows[0].timeZone",
            "unknown time zone",
        ),
        (
            "start == end",
            with("/spec/maintenanceWindows/0/end", Some(json!("22:00"))),
            "spec.maintenanceWindows[0].end",
            "equals start",
        ),
        (
            "bad start",
            with("/spec/maintenanceWindows/0/start", Some(json!("25:00"))),
            "spec.maintenanceWindows[0].start",
            "HH:MM",
        ),
        (
            "bad end",
            with("/spec/maintenanceWindows/0/end", Some(json!("5am"))),
            "spec.maintenanceWindows[0].end",
            "HH:MM",
        ),
        (
            "bad day",
            with("/spec/maintenanceWindows/0/days", Some(json!(["Monday"]))),
            "spec.maintenanceWindows[0].days[0]",
            "must be one of Mon, Tue",
        ),
        (
            "duplicate day",
            with(
                "/spec/maintenanceWindows/0/days",
                Some(json!(["Mon", "Mon"])),
            ),
            "spec.maintenanceWindows[0].days[1]",
            "twice",
        ),
        (
            "blackout backwards",
            with("/spec/blackouts/0/end", Some(json!("2026-12-01T00:00:00Z"))),
            "spec.blackouts[0].end",
            "not after start",
        ),
        (
            "blackout not a time",
            with("/spec/blackouts/0/start", Some(json!("christmas"))),
            "spec.blackouts[0].start",
            "",
        ),
        (
            "lead time garbage",
            with("/spec/announce/leadTime", Some(json!("two days"))),
            "spec.announce.leadTime",
            "invalid duration",
        ),
        (
            "maxUnavailable 0",
            with("/spec/rollout/maxUnavailable", Some(json!(0))),
            "spec.rollout.maxUnavailable",
            "never let a node start",
        ),
        (
            "maxUnavailable 0%",
            with("/spec/rollout/maxUnavailable", Some(json!("0%"))),
            "spec.rollout.maxUnavailable",
            "0%",
        ),
        (
            "maxUnavailable 150%",
            with("/spec/rollout/maxUnavailable", Some(json!("150%"))),
            "spec.rollout.maxUnavailable",
            "more than 100%",
        ),
        (
            "maxUnavailable word",
            with("/spec/rollout/maxUnavailable", Some(json!("half"))),
            "spec.rollout.maxUnavailable",
            "neither an integer",
        ),
        (
            "settle garbage",
            with("/spec/rollout/settle", Some(json!("soon"))),
            "spec.rollout.settle",
            "invalid duration",
        ),
        (
            "groupBy invalid key",
            with("/spec/rollout/order/groupBy", Some(json!("zone name"))),
            "spec.rollout.order.groupBy",
            "not a valid label key",
        ),
        (
            "sortBy invalid key",
            with("/spec/rollout/order/sortBy", Some(json!(["-prio"]))),
            "spec.rollout.order.sortBy[0]",
            "not a valid label key",
        ),
        (
            "sortBy duplicate",
            with("/spec/rollout/order/sortBy", Some(json!(["a", "a"]))),
            "spec.rollout.order.sortBy[1]",
            "twice",
        ),
        (
            "drain timeout 0",
            with("/spec/drain/timeout", Some(json!("0s"))),
            "spec.drain.timeout",
            "zero",
        ),
        (
            "negative grace",
            with("/spec/drain/gracePeriodSeconds", Some(json!(-5))),
            "spec.drain.gracePeriodSeconds",
            "0 or more",
        ),
        (
            "bad onTimeout",
            with("/spec/drain/onTimeout", Some(json!("Retry"))),
            "spec.drain.onTimeout",
            "must be one of Fail, Force",
        ),
        (
            "reboot timeout 0",
            with("/spec/reboot/timeout", Some(json!("0m"))),
            "spec.reboot.timeout",
            "zero",
        ),
        (
            "bad reboot when",
            with("/spec/reboot/when", Some(json!("Sometimes"))),
            "spec.reboot.when",
            "must be one of Always, IfRequired",
        ),
        (
            "empty patch command",
            with("/spec/patch/command", Some(json!([]))),
            "spec.patch.command",
            "must name a program",
        ),
        (
            "webhook without secret ref",
            with("/spec/notify/webhooks/0", Some(json!({"name": "status"}))),
            "spec.notify.webhooks[0].urlSecretRef",
            "is required",
        ),
        (
            "webhook secret ref empty key",
            with(
                "/spec/notify/webhooks/0/urlSecretRef",
                Some(json!({"namespace": "a", "name": "b", "key": ""})),
            ),
            "spec.notify.webhooks[0].urlSecretRef.key",
            "must not be empty",
        ),
        (
            "webhook bad name",
            with("/spec/notify/webhooks/0/name", Some(json!("Status Page"))),
            "spec.notify.webhooks[0].name",
            "DNS label",
        ),
        (
            "revision names the embargoed CVE",
            with("/spec/revision", Some(json!("cve-1-fix"))),
            "spec.revision",
            "embargoed",
        ),
        (
            "summary quotes the embargoed details",
            with(
                "/spec/notify/advisory/summary",
                Some(json!("Fix for cve-1")),
            ),
            "spec.notify.advisory.summary",
            "embargoed",
        ),
        (
            "template with an unknown variable",
            with(
                "/spec/notify/webhooks/0/template",
                Some(json!("{summary} on {nodes} servers, see {cve}")),
            ),
            "spec.notify.webhooks[0].template",
            "unknown variable {cve}",
        ),
        (
            "template with a misspelt variable",
            with(
                "/spec/notify/webhooks/0/template",
                Some(json!("{sumary}: {text}")),
            ),
            "spec.notify.webhooks[0].template",
            "did you mean {summary}?",
        ),
        (
            "template with an unclosed brace",
            with(
                "/spec/notify/webhooks/0/template",
                Some(json!("{event} {window")),
            ),
            "spec.notify.webhooks[0].template",
            "unclosed '{'",
        ),
        (
            "template with a stray closing brace",
            with("/spec/notify/webhooks/0/template", Some(json!("done }"))),
            "spec.notify.webhooks[0].template",
            "unmatched '}'",
        ),
        (
            "bad selector operator",
            with(
                "/spec/nodeSelector",
                Some(
                    json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
                ),
            ),
            "spec.nodeSelector.matchExpressions[0].operator",
            "not an operator",
        ),
        (
            "In without values",
            with(
                "/spec/nodeSelector",
                Some(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            ),
            "spec.nodeSelector.matchExpressions[0].values",
            "at least one value",
        ),
        (
            "bad selector label key",
            with(
                "/spec/nodeSelector",
                Some(json!({"matchLabels": {"bad key": "x"}})),
            ),
            "spec.nodeSelector.matchLabels[bad key]",
            "not a valid label key",
        ),
        (
            "misspelt field",
            with("/spec/rollout/maxUnavailble", Some(json!(2))),
            "spec.rollout.maxUnavailble",
            "unknown field",
        ),
        (
            "window too short for one node",
            with("/spec/maintenanceWindows/0/end", Some(json!("22:30"))),
            "spec.maintenanceWindows",
            "no node could ever start",
        ),
        (
            "wrong apiVersion",
            with("/apiVersion", Some(json!("sofort.dev/v1"))),
            "apiVersion",
            "not served",
        ),
        (
            "namespaced",
            with("/metadata/namespace", Some(json!("default"))),
            "metadata.namespace",
            "cluster-scoped",
        ),
        (
            "empty advisory summary",
            with("/spec/notify/advisory/summary", Some(json!(" "))),
            "spec.notify.advisory.summary",
            "must not be empty",
        ),
        (
            "urgent not a bool",
            with("/spec/urgent", Some(json!("yes"))),
            "spec.urgent",
            "must be true or false",
        ),
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (what, doc, path, fragment) in &cases {
        let report = validate_yaml_text(&serde_yaml::to_string(doc).unwrap());
        let hit = report
            .problems
            .iter()
            .any(|p| p.problem.path == *path && p.problem.message.contains(fragment));
        if !hit {
            failures.push(format!(
                "{what}: expected {path} ~ {fragment:?}, got {:?}",
                report.problems
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut doc = with("/spec/revision", Some(json!("")));
    doc["spec"]["maintenanceWindows"][0]["timeZone"] = json!("Nowhere/Land");
    doc["spec"]["rollout"]["maxUnavailable"] = json!(0);
    let report = validate_yaml_text(&serde_yaml::to_string(&doc).unwrap());
    let paths: Vec<_> = report
        .problems
        .iter()
        .map(|p| p.problem.path.as_str())
        .collect();
    for want in [
        "spec.revision",
        "spec.maintenanceWindows[0].timeZone",
        "spec.rollout.maxUnavailable",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}

#[test]
fn other_kinds_are_skipped_and_documents_are_numbered() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n".to_string()
        + &serde_yaml::to_string(&with("/spec/revision", Some(json!("")))).unwrap();
    let report = validate_yaml_text(&text);
    assert_eq!(report.policies, 1);
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].doc, 2);
}

#[test]
fn cli_exit_codes_and_line_format() {
    let bin = env!("CARGO_BIN_EXE_sofort");
    let ok = std::process::Command::new(bin)
        .args([
            "validate",
            "-f",
            "examples/nightly-workers.yaml",
            "examples/urgent-security.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = std::env::temp_dir().join(format!("sofort-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    let doc = with(
        "/spec/maintenanceWindows/0/timeZone",
        Some(json!("Europe/Zurch")),
    );
    std::fs::write(&bad, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(bin)
        .args(["validate", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "{}:1: spec.maintenanceWindows[0].timeZone: unknown time zone \"Europe/Zurch\"; did you mean Europe/Zurich?",
        bad.display()
    );
    assert!(stdout.lines().any(|l| l == want), "got {stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sofort"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        include_str!("../crds/patchpolicy.yaml")
    );
}

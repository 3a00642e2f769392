//! The committed CRD matches the binary's output and is a valid v1 CRD.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};

const COMMITTED: &str = include_str!("../crds/patchpolicy.yaml");

#[test]
fn committed_crd_matches_generated() {
    let generated = sofort::cmd::crd::patch_policy_crd_yaml().unwrap();
    assert!(
        generated == COMMITTED,
        "crds/patchpolicy.yaml is out of date; regenerate it with: cargo run -- crd > crds/patchpolicy.yaml"
    );
}

fn crd() -> CustomResourceDefinition {
    serde_yaml::from_str(COMMITTED).expect("committed CRD parses as apiextensions.k8s.io/v1")
}

#[test]
fn crd_is_cluster_scoped_with_status_and_names() {
    let crd = crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("patchpolicies.sofort.dev")
    );
    assert_eq!(crd.spec.group, "sofort.dev");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.short_names, Some(vec!["pp".to_string()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["sofort".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        [
            "Revision",
            "Urgent",
            "Phase",
            "Updated",
            "Round",
            "Round phase",
            "Next window",
            "Age"
        ]
    );
}

fn walk(path: &str, s: &JSONSchemaProps, missing: &mut Vec<String>, rules: &mut BTreeSet<String>) {
    if s.description.as_deref().unwrap_or("").trim().is_empty() {
        missing.push(path.to_string());
    }
    for r in s.x_kubernetes_validations.iter().flatten() {
        rules.insert(format!("{path}: {}", r.rule));
    }
    for (k, child) in s.properties.iter().flatten() {
        walk(&format!("{path}.{k}"), child, missing, rules);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
        // Items share the description of their list; only their fields need one.
        for (k, child) in items.properties.iter().flatten() {
            walk(&format!("{path}[].{k}"), child, missing, rules);
        }
        for r in items.x_kubernetes_validations.iter().flatten() {
            rules.insert(format!("{path}[]: {}", r.rule));
        }
    }
}

#[test]
fn every_spec_and_status_field_is_described_for_kubectl_explain() {
    let crd = crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    let props = schema.properties.as_ref().unwrap();
    let mut missing = Vec::new();
    let mut rules = BTreeSet::new();
    walk("spec", &props["spec"], &mut missing, &mut rules);
    walk("status", &props["status"], &mut missing, &mut rules);
    // Fields of the embedded Kubernetes types (LabelSelector, Condition) carry
    // upstream descriptions; anything of ours without one is a defect.
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
    let rules: Vec<_> = rules.into_iter().collect();
    assert!(
        rules
            .iter()
            .any(|r| r.contains("spec.blackouts[]") && r.contains("self.end > self.start")),
        "{rules:#?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r.contains("spec.maintenanceWindows[]")),
        "{rules:#?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r.starts_with("spec.rollout.maxUnavailable")),
        "{rules:#?}"
    );
}

#[test]
fn schema_patterns_guard_times_and_durations() {
    let text = COMMITTED;
    assert!(
        text.contains(sofort::api::TIME_OF_DAY_PATTERN)
            || text.contains("^([01][0-9]|2[0-3]):[0-5][0-9]$")
    );
    assert!(text.contains("^([0-9]+(\\.[0-9]+)?(h|m|s|ms))+$"));
    assert!(
        text.contains("- Mon") && text.contains("- Sun"),
        "days are an enum"
    );
}

/// Every duration field carries the one pattern and length bound, and every
/// default the CRD shows is the constant serde and the parser use.
#[test]
fn duration_fields_and_defaults_come_from_the_api_constants() {
    use sofort::api::*;
    let crd = crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    let at = |path: &[&str]| -> JSONSchemaProps {
        let mut s = schema.clone();
        for key in path {
            s = s
                .properties
                .as_ref()
                .and_then(|p| p.get(*key))
                .cloned()
                .unwrap_or_else(|| panic!("no field {key} in {path:?}"));
        }
        s
    };
    let fields: [(&[&str], Option<&str>); 6] = [
        (&["spec", "drain", "timeout"], Some(DEFAULT_DRAIN_TIMEOUT)),
        (&["spec", "reboot", "timeout"], Some(DEFAULT_REBOOT_TIMEOUT)),
        (&["spec", "patch", "timeout"], Some(DEFAULT_PATCH_TIMEOUT)),
        (&["spec", "rollout", "settle"], Some(DEFAULT_SETTLE)),
        (&["spec", "rollout", "minWindowRemaining"], None),
        (&["spec", "announce", "leadTime"], None),
    ];
    for (path, default) in fields {
        let s = at(path);
        assert_eq!(s.pattern.as_deref(), Some(DURATION_PATTERN), "{path:?}");
        assert_eq!(
            s.max_length,
            Some(i64::from(DURATION_MAX_LENGTH)),
            "{path:?}"
        );
        let shown = s
            .default
            .as_ref()
            .and_then(|d| d.0.as_str().map(str::to_string));
        assert_eq!(shown.as_deref(), default, "{path:?}");
    }
    let tz = at(&["spec", "maintenanceWindows"]).items;
    let tz = match tz {
        Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s)) => s,
        other => panic!("maintenanceWindows items: {other:?}"),
    };
    let zone = &tz.properties.as_ref().expect("window fields")["timeZone"];
    assert_eq!(zone.pattern.as_deref(), Some(TIME_ZONE_PATTERN));
    assert_eq!(
        zone.default.as_ref().and_then(|d| d.0.as_str()),
        Some(DEFAULT_TIME_ZONE)
    );
    for end in ["start", "end"] {
        let t = &tz.properties.as_ref().expect("window fields")[end];
        assert_eq!(t.pattern.as_deref(), Some(TIME_OF_DAY_PATTERN), "{end}");
    }
    let mu = at(&["spec", "rollout", "maxUnavailable"]);
    assert_eq!(
        mu.default.as_ref().and_then(|d| d.0.as_i64()),
        Some(i64::from(DEFAULT_MAX_UNAVAILABLE))
    );
}

//! Kubernetes label-selector matching (`matchLabels` and `matchExpressions`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector the API server would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Unknown operator.
    #[error(
        "nodeSelector.matchExpressions[{index}].operator {operator:?} is unknown; use In, NotIn, Exists or DoesNotExist"
    )]
    Operator {
        /// Index of the expression.
        index: usize,
        /// The operator given.
        operator: String,
    },
    /// Values given or missing against the operator's rules.
    #[error("nodeSelector.matchExpressions[{index}] ({operator}) {problem}")]
    Values {
        /// Index of the expression.
        index: usize,
        /// The operator.
        operator: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Checks a selector once, so that [`matches`] cannot fail later.
pub fn check(sel: &LabelSelector) -> Result<(), SelectorError> {
    for (index, e) in sel.match_expressions.iter().flatten().enumerate() {
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => {
                return Err(SelectorError::Values {
                    index,
                    operator: e.operator.clone(),
                    problem: "needs at least one value",
                });
            }
            "Exists" | "DoesNotExist" if n > 0 => {
                return Err(SelectorError::Values {
                    index,
                    operator: e.operator.clone(),
                    problem: "must not have values",
                });
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(SelectorError::Operator {
                    index,
                    operator: other.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// True when `labels` satisfy `selector`. An empty selector matches everything;
/// an unknown operator matches nothing (validation reports it).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let value = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Label Kubernetes puts on control-plane nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// True when a PatchPolicy with `selector` selects a node with `labels`. Like
/// [`matches`], except that a control-plane node (one labelled
/// [`CONTROL_PLANE_LABEL`]) is selected only when the selector asks for
/// control-plane nodes explicitly: it names that label in `matchLabels`, or in
/// a `matchExpressions` entry with `In` or `Exists`. An empty selector or one
/// on other labels never drains and reboots a control-plane node.
pub fn selects_node(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    matches(selector, labels)
        && (!labels.contains_key(CONTROL_PLANE_LABEL) || asks_for_control_plane(selector))
}

/// Whether the selector names [`CONTROL_PLANE_LABEL`] as something a node must have.
pub fn asks_for_control_plane(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .iter()
        .flatten()
        .any(|(k, _)| k == CONTROL_PLANE_LABEL)
        || selector
            .match_expressions
            .iter()
            .flatten()
            .any(|e| e.key == CONTROL_PLANE_LABEL && matches!(e.operator.as_str(), "In" | "Exists"))
}

/// The selector in the string form used by `?labelSelector=` (for list/watch calls).
pub fn to_query(selector: &LabelSelector) -> String {
    let mut parts = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.as_deref().unwrap_or_default().join(",");
        match r.operator.as_str() {
            "In" => parts.push(format!("{} in ({values})", r.key)),
            "NotIn" => parts.push(format!("{} notin ({values})", r.key)),
            "Exists" => parts.push(r.key.clone()),
            "DoesNotExist" => parts.push(format!("!{}", r.key)),
            _ => {}
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn control_plane_nodes_are_selected_only_when_asked_for() {
        let cp = labels(&[(CONTROL_PLANE_LABEL, ""), ("pool", "a")]);
        let worker = labels(&[("pool", "a")]);
        let everything = LabelSelector::default();
        assert!(selects_node(&everything, &worker));
        assert!(!selects_node(&everything, &cp));
        let pool = LabelSelector {
            match_labels: Some(labels(&[("pool", "a")])),
            ..Default::default()
        };
        assert!(!selects_node(&pool, &cp));
        let by_label = LabelSelector {
            match_labels: Some(labels(&[(CONTROL_PLANE_LABEL, "")])),
            ..Default::default()
        };
        assert!(selects_node(&by_label, &cp));
        assert!(!selects_node(&by_label, &worker));
        assert!(selects_node(&expr(CONTROL_PLANE_LABEL, "Exists", &[]), &cp));
        assert!(selects_node(&expr(CONTROL_PLANE_LABEL, "In", &[""]), &cp));
        // Naming the label to exclude it is not asking for it.
        assert!(!selects_node(
            &expr(CONTROL_PLANE_LABEL, "NotIn", &["x"]),
            &cp
        ));
        assert!(selects_node(
            &expr(CONTROL_PLANE_LABEL, "DoesNotExist", &[]),
            &worker
        ));
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|s| s.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        }
    }

    #[test]
    fn empty_selector_matches_all() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn match_labels_and_every_operator() {
        let l = labels(&[("zone", "a"), ("role", "worker")]);
        let ml = LabelSelector {
            match_labels: Some(labels(&[("zone", "a")])),
            ..LabelSelector::default()
        };
        assert!(matches(&ml, &l));
        assert!(!matches(&ml, &labels(&[("zone", "b")])));
        assert!(matches(&expr("zone", "In", &["a", "b"]), &l));
        assert!(!matches(&expr("zone", "In", &["c"]), &l));
        assert!(matches(&expr("zone", "NotIn", &["c"]), &l));
        assert!(
            matches(&expr("canary", "NotIn", &["true"]), &l),
            "NotIn matches a missing label"
        );
        assert!(matches(&expr("role", "Exists", &[]), &l));
        assert!(!matches(&expr("role", "DoesNotExist", &[]), &l));
        assert!(!matches(&expr("role", "Bogus", &[]), &l));
    }

    #[test]
    fn renders_query_strings() {
        let mut s = expr("zone", "In", &["a", "b"]);
        s.match_labels = Some(labels(&[("role", "worker")]));
        assert_eq!(to_query(&s), "role=worker,zone in (a,b)");
        assert_eq!(to_query(&expr("x", "DoesNotExist", &[])), "!x");
    }
    #[test]
    fn check_reports_what_the_api_server_would_reject() {
        assert!(check(&expr("zone", "In", &["a"])).is_ok());
        assert!(
            check(&expr("zone", "Like", &["a"]))
                .unwrap_err()
                .to_string()
                .contains("In, NotIn, Exists or DoesNotExist")
        );
        assert!(check(&expr("zone", "In", &[])).is_err());
        assert!(check(&expr("zone", "Exists", &["a"])).is_err());
    }
}

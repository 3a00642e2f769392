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

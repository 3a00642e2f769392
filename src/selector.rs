//! `metav1.LabelSelector` matching, as the API server does it.

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

/// Whether `labels` match. An empty selector matches everything; an expression
/// with an unknown operator matches nothing (use [`check`] to report it).
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.as_deref().unwrap_or(&[]);
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|v| vals.contains(v)),
            "NotIn" => got.is_none_or(|v| !vals.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, vals: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if vals.is_empty() {
                None
            } else {
                Some(vals.iter().map(|s| s.to_string()).collect())
            },
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(&[("role", "worker"), ("zone", "a")]);
        assert!(matches(&LabelSelector::default(), &l));
        let sel = LabelSelector {
            match_labels: Some(labels(&[("role", "worker")])),
            match_expressions: Some(vec![
                expr("zone", "In", &["a", "b"]),
                expr("gpu", "DoesNotExist", &[]),
                expr("tier", "NotIn", &["db"]),
                expr("role", "Exists", &[]),
            ]),
        };
        assert!(check(&sel).is_ok());
        assert!(matches(&sel, &l));
        assert!(!matches(
            &sel,
            &labels(&[("role", "worker"), ("zone", "c")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("role", "worker"), ("zone", "a"), ("gpu", "1")])
        ));
        assert!(!matches(&sel, &labels(&[("role", "infra"), ("zone", "a")])));
    }

    #[test]
    fn bad_selectors_are_reported() {
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("zone", "Like", &["a"])]),
        };
        assert!(
            check(&sel)
                .unwrap_err()
                .to_string()
                .contains("In, NotIn, Exists or DoesNotExist")
        );
        assert!(!matches(&sel, &labels(&[("zone", "a")])));
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("zone", "In", &[])]),
        };
        assert!(check(&sel).is_err());
    }
}

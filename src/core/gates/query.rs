//! A PromQL query gate: it blocks while its query returns any series.
//!
//! Written as alert conditions are (`... > 5`), an instant vector or a range
//! matrix with one or more series closes the gate. A scalar closes it when it
//! is neither zero nor NaN (`vector(...)` is the usual form; a bare number is
//! taken as "how many problems").

use std::collections::BTreeMap;

use super::{Verdict, clean};

/// What `/api/v1/query` returned, reduced to what the gate needs.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// A vector or matrix: how many series and the labels of the first.
    Series {
        /// Number of series.
        count: usize,
        /// Labels of the first series, if any.
        first: Option<BTreeMap<String, String>>,
        /// Value of the first sample of the first series, if any.
        value: Option<String>,
    },
    /// A scalar or string result, its value as text.
    Scalar(String),
}

/// The gate `name` over its result.
pub fn verdict(name: &str, result: &QueryResult) -> Verdict {
    match result {
        QueryResult::Series { count: 0, .. } => Verdict::Open,
        QueryResult::Series {
            count,
            first,
            value,
        } => {
            let mut why = format!("query {} returns {count} series", clean(name));
            if let Some(labels) = first.as_ref().filter(|l| !l.is_empty()) {
                let shown: Vec<String> = labels
                    .iter()
                    .take(4)
                    .map(|(k, v)| format!("{}={:?}", clean(k), clean(v)))
                    .collect();
                why.push_str(&format!(" ({{{}}}", shown.join(", ")));
                if let Some(v) = value {
                    why.push_str(&format!(" = {}", clean(v)));
                }
                why.push(')');
            } else if let Some(v) = value {
                why.push_str(&format!(" (value {})", clean(v)));
            }
            Verdict::Closed(why)
        }
        QueryResult::Scalar(v) => {
            let n: f64 = v.trim().parse().unwrap_or(f64::NAN);
            if n == 0.0 || n.is_nan() {
                Verdict::Open
            } else {
                Verdict::Closed(format!("query {} returns {}", clean(name), clean(v)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_series_closes_and_none_opens() {
        let none = QueryResult::Series {
            count: 0,
            first: None,
            value: None,
        };
        assert_eq!(verdict("api-errors", &none), Verdict::Open);
        let two = QueryResult::Series {
            count: 2,
            first: Some(BTreeMap::from([("code".into(), "503".into())])),
            value: Some("7.5".into()),
        };
        assert_eq!(
            verdict("api-errors", &two),
            Verdict::Closed(r#"query api-errors returns 2 series ({code="503"} = 7.5)"#.into())
        );
        let bare = QueryResult::Series {
            count: 1,
            first: Some(BTreeMap::new()),
            value: Some("1".into()),
        };
        assert_eq!(
            verdict("q", &bare),
            Verdict::Closed("query q returns 1 series (value 1)".into())
        );
    }

    #[test]
    fn scalars_close_unless_zero_or_nan() {
        assert!(verdict("q", &QueryResult::Scalar("0".into())).is_open());
        assert!(verdict("q", &QueryResult::Scalar("NaN".into())).is_open());
        assert_eq!(
            verdict("q", &QueryResult::Scalar("3".into())),
            Verdict::Closed("query q returns 3".into())
        );
    }
}

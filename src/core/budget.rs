//! The unavailability budget: how many selected nodes may be out at once.
//!
//! `maxUnavailable` is an integer or a percentage of the selected nodes
//! (rounded down, at least 1). A node counts as unavailable when it is NotReady,
//! unschedulable (cordoned by anyone), or in progress for any policy. A node is
//! started only if the count *after* starting it stays within the budget; a node
//! that is already unavailable (for example cordoned by an admin) adds nothing.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A `maxUnavailable` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rollout.maxUnavailable {value:?} is not usable: give an integer of at least 1 (without quotes) or a percentage such as 25%"
)]
pub struct BudgetError {
    /// The value given.
    pub value: String,
}

/// `maxUnavailable`, parsed: a count or a percentage of the selected nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// At most this many nodes (at least 1).
    Count(usize),
    /// At most this percentage (1 to 100) of the selected nodes, rounded down, at least 1.
    Percent(u32),
}

impl Default for MaxUnavailable {
    fn default() -> Self {
        MaxUnavailable::Count(crate::api::DEFAULT_MAX_UNAVAILABLE as usize)
    }
}

impl MaxUnavailable {
    /// Parses the spec's value. Only a percentage is a string; a number in
    /// quotes (`"3"`) is refused, as by the CRD and `sofort validate`.
    pub fn parse(value: &IntOrString) -> Result<Self, BudgetError> {
        let err = |v: String| BudgetError { value: v };
        match value {
            IntOrString::Int(n) if *n >= 1 => Ok(MaxUnavailable::Count(*n as usize)),
            IntOrString::Int(n) => Err(err(n.to_string())),
            IntOrString::String(s) => parse_percent(s)
                .map(MaxUnavailable::Percent)
                .ok_or_else(|| err(s.clone())),
        }
    }

    /// How many of `total` selected nodes may be unavailable at once.
    pub fn resolve(self, total: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n,
            MaxUnavailable::Percent(p) => ((total as u64 * u64::from(p)) / 100).max(1) as usize,
        }
    }
}

/// Resolves `maxUnavailable` against the number of selected nodes.
pub fn max_unavailable(value: &IntOrString, total: usize) -> Result<usize, BudgetError> {
    MaxUnavailable::parse(value).map(|m| m.resolve(total))
}

/// A percentage from `1%` to `100%` written as the CRD allows it
/// (`^([1-9][0-9]?|100)%$`: no sign, no spaces, no leading zero).
pub fn parse_percent(s: &str) -> Option<u32> {
    let digits = s.strip_suffix('%')?;
    let ok = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    let p: u32 = digits.parse().ok().filter(|_| ok)?;
    (1..=100).contains(&p).then_some(p)
}

/// Budget bookkeeping within one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most nodes that may be unavailable.
    pub max: usize,
    /// Nodes unavailable now.
    pub unavailable: usize,
}

impl Budget {
    /// Whether a node may start; `already_unavailable` nodes add nothing.
    pub fn can_start(&self, already_unavailable: bool) -> bool {
        let after = self.unavailable + usize::from(!already_unavailable);
        after <= self.max
    }

    /// Records a start.
    pub fn take(&mut self, already_unavailable: bool) {
        self.unavailable += usize::from(!already_unavailable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_percentages() {
        assert_eq!(max_unavailable(&IntOrString::Int(2), 10), Ok(2));
        assert_eq!(
            max_unavailable(&IntOrString::String("25%".into()), 10),
            Ok(2)
        );
        assert_eq!(
            max_unavailable(&IntOrString::String("25%".into()), 3),
            Ok(1)
        );
        assert_eq!(
            max_unavailable(&IntOrString::String("100%".into()), 7),
            Ok(7)
        );
        assert_eq!(
            max_unavailable(&IntOrString::String("10%".into()), 0),
            Ok(1)
        );
        for bad in [
            "0%", "101%", "x%", "-1", "", "0", "3", " 25%", "+5%", "05%", "100.0%",
        ] {
            assert!(
                max_unavailable(&IntOrString::String(bad.into()), 10).is_err(),
                "{bad}"
            );
        }
        assert!(max_unavailable(&IntOrString::Int(0), 10).is_err());
        assert!(max_unavailable(&IntOrString::Int(-3), 10).is_err());
    }

    #[test]
    fn never_exceeds() {
        let mut b = Budget {
            max: 2,
            unavailable: 1,
        };
        assert!(b.can_start(false));
        b.take(false);
        assert!(!b.can_start(false));
        // An already cordoned node adds nothing while the budget holds.
        assert!(b.can_start(true));
        let over = Budget {
            max: 2,
            unavailable: 3,
        };
        assert!(!over.can_start(true));
    }
}

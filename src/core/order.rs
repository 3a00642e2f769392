//! Order of nodes: groups one after another, sorted inside each group.
//!
//! * Nodes are grouped by the value of `order.groupBy` (for example the zone).
//!   Groups are processed in sorted order; nodes without the label form the last
//!   group.
//! * Inside a group nodes sort by the `order.sortBy` label values in turn (a
//!   missing value sorts after any present one), then by node name.
//! * Every comparison is *numeric-aware*: runs of digits compare by value, so
//!   `2` < `10` and `w-2` < `w-10`; ties fall back to plain byte order, so the
//!   order is total and deterministic.
//!
//! [`OrderKey`] is the one definition of this order: the rollout core, the
//! forecast and the property tests all compare nodes by it.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::api::OrderSpec;

/// Compares two strings, runs of ASCII digits by numeric value. Total: only
/// equal strings compare equal.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        let ord = if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let (na, ni) = digit_run(ab, i);
            let (nb, nj) = digit_run(bb, j);
            (i, j) = (ni, nj);
            na.len().cmp(&nb.len()).then_with(|| na.cmp(nb))
        } else {
            let ord = ab[i].cmp(&bb[j]);
            (i, j) = (i + 1, j + 1);
            ord
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j)).then_with(|| a.cmp(b))
}

/// The run of digits starting at `start`, without leading zeros (one zero
/// stays), and the index after the run.
fn digit_run(s: &[u8], start: usize) -> (&[u8], usize) {
    let len = s[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let run = &s[start..start + len];
    let zeros = run.iter().take_while(|c| **c == b'0').count();
    (&run[zeros.min(len.saturating_sub(1))..], start + len)
}

/// Compares optional values: present before missing, present ones naturally.
pub fn cmp_opt(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => natural_cmp(a, b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The group of a node (`None`: no groupBy configured or label missing).
pub fn group_of<'a>(spec: &OrderSpec, labels: &'a BTreeMap<String, String>) -> Option<&'a str> {
    spec.group_by
        .as_deref()
        .and_then(|k| labels.get(k))
        .map(String::as_str)
}

/// Compares two groups: the order groups are worked on (missing last).
pub fn cmp_group(a: Option<&str>, b: Option<&str>) -> Ordering {
    cmp_opt(a, b)
}

/// A node's place in the rollout order: its group (missing last), its sortBy
/// values in turn (missing after present), then its name, each compared
/// naturally. Keys compare in rollout order; build one per node and sort by
/// it rather than looking labels up in every comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey<'a> {
    group: Option<&'a str>,
    values: Vec<Option<&'a str>>,
    name: &'a str,
}

impl<'a> OrderKey<'a> {
    /// The key of node `name` with `labels` under `spec`.
    pub fn of(spec: &OrderSpec, name: &'a str, labels: &'a BTreeMap<String, String>) -> Self {
        OrderKey {
            group: group_of(spec, labels),
            values: spec
                .sort_by
                .iter()
                .map(|k| labels.get(k).map(String::as_str))
                .collect(),
            name,
        }
    }

    /// The group part of the key.
    pub fn group(&self) -> Option<&'a str> {
        self.group
    }

    /// Compares only the groups: the order in which groups are worked on.
    pub fn cmp_group(&self, other: &Self) -> Ordering {
        cmp_group(self.group, other.group)
    }
}

impl Ord for OrderKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_group(other)
            .then_with(|| {
                self.values
                    .iter()
                    .zip(&other.values)
                    .map(|(a, b)| cmp_opt(*a, *b))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
            .then_with(|| natural_cmp(self.name, other.name))
    }
}

impl PartialOrd for OrderKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Sorts items into rollout order; `key` gives each item's name and labels.
pub fn sort_nodes<T>(
    spec: &OrderSpec,
    items: &mut [T],
    key: impl Fn(&T) -> (&str, &BTreeMap<String, String>),
) {
    items.sort_by(|x, y| {
        let ((an, al), (bn, bl)) = (key(x), key(y));
        OrderKey::of(spec, an, al).cmp(&OrderKey::of(spec, bn, bl))
    });
}
#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn order_key_compares_group_then_sort_values_then_name() {
        let spec = OrderSpec {
            group_by: Some("zone".into()),
            sort_by: vec!["prio".into(), "rack".into()],
        };
        let a = labels(&[("zone", "a"), ("prio", "2"), ("rack", "9")]);
        let b = labels(&[("zone", "a"), ("prio", "10"), ("rack", "1")]);
        let c = labels(&[("zone", "a"), ("prio", "2")]);
        let none = labels(&[]);
        let key = |name, l| OrderKey::of(&spec, name, l);
        // prio 2 < prio 10 (numerically), whatever the rack or the name.
        assert!(key("z", &a) < key("a", &b));
        // Same prio: a present rack comes before a missing one.
        assert!(key("z", &a) < key("a", &c));
        // Same values: the name decides, numerically.
        assert!(key("w-2", &a) < key("w-10", &a));
        // A node without the group label comes after every group.
        assert!(key("a", &b) < key("a", &none));
        assert_eq!(key("a", &none).group(), None);
        assert_eq!(
            key("x", &a).cmp_group(&key("y", &c)),
            Ordering::Equal,
            "same group"
        );
        assert_eq!(key("x", &a).cmp(&key("x", &a)), Ordering::Equal);
    }

    #[test]
    fn natural_order_of_numbers_and_names() {
        assert_eq!(natural_cmp("2", "10"), Ordering::Less);
        assert_eq!(natural_cmp("w-2", "w-10"), Ordering::Less);
        assert_eq!(natural_cmp("w-10", "w-9"), Ordering::Greater);
        assert_eq!(natural_cmp("a", "b"), Ordering::Less);
        assert_eq!(natural_cmp("abc", "ab"), Ordering::Greater);
        // Equal numeric value, different text: still a total order.
        assert_eq!(natural_cmp("007", "7"), Ordering::Less);
        assert_eq!(natural_cmp("7", "007"), Ordering::Greater);
        assert_eq!(natural_cmp("x", "x"), Ordering::Equal);
    }

    #[test]
    fn groups_sorted_missing_last_then_priority_then_name() {
        let spec = OrderSpec {
            group_by: Some("zone".into()),
            sort_by: vec!["prio".into()],
        };
        let mut nodes = vec![
            ("n-none", labels(&[])),
            ("n-b1", labels(&[("zone", "b")])),
            ("n-a10", labels(&[("zone", "a"), ("prio", "10")])),
            ("n-a2", labels(&[("zone", "a"), ("prio", "2")])),
            ("n-a-noprio", labels(&[("zone", "a")])),
            ("n-a2b", labels(&[("zone", "a"), ("prio", "2")])),
        ];
        sort_nodes(&spec, &mut nodes, |(n, l)| (n, l));
        let names: Vec<_> = nodes.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["n-a2", "n-a2b", "n-a10", "n-a-noprio", "n-b1", "n-none"]
        );
    }

    #[test]
    fn order_is_deterministic_whatever_the_input_order() {
        let spec = OrderSpec {
            group_by: Some("zone".into()),
            sort_by: vec![],
        };
        let a: Vec<(String, BTreeMap<String, String>)> = (0..20)
            .map(|i| (format!("w-{i}"), labels(&[("zone", ["x", "y"][i % 2])])))
            .collect();
        let mut b = a.clone();
        b.reverse();
        let mut a = a;
        sort_nodes(&spec, &mut a, |(n, l)| (n, l));
        sort_nodes(&spec, &mut b, |(n, l)| (n, l));
        assert_eq!(a, b);
        assert_eq!(a[0].0, "w-0");
        assert_eq!(a[1].0, "w-2");
        assert_eq!(a[10].0, "w-1");
    }
}

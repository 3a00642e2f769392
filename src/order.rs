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

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::api::OrderSpec;

/// Compares two strings, runs of ASCII digits by numeric value.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = trim_zeros(&ab[si..i]);
            let nb = trim_zeros(&bb[sj..j]);
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            let ord = ab[i].cmp(&bb[j]);
            if ord != Ordering::Equal {
                return ord;
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j)).then_with(|| a.cmp(b))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
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

/// Compares two groups (missing last).
pub fn cmp_group(a: Option<&str>, b: Option<&str>) -> Ordering {
    cmp_opt(a, b)
}

/// Compares two nodes inside the same group: sortBy values, then name.
pub fn cmp_in_group(
    spec: &OrderSpec,
    a_name: &str,
    a: &BTreeMap<String, String>,
    b_name: &str,
    b: &BTreeMap<String, String>,
) -> Ordering {
    for key in &spec.sort_by {
        let ord = cmp_opt(
            a.get(key).map(String::as_str),
            b.get(key).map(String::as_str),
        );
        if ord != Ordering::Equal {
            return ord;
        }
    }
    natural_cmp(a_name, b_name)
}

/// Full order: group, then inside the group.
pub fn cmp_nodes(
    spec: &OrderSpec,
    a_name: &str,
    a: &BTreeMap<String, String>,
    b_name: &str,
    b: &BTreeMap<String, String>,
) -> Ordering {
    cmp_group(group_of(spec, a), group_of(spec, b))
        .then_with(|| cmp_in_group(spec, a_name, a, b_name, b))
}

/// Sorts `(name, labels)` pairs into rollout order.
pub fn sort_nodes<T>(
    spec: &OrderSpec,
    items: &mut [T],
    key: impl Fn(&T) -> (&str, &BTreeMap<String, String>),
) {
    items.sort_by(|x, y| {
        let (an, al) = key(x);
        let (bn, bl) = key(y);
        cmp_nodes(spec, an, al, bn, bl)
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

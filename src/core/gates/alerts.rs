//! The alerts gate: which firing alerts hold new starts, and Alertmanager's
//! silences and matchers.
//!
//! `names` are regular expressions on `alertname`, anchored at both ends as
//! Prometheus anchors its own (`Node.*` matches `NodeDiskPressure`, not
//! `KubeNode`); an empty list matches every alert. An alert whose label value
//! is listed under `ignore` never blocks. Only `firing` alerts block; a
//! `pending` one has not met its `for:` yet. With `respectSilences`, an alert
//! matched by an active silence does not block, except a silence sofort made
//! itself for a node in maintenance: those quiet notifications, they never
//! open a gate.

use std::collections::BTreeMap;

use jiff::Timestamp;
use regex::Regex;

use super::{Verdict, clean, hhmm};

/// Longest regular expression accepted (names, matchers).
pub const MAX_PATTERN: usize = 1024;
/// Compiled size bound of one regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A pattern or matcher that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// A regular expression does not compile (or is too large).
    #[error(
        "{what} is not a valid regular expression ({reason}); use RE2 syntax as Prometheus does, for example \"Node.*\""
    )]
    Regex {
        /// Where the pattern is.
        what: String,
        /// Why it does not compile.
        reason: String,
    },
    /// A matcher is not `name<op>"value"`.
    #[error(
        "matcher {index} is not of the form label=\"value\" (operators =, !=, =~, !~); for example instance=~\"{{node}}(:.*)?\""
    )]
    Matcher {
        /// Index in the list.
        index: usize,
    },
}

/// State of an alert as Prometheus reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Its `for:` has passed.
    Firing,
    /// Condition true, `for:` not yet passed.
    Pending,
    /// Anything else (`inactive`).
    Inactive,
}

/// One alert from Prometheus' `/api/v1/alerts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// Since when the condition holds.
    pub active_at: Option<Timestamp>,
}

impl Alert {
    /// The `alertname` label.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Where it fires: the `node` label, else `instance` without its port.
    pub fn place(&self) -> Option<&str> {
        if let Some(n) = self.labels.get("node") {
            return Some(n);
        }
        let inst = self.labels.get("instance")?;
        Some(match inst.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => inst,
        })
    }
}

fn compile(pattern: &str, what: impl FnOnce() -> String) -> Result<Regex, AlertError> {
    if pattern.len() > MAX_PATTERN {
        return Err(AlertError::Regex {
            what: what(),
            reason: format!("longer than {MAX_PATTERN} bytes"),
        });
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| AlertError::Regex {
            what: what(),
            reason: e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string(),
        })
}

/// Which alerts block: compiled from `gates.prometheus.alerts`.
#[derive(Debug, Clone)]
pub struct AlertFilter {
    names: Vec<Regex>,
    ignore: BTreeMap<String, Vec<String>>,
}

impl AlertFilter {
    /// Compiles `names`; `ignore` maps a label to values that never block.
    pub fn new(
        names: &[String],
        ignore: &BTreeMap<String, Vec<String>>,
    ) -> Result<AlertFilter, AlertError> {
        let names = names
            .iter()
            .enumerate()
            .map(|(i, n)| compile(n, || format!("alerts.names[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(AlertFilter {
            names,
            ignore: ignore.clone(),
        })
    }

    /// Whether `alert`, if it fires, is one this gate waits for.
    pub fn selects(&self, alert: &Alert) -> bool {
        let named = self.names.is_empty() || self.names.iter().any(|r| r.is_match(alert.name()));
        let ignored = self.ignore.iter().any(|(label, values)| {
            alert
                .labels
                .get(label)
                .is_some_and(|v| values.iter().any(|x| x == v))
        });
        named && !ignored
    }
}

/// A matcher operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~`
    Re,
    /// `!~`
    NotRe,
}

impl MatchOp {
    /// Alertmanager's `isRegex`.
    pub fn is_regex(self) -> bool {
        matches!(self, MatchOp::Re | MatchOp::NotRe)
    }

    /// Alertmanager's `isEqual`.
    pub fn is_equal(self) -> bool {
        matches!(self, MatchOp::Eq | MatchOp::Re)
    }

    /// From Alertmanager's `isRegex` and `isEqual` (absent `isEqual` is true).
    pub fn from_flags(is_regex: bool, is_equal: bool) -> MatchOp {
        match (is_regex, is_equal) {
            (false, true) => MatchOp::Eq,
            (false, false) => MatchOp::Ne,
            (true, true) => MatchOp::Re,
            (true, false) => MatchOp::NotRe,
        }
    }
}

/// One label matcher, as in silences.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value (a regular expression for `=~` and `!~`).
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Matcher {
    /// A matcher from its parts.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, AlertError> {
        let re = if op.is_regex() {
            Some(compile(value, || {
                format!("matcher value for {}", clean(name))
            })?)
        } else {
            None
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Whether `labels` satisfy it (a missing label is the empty value).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            // A regex operator always has its compiled pattern.
            (_, None) => false,
        }
    }
}

/// A matcher template of `silenceDuringMaintenance.matchers`, such as
/// `instance=~"{node}(:.*)?"`: `{node}` stands for the node's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatcherTemplate {
    name: String,
    op: MatchOp,
    value: String,
}

/// The placeholder for the node name in matcher templates.
pub const NODE_PLACEHOLDER: &str = "{node}";

impl MatcherTemplate {
    /// Parses `label<op>"value"` (the value quoted with `"`; `\"` and `\\`
    /// escape). `index` is for the error.
    pub fn parse(text: &str, index: usize) -> Result<MatcherTemplate, AlertError> {
        let bad = || AlertError::Matcher { index };
        let text = text.trim();
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(bad)?;
        let (name, rest) = text.split_at(name_end);
        let first_ok = name.chars().next().is_some_and(|c| !c.is_ascii_digit());
        if !first_ok {
            return Err(bad());
        }
        let (op, rest) = [
            ("=~", MatchOp::Re),
            ("!~", MatchOp::NotRe),
            ("!=", MatchOp::Ne),
            ("=", MatchOp::Eq),
        ]
        .into_iter()
        .find_map(|(s, op)| rest.trim_start().strip_prefix(s).map(|r| (op, r)))
        .ok_or_else(bad)?;
        let value = unquote(rest.trim()).ok_or_else(bad)?;
        let t = MatcherTemplate {
            name: name.to_string(),
            op,
            value,
        };
        // The template must give a valid matcher for any node name.
        t.for_node("node-1").map(|_| t.clone())
    }

    /// The matcher for `node`; in a regular expression the name is escaped.
    pub fn for_node(&self, node: &str) -> Result<Matcher, AlertError> {
        let node = if self.op.is_regex() {
            regex::escape(node)
        } else {
            node.to_string()
        };
        Matcher::new(
            &self.name,
            self.op,
            &self.value.replace(NODE_PLACEHOLDER, &node),
        )
    }
}

/// `"..."` with `\"` and `\\` escapes, nothing after the closing quote.
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// A silence from Alertmanager's `/api/v2/silences`.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// Its ID.
    pub id: String,
    /// Its matchers (all must match).
    pub matchers: Vec<Matcher>,
    /// `status.state == "active"`.
    pub active: bool,
    /// Made by sofort for a node in maintenance.
    pub ours: bool,
}

impl Silence {
    /// Whether it silences `labels` now.
    pub fn silences(&self, labels: &BTreeMap<String, String>) -> bool {
        self.active && !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// The alerts gate over Prometheus' alerts and, with `respectSilences`,
/// Alertmanager's silences (`None` when silences are not respected).
pub fn verdict(filter: &AlertFilter, alerts: &[Alert], silences: Option<&[Silence]>) -> Verdict {
    let silenced =
        |a: &Alert| silences.is_some_and(|ss| ss.iter().any(|s| !s.ours && s.silences(&a.labels)));
    let mut blocking: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing && filter.selects(a) && !silenced(a))
        .collect();
    // The oldest first, so the message names the same alert while it fires.
    blocking.sort_by(|a, b| (a.active_at, a.name()).cmp(&(b.active_at, b.name())));
    let Some(first) = blocking.first() else {
        return Verdict::Open;
    };
    let mut why = format!("alert {} firing", clean(first.name()));
    if let Some(place) = first.place() {
        why.push_str(&format!(" on {}", clean(place)));
    }
    if let Some(t) = first.active_at {
        why.push_str(&format!(" (since {})", hhmm(t)));
    }
    if blocking.len() > 1 {
        why.push_str(&format!(" and {} more", blocking.len() - 1));
    }
    Verdict::Closed(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, extra: &[(&str, &str)], state: AlertState, since: &str) -> Alert {
        let mut labels = BTreeMap::from([("alertname".to_string(), name.to_string())]);
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        Alert {
            labels,
            state,
            active_at: Some(since.parse().unwrap()),
        }
    }

    fn filter(names: &[&str], ignore: &[(&str, &[&str])]) -> AlertFilter {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ignore = ignore
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect();
        AlertFilter::new(&names, &ignore).unwrap()
    }

    #[test]
    fn names_are_anchored_regexes_and_ignored_labels_never_block() {
        let f = filter(
            &["KubePodCrashLooping", "Node.*"],
            &[("severity", &["info", "none"])],
        );
        let since = "2026-11-27T22:04:00Z";
        let disk = alert(
            "NodeDiskPressure",
            &[("instance", "w-3:9100")],
            AlertState::Firing,
            since,
        );
        assert!(f.selects(&disk));
        assert!(!f.selects(&alert("KubeNodeNotReady", &[], AlertState::Firing, since)));
        assert!(!f.selects(&alert(
            "NodeX",
            &[("severity", "info")],
            AlertState::Firing,
            since
        )));
        assert_eq!(
            verdict(&f, std::slice::from_ref(&disk), None),
            Verdict::Closed("alert NodeDiskPressure firing on w-3 (since 22:04)".into())
        );
        // Pending alerts have not met their `for:`.
        let pending = alert("NodeDiskPressure", &[], AlertState::Pending, since);
        assert_eq!(verdict(&f, &[pending], None), Verdict::Open);
        // An empty list matches any alert.
        let any = filter(&[], &[]);
        assert!(any.selects(&alert("Whatever", &[], AlertState::Firing, since)));
        assert_eq!(verdict(&any, &[], None), Verdict::Open);
    }

    #[test]
    fn the_oldest_blocking_alert_is_named_with_a_count_of_the_rest() {
        let f = filter(&[], &[]);
        let a = alert(
            "B",
            &[("node", "w-1")],
            AlertState::Firing,
            "2026-11-27T22:10:00Z",
        );
        let b = alert("A", &[], AlertState::Firing, "2026-11-27T21:00:00Z");
        assert_eq!(
            verdict(&f, &[a, b], None),
            Verdict::Closed("alert A firing (since 21:00) and 1 more".into())
        );
    }

    #[test]
    fn silences_unblock_only_when_respected_active_and_not_our_own() {
        let f = filter(&[], &[]);
        let a = alert(
            "NodeDown",
            &[("instance", "w-1:9100")],
            AlertState::Firing,
            "2026-11-27T22:00:00Z",
        );
        let m = MatcherTemplate::parse(r#"instance=~"{node}(:.*)?""#, 0).unwrap();
        let mut s = Silence {
            id: "s1".into(),
            matchers: vec![m.for_node("w-1").unwrap()],
            active: true,
            ours: false,
        };
        let alerts = std::slice::from_ref(&a);
        assert!(verdict(&f, alerts, Some(std::slice::from_ref(&s))).is_open());
        assert!(
            !verdict(&f, alerts, None).is_open(),
            "silences not respected"
        );
        s.active = false;
        assert!(!verdict(&f, alerts, Some(std::slice::from_ref(&s))).is_open());
        s.active = true;
        s.ours = true;
        assert!(!verdict(&f, alerts, Some(std::slice::from_ref(&s))).is_open());
        // A silence for another node does not match.
        s.ours = false;
        s.matchers = vec![m.for_node("w-10").unwrap()];
        assert!(!verdict(&f, alerts, Some(std::slice::from_ref(&s))).is_open());
        // A silence without matchers silences nothing.
        s.matchers.clear();
        assert!(!s.silences(&a.labels));
    }

    #[test]
    fn matcher_templates_parse_escape_the_node_and_refuse_garbage() {
        let t = MatcherTemplate::parse(r#"instance=~"{node}(:.*)?""#, 0).unwrap();
        let m = t.for_node("w.1").unwrap();
        assert_eq!(m.value, r"w\.1(:.*)?");
        let labels = |v: &str| BTreeMap::from([("instance".to_string(), v.to_string())]);
        assert!(m.matches(&labels("w.1:9100")));
        assert!(!m.matches(&labels("wx1:9100")), "the dot is escaped");
        let eq = MatcherTemplate::parse(r#"node="{node}""#, 0).unwrap();
        assert!(
            eq.for_node("w-1")
                .unwrap()
                .matches(&BTreeMap::from([("node".to_string(), "w-1".to_string())]))
        );
        let ne = MatcherTemplate::parse(r#"job != "a\"b""#, 0).unwrap();
        assert_eq!(ne.for_node("x").unwrap().value, "a\"b");
        for bad in [
            "",
            "instance",
            "instance=w-1",
            r#"1x="a""#,
            r#"x=="a""#,
            r#"x="a" trailing"#,
            r#"x="unterminated"#,
            r#"x=~"(""#,
        ] {
            assert!(MatcherTemplate::parse(bad, 3).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            MatchOp::from_flags(true, false),
            MatchOp::NotRe,
            "isRegex, not isEqual"
        );
        assert!(AlertFilter::new(&["(".into()], &BTreeMap::new()).is_err());
        assert!(AlertFilter::new(&["a".repeat(MAX_PATTERN + 1)], &BTreeMap::new()).is_err());
    }
}

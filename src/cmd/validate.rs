//! Validation of PatchPolicy objects: one function that returns *all* problems,
//! each with its field path and a hint that says how to fix it.
//!
//! The API server already rejects what the CRD schema can express (patterns,
//! enums, CEL rules). This module checks everything, including what only code can
//! check (time-zone names, windows too short for one node, label-key syntax), so
//! `sofort validate` in a GitOps repository's CI catches mistakes before they are
//! applied, and the controller reports the same problems in status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::api::{MaintenanceWindow, PatchPolicy, PatchPolicySpec};
use crate::core::duration;

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `spec.maintenanceWindows[0].timeZone`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// Validates a whole PatchPolicy object (metadata and spec).
pub fn validate_policy(policy: &PatchPolicy) -> Vec<Problem> {
    let mut out = Vec::new();
    match policy.metadata.name.as_deref() {
        None | Some("") => out.push(problem(
            "metadata.name",
            "missing; give the policy a name such as workers-nightly",
        )),
        Some(name) if !is_dns_subdomain(name) => out.push(problem(
            "metadata.name",
            format!("{name:?} is not a valid name; use lower-case letters, digits, '-' and '.'"),
        )),
        Some(_) => {}
    }
    if policy
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|ns| !ns.is_empty())
    {
        out.push(problem(
            "metadata.namespace",
            "PatchPolicy is cluster-scoped; remove the namespace",
        ));
    }
    let details = policy
        .spec
        .notify
        .as_ref()
        .and_then(|n| n.advisory.as_ref())
        .and_then(|a| a.details.as_deref());
    if let Some(name) = policy.metadata.name.as_deref()
        && crate::notify::Embargo::new(details).leaks(name)
    {
        out.push(problem(
            "metadata.name",
            "contains text of spec.notify.advisory.details, which is embargoed, but the policy name is public in every notification; name the policy after what it patches, not the hole",
        ));
    }
    out.extend(validate_spec(&policy.spec));
    out
}

/// Validates a spec and returns every problem found (empty when valid).
///
/// Besides the checks only code can do, the spec is held to the CRD schema's
/// own bounds (lengths, list sizes, number ranges, patterns), so the
/// controller refuses exactly what the API server would have refused, also
/// for an object stored before a bound was added.
pub fn validate_spec(spec: &PatchPolicySpec) -> Vec<Problem> {
    let mut out = semantic_problems(spec);
    let mut seen: BTreeSet<String> = out.iter().map(|p| p.path.clone()).collect();
    for p in spec_schema_problems(spec) {
        if seen.insert(p.path.clone()) {
            out.push(p);
        }
    }
    out
}

/// The CRD's schema, built once.
fn whole_schema() -> Option<&'static Value> {
    static SCHEMA: std::sync::OnceLock<Option<Value>> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(crd_schema).as_ref()
}

/// The spec's schema within the CRD.
fn spec_schema() -> Option<&'static Value> {
    whole_schema()?.pointer("/properties/spec")
}

fn spec_schema_problems(spec: &PatchPolicySpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let (Some(schema), Ok(value)) = (spec_schema(), serde_json::to_value(spec)) else {
        return out;
    };
    let mut checker = SchemaChecker::default();
    checker.check_under("spec", &value, schema, &mut out);
    out
}

fn semantic_problems(spec: &PatchPolicySpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let rev = spec.revision.as_str();
    if rev.trim().is_empty() {
        out.push(problem(
            "spec.revision",
            "must not be empty; set it to the patch level, for example \"2026-11-27\"",
        ));
    } else if rev.trim() != rev {
        out.push(problem(
            "spec.revision",
            "must not start or end with spaces",
        ));
    } else if rev.len() > 128 {
        out.push(problem("spec.revision", "must be at most 128 characters"));
    }

    check_selector(&mut out, "spec.nodeSelector", &spec.node_selector);

    let mut windows_ok = true;
    for (i, w) in spec.maintenance_windows.iter().enumerate() {
        windows_ok &= check_window(&mut out, &format!("spec.maintenanceWindows[{i}]"), w);
    }

    for (i, b) in spec.blackouts.iter().enumerate() {
        if b.end.0 <= b.start.0 {
            out.push(problem(
                format!("spec.blackouts[{i}].end"),
                format!(
                    "{} is not after start {}; a blackout must end after it starts",
                    b.end.0, b.start.0
                ),
            ));
        }
    }

    if let Some(a) = &spec.announce
        && let Err(e) = duration::parse(&a.lead_time)
    {
        out.push(problem("spec.announce.leadTime", e.to_string()));
    }

    check_max_unavailable(&mut out, &spec.rollout.max_unavailable);
    let settle = check_duration(&mut out, "spec.rollout.settle", &spec.rollout.settle, true);
    let min_remaining = spec
        .rollout
        .min_window_remaining
        .as_deref()
        .and_then(|d| check_duration(&mut out, "spec.rollout.minWindowRemaining", d, true));
    if let Some(g) = &spec.rollout.order.group_by
        && let Err(e) = check_label_key(g)
    {
        out.push(problem("spec.rollout.order.groupBy", e));
    }
    let mut seen = BTreeSet::new();
    for (i, k) in spec.rollout.order.sort_by.iter().enumerate() {
        let path = format!("spec.rollout.order.sortBy[{i}]");
        if let Err(e) = check_label_key(k) {
            out.push(problem(path, e));
        } else if !seen.insert(k.as_str()) {
            out.push(problem(
                path,
                format!("{k:?} is listed twice; remove the duplicate"),
            ));
        }
    }

    let drain = check_duration(&mut out, "spec.drain.timeout", &spec.drain.timeout, false);
    if let Some(g) = spec.drain.grace_period_seconds
        && g < 0
    {
        out.push(problem(
            "spec.drain.gracePeriodSeconds",
            "must be 0 or more; leave it unset to use each pod's own grace period",
        ));
    }
    if let Some(sel) = &spec.drain.pod_selector {
        check_selector(&mut out, "spec.drain.podSelector", sel);
    }
    let reboot = check_duration(&mut out, "spec.reboot.timeout", &spec.reboot.timeout, false);

    let mut patch_timeout = Some(Duration::ZERO);
    if let Some(p) = &spec.patch {
        if p.command.is_empty() || p.command[0].trim().is_empty() {
            out.push(problem(
                "spec.patch.command",
                "must name a program, for example [\"apt-get\", \"-y\", \"dist-upgrade\"]; remove spec.patch to skip the patch step",
            ));
        }
        patch_timeout = check_duration(&mut out, "spec.patch.timeout", &p.timeout, false);
    }

    if let Some(n) = &spec.notify {
        let mut names = BTreeSet::new();
        for (i, w) in n.webhooks.iter().enumerate() {
            let base = format!("spec.notify.webhooks[{i}]");
            if !is_dns_label(&w.name) {
                out.push(problem(
                    format!("{base}.name"),
                    format!(
                        "{:?} must be a DNS label (lower-case letters, digits, '-')",
                        w.name
                    ),
                ));
            } else if !names.insert(w.name.as_str()) {
                out.push(problem(
                    format!("{base}.name"),
                    format!(
                        "{:?} is used by another webhook; names must be unique",
                        w.name
                    ),
                ));
            }
            check_channel(&mut out, &base, w);
            let refs = [
                ("urlSecretRef", Some(&w.url_secret_ref)),
                ("headersSecretRef", w.headers_secret_ref.as_ref()),
                ("caBundleSecretRef", w.ca_bundle_secret_ref.as_ref()),
            ];
            for (field, r) in refs {
                let Some(r) = r else { continue };
                for (sub, v) in [
                    ("namespace", &r.namespace),
                    ("name", &r.name),
                    ("key", &r.key),
                ] {
                    if v.trim().is_empty() {
                        out.push(problem(
                            format!("{base}.{field}.{sub}"),
                            "must not be empty; point it at the Secret key holding the value",
                        ));
                    }
                }
            }
        }
        if let Some(a) = &n.advisory {
            if a.summary.trim().is_empty() {
                out.push(problem(
                    "spec.notify.advisory.summary",
                    "must not be empty: it is the public text of every notification",
                ));
            }
            if let Some(d) = &a.details
                && let Err(m) = crate::notify::embargo::check_details(d)
            {
                out.push(problem("spec.notify.advisory.details", m));
            }
            // Public fields must not give the embargoed details away.
            // Every reader- or customer-visible string of the spec counts.
            let embargo = crate::notify::Embargo::new(a.details.as_deref());
            let mut public: Vec<(String, &str)> = vec![
                ("spec.notify.advisory.summary".into(), a.summary.as_str()),
                ("spec.revision".into(), spec.revision.as_str()),
            ];
            for (i, w) in n.webhooks.iter().enumerate() {
                let base = format!("spec.notify.webhooks[{i}]");
                public.push((format!("{base}.name"), w.name.as_str()));
                if let Some(t) = &w.template {
                    public.push((format!("{base}.template"), t.as_str()));
                }
            }
            if let Some(t) = &n.public_title {
                public.push(("spec.notify.publicTitle".into(), t.as_str()));
            }
            for (i, b) in spec.blackouts.iter().enumerate() {
                if let Some(r) = &b.reason {
                    public.push((format!("spec.blackouts[{i}].reason"), r.as_str()));
                }
            }
            for (i, c) in spec.patch.iter().flat_map(|p| p.command.iter()).enumerate() {
                public.push((format!("spec.patch.command[{i}]"), c.as_str()));
            }
            for (path, value) in public {
                if embargo.leaks(value) {
                    out.push(problem(
                        path,
                        "contains text of spec.notify.advisory.details, which is embargoed until the rollout completed, but this field is public in every notification; use a neutral value such as a date",
                    ));
                }
            }
        }
    }

    if let Some(t) = spec.notify.as_ref().and_then(|n| n.public_title.as_deref())
        && (t.trim().is_empty() || t.chars().any(char::is_control))
    {
        out.push(problem(
            "spec.notify.publicTitle",
            "must be one line of visible text, for example `Web hosting`; remove the field for the default title",
        ));
    }

    // A routine rollout whose windows are all too short can never start a node.
    if windows_ok && !spec.urgent && !spec.maintenance_windows.is_empty() {
        let needed = match min_remaining {
            Some(d) => Some(d),
            None => match (drain, reboot, settle, patch_timeout) {
                (Some(d), Some(r), Some(s), Some(p)) => Some(d + r + s + p),
                _ => None,
            },
        };
        if let Some(needed) = needed {
            let longest = spec
                .maintenance_windows
                .iter()
                .filter_map(window_length)
                .max()
                .unwrap_or(Duration::ZERO);
            if longest < needed {
                let what = if min_remaining.is_some() {
                    "minWindowRemaining"
                } else {
                    "drain timeout + reboot timeout + settle + patch timeout"
                };
                out.push(problem(
                    "spec.maintenanceWindows",
                    format!(
                        "the longest window ({}) is shorter than {what} ({}), so no node could ever start; lengthen a window or set spec.rollout.minWindowRemaining",
                        duration::format(longest),
                        duration::format(needed)
                    ),
                ));
            }
        }
    }
    out
}

/// Wall-clock length of a window on an ordinary day.
fn window_length(w: &MaintenanceWindow) -> Option<Duration> {
    let s = parse_hhmm(&w.start)?;
    let e = parse_hhmm(&w.end)?;
    let mins = if e > s { e - s } else { e + 24 * 60 - s };
    Some(Duration::from_secs(u64::from(mins) * 60))
}

/// Minutes since midnight of an `HH:MM` string.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn check_window(out: &mut Vec<Problem>, base: &str, w: &MaintenanceWindow) -> bool {
    let mut ok = true;
    let start = parse_hhmm(&w.start);
    let end = parse_hhmm(&w.end);
    if start.is_none() {
        ok = false;
        out.push(problem(
            format!("{base}.start"),
            format!(
                "{:?} is not a time; use HH:MM (24 h), for example 22:00",
                w.start
            ),
        ));
    }
    if end.is_none() {
        ok = false;
        out.push(problem(
            format!("{base}.end"),
            format!(
                "{:?} is not a time; use HH:MM (24 h), for example 05:00",
                w.end
            ),
        ));
    }
    if let (Some(s), Some(e)) = (start, end)
        && s == e
        && s != 0
    {
        ok = false;
        out.push(problem(
                format!("{base}.end"),
                format!(
                    "equals start ({}), which is ambiguous; for a whole day use start 00:00 and end 00:00",
                    w.start
                ),
            ));
    }
    let mut days = BTreeSet::new();
    for (i, d) in w.days.iter().enumerate() {
        if !days.insert(*d) {
            out.push(problem(
                format!("{base}.days[{i}]"),
                format!("{d:?} is listed twice; remove the duplicate"),
            ));
        }
    }
    if jiff::tz::db().get(&w.time_zone).is_err() {
        ok = false;
        let hint = suggest_time_zone(&w.time_zone)
            .map(|s| format!("; did you mean {s}?"))
            .unwrap_or_else(|| "; use an IANA name such as Europe/Zurich or UTC".to_string());
        out.push(problem(
            format!("{base}.timeZone"),
            format!("unknown time zone {:?}{hint}", w.time_zone),
        ));
    }
    ok
}

/// The closest known IANA zone name, when one is close enough to be a typo.
pub fn suggest_time_zone(input: &str) -> Option<String> {
    // No zone name is longer; a longer input is no typo of one.
    if input.len() > 64 {
        return None;
    }
    let lower = input.to_ascii_lowercase();
    let mut best: Option<(usize, String)> = None;
    for name in jiff::tz::db().available() {
        let name = name.as_str();
        let d = strsim::levenshtein(&lower, &name.to_ascii_lowercase());
        if best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, name.to_string()));
        }
    }
    best.filter(|(d, name)| *d <= 3.max(name.len() / 5))
        .map(|(_, n)| n)
}

fn check_duration(
    out: &mut Vec<Problem>,
    path: &str,
    value: &str,
    zero_ok: bool,
) -> Option<Duration> {
    match duration::parse(value) {
        Ok(d) if d.is_zero() && !zero_ok => {
            out.push(problem(
                path,
                format!("{value:?} is zero; give it time, for example 15m"),
            ));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            out.push(problem(path, e.to_string()));
            None
        }
    }
}

fn check_max_unavailable(out: &mut Vec<Problem>, v: &IntOrString) {
    const PATH: &str = "spec.rollout.maxUnavailable";
    match v {
        IntOrString::Int(n) if *n < 1 => out.push(problem(
            PATH,
            format!("{n} would never let a node start; use 1 or more, or a percentage such as 25%"),
        )),
        IntOrString::Int(_) => {}
        IntOrString::String(s) => match crate::core::budget::parse_percent(s) {
            Some(_) => {}
            None if s
                .strip_suffix('%')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                let digits = s.trim_end_matches('%').trim_start_matches('0');
                let msg = if digits.is_empty() {
                    "0% would never let a node start; use at least 1%".to_string()
                } else if digits.len() > 3 || digits.parse::<u32>().is_ok_and(|p| p > 100) {
                    format!("{s} is more than 100%")
                } else {
                    format!("{s}: write the percentage without leading zeros")
                };
                out.push(problem(PATH, msg))
            }
            None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => out.push(problem(
                PATH,
                format!(
                    "\"{s}\" is a number in quotes; write it without quotes: maxUnavailable: {s}"
                ),
            )),
            None => out.push(problem(
                PATH,
                format!("{s:?} is neither an integer nor a percentage; write 2 or \"25%\""),
            )),
        },
    }
}

fn check_selector(out: &mut Vec<Problem>, base: &str, sel: &LabelSelector) {
    if let Some(labels) = &sel.match_labels {
        for (k, v) in labels {
            if let Err(e) = check_label_key(k) {
                out.push(problem(format!("{base}.matchLabels[{k}]"), e));
            }
            if let Err(e) = check_label_value(v) {
                out.push(problem(format!("{base}.matchLabels[{k}]"), e));
            }
        }
    }
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let p = format!("{base}.matchExpressions[{i}]");
        if let Err(e) = check_label_key(&r.key) {
            out.push(problem(format!("{p}.key"), e));
        }
        let values = r.values.as_deref().unwrap_or_default();
        match r.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    out.push(problem(
                        format!("{p}.values"),
                        format!("operator {} needs at least one value", r.operator),
                    ));
                }
                for v in values {
                    if let Err(e) = check_label_value(v) {
                        out.push(problem(format!("{p}.values"), e));
                    }
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    out.push(problem(
                        format!("{p}.values"),
                        format!("operator {} takes no values; remove them", r.operator),
                    ));
                }
            }
            other => out.push(problem(
                format!("{p}.operator"),
                format!("{other:?} is not an operator; use In, NotIn, Exists or DoesNotExist"),
            )),
        }
    }
}

/// Checks a label key (`[prefix/]name`) the way Kubernetes does.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(format!(
            "{key:?} is not a valid label key: prefix {p:?} must be a DNS subdomain such as example.com"
        ));
    }
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err(format!(
            "{key:?} is not a valid label key: the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || (v.len() <= 63 && is_label_name(v)) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A problem found in one document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocProblem {
    /// 1-based index of the YAML document in its file.
    pub doc: usize,
    /// The policy's name, when it has one.
    pub name: Option<String>,
    /// The problem.
    pub problem: Problem,
}

/// Summary of checking one YAML text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TextReport {
    /// PatchPolicy documents found.
    pub policies: usize,
    /// Problems found.
    pub problems: Vec<DocProblem>,
    /// Schema nodes visited: a measure of the work done, linear in the input.
    pub work: usize,
}

/// Most problems reported for one document; the rest are counted.
pub const MAX_PROBLEMS_PER_DOCUMENT: usize = 100;
/// Most values of one document that are checked against the schema. A policy
/// within the CRD's own limits has far fewer; a larger document is refused.
pub const MAX_VALUES_PER_DOCUMENT: usize = 200_000;
/// Most documents read from one text.
pub const MAX_DOCUMENTS: usize = 10_000;

/// Checks every PatchPolicy document of a (multi-document) YAML text. Documents
/// of other kinds are skipped, so a whole GitOps directory can be passed.
///
/// Each document is checked three ways, and every problem of all three is
/// reported: against the CRD's schema (types, unknown fields, the length, list
/// and number bounds), by decoding into the controller's types (what the
/// controller would report as `InvalidSpec`), and by [`validate_policy`].
pub fn validate_yaml_text(text: &str) -> TextReport {
    let mut report = TextReport::default();
    let Some(schema) = whole_schema() else {
        report.problems.push(DocProblem {
            doc: 0,
            name: None,
            problem: problem("(document)", "the built-in CRD schema cannot be read"),
        });
        return report;
    };
    if flow_depth(text) > MAX_FLOW_DEPTH {
        report.problems.push(DocProblem {
            doc: 1,
            name: None,
            problem: problem(
                "(document)",
                format!("nested more than {MAX_FLOW_DEPTH} levels deep in [ ] or {{ }}; no PatchPolicy is"),
            ),
        });
        return report;
    }
    let mut checker = SchemaChecker::default();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        if doc > MAX_DOCUMENTS {
            report.problems.push(DocProblem {
                doc,
                name: None,
                problem: problem(
                    "(document)",
                    format!("more than {MAX_DOCUMENTS} documents; split the file"),
                ),
            });
            break;
        }
        let value: Value = match serde::Deserialize::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                report.problems.push(DocProblem {
                    doc,
                    name: None,
                    problem: problem("(document)", format!("not valid YAML: {e}")),
                });
                // The YAML stream cannot be resumed after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str);
        let api_version = value.get("apiVersion").and_then(Value::as_str);
        if kind != Some("PatchPolicy") {
            continue;
        }
        report.policies += 1;
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let want = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
        let problems = if api_version != Some(want.as_str()) {
            vec![problem(
                "apiVersion",
                format!("{:?} is not served; use {want}", api_version.unwrap_or("")),
            )]
        } else {
            check_document(&value, schema, &mut checker)
        };
        let total = problems.len();
        for p in problems.into_iter().take(MAX_PROBLEMS_PER_DOCUMENT) {
            report.problems.push(DocProblem {
                doc,
                name: name.clone(),
                problem: p,
            });
        }
        if total > MAX_PROBLEMS_PER_DOCUMENT {
            report.problems.push(DocProblem {
                doc,
                name: name.clone(),
                problem: problem(
                    "(document)",
                    format!(
                        "{} more problems not shown; fix the ones above first",
                        total - MAX_PROBLEMS_PER_DOCUMENT
                    ),
                ),
            });
        }
    }
    report.work = checker.work;
    report
}

/// Deepest `[ ]`/`{ }` nesting read. The YAML parser's work grows with the
/// square of this depth, and its own limit for decoding is 128 levels anyway.
pub const MAX_FLOW_DEPTH: usize = 128;

/// The deepest flow-collection nesting of a YAML text, in one linear scan.
/// Brackets inside strings count too: skipping quotes would let a stray
/// apostrophe hide the nesting from this guard, and no policy has 128
/// unclosed brackets in a string.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in text.bytes() {
        match c {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Every problem of one PatchPolicy document: the checks of
/// [`validate_policy`] first (their messages say most about the fix), then the
/// schema's, then the decoding error; a path already reported by an earlier
/// stage is not reported again. The semantic checks run only on a document
/// within the schema's size limits, so their cost stays bounded.
fn check_document(value: &Value, schema: &Value, checker: &mut SchemaChecker) -> Vec<Problem> {
    let mut schema_problems = Vec::new();
    checker.check(value, schema, &mut schema_problems);
    let decoded = crate::api::decode_policy(value);
    let mut out = Vec::new();
    if let Ok(policy) = &decoded
        && !checker.oversize
    {
        out = validate_policy(policy);
    }
    let mut seen: BTreeSet<String> = out.iter().map(|p| p.path.clone()).collect();
    for p in schema_problems {
        if seen.insert(p.path.clone()) {
            out.push(p);
        }
    }
    if let Err(e) = decoded {
        let path = if e.path == "(object)" {
            "(document)".to_string()
        } else {
            e.path
        };
        // A missing field is reported at the object that lacks it.
        let covered = seen.contains(&path)
            || (e.message.starts_with("missing field")
                && seen.iter().any(|p| p.starts_with(&path)));
        if !covered {
            out.push(problem(path, e.message));
        }
    }
    out
}

fn crd_schema() -> Option<Value> {
    let crd = crate::cmd::crd::patch_policy_crd();
    let schema = crd
        .spec
        .versions
        .first()?
        .schema
        .as_ref()?
        .open_api_v3_schema
        .as_ref()?;
    serde_json::to_value(schema).ok()
}

/// Checks a value against the CRD's OpenAPI schema the way the API server's
/// structural validation does: types, unknown fields, required fields, enums,
/// patterns, `maxLength`/`minLength`, `maxItems`/`minItems`, `maximum`/`minimum`
/// and the int32/int64 ranges. CEL rules are not evaluated here (see
/// [`crate::cmd::validate::validate_policy`] for the same rules in code).
///
/// The work is linear in the size of the value: the field path is kept as a
/// stack and written out only for a problem, and at most
/// [`MAX_VALUES_PER_DOCUMENT`] values are visited.
#[derive(Default)]
pub struct SchemaChecker {
    /// Values visited so far.
    pub work: usize,
    /// The last document broke a length, list-size or value-count limit.
    pub oversize: bool,
    budget_left: usize,
    path: Vec<Segment>,
    patterns: BTreeMap<String, Option<regex::Regex>>,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl SchemaChecker {
    /// Checks `value` (a whole object) against `schema`; problems go to `out`.
    pub fn check(&mut self, value: &Value, schema: &Value, out: &mut Vec<Problem>) {
        self.budget_left = MAX_VALUES_PER_DOCUMENT;
        self.oversize = false;
        self.path.clear();
        self.walk(value, schema, out, true);
        if self.budget_left == 0 {
            self.oversize = true;
            out.push(problem(
                "(document)",
                format!(
                    "more than {MAX_VALUES_PER_DOCUMENT} values; a PatchPolicy within the CRD's limits is far smaller"
                ),
            ));
        }
    }

    /// Checks `value`, the field `key` of a whole object, against its schema.
    pub fn check_under(
        &mut self,
        key: &str,
        value: &Value,
        schema: &Value,
        out: &mut Vec<Problem>,
    ) {
        self.budget_left = MAX_VALUES_PER_DOCUMENT;
        self.oversize = false;
        self.path.clear();
        self.path.push(Segment::Key(key.to_string()));
        self.walk(value, schema, out, false);
        self.path.clear();
    }

    fn path_string(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                Segment::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Segment::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        if s.is_empty() {
            "(document)".to_string()
        } else {
            s
        }
    }

    fn report(&self, out: &mut Vec<Problem>, message: String) {
        if out.len() <= MAX_PROBLEMS_PER_DOCUMENT {
            out.push(problem(self.path_string(), message));
        }
    }

    fn walk(&mut self, value: &Value, schema: &Value, out: &mut Vec<Problem>, root: bool) {
        if self.budget_left == 0 {
            return;
        }
        self.budget_left -= 1;
        self.work += 1;
        if value.is_null() {
            // Kubernetes drops nulls of nullable fields; others are type errors.
            if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
                self.report(out, "must not be null; remove the field instead".into());
            }
            return;
        }
        let int_or_string = schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true);
        let ty = schema.get("type").and_then(Value::as_str);
        let fits = match (ty, value) {
            _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
            (None, _) => true,
            (Some("object"), Value::Object(_)) => true,
            (Some("array"), Value::Array(_)) => true,
            (Some("string"), Value::String(_)) => true,
            (Some("boolean"), Value::Bool(_)) => true,
            (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Some("number"), Value::Number(_)) => true,
            _ => false,
        };
        if !fits {
            let want = if int_or_string {
                "an integer or a string"
            } else {
                match ty {
                    Some("object") => "an object (key: value lines)",
                    Some("array") => "a list",
                    Some("string") => "a string",
                    Some("boolean") => "true or false",
                    Some("integer") => "a whole number",
                    Some("number") => "a number",
                    _ => "another type",
                }
            };
            self.report(out, format!("must be {want}"));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            self.report(out, format!("must be one of {}", names.join(", ")));
        }
        match value {
            Value::String(s) => self.check_string(s, schema, out),
            Value::Number(n) => self.check_number(n, schema, int_or_string, out),
            Value::Array(items) => self.check_array(items, schema, out),
            Value::Object(map) => self.check_object(map, schema, out, root),
            _ => {}
        }
    }

    fn check_string(&mut self, s: &str, schema: &Value, out: &mut Vec<Problem>) {
        let max = schema.get("maxLength").and_then(Value::as_u64);
        let min = schema.get("minLength").and_then(Value::as_u64);
        if max.is_some() || min.is_some() {
            // Characters, as the API server counts them.
            let len = s.chars().count() as u64;
            if let Some(max) = max.filter(|m| len > *m) {
                self.oversize = true;
                self.report(
                    out,
                    format!("is {len} characters long; at most {max} are allowed"),
                );
                return;
            }
            if let Some(min) = min.filter(|m| len < *m) {
                self.report(out, format!("must be at least {min} characters long"));
                return;
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let re = self
                .patterns
                .entry(pattern.to_string())
                .or_insert_with(|| regex::Regex::new(pattern).ok());
            if let Some(re) = re
                && !re.is_match(s)
            {
                let message = format!("does not match the pattern {pattern}");
                self.report(out, message);
            }
        }
    }

    fn check_number(
        &mut self,
        n: &serde_json::Number,
        schema: &Value,
        int_or_string: bool,
        out: &mut Vec<Problem>,
    ) {
        let format = schema.get("format").and_then(Value::as_str);
        let (lo, hi) = match format {
            // The API server stores int-or-string integers as int32.
            _ if int_or_string => (i64::from(i32::MIN), i64::from(i32::MAX)),
            Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
            Some("uint32") => (0, i64::from(u32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        let Some(v) = n.as_i64() else {
            if n.is_u64()
                || n.is_f64() && schema.get("type").and_then(Value::as_str) == Some("integer")
            {
                self.report(out, format!("is too large; at most {hi}"));
            }
            return;
        };
        if v < lo || v > hi {
            self.report(out, format!("is out of range; use {lo} to {hi}"));
            return;
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && (v as f64) > max
        {
            self.report(out, format!("{v} is more than the maximum {max}"));
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (v as f64) < min
        {
            self.report(out, format!("{v} is less than the minimum {min}"));
        }
    }

    fn check_array(&mut self, items: &[Value], schema: &Value, out: &mut Vec<Problem>) {
        let len = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            self.oversize = true;
            self.report(out, format!("has {len} items; at most {max} are allowed"));
            return;
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            self.report(out, format!("must have at least {min} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                self.path.push(Segment::Index(i));
                self.walk(v, item_schema, out, false);
                self.path.pop();
                if self.budget_left == 0 {
                    return;
                }
            }
        }
    }

    fn check_object(
        &mut self,
        map: &serde_json::Map<String, Value>,
        schema: &Value,
        out: &mut Vec<Problem>,
        root: bool,
    ) {
        if schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return;
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    self.path.push(Segment::Key(r.to_string()));
                    self.report(out, "is required".into());
                    self.path.pop();
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (k, v) in map {
            if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                continue;
            }
            self.path.push(Segment::Key(k.clone()));
            if let Some(s) = props.and_then(|p| p.get(k)) {
                self.walk(v, s, out, false);
            } else if let Some(s) = additional {
                self.walk(v, s, out, false);
            } else if props.is_some() {
                self.report(
                    out,
                    "unknown field; check the spelling (`kubectl explain patchpolicy.spec` lists the fields)".into(),
                );
            }
            self.path.pop();
            if self.budget_left == 0 {
                return;
            }
        }
    }
}

/// Errors reading policy files.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}; check the path and permissions")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn read_input(path: &Path) -> Result<String, ReadError> {
    let shown = path.display().to_string();
    if shown == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| ReadError::Io {
                path: shown,
                source,
            })?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(|source| ReadError::Io {
            path: shown,
            source,
        })
    }
}

/// `sofort validate`: prints one line per problem, exits 1 when any was found.
pub fn run_cli(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    let mut policies = 0;
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    for path in files {
        let shown = if path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let text = match read_input(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let report = validate_yaml_text(&text);
        policies += report.policies;
        per_file.insert(shown.clone(), report.policies);
        for p in &report.problems {
            failed = true;
            println!("{shown}:{}: {}", p.doc, p.problem);
        }
        if report.policies == 0 && report.problems.is_empty() {
            eprintln!("{shown}: note: no PatchPolicy documents found");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        eprintln!(
            "{policies} PatchPolic{} valid",
            if policies == 1 { "y" } else { "ies" }
        );
        ExitCode::SUCCESS
    }
}

/// The template and envelope of one webhook, as its format needs them.
fn check_channel(out: &mut Vec<Problem>, base: &str, w: &crate::api::Webhook) {
    use crate::api::WebhookFormat;
    match (w.format, &w.template) {
        (WebhookFormat::Generic, None) => out.push(problem(
            format!("{base}.template"),
            "format Generic needs a template: the JSON request body, for example {\"title\": \"{summary}\", \"status\": \"{event}\"}",
        )),
        (WebhookFormat::Generic, Some(t)) => {
            if let Err(e) = crate::notify::generic::JsonTemplate::parse(t) {
                out.push(problem(format!("{base}.template"), e.to_string()));
            }
        }
        (_, Some(t)) => {
            if let Err(e) = crate::notify::Template::parse(t) {
                out.push(problem(format!("{base}.template"), e.to_string()));
            }
        }
        (_, None) => {}
    }
    match (w.format, &w.email) {
        (WebhookFormat::Email, None) => out.push(problem(
            format!("{base}.email"),
            "format Email needs `email` with `from` and `to` (the recipients)",
        )),
        (WebhookFormat::Email, Some(e)) => {
            if e.from.parse::<lettre::message::Mailbox>().is_err() {
                out.push(problem(
                    format!("{base}.email.from"),
                    "is not an e-mail address such as `Example Hosting <status@example.com>`",
                ));
            }
            if e.to.is_empty() {
                out.push(problem(
                    format!("{base}.email.to"),
                    "name at least one recipient",
                ));
            }
            for (i, t) in e.to.iter().enumerate() {
                if t.parse::<lettre::message::Mailbox>().is_err() {
                    out.push(problem(
                        format!("{base}.email.to[{i}]"),
                        "is not an e-mail address such as `customers@example.com`",
                    ));
                }
            }
        }
        (_, Some(_)) => out.push(problem(
            format!("{base}.email"),
            "only format Email uses `email`; remove it or set format: Email",
        )),
        (_, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_time_zone_names() {
        assert_eq!(
            suggest_time_zone("Europe/Zurch").as_deref(),
            Some("Europe/Zurich")
        );
        assert_eq!(
            suggest_time_zone("america/new_york").as_deref(),
            Some("America/New_York")
        );
        assert_eq!(suggest_time_zone("Nowhere/Xyzzyqwerty"), None);
    }

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        assert!(check_label_key("topology.kubernetes.io/zone").is_ok());
        assert!(check_label_key("sofort.dev/priority").is_ok());
        assert!(check_label_key("tier").is_ok());
        assert!(check_label_key("Bad Key").is_err());
        assert!(check_label_key("-lead").is_err());
        assert!(check_label_key("UPPER.example/x").is_err());
        assert!(check_label_key(&"a".repeat(64)).is_err());
        assert!(check_label_key("example.com/").is_err());
    }

    #[test]
    fn hhmm_parsing() {
        assert_eq!(parse_hhmm("22:00"), Some(22 * 60));
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("7:00"), None);
        assert_eq!(parse_hhmm("07:60"), None);
    }
}

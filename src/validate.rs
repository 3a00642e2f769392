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
use crate::duration;

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
pub fn validate_spec(spec: &PatchPolicySpec) -> Vec<Problem> {
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
            if let Some(t) = &w.template
                && let Err(e) = crate::notify::Template::parse(t)
            {
                out.push(problem(format!("{base}.template"), e.to_string()));
            }
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
        IntOrString::String(s) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(0)) => out.push(problem(
                PATH,
                "0% would never let a node start; use at least 1%",
            )),
            Some(Ok(p)) if p > 100 => out.push(problem(PATH, format!("{s} is more than 100%"))),
            Some(Ok(_)) => {}
            _ => out.push(problem(
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
}

/// Checks every PatchPolicy document of a (multi-document) YAML text. Documents
/// of other kinds are skipped, so a whole GitOps directory can be passed.
pub fn validate_yaml_text(text: &str) -> TextReport {
    let mut report = TextReport::default();
    let schema = crd_schema();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
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
        let mut push = |p: Problem| {
            report.problems.push(DocProblem {
                doc,
                name: name.clone(),
                problem: p,
            })
        };
        let want = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
        if api_version != Some(want.as_str()) {
            push(problem(
                "apiVersion",
                format!("{:?} is not served; use {want}", api_version.unwrap_or("")),
            ));
            continue;
        }
        let mut unknown = Vec::new();
        if let Some(schema) = &schema {
            unknown_fields(&value, schema, "", &mut unknown);
        }
        for path in &unknown {
            push(problem(
                path.clone(),
                "unknown field; check the spelling (`kubectl explain patchpolicy.spec` lists the fields)",
            ));
        }
        let parsed: Result<PatchPolicy, _> = serde_path_to_error::deserialize(&value);
        match parsed {
            Ok(policy) => {
                for p in validate_policy(&policy) {
                    push(p);
                }
            }
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." {
                    "(document)".to_string()
                } else {
                    path
                };
                push(problem(path, e.into_inner().to_string()));
            }
        }
    }
    report
}

fn crd_schema() -> Option<Value> {
    let crd = crate::crd::patch_policy_crd();
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

/// Collects paths of object keys the schema does not know.
fn unknown_fields(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if path.is_empty()
                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    unknown_fields(v, s, &child, out);
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    unknown_fields(v, s, &child, out);
                } else if props.is_some() && additional.is_none() {
                    out.push(child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
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

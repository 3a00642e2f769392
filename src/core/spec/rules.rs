//! The rules of a spec, one check function per part of it. Each pushes its
//! problems (field path, what is wrong, how to fix it) and returns the typed
//! value [`super::parse`] keeps.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{check_label_key, check_label_value, is_dns_label, is_dns_subdomain};
use super::{Problem, problem};
use crate::api::{DrainSpec, NotifySpec, OrderSpec, PatchPolicy, PatchPolicySpec, PatchSpec};
use crate::core::budget::MaxUnavailable;
use crate::core::duration;
use crate::core::node_record::PatchRequest;
use crate::core::window::{Schedule, WindowError, window_length};

/// A duration field, parsed.
pub(super) struct Field {
    /// The value, or the default when it did not parse.
    pub value: Duration,
    /// It parsed.
    pub parsed: bool,
    /// It parsed and is allowed (not zero where zero makes no sense).
    pub ok: bool,
}

/// A duration field: its value (or `default`) and whether it is usable.
pub(super) fn duration(
    out: &mut Vec<Problem>,
    path: &str,
    value: &str,
    zero_ok: bool,
    default: &str,
) -> Field {
    match duration::parse(value) {
        Ok(d) if d.is_zero() && !zero_ok => {
            out.push(problem(
                path,
                format!("{value:?} is zero; give it time, for example 15m"),
            ));
            Field {
                value: d,
                parsed: true,
                ok: false,
            }
        }
        Ok(d) => Field {
            value: d,
            parsed: true,
            ok: true,
        },
        Err(e) => {
            out.push(problem(path, e.to_string()));
            Field {
                value: duration::parse(default).unwrap_or_default(),
                parsed: false,
                ok: false,
            }
        }
    }
}

/// `metadata`: a valid name that gives no embargoed text away, no namespace.
pub(super) fn metadata(policy: &PatchPolicy) -> Vec<Problem> {
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
    out
}

/// `spec.revision`: not empty (empty allowed on a standing policy), no
/// surrounding spaces, at most 128 characters.
pub(super) fn revision(out: &mut Vec<Problem>, rev: &str, standing: bool) {
    if rev.is_empty() && standing {
        return;
    }
    if rev.trim().is_empty() {
        out.push(problem(
            "spec.revision",
            "is required and must not be empty; set it to the patch level, for example \"2026-11-27\", or use trigger: RebootRequired for a standing policy",
        ));
    } else if rev.trim() != rev {
        out.push(problem(
            "spec.revision",
            "must not start or end with spaces",
        ));
    } else if rev.len() > 128 {
        out.push(problem("spec.revision", "must be at most 128 characters"));
    }
}

/// The windows and blackouts, compiled.
pub(super) struct Windows {
    /// Always open when any window or blackout has a problem.
    pub schedule: Schedule,
    /// Every window is usable (blackouts aside).
    pub ok: bool,
}

/// `spec.maintenanceWindows` and `spec.blackouts`.
pub(super) fn windows(out: &mut Vec<Problem>, spec: &PatchPolicySpec) -> Windows {
    let (schedule, errors) = match Schedule::parse(&spec.maintenance_windows, &spec.blackouts) {
        Ok(s) => (s, Vec::new()),
        Err(e) => (Schedule::always_open(), e),
    };
    let mut ok = true;
    for (i, w) in spec.maintenance_windows.iter().enumerate() {
        let base = format!("spec.maintenanceWindows[{i}]");
        let mut times_ok = true;
        for e in &errors {
            match e {
                WindowError::TimeOfDay {
                    index,
                    field,
                    value,
                } if *index == i => {
                    ok = false;
                    times_ok = false;
                    let example = if *field == "start" { "22:00" } else { "05:00" };
                    out.push(problem(
                        format!("{base}.{field}"),
                        format!("{value:?} is not a time; use HH:MM (24 h), for example {example}"),
                    ));
                }
                WindowError::TimeZone { index, zone } if *index == i => {
                    ok = false;
                    let hint = suggest_time_zone(zone)
                        .map(|s| format!("; did you mean {s}?"))
                        .unwrap_or_else(|| {
                            "; use an IANA name such as Europe/Zurich or UTC".to_string()
                        });
                    out.push(problem(
                        format!("{base}.timeZone"),
                        format!("unknown time zone {zone:?}{hint}"),
                    ));
                }
                WindowError::WeekOfMonth {
                    index,
                    pos,
                    value,
                    why,
                } if *index == i => {
                    ok = false;
                    out.push(problem(
                        format!("{base}.weeksOfMonth[{pos}]"),
                        format!("{value:?} {why}"),
                    ));
                }
                WindowError::Monthly { index, field, why } if *index == i => {
                    ok = false;
                    out.push(problem(format!("{base}.{field}"), why.clone()));
                }
                _ => {}
            }
        }
        // Both parsed and equal: only 00:00-00:00 (a whole day) is meant.
        if times_ok && w.start == w.end && w.start != "00:00" {
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
        for (j, d) in w.days.iter().enumerate() {
            if !days.insert(*d) {
                out.push(problem(
                    format!("{base}.days[{j}]"),
                    format!("{d:?} is listed twice; remove the duplicate"),
                ));
            }
        }
    }
    for e in &errors {
        if let WindowError::Blackout { index } = e
            && let Some(b) = spec.blackouts.get(*index)
        {
            out.push(problem(
                format!("spec.blackouts[{index}].end"),
                format!(
                    "{} is not after start {}; a blackout must end after it starts",
                    b.end.0, b.start.0
                ),
            ));
        }
    }
    Windows { schedule, ok }
}

/// A routine rollout needs one window at least `needed` long.
pub(super) fn windows_fit(
    out: &mut Vec<Problem>,
    spec: &PatchPolicySpec,
    needed: Duration,
    explicit: bool,
) {
    let longest = spec
        .maintenance_windows
        .iter()
        .filter_map(window_length)
        .max()
        .unwrap_or(Duration::ZERO);
    if longest < needed {
        let what = if explicit {
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

/// `spec.rollout.maxUnavailable`: an integer of at least 1 or a percentage;
/// never a number in quotes.
pub(super) fn max_unavailable(out: &mut Vec<Problem>, v: &IntOrString) -> MaxUnavailable {
    const PATH: &str = "spec.rollout.maxUnavailable";
    if let Ok(m) = MaxUnavailable::parse(v) {
        return m;
    }
    let message = match v {
        IntOrString::Int(n) => {
            format!("{n} would never let a node start; use 1 or more, or a percentage such as 25%")
        }
        IntOrString::String(s)
            if s.strip_suffix('%')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            let digits = s.trim_end_matches('%').trim_start_matches('0');
            if digits.is_empty() {
                "0% would never let a node start; use at least 1%".to_string()
            } else if digits.len() > 3 || digits.parse::<u32>().is_ok_and(|p| p > 100) {
                format!("{s} is more than 100%")
            } else {
                format!("{s}: write the percentage without leading zeros")
            }
        }
        IntOrString::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            format!("\"{s}\" is a number in quotes; write it without quotes: maxUnavailable: {s}")
        }
        IntOrString::String(s) => {
            format!("{s:?} is neither an integer nor a percentage; write 2 or \"25%\"")
        }
    };
    out.push(problem(PATH, message));
    MaxUnavailable::default()
}

/// `spec.rollout.order`: valid label keys, no key twice.
pub(super) fn order(out: &mut Vec<Problem>, order: &OrderSpec) {
    if let Some(g) = &order.group_by
        && let Err(e) = check_label_key(g)
    {
        out.push(problem("spec.rollout.order.groupBy", e));
    }
    let mut seen = BTreeSet::new();
    for (i, k) in order.sort_by.iter().enumerate() {
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
}

/// `spec.drain`: the timeout (returned), the grace period, the pod selector.
pub(super) fn drain(out: &mut Vec<Problem>, drain: &DrainSpec) -> Field {
    let timeout = duration(
        out,
        "spec.drain.timeout",
        &drain.timeout,
        false,
        crate::api::DEFAULT_DRAIN_TIMEOUT,
    );
    if let Some(g) = drain.grace_period_seconds
        && g < 0
    {
        out.push(problem(
            "spec.drain.gracePeriodSeconds",
            "must be 0 or more; leave it unset to use each pod's own grace period",
        ));
    }
    if let Some(sel) = &drain.pod_selector {
        selector(out, "spec.drain.podSelector", sel);
    }
    timeout
}

/// `spec.patch`: a program to run and its timeout. Without `spec.patch` the
/// timeout is zero (and counts as usable).
pub(super) fn patch(
    out: &mut Vec<Problem>,
    patch: Option<&PatchSpec>,
) -> (Option<PatchRequest>, Field) {
    let Some(p) = patch else {
        let none = Field {
            value: Duration::ZERO,
            parsed: true,
            ok: true,
        };
        return (None, none);
    };
    let empty = p.command.is_empty();
    if empty || p.command[0].trim().is_empty() {
        out.push(problem(
            "spec.patch.command",
            "must name a program, for example [\"apt-get\", \"-y\", \"dist-upgrade\"]; remove spec.patch to skip the patch step",
        ));
    }
    let timeout = duration(
        out,
        "spec.patch.timeout",
        &p.timeout,
        false,
        crate::api::DEFAULT_PATCH_TIMEOUT,
    );
    let request = (!empty).then_some(PatchRequest {
        timeout_seconds: timeout.value.as_secs(),
    });
    (request, timeout)
}

/// `spec.notify`: webhooks and the advisory.
pub(super) fn notify(out: &mut Vec<Problem>, spec: &PatchPolicySpec, n: &NotifySpec) {
    webhooks(out, n);
    if let Some(t) = &n.public_title
        && (t.trim().is_empty() || t.chars().any(char::is_control))
    {
        out.push(problem(
            "spec.notify.publicTitle",
            "must be one line of visible text, for example `Web hosting`; remove the field for the default title",
        ));
    }
    if n.advisory.is_some() {
        advisory(out, spec, n);
    }
}

fn webhooks(out: &mut Vec<Problem>, n: &NotifySpec) {
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
        channel(out, &base, w);
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
}

/// The template and envelope of one webhook, as its format needs them.
fn channel(out: &mut Vec<Problem>, base: &str, w: &crate::api::Webhook) {
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
            if !crate::notify::email::is_address(&e.from) {
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
                if !crate::notify::email::is_address(t) {
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
    if !w.node_events.is_empty() && w.audience == crate::api::Audience::Customers {
        out.push(problem(
            format!("{base}.nodeEvents"),
            "per-node notices name the nodes and go to admin channels only; set `audience: Admins` on this webhook or remove nodeEvents",
        ));
    }
}

fn advisory(out: &mut Vec<Problem>, spec: &PatchPolicySpec, n: &NotifySpec) {
    let Some(a) = &n.advisory else { return };
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

/// A label selector: valid keys and values, known operators with the values
/// each needs.
pub(super) fn selector(out: &mut Vec<Problem>, base: &str, sel: &LabelSelector) {
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

//! What a notification says: the [`Message`] (built once per due notification)
//! and its payloads, CloudEvents 1.0 structured JSON and Slack incoming-webhook
//! JSON, with the default text or a user template.

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde_json::{Value, json};

use super::event::{Counts, Due, EventKind, Rollout, Window};
use super::template::Template;
use crate::api::WebhookFormat;

/// `Content-Type` of a CloudEvents structured-mode request.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";
/// `Content-Type` of a Slack request.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// `Content-Type` of an e-mail body.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Everything one notification may say, fixed when it is due.
///
/// The advisory details are copied in only for `Completed`: every other
/// message, and so every payload rendered from it, has no way to reach them.
#[derive(Clone, PartialEq)]
pub struct Message {
    id: String,
    kind: EventKind,
    node: Option<String>,
    at: Timestamp,
    policy: String,
    revision: String,
    urgent: bool,
    summary: String,
    title: String,
    counts: Counts,
    failed_nodes: Vec<String>,
    window: Option<Window>,
    expected: Option<Timestamp>,
    tz_name: String,
    tz: TimeZone,
    details: Option<String>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the details, so `?message` in a log line is safe.
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("counts", &self.counts)
            .field(
                "details",
                &self.details.as_ref().map(|_| super::embargo::REDACTED),
            )
            .finish_non_exhaustive()
    }
}

impl Message {
    /// The message of `due` for this rollout.
    pub fn new(rollout: &Rollout<'_>, due: &Due) -> Message {
        let spec = rollout.spec;
        let advisory = spec.notify.as_ref().and_then(|n| n.advisory.as_ref());
        let tz_name = spec
            .maintenance_windows
            .first()
            .map(|w| w.time_zone.clone())
            .unwrap_or_else(|| "UTC".to_string());
        // An unknown zone is reported by validation; the message falls back to UTC.
        let (tz, tz_name) = match jiff::tz::db().get(&tz_name) {
            Ok(tz) => (tz, tz_name),
            Err(_) => (TimeZone::UTC, "UTC".to_string()),
        };
        let summary = advisory
            .map(|a| a.summary.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "Server maintenance".to_string());
        let title = spec
            .notify
            .as_ref()
            .and_then(|n| n.public_title.as_deref())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map_or_else(|| summary.clone(), str::to_string);
        Message {
            id: due.id(rollout.policy, &spec.revision),
            kind: due.kind,
            node: due.node.clone(),
            at: due.at,
            policy: rollout.policy.to_string(),
            revision: spec.revision.clone(),
            urgent: spec.urgent,
            summary,
            title,
            counts: rollout.counts,
            failed_nodes: rollout.failed.iter().map(|f| f.node.clone()).collect(),
            window: rollout.first_window,
            expected: rollout.expected_completion,
            tz_name,
            tz,
            // The embargo: details exist only in the Completed message, and only
            // when the rollout as decided now releases them (every selected node
            // updated, or `release: Now`); a status record alone never does.
            details: if due.kind == EventKind::Completed && rollout.details_released() {
                advisory
                    .and_then(|a| a.details.as_deref())
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
            } else {
                None
            },
        }
    }

    /// True when this message carries the advisory details (a `Completed`
    /// message whose rollout released them).
    pub fn carries_details(&self) -> bool {
        self.details.is_some()
    }

    /// Which notification.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The deterministic id (CloudEvents `id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node of a `NodeFailed` message.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// When it was decided.
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// Name of the policy (`metadata.name`).
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// True for an urgent notice: `UrgentStarted`, or any notice of a policy
    /// with `urgent: true`. Urgent notices are delivered ahead of routine ones
    /// (see [`super::deliver`]).
    pub fn urgent(&self) -> bool {
        self.urgent || self.kind == EventKind::UrgentStarted
    }

    fn zoned(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.tz.clone())
    }

    /// The first window in the policy's time zone, for example
    /// `Tue 26 Nov 22:00–05:00 Europe/Zurich`.
    pub fn window_text(&self) -> Option<String> {
        let w = self.window?;
        let s = self.zoned(w.start);
        let e = self.zoned(w.end);
        let day = s.strftime("%a %-d %b %H:%M");
        Some(
            if w.end.duration_since(w.start) <= jiff::SignedDuration::from_hours(24) {
                format!("{day}–{} {}", e.strftime("%H:%M"), self.tz_name)
            } else {
                format!("{day} – {} {}", e.strftime("%a %-d %b %H:%M"), self.tz_name)
            },
        )
    }

    /// Expected completion with day and zone, for example `Wed 27 Nov 02:40 Europe/Zurich`.
    pub fn expected_text(&self) -> Option<String> {
        let t = self.zoned(self.expected?);
        Some(format!(
            "{} {}",
            t.strftime("%a %-d %b %H:%M"),
            self.tz_name
        ))
    }

    /// Expected completion, short when the day is clear from `near` (same day).
    fn expected_short(&self, near: &[Timestamp]) -> Option<String> {
        let t = self.zoned(self.expected?);
        if near.iter().any(|n| self.zoned(*n).date() == t.date()) {
            Some(t.strftime("%H:%M").to_string())
        } else {
            Some(t.strftime("%a %-d %b %H:%M").to_string())
        }
    }

    fn servers(n: u32) -> String {
        if n == 1 {
            "1 server".to_string()
        } else {
            format!("{n} servers")
        }
    }

    /// The default human text.
    pub fn text(&self) -> String {
        let c = self.counts;
        let servers = Message::servers(c.total);
        let progress = format!("{} of {} done", c.updated, servers);
        let expected_tz = |near: &[Timestamp]| {
            self.expected_short(near)
                .map(|e| format!(", expected done by {e} {}", self.tz_name))
                .unwrap_or_default()
        };
        let summary = &self.summary;
        match self.kind {
            EventKind::Scheduled => {
                let when = match (&self.window, self.window_text()) {
                    (Some(w), Some(text)) => {
                        let by = self
                            .expected_short(&[w.start, w.end])
                            .map(|e| format!(", expected done by {e}"))
                            .unwrap_or_default();
                        format!(", {text}{by}")
                    }
                    _ => expected_tz(&[self.at]),
                };
                format!("{summary}: maintenance on {servers}{when}.")
            }
            EventKind::Started => {
                format!(
                    "{summary}: maintenance on {servers} has started{}.",
                    expected_tz(&[self.at])
                )
            }
            EventKind::UrgentStarted => format!(
                "{summary}: urgent maintenance on {servers} has started now; it could not be announced ahead{}. Services may restart briefly.",
                expected_tz(&[self.at])
            ),
            EventKind::NodeFailed => format!(
                "{summary}: server {} could not be updated; {progress}.",
                self.node.as_deref().unwrap_or("?")
            ),
            EventKind::Halted => format!(
                "{summary}: maintenance halted after {} failed; {progress}. Our team is looking into it.",
                Message::servers(c.failed)
            ),
            EventKind::Resumed => format!(
                "{summary}: maintenance resumed; {progress}{}.",
                expected_tz(&[self.at])
            ),
            EventKind::CompletedWithFailures => format!(
                "{summary}: maintenance ended, {} of {servers} updated, {} not updated; they will be updated later. Our team is looking into it.",
                c.updated,
                c.total.saturating_sub(c.updated)
            ),
            EventKind::Completed => {
                let failed = if c.failed > 0 {
                    format!(", {} failed", Message::servers(c.failed))
                } else {
                    String::new()
                };
                let details = self
                    .details
                    .as_deref()
                    .map(|d| format!(" Details: {d}"))
                    .unwrap_or_default();
                format!(
                    "{summary}: maintenance completed, {} of {servers} updated{failed}.{details}",
                    c.updated
                )
            }
            EventKind::NodeDraining => format!(
                "{summary}: server {} is cordoned and being drained.",
                self.node.as_deref().unwrap_or("?")
            ),
            EventKind::NodeRebooting => format!(
                "{summary}: server {} is rebooting.",
                self.node.as_deref().unwrap_or("?")
            ),
            EventKind::NodeUncordoned => format!(
                "{summary}: server {} is back and uncordoned.",
                self.node.as_deref().unwrap_or("?")
            ),
        }
    }

    /// The value of a template variable (see [`super::template::VARIABLES`]).
    pub fn variable(&self, name: &str) -> String {
        match name {
            "policy" => self.policy.clone(),
            "revision" => self.revision.clone(),
            "event" => self.kind.as_str().to_string(),
            "summary" => self.summary.clone(),
            "nodes" => self.counts.total.to_string(),
            "updated" => self.counts.updated.to_string(),
            "failed" => self.counts.failed.to_string(),
            "node" => self.node.clone().unwrap_or_default(),
            "failed_nodes" => self.failed_nodes.join(", "),
            "window" => self.window_text().unwrap_or_default(),
            "expected_done" => self.expected_text().unwrap_or_default(),
            "details" => self.details.clone().unwrap_or_default(),
            "text" => self.text(),
            _ => String::new(),
        }
    }

    /// The text of this message: the template's output, or the default text.
    pub fn text_with(&self, template: Option<&Template>) -> String {
        match template {
            Some(t) => t.render(|v| self.variable(v)),
            None => self.text(),
        }
    }

    fn rfc3339(t: Timestamp) -> String {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// The CloudEvents 1.0 structured-mode event.
    pub fn cloudevent(&self, template: Option<&Template>) -> Value {
        let mut data = json!({
            "policy": self.policy,
            "revision": self.revision,
            "event": self.kind.as_str(),
            "urgent": self.urgent,
            "summary": self.summary,
            "nodes": {
                "total": self.counts.total,
                "updated": self.counts.updated,
                "failed": self.counts.failed,
            },
            "failedNodes": self.failed_nodes,
            "window": self.window.map(|w| json!({
                "start": Message::rfc3339(w.start),
                "end": Message::rfc3339(w.end),
                "timeZone": self.tz_name,
            })),
            "expectedCompletion": self.expected.map(Message::rfc3339),
            "text": self.text_with(template),
        });
        if let Some(map) = data.as_object_mut() {
            if let Some(n) = &self.node {
                map.insert("node".into(), json!(n));
            }
            if let Some(d) = &self.details {
                map.insert("details".into(), json!(d));
            }
        }
        json!({
            "specversion": "1.0",
            "id": self.id,
            "source": format!("/patchpolicies/{}", self.policy),
            "type": self.kind.cloudevents_type(),
            "subject": self.revision,
            "time": Message::rfc3339(self.at),
            "datacontenttype": "application/json",
            "data": data,
        })
    }

    /// The short headline of this notification, for example `Maintenance started`.
    pub fn headline(&self) -> &'static str {
        match self.kind {
            EventKind::Scheduled => "Maintenance scheduled",
            EventKind::UrgentStarted => "Urgent maintenance started",
            EventKind::Started => "Maintenance started",
            EventKind::NodeFailed => "Server update failed",
            EventKind::Halted => "Maintenance halted",
            EventKind::Resumed => "Maintenance resumed",
            EventKind::CompletedWithFailures => "Maintenance ended with failures",
            EventKind::Completed => "Maintenance completed",
            EventKind::NodeDraining => "Server draining",
            EventKind::NodeRebooting => "Server rebooting",
            EventKind::NodeUncordoned => "Server back",
        }
    }

    /// The public title: `spec.notify.publicTitle`, else the advisory summary.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The Microsoft Teams Workflows message: one Adaptive Card (version 1.4)
    /// with the headline, the text and the facts.
    pub fn teams(&self, template: Option<&Template>) -> Value {
        let text = self.text_with(template);
        let mut facts = vec![
            json!({"title": "Servers", "value": format!(
                "{} of {} updated", self.counts.updated, self.counts.total)}),
            json!({"title": "Policy", "value": self.policy}),
            json!({"title": "Revision", "value": self.revision}),
        ];
        if let Some(e) = self.expected_text() {
            facts.push(json!({"title": "Expected completion", "value": e}));
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": teams_escape(&format!("{}: {}", self.headline(), self.title)),
                         "weight": "Bolder", "size": "Medium", "wrap": true},
                        {"type": "TextBlock", "text": teams_escape(&text), "wrap": true},
                        {"type": "FactSet", "facts": facts},
                    ],
                },
            }],
        })
    }

    /// Subject and plain-text body of the e-mail of this notification.
    pub fn email(&self, template: Option<&Template>) -> (String, String) {
        let subject = format!("{}: {}", self.title, self.headline());
        let mut body = self.text_with(template);
        body.push('\n');
        (one_line(&subject, 200), body)
    }

    /// The Slack incoming-webhook message: `text` (notification fallback) and blocks.
    pub fn slack(&self, template: Option<&Template>) -> Value {
        let text = self.text_with(template);
        let title = self.headline();
        json!({
            // The fallback text is parsed for mentions and links too.
            "text": slack_escape(&text),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title}},
                {"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&text)}},
                {"type": "context", "elements": [{
                    "type": "mrkdwn",
                    "text": slack_escape(&format!(
                        "{} of {} · policy {} · revision {}",
                        self.counts.updated, Message::servers(self.counts.total), self.policy, self.revision
                    )),
                }]},
            ],
        })
    }

    /// The request body and its content type for a webhook format.
    pub fn payload(&self, format: WebhookFormat, template: Option<&Template>) -> Payload {
        let (content_type, value) = match format {
            WebhookFormat::CloudEvents => (CLOUDEVENTS_CONTENT_TYPE, self.cloudevent(template)),
            WebhookFormat::Slack => (JSON_CONTENT_TYPE, self.slack(template)),
            WebhookFormat::Teams => (JSON_CONTENT_TYPE, self.teams(template)),
            // A generic webhook's body is its JSON template (see
            // `Message::generic`); without one it gets the CloudEvents data.
            WebhookFormat::Generic => (JSON_CONTENT_TYPE, self.cloudevent(None)["data"].clone()),
            WebhookFormat::Email => {
                let (subject, body) = self.email(template);
                return Payload {
                    content_type: TEXT_CONTENT_TYPE,
                    body: body.into_bytes(),
                    subject: Some(subject),
                };
            }
        };
        Payload {
            content_type,
            body: value.to_string().into_bytes(),
            subject: None,
        }
    }

    /// The body of a generic webhook: its JSON template filled in.
    pub fn generic(&self, body: &super::generic::JsonTemplate) -> Payload {
        Payload {
            content_type: JSON_CONTENT_TYPE,
            body: body.render(|v| self.variable(v)).to_string().into_bytes(),
            subject: None,
        }
    }
}

/// Adaptive Card TextBlocks render a Markdown subset: links and emphasis
/// from spec text are shown as typed.
fn teams_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '[' | ']' | '(' | ')' | '*' | '_' | '`' | '#' | '>' | '<'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `s` on one line (header-safe: no CR/LF or other controls), cut to `max` chars.
pub fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The API server rejects Event notes over this many bytes.
pub const MAX_EVENT_NOTE: usize = 1024;

/// `note` cut to fit an Event ([`MAX_EVENT_NOTE`] bytes) on a char boundary,
/// saying that it was cut.
pub fn event_note(note: &str) -> String {
    const CUT: &str = " … (cut)";
    if note.len() <= MAX_EVENT_NOTE {
        return note.to_string();
    }
    let mut end = MAX_EVENT_NOTE - CUT.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &note[..end])
}

/// A rendered request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// JSON body (the text body of an e-mail).
    pub body: Vec<u8>,
    /// The subject of an e-mail; `None` for the other formats.
    pub subject: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Advisory, FailedNode, MaintenanceWindow, NotifySpec, PatchPolicySpec, Phase};
    use crate::notify::embargo::Embargo;

    const DETAILS: &str = "CVE-2026-1234 (local root exploit in the kernel)";

    fn spec() -> PatchPolicySpec {
        let mut s = PatchPolicySpec::new("2024-11-26");
        s.maintenance_windows = vec![MaintenanceWindow {
            days: vec![],
            start: "22:00".into(),
            end: "05:00".into(),
            time_zone: "Europe/Zurich".into(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        }];
        s.notify = Some(NotifySpec {
            webhooks: vec![],
            advisory: Some(Advisory {
                summary: "Security maintenance".into(),
                details: Some(DETAILS.into()),
                release: Default::default(),
            }),
            ..Default::default()
        });
        s
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The message of `kind`; a `Completed` one is of a rollout that updated
    /// every node, the others have 4 of 12 updated and w-7 failed.
    fn message(spec: &PatchPolicySpec, kind: EventKind, expected: &str) -> Message {
        let done = kind == EventKind::Completed;
        let failed = if done {
            vec![]
        } else {
            vec![FailedNode {
                node: "w-7".into(),
                reason: "drain timeout".into(),
            }]
        };
        let rollout = Rollout {
            policy: "workers-nightly",
            spec,
            previous_phase: None,
            phase: if done {
                Phase::Completed
            } else {
                Phase::Progressing
            },
            counts: Counts {
                total: 12,
                updated: if done { 12 } else { 4 },
                failed: if done { 0 } else { 1 },
            },
            failed: &failed,
            first_window: Some(Window {
                start: ts("2024-11-26T21:00:00Z"),
                end: ts("2024-11-27T04:00:00Z"),
            }),
            expected_completion: Some(ts(expected)),
            now: ts("2024-11-26T21:00:00Z"),
        };
        let due = Due {
            kind,
            node: (kind == EventKind::NodeFailed).then(|| "w-7".to_string()),
            seq: 1,
            at: rollout.now,
        };
        Message::new(&rollout, &due)
    }

    #[test]
    fn default_texts() {
        let s = spec();
        let text = |k| message(&s, k, "2024-11-27T01:40:00Z").text();
        assert_eq!(
            text(EventKind::Scheduled),
            "Security maintenance: maintenance on 12 servers, Tue 26 Nov 22:00–05:00 Europe/Zurich, expected done by 02:40."
        );
        assert_eq!(
            text(EventKind::Started),
            "Security maintenance: maintenance on 12 servers has started, expected done by Wed 27 Nov 02:40 Europe/Zurich."
        );
        assert_eq!(
            text(EventKind::UrgentStarted),
            "Security maintenance: urgent maintenance on 12 servers has started now; it could not be announced ahead, expected done by Wed 27 Nov 02:40 Europe/Zurich. Services may restart briefly."
        );
        assert_eq!(
            text(EventKind::NodeFailed),
            "Security maintenance: server w-7 could not be updated; 4 of 12 servers done."
        );
        assert_eq!(
            text(EventKind::Halted),
            "Security maintenance: maintenance halted after 1 server failed; 4 of 12 servers done. Our team is looking into it."
        );
        assert_eq!(
            text(EventKind::Resumed),
            "Security maintenance: maintenance resumed; 4 of 12 servers done, expected done by Wed 27 Nov 02:40 Europe/Zurich."
        );
        assert_eq!(
            text(EventKind::CompletedWithFailures),
            "Security maintenance: maintenance ended, 4 of 12 servers updated, 8 not updated; they will be updated later. Our team is looking into it."
        );
        assert_eq!(
            text(EventKind::Completed),
            format!(
                "Security maintenance: maintenance completed, 12 of 12 servers updated. Details: {DETAILS}"
            )
        );
        // Same day as the decision: the time alone.
        assert_eq!(
            message(&s, EventKind::Started, "2024-11-26T22:40:00Z").text(),
            "Security maintenance: maintenance on 12 servers has started, expected done by 23:40 Europe/Zurich."
        );
        // Expected on a later night: the day is spelled out.
        assert!(
            message(&s, EventKind::Scheduled, "2024-11-28T01:40:00Z")
                .text()
                .ends_with("expected done by Thu 28 Nov 02:40.")
        );
    }

    #[test]
    fn window_in_the_policy_time_zone_across_dst_and_long_windows() {
        let mut s = spec();
        s.maintenance_windows[0].time_zone = "America/New_York".into();
        let mut m = message(&s, EventKind::Scheduled, "2024-11-27T01:40:00Z");
        assert_eq!(
            m.window_text().unwrap(),
            "Tue 26 Nov 16:00–23:00 America/New_York"
        );
        m.window = Some(Window {
            start: ts("2024-03-09T03:00:00Z"),
            end: ts("2024-03-11T03:00:00Z"),
        });
        // 22:00 EST to 23:00 EDT: the spring-forward shift shows.
        assert_eq!(
            m.window_text().unwrap(),
            "Fri 8 Mar 22:00 – Sun 10 Mar 23:00 America/New_York"
        );
        s.maintenance_windows.clear();
        let m = message(&s, EventKind::Scheduled, "2024-11-27T01:40:00Z");
        assert_eq!(m.window_text().unwrap(), "Tue 26 Nov 21:00–04:00 UTC");
    }

    #[test]
    fn cloudevent_and_slack_shapes() {
        let s = spec();
        let m = message(&s, EventKind::NodeFailed, "2024-11-27T01:40:00Z");
        let ce = m.cloudevent(None);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "workers-nightly/2024-11-26/nodefailed/w-7");
        assert_eq!(ce["type"], "dev.sofort.rollout.nodefailed");
        assert_eq!(ce["source"], "/patchpolicies/workers-nightly");
        assert_eq!(ce["subject"], "2024-11-26");
        assert_eq!(ce["time"], "2024-11-26T21:00:00Z");
        assert_eq!(ce["data"]["node"], "w-7");
        assert_eq!(ce["data"]["window"]["start"], "2024-11-26T21:00:00Z");
        assert!(ce["data"].get("details").is_none());
        let p = m.payload(WebhookFormat::CloudEvents, None);
        assert_eq!(p.content_type, "application/cloudevents+json");
        let mut s2 = spec();
        s2.notify
            .as_mut()
            .unwrap()
            .advisory
            .as_mut()
            .unwrap()
            .summary = "R&D <urgent>".into();
        let sl = message(&s2, EventKind::Halted, "2024-11-27T01:40:00Z").slack(None);
        assert!(
            sl["text"]
                .as_str()
                .unwrap()
                .starts_with("R&amp;D &lt;urgent&gt;")
        );
        assert!(
            sl["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("R&amp;D &lt;urgent&gt;")
        );
        assert_eq!(
            m.payload(WebhookFormat::Slack, None).content_type,
            "application/json"
        );
    }

    #[test]
    fn slack_text_is_escaped() {
        let mut s = spec();
        if let Some(a) = s.notify.as_mut().and_then(|n| n.advisory.as_mut()) {
            a.summary = "<!channel> <https://evil.example|status page> & more".into();
        }
        let sl = message(&s, EventKind::Started, "2024-11-27T01:40:00Z").slack(None);
        let body = sl.to_string();
        assert!(
            !body.contains("<!channel>") && !body.contains("<https://"),
            "{body}"
        );
        assert!(sl["text"].as_str().is_some_and(|t| {
            t.starts_with("&lt;!channel&gt; &lt;https://evil.example|status page&gt; &amp; more")
        }));
    }

    #[test]
    fn event_notes_over_1kb_are_cut_on_a_char_boundary() {
        assert_eq!(event_note("short"), "short");
        for fill in ["a", "ü", "€", "😀"] {
            let long = fill.repeat(2000);
            let cut = event_note(&long);
            assert!(cut.len() <= MAX_EVENT_NOTE, "{}", cut.len());
            assert!(cut.ends_with(" … (cut)"));
            assert!(long.starts_with(cut.trim_end_matches(" … (cut)")));
        }
    }

    /// Every event, both formats, with and without templates (including ones that
    /// ask for `{details}` explicitly): the details appear only in Completed.
    #[test]
    fn embargo_holds_for_every_event_format_and_template() {
        let s = spec();
        let templates = [
            None,
            Some(Template::parse("{text}").unwrap()),
            Some(Template::parse("{event}: {summary} {details} {window} {failed_nodes}").unwrap()),
            Some(Template::parse("{details}{details}").unwrap()),
        ];
        let embargo = Embargo::new(Some(DETAILS));
        for kind in EventKind::ALL {
            let m = message(&s, kind, "2024-11-27T01:40:00Z");
            for format in [WebhookFormat::CloudEvents, WebhookFormat::Slack] {
                for t in &templates {
                    let body = String::from_utf8(m.payload(format, t.as_ref()).body).unwrap();
                    let leaks = embargo.leaks(&body);
                    let completed = kind == EventKind::Completed;
                    // Templates without {details} or {text} leave it out even in Completed text,
                    // but the CloudEvents data always carries it for Completed.
                    let may_omit = format == WebhookFormat::Slack
                        && t.as_ref()
                            .is_some_and(|t| !t.uses("details") && !t.uses("text"));
                    assert!(
                        leaks == completed || (completed && may_omit),
                        "{kind} {format:?} {t:?}: {body}"
                    );
                }
            }
            assert_eq!(embargo.leaks(&m.text()), kind == EventKind::Completed);
            assert!(
                !embargo.leaks(&format!("{m:?}")),
                "Debug must not print details"
            );
        }
    }
}

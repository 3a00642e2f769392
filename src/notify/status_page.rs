//! The public status page: what customers may know about the rollouts of the
//! policies that opted in (`spec.notify.statusPage: true`), rendered as an
//! HTML page, a versioned JSON document and an Atom feed.
//!
//! Everything here is pure: [`PublicRollout::all_of_policy`] turns a policy
//! (spec and status, as cached by the controller) into the few public facts
//! of its current rollout and of the completed ones in its `status.history`,
//! and [`Board`] renders them. The HTTP listener
//! (`crate::controller::status_page`) only serves what was rendered here.
//!
//! What is public: the public title (`notify.publicTitle`, else the advisory
//! summary), the advisory summary, urgent or routine, the number of servers
//! (total, updated), the times (announced window, start, expected and actual
//! completion) and, once every selected node is updated, the advisory
//! details. Never: policy, node or pod names, the revision, failure reasons,
//! status messages. Every public text goes through the policy's
//! [`Embargo::scrub`] as well, so a title that quotes the details shows
//! `[embargoed]` until the rollout completed.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::embargo::Embargo;
use crate::api::{PatchPolicy, Phase};

/// `schema` of the JSON document; bumped on incompatible changes.
pub const JSON_SCHEMA: &str = "https://sofort.dev/schemas/status/v2";
/// At most this many rollouts per section (current, upcoming).
pub const MAX_LISTED: usize = 50;
/// At most this many completed rollouts in the history.
pub const MAX_HISTORY: usize = 50;
/// Public texts are cut to this many characters.
pub const MAX_TEXT: usize = 512;
/// Default of the history length.
pub const DEFAULT_HISTORY: usize = 10;

/// The first 16 bytes of SHA-256 of `s`, in hex: stable ids that do not
/// reveal the policy name or revision they are made of.
pub fn short_hash(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = String::with_capacity(32);
    for b in &d.as_ref()[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Language of the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Language {
    /// English.
    #[default]
    En,
    /// German.
    De,
}

impl Language {
    /// `en` or `de`.
    pub fn parse(s: &str) -> Option<Language> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Language::En),
            "de" => Some(Language::De),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::De => "de",
        }
    }
}

/// The texts of the page in one language.
struct Words {
    status: &'static str,
    operational: &'static str,
    security_now: &'static str,
    maintenance_now: &'static str,
    current: &'static str,
    upcoming: &'static str,
    history: &'static str,
    none_current: &'static str,
    none_upcoming: &'static str,
    none_history: &'static str,
    urgent: &'static str,
    routine: &'static str,
    servers: &'static str,
    updated_of: &'static str,
    started: &'static str,
    expected: &'static str,
    window: &'static str,
    completed: &'static str,
    completed_partly: &'static str,
    paused: &'static str,
    delayed: &'static str,
    in_progress: &'static str,
    scheduled: &'static str,
    fixed: &'static str,
    generated: &'static str,
    later: &'static str,
}

const EN: Words = Words {
    status: "Service status",
    operational: "All systems operational",
    security_now: "Security maintenance in progress",
    maintenance_now: "Maintenance in progress",
    current: "Current maintenance",
    upcoming: "Upcoming maintenance",
    history: "Completed maintenance",
    none_current: "No maintenance is in progress.",
    none_upcoming: "No maintenance is announced.",
    none_history: "No maintenance completed recently.",
    urgent: "Urgent",
    routine: "Routine",
    servers: "Servers affected",
    updated_of: "Servers updated",
    started: "Started",
    expected: "Expected completion",
    window: "Window",
    completed: "Completed",
    completed_partly: "Completed; some servers will be updated later",
    paused: "Paused",
    delayed: "Delayed; our team is looking into it",
    in_progress: "In progress",
    scheduled: "Scheduled",
    fixed: "Fixed",
    generated: "Updated",
    later: "to be announced",
};

const DE: Words = Words {
    status: "Dienststatus",
    operational: "Alle Systeme in Betrieb",
    security_now: "Sicherheitswartung läuft",
    maintenance_now: "Wartung läuft",
    current: "Laufende Wartung",
    upcoming: "Geplante Wartung",
    history: "Abgeschlossene Wartung",
    none_current: "Zurzeit läuft keine Wartung.",
    none_upcoming: "Keine Wartung angekündigt.",
    none_history: "In letzter Zeit wurde keine Wartung abgeschlossen.",
    urgent: "Dringend",
    routine: "Routine",
    servers: "Betroffene Server",
    updated_of: "Aktualisierte Server",
    started: "Begonnen",
    expected: "Voraussichtliches Ende",
    window: "Zeitfenster",
    completed: "Abgeschlossen",
    completed_partly: "Abgeschlossen; einige Server werden später aktualisiert",
    paused: "Pausiert",
    delayed: "Verzögert; unser Team kümmert sich darum",
    in_progress: "Läuft",
    scheduled: "Geplant",
    fixed: "Behoben",
    generated: "Stand",
    later: "wird angekündigt",
};

/// How the page looks: chart values `statusPage.branding`.
#[derive(Clone, Debug)]
pub struct Branding {
    company: String,
    logo_url: Option<String>,
    accent: String,
    language: Language,
    time_zone: TimeZone,
    tz_name: String,
    history: usize,
    base_url: Option<String>,
}

/// Why a branding setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrandingError {
    /// Bad company name.
    #[error("--status-company: use 1 to 100 characters without control characters")]
    Company,
    /// Bad logo URL.
    #[error(
        "--status-logo-url: use an https:// URL or a path starting with /, up to 512 characters, without quotes or spaces"
    )]
    Logo,
    /// Bad colour.
    #[error("--status-accent: use a colour as #rrggbb, for example #0b5fff")]
    Accent,
    /// Bad language.
    #[error("--status-language: use en or de")]
    Language,
    /// Unknown zone.
    #[error("--status-time-zone: not an IANA time zone such as Europe/Zurich")]
    TimeZone,
    /// History too long.
    #[error("--status-history: use 0 to {MAX_HISTORY}")]
    History,
    /// Bad base URL.
    #[error(
        "--status-base-url: use the page's public http(s):// URL without query, for example https://status.example.com"
    )]
    BaseUrl,
}

fn safe_url_chars(s: &str) -> bool {
    !s.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`')
    })
}

impl Branding {
    /// Checked branding.
    pub fn new(
        company: &str,
        logo_url: Option<&str>,
        accent: &str,
        language: &str,
        time_zone: &str,
        history: usize,
        base_url: Option<&str>,
    ) -> Result<Branding, BrandingError> {
        let company = company.trim();
        if company.is_empty()
            || company.chars().count() > 100
            || company.chars().any(char::is_control)
        {
            return Err(BrandingError::Company);
        }
        let logo_url = logo_url.map(str::trim).filter(|l| !l.is_empty());
        if let Some(l) = logo_url
            && (!(l.starts_with("https://") || (l.starts_with('/') && !l.starts_with("//")))
                || l.len() > 512
                || !safe_url_chars(l))
        {
            return Err(BrandingError::Logo);
        }
        let accent = accent.trim();
        if !(accent.len() == 7
            && accent.starts_with('#')
            && accent[1..].chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(BrandingError::Accent);
        }
        let language = Language::parse(language).ok_or(BrandingError::Language)?;
        let tz = jiff::tz::db()
            .get(time_zone.trim())
            .map_err(|_| BrandingError::TimeZone)?;
        if history > MAX_HISTORY {
            return Err(BrandingError::History);
        }
        let base_url = base_url
            .map(|b| b.trim().trim_end_matches('/'))
            .filter(|b| !b.is_empty());
        if let Some(b) = base_url
            && (!(b.starts_with("https://") || b.starts_with("http://"))
                || b.len() > 512
                || b.contains(['?', '#'])
                || !safe_url_chars(b))
        {
            return Err(BrandingError::BaseUrl);
        }
        Ok(Branding {
            company: company.to_string(),
            logo_url: logo_url.map(str::to_string),
            accent: accent.to_ascii_lowercase(),
            language,
            time_zone: tz,
            tz_name: time_zone.trim().to_string(),
            history,
            base_url: base_url.map(str::to_string),
        })
    }

    fn words(&self) -> &'static Words {
        match self.language {
            Language::En => &EN,
            Language::De => &DE,
        }
    }

    fn time(&self, t: Timestamp) -> String {
        let z = t.to_zoned(self.time_zone.clone());
        let s = match self.language {
            Language::En => z.strftime("%a %-d %b %Y %H:%M").to_string(),
            Language::De => z.strftime("%d.%m.%Y %H:%M").to_string(),
        };
        format!("{s} {}", self.tz_name)
    }

    fn window(&self, w: super::Window) -> String {
        let s = w.start.to_zoned(self.time_zone.clone());
        let e = w.end.to_zoned(self.time_zone.clone());
        let end = if s.date() == e.date() {
            e.strftime("%H:%M").to_string()
        } else {
            self.time(w.end)
                .trim_end_matches(self.tz_name.as_str())
                .trim_end()
                .to_string()
        };
        let start = self.time(w.start);
        let start = start.trim_end_matches(self.tz_name.as_str()).trim_end();
        format!("{start} – {end} {}", self.tz_name)
    }
}

impl Default for Branding {
    fn default() -> Self {
        Branding {
            company: "Status".into(),
            logo_url: None,
            accent: "#0b5fff".into(),
            language: Language::En,
            time_zone: TimeZone::UTC,
            tz_name: "UTC".into(),
            history: DEFAULT_HISTORY,
            base_url: None,
        }
    }
}

/// Where a public rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Announced, not started.
    Scheduled,
    /// Nodes are being updated (or wait for the next window after the start).
    InProgress,
    /// Paused by the admins after the start.
    Paused,
    /// Halted after failures.
    Delayed,
    /// Every selected node updated.
    Completed,
    /// Ended, some nodes not updated: the details stay embargoed.
    CompletedPartly,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::InProgress => "inProgress",
            State::Paused => "paused",
            State::Delayed => "delayed",
            State::Completed => "completed",
            State::CompletedPartly => "completedPartly",
        }
    }

    fn is_current(self) -> bool {
        matches!(self, State::InProgress | State::Paused | State::Delayed)
    }

    fn is_done(self) -> bool {
        matches!(self, State::Completed | State::CompletedPartly)
    }
}

/// The public facts of one policy's current rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicRollout {
    /// Stable, opaque id of the rollout (hash of the policy uid and revision).
    pub id: String,
    /// Public title.
    pub title: String,
    /// Advisory summary, when it differs from the title.
    pub summary: Option<String>,
    /// Urgent or routine.
    pub urgent: bool,
    /// Where it stands.
    pub state: State,
    /// Servers selected.
    pub servers: u32,
    /// Servers updated.
    pub updated: u32,
    /// The open or next window (routine rollouts).
    pub window: Option<super::Window>,
    /// When it was announced (first seen).
    pub announced: Option<Timestamp>,
    /// Earliest start.
    pub scheduled_start: Option<Timestamp>,
    /// First node started.
    pub started: Option<Timestamp>,
    /// Expected completion (forecast), while not done.
    pub expected: Option<Timestamp>,
    /// Last node finished.
    pub completed: Option<Timestamp>,
    /// The advisory details, only once every selected node is updated.
    pub details: Option<String>,
    /// The latest change: the Atom `updated`.
    pub changed: Timestamp,
}

/// What rollout ids are made of: the policy's uid (else its name).
fn policy_key(policy: &PatchPolicy) -> String {
    policy
        .metadata
        .uid
        .clone()
        .or_else(|| policy.metadata.name.clone())
        .unwrap_or_default()
}

fn clip(s: &str) -> String {
    super::render::one_line(s.trim(), MAX_TEXT)
}

impl PublicRollout {
    /// Every public rollout of `policy`: its current one (see
    /// [`PublicRollout::of_policy`]) and the completed ones of
    /// `status.history`, or nothing when it did not opt in
    /// (`notify.statusPage`). A history entry of the current rollout is left
    /// to the current one, which knows more (summary, details), so every id
    /// appears once.
    ///
    /// A history entry has counts and times only: its title is the policy's
    /// public title (scrubbed by the current rollout's embargo), else
    /// "Server maintenance"; its summary and details are not known any more
    /// (the spec's advisory is the current rollout's) and stay empty.
    pub fn all_of_policy(policy: &PatchPolicy, expected: Option<Timestamp>) -> Vec<PublicRollout> {
        let spec = &policy.spec;
        let Some(notify) = spec.notify.as_ref().filter(|n| n.status_page) else {
            return Vec::new();
        };
        let current = PublicRollout::of_policy(policy, expected);
        let Some(status) = policy.status.as_ref() else {
            return current.into_iter().collect();
        };
        let same = Some(status).filter(|s| s.revision.as_deref() == Some(spec.revision.as_str()));
        let embargo = Embargo::for_status(spec, same);
        let title = notify
            .public_title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| clip(&embargo.scrub(t)))
            .unwrap_or_else(|| "Server maintenance".to_string());
        let uid = policy_key(policy);
        let mut out: Vec<PublicRollout> = Vec::with_capacity(status.history.len() + 1);
        for h in status
            .history
            .iter()
            .rev()
            .take(crate::api::MAX_STATUS_HISTORY)
        {
            let id = short_hash(&format!("{uid}\u{0}{}", h.id));
            if current.as_ref().is_some_and(|c| c.id == id) || out.iter().any(|o| o.id == id) {
                continue;
            }
            let failed = h.failed.min(h.nodes);
            out.push(PublicRollout {
                id,
                title: title.clone(),
                summary: None,
                urgent: h.urgent,
                state: if failed == 0 {
                    State::Completed
                } else {
                    State::CompletedPartly
                },
                servers: h.nodes,
                updated: h.nodes - failed,
                window: None,
                announced: None,
                scheduled_start: None,
                started: h.started_at.as_ref().map(|t| t.0),
                expected: None,
                completed: Some(h.completed_at.0),
                details: None,
                changed: h.completed_at.0,
            });
        }
        current.into_iter().chain(out).collect()
    }

    /// The public facts of `policy`, or `None` when it did not opt in
    /// (`notify.statusPage`), has no status for its revision yet, or halted
    /// before anything started (an admin matter, not the customers').
    /// `expected` is the forecast's completion, shown while not done.
    pub fn of_policy(policy: &PatchPolicy, expected: Option<Timestamp>) -> Option<PublicRollout> {
        let spec = &policy.spec;
        let notify = spec.notify.as_ref().filter(|n| n.status_page)?;
        // A standing policy's rollouts are its rounds.
        let revision = crate::core::round::effective_revision(policy);
        let status = policy
            .status
            .as_ref()
            .filter(|s| s.revision.as_deref() == Some(revision.as_str()))?;
        let embargo = Embargo::for_status(spec, Some(status));
        let scrub = |s: &str| clip(&embargo.scrub(s));
        let advisory = notify.advisory.as_ref();
        let summary = advisory
            .map(|a| a.summary.trim())
            .filter(|s| !s.is_empty())
            .map(scrub);
        let title = notify
            .public_title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(scrub)
            .or_else(|| summary.clone())
            .unwrap_or_else(|| "Server maintenance".to_string());
        let started = status.started_at.as_ref().map(|t| t.0);
        let counts = status.nodes.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        let all_patched = phase == Phase::Completed
            && status.failed.is_empty()
            && counts.failed == 0
            && counts.updated >= counts.total;
        let state = match phase {
            Phase::Completed if all_patched => State::Completed,
            Phase::Completed => State::CompletedPartly,
            Phase::Halted if started.is_some() => State::Delayed,
            Phase::Halted => return None,
            Phase::Paused if started.is_some() => State::Paused,
            Phase::Progressing => State::InProgress,
            _ if started.is_some() || spec.urgent => State::InProgress,
            _ => State::Scheduled,
        };
        let details = if phase == Phase::Completed && embargo.is_lifted() {
            advisory
                .and_then(|a| a.details.as_deref())
                .map(clip)
                .filter(|d| !d.is_empty())
        } else {
            None
        };
        let t = |x: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            x.as_ref().map(|t| t.0)
        };
        let announced = t(&status.announced_at);
        let completed = if state.is_done() {
            t(&status.completed_at)
        } else {
            None
        };
        let changed = [announced, started, completed]
            .into_iter()
            .chain(status.notifications.iter().map(|r| Some(r.at.0)))
            .flatten()
            .max()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let uid = policy_key(policy);
        Some(PublicRollout {
            id: short_hash(&format!("{uid}\u{0}{revision}")),
            summary: summary.filter(|s| *s != title),
            title,
            urgent: spec.urgent,
            state,
            servers: counts.total,
            updated: counts.updated.min(counts.total),
            window: if spec.urgent {
                None
            } else {
                status.next_window.as_ref().map(|w| super::Window {
                    start: w.start.0,
                    end: w.end.0,
                })
            },
            announced,
            scheduled_start: t(&status.scheduled_start),
            started,
            expected: if state.is_done() { None } else { expected },
            completed,
            details,
            changed,
        })
    }
}

/// The page's content: current, upcoming and recently completed rollouts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Board {
    /// In progress, paused or delayed; urgent first.
    pub current: Vec<PublicRollout>,
    /// Announced, soonest first.
    pub upcoming: Vec<PublicRollout>,
    /// Completed, newest first.
    pub history: Vec<PublicRollout>,
    /// When this board was made.
    pub generated: Timestamp,
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Board {
    /// Sorts and bounds `rollouts` into the sections; the history keeps the
    /// newest `history` completed ones.
    pub fn new(rollouts: Vec<PublicRollout>, history: usize, generated: Timestamp) -> Board {
        let mut b = Board {
            generated,
            ..Board::default()
        };
        for r in rollouts {
            if r.state.is_current() {
                b.current.push(r);
            } else if r.state.is_done() {
                b.history.push(r);
            } else {
                b.upcoming.push(r);
            }
        }
        b.current.sort_by(|a, c| {
            c.urgent
                .cmp(&a.urgent)
                .then(a.started.cmp(&c.started))
                .then(a.id.cmp(&c.id))
        });
        b.current.truncate(MAX_LISTED);
        let start = |r: &PublicRollout| r.window.map(|w| w.start).or(r.scheduled_start);
        b.upcoming
            .sort_by(|a, c| start(a).cmp(&start(c)).then(a.id.cmp(&c.id)));
        b.upcoming.truncate(MAX_LISTED);
        b.history.sort_by(|a, c| {
            c.completed
                .cmp(&a.completed)
                .then(c.changed.cmp(&a.changed))
                .then(a.id.cmp(&c.id))
        });
        b.history.truncate(history.min(MAX_HISTORY));
        b
    }

    /// True when an urgent rollout is in progress.
    pub fn urgent_now(&self) -> bool {
        self.current.iter().any(|r| r.urgent)
    }

    fn headline(&self, w: &Words) -> &'static str {
        if self.urgent_now() {
            w.security_now
        } else if !self.current.is_empty() {
            w.maintenance_now
        } else {
            w.operational
        }
    }

    fn state_text(r: &PublicRollout, w: &Words) -> &'static str {
        match r.state {
            State::Scheduled => w.scheduled,
            State::InProgress => w.in_progress,
            State::Paused => w.paused,
            State::Delayed => w.delayed,
            State::Completed => w.completed,
            State::CompletedPartly => w.completed_partly,
        }
    }

    fn html_item(r: &PublicRollout, b: &Branding, out: &mut String) {
        let w = b.words();
        let kind = if r.urgent { w.urgent } else { w.routine };
        let _ = write!(
            out,
            "<li class=\"item{}\"><h3>{}</h3><p class=\"meta\"><span class=\"badge\">{}</span> <span class=\"state\">{}</span></p>",
            if r.urgent { " urgent" } else { "" },
            html_escape(&r.title),
            html_escape(kind),
            html_escape(Board::state_text(r, w)),
        );
        if let Some(s) = &r.summary {
            let _ = write!(out, "<p>{}</p>", html_escape(s));
        }
        out.push_str("<dl>");
        let mut row = |k: &str, v: &str| {
            let _ = write!(
                out,
                "<dt>{}</dt><dd>{}</dd>",
                html_escape(k),
                html_escape(v)
            );
        };
        row(w.servers, &r.servers.to_string());
        if r.state != State::Scheduled {
            row(w.updated_of, &format!("{} / {}", r.updated, r.servers));
        }
        if r.state == State::Scheduled {
            let when = match (r.window, r.scheduled_start) {
                (Some(win), _) => b.window(win),
                (None, Some(s)) => b.time(s),
                (None, None) => w.later.to_string(),
            };
            row(w.window, &when);
        }
        if let Some(s) = r.started {
            row(w.started, &b.time(s));
        }
        if let Some(e) = r.expected {
            row(w.expected, &b.time(e));
        }
        if let Some(c) = r.completed {
            row(w.completed, &b.time(c));
        }
        if let Some(d) = &r.details {
            row(w.fixed, d);
        }
        out.push_str("</dl></li>");
    }

    fn html_section(
        &self,
        title: &str,
        empty: &str,
        items: &[PublicRollout],
        b: &Branding,
        out: &mut String,
    ) {
        let _ = write!(out, "<section><h2>{}</h2>", html_escape(title));
        if items.is_empty() {
            let _ = write!(out, "<p class=\"empty\">{}</p>", html_escape(empty));
        } else {
            out.push_str("<ul>");
            for r in items {
                Board::html_item(r, b, out);
            }
            out.push_str("</ul>");
        }
        out.push_str("</section>");
    }

    /// The HTML page: server-rendered, no script, readable on a phone.
    pub fn html(&self, b: &Branding) -> String {
        let w = b.words();
        let mut out = String::with_capacity(8192);
        let headline = self.headline(w);
        let _ = write!(
            out,
            "<!DOCTYPE html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{company} – {status}</title><link rel=\"alternate\" type=\"application/atom+xml\" href=\"status.atom\"><style>{css}</style></head><body><header>",
            lang = b.language.code(),
            company = html_escape(&b.company),
            status = html_escape(w.status),
            css = CSS.replace("ACCENT", &b.accent),
        );
        if let Some(logo) = &b.logo_url {
            let _ = write!(
                out,
                "<img class=\"logo\" src=\"{}\" alt=\"\">",
                html_escape(logo)
            );
        }
        let _ = write!(
            out,
            "<p class=\"company\">{}</p><h1>{}</h1></header><main><p class=\"banner{}\">{}</p>",
            html_escape(&b.company),
            html_escape(w.status),
            if self.urgent_now() {
                " urgent"
            } else if self.current.is_empty() {
                " ok"
            } else {
                ""
            },
            html_escape(headline),
        );
        self.html_section(w.current, w.none_current, &self.current, b, &mut out);
        self.html_section(w.upcoming, w.none_upcoming, &self.upcoming, b, &mut out);
        if b.history > 0 {
            self.html_section(w.history, w.none_history, &self.history, b, &mut out);
        }
        let _ = write!(
            out,
            "</main><footer>{}: {} · <a href=\"status.atom\">Atom</a> · <a href=\"status.json\">JSON</a></footer></body></html>",
            html_escape(w.generated),
            html_escape(&b.time(self.generated)),
        );
        out.push('\n');
        out
    }

    fn json_item(r: &PublicRollout) -> Value {
        let t = |x: Option<Timestamp>| x.map(rfc3339);
        json!({
            "id": r.id,
            "title": r.title,
            "summary": r.summary,
            "kind": if r.urgent { "urgent" } else { "routine" },
            "state": r.state.as_str(),
            "servers": {"total": r.servers, "updated": r.updated},
            "window": r.window.map(|w| json!({"start": rfc3339(w.start), "end": rfc3339(w.end)})),
            "announced": t(r.announced),
            "scheduledStart": t(r.scheduled_start),
            "started": t(r.started),
            "expectedCompletion": t(r.expected),
            "completed": t(r.completed),
            "details": r.details,
            "updated": rfc3339(r.changed),
        })
    }

    /// The JSON document (schema [`JSON_SCHEMA`], see `docs/status-page.md`).
    pub fn json(&self, b: &Branding) -> Value {
        let items = |v: &[PublicRollout]| v.iter().map(Board::json_item).collect::<Vec<_>>();
        json!({
            "schema": JSON_SCHEMA,
            "generated": rfc3339(self.generated),
            "company": b.company,
            "status": if self.urgent_now() { "securityMaintenance" } else if self.current.is_empty() { "operational" } else { "maintenance" },
            "current": items(&self.current),
            "upcoming": items(&self.upcoming),
            "history": if b.history > 0 { items(&self.history) } else { Vec::new() },
        })
    }

    fn atom_text(r: &PublicRollout, b: &Branding) -> String {
        let w = b.words();
        let mut s = format!(
            "{}: {}. {}: {}.",
            Board::state_text(r, w),
            r.title,
            w.servers,
            r.servers,
        );
        if let Some(sum) = &r.summary {
            let _ = write!(s, " {sum}.");
        }
        match r.state {
            State::Scheduled => {
                let when = match (r.window, r.scheduled_start) {
                    (Some(win), _) => b.window(win),
                    (None, Some(st)) => b.time(st),
                    (None, None) => w.later.to_string(),
                };
                let _ = write!(s, " {}: {when}.", w.window);
            }
            _ => {
                if let Some(st) = r.started {
                    let _ = write!(s, " {}: {}.", w.started, b.time(st));
                }
                if let Some(e) = r.expected {
                    let _ = write!(s, " {}: {}.", w.expected, b.time(e));
                }
                if let Some(c) = r.completed {
                    let _ = write!(s, " {}: {}.", w.completed, b.time(c));
                }
            }
        }
        if let Some(d) = &r.details {
            let _ = write!(s, " {}: {d}", w.fixed);
        }
        s
    }

    /// The Atom feed (RFC 4287): one entry per rollout, its id stable, its
    /// `updated` and text changing as it goes on and when it completes.
    pub fn atom(&self, b: &Branding) -> String {
        let w = b.words();
        let base = b.base_url.as_deref().unwrap_or("");
        let feed_id = match &b.base_url {
            Some(u) => format!("{u}/status.atom"),
            None => format!("urn:sofort:status:{}", short_hash(&b.company)),
        };
        let mut all: Vec<&PublicRollout> = self
            .current
            .iter()
            .chain(&self.upcoming)
            .chain(if b.history > 0 {
                self.history.as_slice()
            } else {
                &[]
            })
            .collect();
        all.sort_by(|a, c| c.changed.cmp(&a.changed).then(a.id.cmp(&c.id)));
        let updated = all
            .iter()
            .map(|r| r.changed)
            .max()
            .unwrap_or(self.generated);
        let mut out = String::with_capacity(4096);
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"{}\"><id>{}</id><title>{} – {}</title><updated>{}</updated><author><name>{}</name></author><link rel=\"alternate\" type=\"text/html\" href=\"{}/status\"/><link rel=\"self\" href=\"{}/status.atom\"/>",
            b.language.code(),
            html_escape(&feed_id),
            html_escape(&b.company),
            html_escape(w.status),
            rfc3339(updated),
            html_escape(&b.company),
            html_escape(base),
            html_escape(base),
        );
        for r in all {
            let _ = write!(
                out,
                "<entry><id>urn:sofort:rollout:{}</id><title>{}: {}</title><updated>{}</updated>{}<link rel=\"alternate\" type=\"text/html\" href=\"{}/status\"/><category term=\"{}\"/><content type=\"text\">{}</content></entry>",
                r.id,
                html_escape(Board::state_text(r, w)),
                html_escape(&r.title),
                rfc3339(r.changed),
                r.announced
                    .map(|a| format!("<published>{}</published>", rfc3339(a)))
                    .unwrap_or_default(),
                html_escape(base),
                if r.urgent { "urgent" } else { "routine" },
                html_escape(&Board::atom_text(r, b)),
            );
        }
        out.push_str("</feed>\n");
        out
    }
}

const CSS: &str = "*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2430;background:#f5f7fa}header{background:ACCENT;color:#fff;padding:1.2rem 1rem}header .logo{max-height:40px;max-width:60%;display:block;margin-bottom:.5rem}.company{margin:0;font-weight:600;opacity:.9}h1{margin:.2rem 0 0;font-size:1.6rem}main{max-width:48rem;margin:0 auto;padding:1rem}.banner{padding:1rem;border-radius:.5rem;font-weight:700;font-size:1.15rem;background:#fff4d6;border-left:.4rem solid #e0a800}.banner.ok{background:#e6f6ea;border-color:#1e9e49}.banner.urgent{background:#fde8e8;border-color:#c62828}section h2{font-size:1.2rem;margin:1.5rem 0 .5rem}ul{list-style:none;margin:0;padding:0}.item{background:#fff;border-radius:.5rem;padding:.8rem 1rem;margin:0 0 .8rem;border-left:.4rem solid ACCENT;box-shadow:0 1px 2px rgba(0,0,0,.08)}.item.urgent{border-color:#c62828}.item h3{margin:0;font-size:1.05rem;overflow-wrap:anywhere}.meta{margin:.2rem 0}.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;background:#e8ecf2;font-size:.85rem}.urgent .badge{background:#c62828;color:#fff}dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.5rem 0 0}dt{color:#5b6575}dd{margin:0;overflow-wrap:anywhere}.empty{color:#5b6575}footer{max-width:48rem;margin:0 auto;padding:1rem;color:#5b6575;font-size:.85rem}footer a{color:inherit}@media (max-width:30rem){dl{grid-template-columns:1fr}dt{margin-top:.3rem}}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Advisory, FailedNode, HistoryEntry, NodeCounts, NotificationRecord, NotifySpec,
        PatchPolicySpec, PatchPolicyStatus, WindowStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const DETAILS: &str = "CVE-2026-1234 (local root exploit in the kernel)";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy(
        name: &str,
        urgent: bool,
        phase: Phase,
        updated: u32,
        failed: &[&str],
    ) -> PatchPolicy {
        let mut spec = PatchPolicySpec::new("2026-12-01-kernel");
        spec.urgent = urgent;
        spec.notify = Some(NotifySpec {
            status_page: true,
            public_title: Some("Web hosting".into()),
            advisory: Some(Advisory {
                summary: "Security maintenance".into(),
                details: Some(DETAILS.into()),
                release: Default::default(),
            }),
            ..Default::default()
        });
        let mut p = PatchPolicy::new(name, spec);
        p.metadata.uid = Some(format!("uid-{name}"));
        p.status = Some(PatchPolicyStatus {
            revision: Some("2026-12-01-kernel".into()),
            phase: Some(phase),
            announced_at: Some(Time(ts("2026-12-01T08:00:00Z"))),
            started_at: (phase != Phase::Scheduled).then(|| Time(ts("2026-12-01T09:00:00Z"))),
            completed_at: (phase == Phase::Completed).then(|| Time(ts("2026-12-01T10:30:00Z"))),
            next_window: Some(WindowStatus {
                start: Time(ts("2026-12-02T21:00:00Z")),
                end: Time(ts("2026-12-03T04:00:00Z")),
            }),
            nodes: Some(NodeCounts {
                total: 12,
                updated,
                failed: u32::try_from(failed.len()).unwrap(),
                ..NodeCounts::default()
            }),
            failed: failed
                .iter()
                .map(|n| FailedNode {
                    node: n.to_string(),
                    reason: format!("drain of pod secret-db-0 blocked ({DETAILS})"),
                })
                .collect(),
            notifications: vec![NotificationRecord {
                event: "Started".into(),
                at: Time(ts("2026-12-01T09:00:00Z")),
                node: None,
                results: vec![],
            }],
            message: Some(format!("draining w-3 for {DETAILS}")),
            ..PatchPolicyStatus::default()
        });
        p
    }

    fn branding() -> Branding {
        Branding::new(
            "Example Hosting",
            Some("https://example.com/logo.png"),
            "#0B5FFF",
            "en",
            "Europe/Zurich",
            5,
            Some("https://status.example.com/"),
        )
        .unwrap()
    }

    fn board(policies: &[PatchPolicy]) -> Board {
        let rollouts = policies
            .iter()
            .filter_map(|p| PublicRollout::of_policy(p, Some(ts("2026-12-01T11:00:00Z"))))
            .collect();
        Board::new(rollouts, 5, ts("2026-12-01T09:30:00Z"))
    }

    /// Names, reasons, messages and the revision never appear; the details
    /// only once the rollout completed with every node updated.
    fn assert_private(text: &str, details_allowed: bool) {
        for secret in [
            "secret-web",
            "w-7",
            "secret-db-0",
            "drain of",
            "2026-12-01-kernel",
            "uid-",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let e = Embargo::new(Some(DETAILS));
        assert_eq!(e.leaks(text), details_allowed, "details: {text}");
    }

    #[test]
    fn embargo_holds_until_every_node_is_updated() {
        let b = branding();
        for (phase, updated, failed, released) in [
            (Phase::Progressing, 4, &["w-7"][..], false),
            (Phase::Halted, 4, &["w-7"][..], false),
            (Phase::Completed, 11, &["w-7"][..], false),
            (Phase::Completed, 11, &[][..], false),
            (Phase::Completed, 12, &[][..], true),
        ] {
            let board = board(&[policy("secret-web", true, phase, updated, failed)]);
            for text in [board.html(&b), board.json(&b).to_string(), board.atom(&b)] {
                assert_private(&text, released);
            }
        }
    }

    #[test]
    fn a_title_quoting_the_details_is_scrubbed_until_completion() {
        let mut p = policy("secret-web", true, Phase::Progressing, 4, &[]);
        if let Some(n) = p.spec.notify.as_mut() {
            n.public_title = Some("Fixing CVE-2026-1234 now".into());
        }
        let r = PublicRollout::of_policy(&p, None).unwrap();
        assert_eq!(r.title, "Fixing [embargoed] now");
        let mut done = policy("secret-web", true, Phase::Completed, 12, &[]);
        done.spec.notify = p.spec.notify.clone();
        assert_eq!(
            PublicRollout::of_policy(&done, None).unwrap().title,
            "Fixing CVE-2026-1234 now"
        );
    }

    #[test]
    fn only_opted_in_policies_with_a_status_are_public() {
        let mut p = policy("a", false, Phase::Progressing, 1, &[]);
        assert!(PublicRollout::of_policy(&p, None).is_some());
        p.spec.notify.as_mut().unwrap().status_page = false;
        assert!(PublicRollout::of_policy(&p, None).is_none());
        let mut q = policy("b", false, Phase::Progressing, 1, &[]);
        q.spec.revision = "next".into();
        assert!(
            PublicRollout::of_policy(&q, None).is_none(),
            "status of another revision"
        );
        let mut h = policy("c", false, Phase::Halted, 0, &[]);
        h.status.as_mut().unwrap().started_at = None;
        assert!(
            PublicRollout::of_policy(&h, None).is_none(),
            "halted before the start"
        );
    }

    #[test]
    fn sections_states_and_texts() {
        let b = branding();
        let board = board(&[
            policy("u", true, Phase::Progressing, 4, &[]),
            policy("r", false, Phase::Scheduled, 0, &[]),
            policy("d", false, Phase::Completed, 12, &[]),
        ]);
        assert_eq!(board.current.len(), 1);
        assert_eq!(board.upcoming.len(), 1);
        assert_eq!(board.history.len(), 1);
        let html = board.html(&b);
        assert!(html.contains("Security maintenance in progress"), "{html}");
        assert!(html.contains("<h3>Web hosting</h3>"));
        assert!(html.contains("<dd>12</dd>") && html.contains("<dd>4 / 12</dd>"));
        // Times in the viewer's zone (UTC+1 in December).
        assert!(
            html.contains("Tue 1 Dec 2026 10:00 Europe/Zurich"),
            "{html}"
        );
        assert!(
            html.contains("Wed 2 Dec 2026 22:00 – Thu 3 Dec 2026 05:00 Europe/Zurich"),
            "{html}"
        );
        assert!(html.contains("Expected completion</dt><dd>Tue 1 Dec 2026 12:00 Europe/Zurich"));
        assert!(html.contains(&format!("Fixed</dt><dd>{}", html_escape(DETAILS))));
        assert!(
            html.contains("background:#0b5fff")
                && html.contains("src=\"https://example.com/logo.png\"")
        );
        assert!(!html.contains("<script"));
        let v = board.json(&b);
        assert_eq!(v["schema"], JSON_SCHEMA);
        assert_eq!(v["status"], "securityMaintenance");
        assert_eq!(v["current"][0]["servers"]["updated"], 4);
        assert_eq!(
            v["current"][0]["expectedCompletion"],
            "2026-12-01T11:00:00Z"
        );
        assert_eq!(v["history"][0]["details"], DETAILS);
        assert_eq!(v["history"][0]["expectedCompletion"], Value::Null);
        assert_eq!(v["upcoming"][0]["state"], "scheduled");
        let atom = board.atom(&b);
        assert!(atom.contains("<id>https://status.example.com/status.atom</id>"));
        assert_eq!(atom.matches("<entry>").count(), 3);
        // Quiet day.
        let quiet = Board::new(vec![], 5, ts("2026-12-01T09:30:00Z"));
        assert!(quiet.html(&b).contains("All systems operational"));
        assert_eq!(quiet.json(&b)["status"], "operational");
    }

    #[test]
    fn atom_entry_id_is_stable_and_updated_on_completion() {
        let b = branding();
        let running = board(&[policy("u", true, Phase::Progressing, 4, &[])]);
        let mut done_p = policy("u", true, Phase::Completed, 12, &[]);
        done_p
            .status
            .as_mut()
            .unwrap()
            .notifications
            .push(NotificationRecord {
                event: "Completed".into(),
                at: Time(ts("2026-12-01T10:30:00Z")),
                node: None,
                results: vec![],
            });
        let done = board(&[done_p]);
        let id = |a: &str| {
            a.split("<entry><id>")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .map(str::to_string)
        };
        assert_eq!(id(&running.atom(&b)), id(&done.atom(&b)));
        assert_eq!(running.current[0].changed, ts("2026-12-01T09:00:00Z"));
        assert_eq!(done.history[0].changed, ts("2026-12-01T10:30:00Z"));
        assert!(
            done.atom(&b)
                .contains("<title>Completed: Web hosting</title>")
        );
        // Another revision is another entry.
        let mut next = policy("u", true, Phase::Progressing, 4, &[]);
        next.spec.revision = "r2".into();
        next.status.as_mut().unwrap().revision = Some("r2".into());
        assert_ne!(id(&board(&[next]).atom(&b)), id(&running.atom(&b)));
    }

    fn entry(id: &str, completed: &str, nodes: u32, failed: u32) -> HistoryEntry {
        HistoryEntry {
            id: id.into(),
            urgent: false,
            started_at: Some(Time(ts("2026-11-01T08:00:00Z"))),
            completed_at: Time(ts(completed)),
            nodes,
            failed,
        }
    }

    /// A policy whose current revision runs, with two earlier ones done.
    fn with_history() -> PatchPolicy {
        let mut p = policy("secret-web", true, Phase::Progressing, 4, &[]);
        p.status.as_mut().unwrap().history = vec![
            entry("2026-10-kernel-secret", "2026-10-05T03:00:00Z", 12, 0),
            entry("2026-11-kernel-secret", "2026-11-02T03:00:00Z", 12, 1),
        ];
        p
    }

    #[test]
    fn the_history_lists_earlier_rollouts_newest_first_with_counts_and_times_only() {
        let b = branding();
        let p = with_history();
        let all = PublicRollout::all_of_policy(&p, None);
        assert_eq!(all.len(), 3);
        let board = Board::new(all, 5, ts("2026-12-01T09:30:00Z"));
        assert_eq!(board.current.len(), 1);
        let h = &board.history;
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].completed, Some(ts("2026-11-02T03:00:00Z")));
        assert_eq!(h[0].state, State::CompletedPartly);
        assert_eq!((h[0].servers, h[0].updated), (12, 11));
        assert_eq!(h[1].state, State::Completed);
        assert_eq!(h[1].changed, ts("2026-10-05T03:00:00Z"));
        for r in h {
            assert_eq!(r.title, "Web hosting");
            assert_eq!((r.summary.as_deref(), r.details.as_deref()), (None, None));
            assert!(!r.urgent);
        }
        let ids: std::collections::HashSet<&str> = board
            .current
            .iter()
            .chain(h)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids.len(), 3, "one id per rollout");
        // The same entries give the same ids on every rendering.
        let again = PublicRollout::all_of_policy(&with_history(), None);
        assert_eq!(
            again.iter().map(|r| &r.id).collect::<Vec<_>>(),
            PublicRollout::all_of_policy(&p, None)
                .iter()
                .map(|r| &r.id)
                .collect::<Vec<_>>()
        );

        let html = board.html(&b);
        assert!(html.contains("Completed maintenance"), "{html}");
        assert!(
            html.contains("Mon 2 Nov 2026 04:00 Europe/Zurich"),
            "{html}"
        );
        assert!(
            html.contains("Mon 5 Oct 2026 05:00 Europe/Zurich"),
            "{html}"
        );
        assert!(html.contains("<dd>11 / 12</dd>"), "{html}");
        let v = board.json(&b);
        assert_eq!(v["schema"], "https://sofort.dev/schemas/status/v2");
        assert_eq!(v["history"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["history"][0]["state"], "completedPartly");
        assert_eq!(v["history"][0]["completed"], "2026-11-02T03:00:00Z");
        assert_eq!(v["history"][0]["started"], "2026-11-01T08:00:00Z");
        assert_eq!(
            v["history"][0]["servers"],
            json!({"total": 12, "updated": 11})
        );
        assert_eq!(v["history"][1]["state"], "completed");
        assert_eq!(v["history"][1]["details"], Value::Null);
        let atom = board.atom(&b);
        assert_eq!(atom.matches("<entry>").count(), 3);
        for r in board.current.iter().chain(h) {
            assert_eq!(
                atom.matches(&format!("<id>urn:sofort:rollout:{}</id>", r.id))
                    .count(),
                1
            );
        }
        assert!(
            atom.contains("<updated>2026-10-05T03:00:00Z</updated>"),
            "{atom}"
        );
        for text in [html, v.to_string(), atom] {
            assert_private(&text, false);
            assert!(
                !text.contains("kernel-secret"),
                "a history id leaked: {text}"
            );
        }
        // A shorter page history keeps the newest.
        let short = Board::new(PublicRollout::all_of_policy(&p, None), 1, ts(NOW_PAGE));
        assert_eq!(short.history.len(), 1);
        assert_eq!(short.history[0].completed, Some(ts("2026-11-02T03:00:00Z")));
    }

    const NOW_PAGE: &str = "2026-12-01T09:30:00Z";

    #[test]
    fn the_current_rollout_and_its_history_entry_are_one_item() {
        // Completed: the history entry of the current revision is the
        // current rollout, with its details.
        let mut done = policy("secret-web", true, Phase::Completed, 12, &[]);
        done.status.as_mut().unwrap().history = vec![
            entry("2026-11-kernel-secret", "2026-11-02T03:00:00Z", 12, 0),
            entry("2026-12-01-kernel", "2026-12-01T10:30:00Z", 12, 0),
        ];
        let all = PublicRollout::all_of_policy(&done, None);
        assert_eq!(all.len(), 2);
        let current = PublicRollout::of_policy(&done, None).unwrap();
        assert_eq!(all[0], current);
        assert_eq!(all[0].details.as_deref(), Some(DETAILS));
        assert_ne!(all[1].id, current.id);
        // The same revision running again (a node joined after completion):
        // still one item, the current one.
        let mut again = done.clone();
        again.status.as_mut().unwrap().phase = Some(Phase::Progressing);
        let all = PublicRollout::all_of_policy(&again, None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].state, State::InProgress);
        assert_eq!(all.iter().filter(|r| r.id == current.id).count(), 1);
    }

    #[test]
    fn history_titles_keep_the_embargo_of_the_rollout_now_running() {
        let mut p = with_history();
        p.spec.notify.as_mut().unwrap().public_title = Some("Fixing CVE-2026-1234".into());
        // Also before the new revision has a status of its own.
        let mut fresh = p.clone();
        fresh.spec.revision = "2027-01-kernel".into();
        // Its status is of the revision before, which completed everywhere:
        // that lifts nothing for the new one.
        let old = fresh.status.as_mut().unwrap();
        old.phase = Some(Phase::Completed);
        old.nodes.as_mut().unwrap().updated = 12;
        for q in [&p, &fresh] {
            let all = PublicRollout::all_of_policy(q, None);
            let history: Vec<_> = all.iter().filter(|r| r.state.is_done()).collect();
            assert_eq!(history.len(), 2);
            for r in history {
                assert_eq!(r.title, "Fixing [embargoed]");
            }
        }
        // No public title: a generic one, not the advisory summary of
        // another rollout.
        p.spec.notify.as_mut().unwrap().public_title = None;
        let all = PublicRollout::all_of_policy(&p, None);
        assert_eq!(all[1].title, "Server maintenance");
        // Not opted in: nothing, history or not.
        p.spec.notify.as_mut().unwrap().status_page = false;
        assert!(PublicRollout::all_of_policy(&p, None).is_empty());
    }

    #[test]
    fn hostile_texts_are_escaped_and_bounded() {
        let b = branding();
        let mut p = policy("u", true, Phase::Progressing, 4, &[]);
        p.spec.notify.as_mut().unwrap().public_title =
            Some(format!("<script>alert(1)</script>\"'&{}", "x".repeat(4000)));
        let board = board(&[p]);
        let html = board.html(&b);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
        let atom = board.atom(&b);
        assert!(!atom.contains("<script>"));
        assert!(board.current[0].title.chars().count() <= MAX_TEXT);
        // Many policies: bounded sections.
        let many: Vec<PatchPolicy> = (0..200)
            .map(|i| policy(&format!("p{i}"), false, Phase::Completed, 12, &[]))
            .collect();
        let big = super::tests::board(&many);
        assert_eq!(big.history.len(), 5);
    }

    #[test]
    fn branding_is_checked() {
        assert!(Branding::new("", None, "#000000", "en", "UTC", 1, None).is_err());
        assert_eq!(
            Branding::new(
                "A",
                Some("javascript:alert(1)"),
                "#000000",
                "en",
                "UTC",
                1,
                None
            )
            .unwrap_err(),
            BrandingError::Logo
        );
        assert_eq!(
            Branding::new(
                "A",
                Some("https://x/\"onload=x"),
                "#000000",
                "en",
                "UTC",
                1,
                None
            )
            .unwrap_err(),
            BrandingError::Logo
        );
        assert_eq!(
            Branding::new("A", None, "red;}", "en", "UTC", 1, None).unwrap_err(),
            BrandingError::Accent
        );
        assert_eq!(
            Branding::new("A", None, "#000000", "fr", "UTC", 1, None).unwrap_err(),
            BrandingError::Language
        );
        assert_eq!(
            Branding::new("A", None, "#000000", "en", "Mars/Base", 1, None).unwrap_err(),
            BrandingError::TimeZone
        );
        assert_eq!(
            Branding::new("A", None, "#000000", "en", "UTC", 51, None).unwrap_err(),
            BrandingError::History
        );
        assert_eq!(
            Branding::new("A", None, "#000000", "en", "UTC", 1, Some("ftp://x")).unwrap_err(),
            BrandingError::BaseUrl
        );
        let de = Branding::new(
            "A",
            Some("/logo.svg"),
            "#000000",
            "de",
            "Europe/Berlin",
            1,
            None,
        )
        .unwrap();
        let html = Board::new(vec![], 1, ts("2026-12-01T09:30:00Z")).html(&de);
        assert!(
            html.contains("Alle Systeme in Betrieb")
                && html.contains("01.12.2026 10:30 Europe/Berlin"),
            "{html}"
        );
    }
}

//! The Teams, generic-webhook and e-mail channels against real receivers.
//!
//! E-mail goes to a real SMTP server (Python's `aiosmtpd`, started by each
//! test on 127.0.0.1 and stopped by it) over required STARTTLS or implicit
//! TLS with a certificate made for the test by `openssl`, with AUTH; the
//! received MIME is parsed by Python's `email` package. Teams and generic
//! payloads are checked with Python's `jsonschema` against the parts of the
//! receivers' published schemas that they rely on (each schema names its
//! source). All tools are installed by `scripts/setup-test-tools.sh`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};
use sofort::api::{
    Advisory, EmailSpec, MaintenanceWindow, NotifySpec, PatchPolicySpec, Phase, SecretKeyRef,
    Webhook, WebhookFormat,
};
use sofort::notify::{
    Counts, Delivery, DeliveryConfig, DeliveryReport, Due, EventKind, Message, NotifyMetrics,
    Outcome, ResolvedWebhook, Rollout, Window, start,
};
use tokio::io::{AsyncBufReadExt, BufReader};

const DETAILS: &str = "CVE-2026-1234 (local root exploit in the kernel)";
const USER: &str = "status@example.com";
const PASSWORD: &str = "s3cret:p@ss/word";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let p = repo().join(".tools/venv/bin/python");
    assert!(
        p.exists(),
        "the channel tests need aiosmtpd and jsonschema in .tools/venv ({} is missing); run scripts/setup-test-tools.sh",
        p.display()
    );
    p
}

fn spec() -> PatchPolicySpec {
    let mut s = PatchPolicySpec::new("2026-12-01");
    s.urgent = true;
    s.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "22:00".into(),
        end: "05:00".into(),
        time_zone: "Europe/Zurich".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    s.notify = Some(NotifySpec {
        public_title: Some("Web hosting".into()),
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

/// The message of `kind` for an urgent rollout of 12 servers; `Completed`
/// has every server updated (so it carries the details).
fn message(spec: &PatchPolicySpec, kind: EventKind) -> Message {
    let done = kind == EventKind::Completed;
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
            failed: 0,
        },
        failed: &[],
        first_window: Some(Window {
            start: ts("2026-12-01T21:00:00Z"),
            end: ts("2026-12-02T04:00:00Z"),
        }),
        expected_completion: Some(ts("2026-12-01T23:40:00Z")),
        now: ts("2026-12-01T21:00:00Z"),
    };
    let due = Due {
        kind,
        node: None,
        seq: 1,
        at: rollout.now,
    };
    Message::new(&rollout, &due)
}

fn webhook(format: WebhookFormat, template: Option<&str>, email: Option<EmailSpec>) -> Webhook {
    Webhook {
        name: "customers".into(),
        url_secret_ref: SecretKeyRef {
            namespace: "sofort-system".into(),
            name: "customers".into(),
            key: "url".into(),
        },
        format,
        headers_secret_ref: None,
        ca_bundle_secret_ref: None,
        template: template.map(str::to_string),
        email,
        audience: Default::default(),
        node_events: Vec::new(),
    }
}

fn envelope() -> EmailSpec {
    EmailSpec {
        from: "Example Hosting <status@example.com>".into(),
        to: vec![
            "customers@example.com".into(),
            "Ops <ops@example.com>".into(),
        ],
    }
}

// ---------------------------------------------------------------- tools

async fn run(mut cmd: tokio::process::Command, what: &str) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within 30 s"))
        .unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made by openssl.
struct Certs {
    ca: Vec<u8>,
    cert: PathBuf,
    key: PathBuf,
}

async fn certs(dir: &Path) -> Certs {
    let openssl = |args: &[&str]| {
        let mut c = tokio::process::Command::new("openssl");
        c.args(args).current_dir(dir);
        c
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "2", "-subj", "/CN=sofort test CA"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    run(openssl(&a), "openssl CA").await;
    let mut a = vec!["req", "-subj", "/CN=127.0.0.1"];
    a.extend(ec);
    a.extend(["-keyout", "key.pem", "-out", "leaf.csr"]);
    run(openssl(&a), "openssl CSR").await;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]),
        "openssl sign",
    )
    .await;
    Certs {
        ca: std::fs::read(dir.join("ca.pem")).unwrap(),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// A running aiosmtpd; stopped (stdin closed, then killed) when dropped.
struct Sink {
    _child: tokio::process::Child,
    port: u16,
    out: tempfile::TempDir,
}

async fn sink(mode: &str, certs: Option<&Certs>) -> Sink {
    let out = tempfile::tempdir().unwrap();
    let mut c = tokio::process::Command::new(python());
    c.arg(repo().join("tests/py/smtp_sink.py"))
        .arg(mode)
        .arg(out.path());
    if let Some(k) = certs {
        c.arg(&k.cert).arg(&k.key).arg(USER).arg(PASSWORD);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("cannot start the SMTP server");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the SMTP server did not start within 30 s")
    .unwrap();
    let port = line
        .trim()
        .parse()
        .expect("the SMTP server printed no port");
    Sink {
        _child: child,
        port,
        out,
    }
}

impl Sink {
    /// The messages received so far, as parsed by the server.
    fn received(&self) -> Vec<Value> {
        (1..)
            .map(|n| self.out.path().join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    fn raw(&self, n: usize) -> String {
        std::fs::read_to_string(self.out.path().join(format!("{n}.eml"))).unwrap()
    }
}

fn fast() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..DeliveryConfig::default()
    }
}

/// Sends the messages through the delivery lanes; their reports in order.
async fn deliver(hook: ResolvedWebhook, messages: &[Message]) -> Vec<DeliveryReport> {
    let (notifier, mut reports) = start(fast(), NotifyMetrics::new());
    let hook = Arc::new(hook);
    for m in messages {
        notifier
            .enqueue(Delivery::new(m, hook.clone()))
            .expect("queued");
    }
    let mut out = Vec::new();
    for _ in messages {
        let r = tokio::time::timeout(Duration::from_secs(60), reports.recv())
            .await
            .expect("a report within 60 s")
            .expect("the report channel is open");
        out.push(r);
    }
    out
}

fn smtp_url(scheme: &str, port: u16, password: &str) -> String {
    // User and password percent-encoded, as the docs say.
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('@', "%40")
            .replace(':', "%3A")
            .replace('/', "%2F")
    };
    format!(
        "{scheme}://{}:{}@127.0.0.1:{port}",
        enc(USER),
        enc(password)
    )
}

// ---------------------------------------------------------------- e-mail

#[tokio::test]
async fn starttls_with_auth_delivers_parsed_mime_and_keeps_the_embargo() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path()).await;
    let server = sink("starttls", Some(&certs)).await;
    let s = spec();
    let hook = ResolvedWebhook::new(
        &webhook(WebhookFormat::Email, None, Some(envelope())),
        &smtp_url("smtp", server.port, PASSWORD),
        None,
        Some(&certs.ca),
    )
    .unwrap();
    let messages = [
        message(&s, EventKind::UrgentStarted),
        message(&s, EventKind::Completed),
    ];
    let reports = deliver(hook, &messages).await;
    for r in &reports {
        assert!(
            matches!(r.outcome, Outcome::Delivered { status: 250 }),
            "{r:?}"
        );
    }
    let got = server.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let started = &got[0];
    assert_eq!(started["tls"], true, "STARTTLS before the message");
    assert_eq!(started["authenticated"], true);
    assert_eq!(started["mail_from"], "status@example.com");
    assert_eq!(
        started["rcpt_tos"],
        json!(["customers@example.com", "ops@example.com"])
    );
    assert_eq!(
        started["subject"],
        "Web hosting: Urgent maintenance started"
    );
    assert_eq!(started["from"], "Example Hosting <status@example.com>");
    assert_eq!(
        started["to"],
        "customers@example.com, Ops <ops@example.com>"
    );
    assert_eq!(started["content_type"], "text/plain");
    assert_eq!(started["charset"], "utf-8");
    let body = started["body"].as_str().unwrap();
    assert!(
        body.starts_with("Security maintenance: urgent maintenance on 12 servers has started now"),
        "{body}"
    );
    assert!(
        body.contains("expected done by Wed 2 Dec 00:40 Europe/Zurich"),
        "{body}"
    );
    assert!(!body.contains("CVE-2026-1234"), "embargoed: {body}");
    assert!(!server.raw(1).contains("CVE-2026-1234"));
    let done = &got[1];
    assert_eq!(done["subject"], "Web hosting: Maintenance completed");
    assert!(
        done["body"].as_str().unwrap().contains(DETAILS),
        "{}",
        done["body"]
    );
    // Ids derived from the notification: distinct, stable per notification,
    // without the policy name.
    let id = |v: &Value| v["message_id"].as_str().unwrap().to_string();
    assert_ne!(id(started), id(done));
    assert!(
        id(started).ends_with(".sofort@example.com>"),
        "{}",
        id(started)
    );
    assert!(!id(started).contains("workers-nightly"));
    let again = deliver(
        ResolvedWebhook::new(
            &webhook(WebhookFormat::Email, None, Some(envelope())),
            &smtp_url("smtp", server.port, PASSWORD),
            None,
            Some(&certs.ca),
        )
        .unwrap(),
        &messages[..1],
    )
    .await;
    assert!(matches!(again[0].outcome, Outcome::Delivered { .. }));
    assert_eq!(
        id(&server.received()[2]),
        id(started),
        "a resent notice keeps its Message-ID"
    );
    if let Ok(path) = std::env::var("SOFORT_SAVE_EMAIL") {
        std::fs::write(path, server.raw(2)).unwrap();
    }
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path()).await;
    let server = sink("tls", Some(&certs)).await;
    let hook = ResolvedWebhook::new(
        &webhook(
            WebhookFormat::Email,
            Some("{title}: {text}"),
            Some(envelope()),
        ),
        &smtp_url("smtps", server.port, PASSWORD),
        None,
        Some(&certs.ca),
    );
    // `{title}` is not a template variable: refused before anything is sent.
    assert!(hook.is_err());
    let hook = ResolvedWebhook::new(
        &webhook(
            WebhookFormat::Email,
            Some("Hello, {summary} on {nodes} servers."),
            Some(envelope()),
        ),
        &smtp_url("smtps", server.port, PASSWORD),
        None,
        Some(&certs.ca),
    )
    .unwrap();
    let reports = deliver(hook, &[message(&spec(), EventKind::UrgentStarted)]).await;
    assert!(
        matches!(reports[0].outcome, Outcome::Delivered { .. }),
        "{:?}",
        reports[0]
    );
    let got = server.received();
    assert_eq!(got[0]["tls"], true);
    assert_eq!(got[0]["authenticated"], true);
    assert_eq!(
        got[0]["body"],
        "Hello, Security maintenance on 12 servers.\r\n\r\n"
    );
}

#[tokio::test]
async fn never_in_plain_text_and_bad_credentials_fail_at_once() {
    // A server that offers no STARTTLS: refused, nothing sent.
    let plain = sink("plain", None).await;
    let hook = ResolvedWebhook::new(
        &webhook(WebhookFormat::Email, None, Some(envelope())),
        &smtp_url("smtp", plain.port, PASSWORD),
        None,
        None,
    )
    .unwrap();
    let t = Instant::now();
    let r = deliver(hook, &[message(&spec(), EventKind::UrgentStarted)]).await;
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(matches!(r[0].outcome, Outcome::Failed { .. }), "{:?}", r[0]);
    assert_eq!(r[0].attempts, 1, "not retried");
    assert!(plain.received().is_empty());
    // The right server, an untrusted certificate (no CA bundle): refused.
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path()).await;
    let server = sink("starttls", Some(&certs)).await;
    let hook = ResolvedWebhook::new(
        &webhook(WebhookFormat::Email, None, Some(envelope())),
        &smtp_url("smtp", server.port, PASSWORD),
        None,
        None,
    )
    .unwrap();
    let t = Instant::now();
    let r = deliver(hook, &[message(&spec(), EventKind::UrgentStarted)]).await;
    let Outcome::Failed { error } = &r[0].outcome else {
        panic!("{:?}", r[0]);
    };
    assert!(error.contains("certificate"), "{error}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // A wrong password: a permanent refusal, not retried; the error names
    // neither the server nor the credentials.
    let hook = ResolvedWebhook::new(
        &webhook(WebhookFormat::Email, None, Some(envelope())),
        &smtp_url("smtp", server.port, "wrong"),
        None,
        Some(&certs.ca),
    )
    .unwrap();
    let started = Instant::now();
    let r = deliver(hook, &[message(&spec(), EventKind::UrgentStarted)]).await;
    let Outcome::Failed { error } = &r[0].outcome else {
        panic!("{:?}", r[0]);
    };
    assert_eq!(r[0].attempts, 1, "{error}");
    assert!(
        !error.contains("127.0.0.1") && !error.contains(USER) && !error.contains("wrong"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(server.received().is_empty());
}

// ---------------------------------------------------------------- JSON channels

async fn check_schema(schema: &Value, doc: &Value, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join(format!("{name}.schema.json"));
    let d = dir.path().join(format!("{name}.json"));
    std::fs::write(&s, schema.to_string()).unwrap();
    std::fs::write(&d, doc.to_string()).unwrap();
    let mut c = tokio::process::Command::new(python());
    c.arg(repo().join("tests/py/jsonschema_check.py"))
        .arg(&s)
        .arg(&d);
    run(c, &format!("jsonschema {name}")).await;
}

/// The Teams Workflows webhook ("When a Teams webhook request is received",
/// Microsoft Learn: "Create incoming webhooks with Workflows for Microsoft
/// Teams") takes `{"type": "message", "attachments": [...]}` with Adaptive
/// Card attachments; the card part follows the Adaptive Card schema
/// http://adaptivecards.io/schemas/adaptive-card.json (version 1.4:
/// AdaptiveCard, TextBlock, FactSet, Fact), reduced to what sofort sends,
/// with additionalProperties closed so a typo fails.
fn teams_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["type", "attachments"],
        "additionalProperties": false,
        "properties": {
            "type": {"const": "message"},
            "attachments": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["contentType", "content"],
                    "additionalProperties": false,
                    "properties": {
                        "contentType": {"const": "application/vnd.microsoft.card.adaptive"},
                        "contentUrl": {"type": ["string", "null"]},
                        "content": {"$ref": "#/$defs/AdaptiveCard"}
                    }
                }
            }
        },
        "$defs": {
            "AdaptiveCard": {
                "type": "object",
                "required": ["type", "version"],
                "additionalProperties": false,
                "properties": {
                    "$schema": {"type": "string", "format": "uri"},
                    "type": {"const": "AdaptiveCard"},
                    "version": {"type": "string", "pattern": "^1\\.[0-5]$"},
                    "body": {"type": "array", "items": {"oneOf": [
                        {"$ref": "#/$defs/TextBlock"}, {"$ref": "#/$defs/FactSet"}
                    ]}}
                }
            },
            "TextBlock": {
                "type": "object",
                "required": ["type", "text"],
                "additionalProperties": false,
                "properties": {
                    "type": {"const": "TextBlock"},
                    "text": {"type": "string"},
                    "wrap": {"type": "boolean"},
                    "weight": {"enum": ["Default", "Lighter", "Bolder"]},
                    "size": {"enum": ["Default", "Small", "Medium", "Large", "ExtraLarge"]}
                }
            },
            "FactSet": {
                "type": "object",
                "required": ["type", "facts"],
                "additionalProperties": false,
                "properties": {
                    "type": {"const": "FactSet"},
                    "facts": {"type": "array", "items": {
                        "type": "object",
                        "required": ["title", "value"],
                        "additionalProperties": false,
                        "properties": {"title": {"type": "string"}, "value": {"type": "string"}}
                    }}
                }
            }
        }
    })
}

#[tokio::test]
async fn teams_payload_matches_the_adaptive_card_schema_and_the_embargo() {
    let mut s = spec();
    if let Some(a) = s.notify.as_mut().and_then(|n| n.advisory.as_mut()) {
        a.summary = "[Click](https://evil.example) **now**".into();
    }
    for kind in [
        EventKind::UrgentStarted,
        EventKind::Halted,
        EventKind::Completed,
    ] {
        let m = message(&s, kind);
        let p = m.payload(WebhookFormat::Teams, None);
        assert_eq!(p.content_type, "application/json");
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        check_schema(&teams_schema(), &v, "teams").await;
        let text = v["attachments"][0]["content"]["body"][1]["text"]
            .as_str()
            .unwrap();
        assert_eq!(
            text.contains("CVE-2026-1234"),
            kind == EventKind::Completed,
            "{text}"
        );
        // Markdown from spec text is shown as typed, not as a link.
        assert!(
            text.starts_with("\\[Click\\]\\(https://evil.example\\) \\*\\*now\\*\\*"),
            "{text}"
        );
    }
}

/// Atlassian Statuspage "Create an incident" (developer.statuspage.io, REST
/// API v1, `POST /pages/{page_id}/incidents`): the body is
/// `{"incident": {...}}`; the subset of fields and enums used here.
fn statuspage_incident_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["incident"],
        "additionalProperties": false,
        "properties": {"incident": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "status": {"enum": ["investigating", "identified", "monitoring", "resolved",
                                     "scheduled", "in_progress", "verifying", "completed"]},
                "impact_override": {"enum": ["none", "maintenance", "minor", "major", "critical"]},
                "body": {"type": "string"},
                "deliver_notifications": {"type": "boolean"},
                "metadata": {"type": "object"}
            }
        }}
    })
}

#[tokio::test]
async fn generic_body_fills_a_status_page_products_incident_api() {
    let template = r#"{"incident": {"name": "{summary}", "status": "in_progress", "impact_override": "maintenance",
        "body": "{text}", "deliver_notifications": true, "metadata": {"sofort": {"event": "{event}", "servers": "{nodes}"}}}}"#;
    let hook = Arc::new(
        ResolvedWebhook::new(
            &webhook(WebhookFormat::Generic, Some(template), None),
            "https://api.statuspage.io/v1/pages/abc/incidents",
            Some("Authorization: OAuth token"),
            None,
        )
        .unwrap(),
    );
    let mut s = spec();
    if let Some(a) = s.notify.as_mut().and_then(|n| n.advisory.as_mut()) {
        a.summary = "Quote \" and brace } inside".into();
    }
    for kind in [EventKind::UrgentStarted, EventKind::Completed] {
        let d = Delivery::new(&message(&s, kind), hook.clone());
        let p = d.payload();
        assert_eq!(p.content_type, "application/json");
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        check_schema(&statuspage_incident_schema(), &v, "incident").await;
        assert_eq!(v["incident"]["name"], "Quote \" and brace } inside");
        assert_eq!(v["incident"]["metadata"]["sofort"]["servers"], "12");
        assert_eq!(
            v["incident"]["body"]
                .as_str()
                .unwrap()
                .contains("CVE-2026-1234"),
            kind == EventKind::Completed
        );
    }
    // Generic without a template, or with one that is not JSON: refused.
    for t in [None, Some("name={summary}")] {
        assert!(
            ResolvedWebhook::new(
                &webhook(WebhookFormat::Generic, t, None),
                "https://api.example.com/incidents",
                None,
                None
            )
            .is_err()
        );
    }
}

// ---------------------------------------------------------------- validation

#[test]
fn validation_names_what_each_channel_needs() {
    let problems = |w: Webhook, title: Option<&str>| {
        let mut s = spec();
        if let Some(n) = s.notify.as_mut() {
            n.webhooks = vec![w];
            n.public_title = title.map(str::to_string);
        }
        sofort::cmd::validate::validate_spec(&s)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
    };
    let ok = |w| problems(w, Some("Web hosting"));
    assert!(ok(webhook(WebhookFormat::Email, None, Some(envelope()))).is_empty());
    assert!(ok(webhook(WebhookFormat::Teams, Some("{summary}"), None)).is_empty());
    assert!(
        ok(webhook(
            WebhookFormat::Generic,
            Some(r#"{"name": "{summary}"}"#),
            None
        ))
        .is_empty()
    );
    let one = |w| {
        let p = ok(w);
        assert_eq!(p.len(), 1, "{p:?}");
        p[0].clone()
    };
    assert!(
        one(webhook(WebhookFormat::Email, None, None))
            .starts_with("spec.notify.webhooks[0].email: format Email needs")
    );
    let mut bad = envelope();
    bad.to.push("nobody".into());
    assert!(
        one(webhook(WebhookFormat::Email, None, Some(bad)))
            .starts_with("spec.notify.webhooks[0].email.to[2]:")
    );
    assert!(
        one(webhook(WebhookFormat::Slack, None, Some(envelope()))).contains("only format Email")
    );
    assert!(
        one(webhook(WebhookFormat::Generic, None, None))
            .contains("format Generic needs a template")
    );
    assert!(
        one(webhook(
            WebhookFormat::Generic,
            Some(r#"{"a": "{nope}"}"#),
            None
        ))
        .contains("string at /a: unknown variable")
    );
    // The public title is public: not the embargoed details.
    let p = problems(
        webhook(WebhookFormat::Teams, None, None),
        Some("Fixing CVE-2026-1234"),
    );
    assert!(
        p.iter().any(|p| p
            .starts_with("spec.notify.publicTitle: contains text of spec.notify.advisory.details")),
        "{p:?}"
    );
}

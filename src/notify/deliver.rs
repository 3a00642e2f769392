//! Background delivery of notifications to webhooks.
//!
//! The controller hands [`Delivery`]s to [`Notifier::enqueue`], which never
//! waits, so a slow or dead receiver cannot hold up the rollout. Each delivery
//! is retried with exponential backoff and jitter, each request is bounded by
//! a connect and a total timeout, and the outcome comes back as a
//! [`DeliveryReport`] on the report channel, for
//! `status.notifications[].results`, an Event and the metric.
//!
//! # Lanes
//!
//! A webhook receiver may answer slowly or not at all; it must not delay other
//! policies' notices, nor grow the controller's memory. So deliveries wait in
//! *lanes*, one per (policy, webhook, class), where the class is *urgent*
//! (`UrgentStarted`, or any notice of a policy with `urgent: true`) or
//! *routine*:
//!
//! - each lane sends its deliveries one after the other, in the order they
//!   were queued, by a task of its own that exists while the lane holds
//!   something; a black-hole receiver delays only its own lane;
//! - routine requests share [`DeliveryConfig::concurrency`] slots, taken per
//!   attempt and never during the backoff before a retry; urgent requests take
//!   no slot, so an urgent notice never waits behind a routine one (at most
//!   one urgent request is in flight per urgent lane);
//! - a lane holds at most [`DeliveryConfig::lane_queue`] deliveries (waiting or
//!   in flight), each class at most [`DeliveryConfig::queue`] or
//!   [`DeliveryConfig::urgent_queue`] over all lanes and
//!   [`DeliveryConfig::max_queued_bytes`]. Beyond that the *new* delivery is
//!   refused ([`EnqueueError`]): counted as `dropped` in the metric, logged
//!   with the policy, webhook and event names only, and the controller writes
//!   [`DeliveryReport::refused`] into its record (`failed`), exactly like a
//!   delivery that failed after its retries. What was queued before stays.
//!
//! A delivery thus ends within `max_attempts * (timeout + max_backoff)` once its
//! lane reaches it, and the memory held is bounded by the budgets above, the
//! report channel (one report per held delivery) and one HTTP client per CA
//! bundle.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::{Semaphore, mpsc};

use super::event::{self, EventKind};
use super::metrics::NotifyMetrics;
use super::render::{Message, Payload};
use super::template::{Template, TemplateError};
use crate::api::{NotificationRecord, Webhook, WebhookFormat};

/// A webhook's settings as read from the spec and its Secrets.
pub struct ResolvedWebhook {
    /// `spec.notify.webhooks[].name`.
    pub name: String,
    /// Payload format.
    pub format: WebhookFormat,
    /// The parsed user template, if any (text formats).
    pub template: Option<Template>,
    /// The parsed JSON body template of a `Generic` webhook.
    pub body: Option<super::generic::JsonTemplate>,
    /// The server and envelope of an `Email` channel.
    email: Option<super::email::EmailTarget>,
    url: Uri,
    headers: HeaderMap,
    ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for ResolvedWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL and header values are credentials: never printed.
        f.debug_struct("ResolvedWebhook")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("template", &self.template.is_some())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("ca_bundle", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// A webhook whose settings are unusable. Messages never contain the URL or
/// header values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL from the Secret is not an absolute http(s) URL.
    #[error(
        "webhook {webhook}: the URL in its Secret is not an absolute http:// or https:// URL; store the full receiver URL, for example https://status.example.com/hooks/sofort"
    )]
    InvalidUrl {
        /// Webhook name.
        webhook: String,
    },
    /// A header line is malformed.
    #[error(
        "webhook {webhook}: line {line} of the headers Secret is not a valid `Name: value` header ({reason}); write one header per line, for example `Authorization: Bearer <token>`"
    )]
    InvalidHeader {
        /// Webhook name.
        webhook: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the value).
        reason: String,
    },
    /// The CA bundle holds no usable certificate.
    #[error(
        "webhook {webhook}: the CA bundle in its Secret holds no PEM certificate ({reason}); store the receiver's CA as -----BEGIN CERTIFICATE----- blocks"
    )]
    InvalidCaBundle {
        /// Webhook name.
        webhook: String,
        /// What is wrong.
        reason: String,
    },
    /// The template does not parse.
    #[error("webhook {webhook}: template: {source}")]
    Template {
        /// Webhook name.
        webhook: String,
        /// The template problem.
        #[source]
        source: TemplateError,
    },
    /// The JSON body template of a generic webhook is missing or unusable.
    #[error("webhook {webhook}: template {source}")]
    Body {
        /// Webhook name.
        webhook: String,
        /// The problem.
        #[source]
        source: super::generic::JsonTemplateError,
    },
    /// A generic webhook without a template.
    #[error(
        "webhook {webhook}: format Generic needs a template: the JSON request body, for example {{\"title\": \"{{summary}}\"}}"
    )]
    NoBody {
        /// Webhook name.
        webhook: String,
    },
    /// An e-mail channel is unusable.
    #[error("webhook {webhook}: {source}")]
    Email {
        /// Webhook name.
        webhook: String,
        /// The problem.
        #[source]
        source: super::email::EmailError,
    },
}

impl ResolvedWebhook {
    /// Combines a webhook of the spec with the values read from its Secrets
    /// (see [`super::secret::secret_text`]): the URL, the optional headers text
    /// (`Name: value` per line; blank lines and `#` comments skipped) and the
    /// optional PEM CA bundle.
    pub fn new(
        webhook: &Webhook,
        url: &str,
        headers: Option<&str>,
        ca_pem: Option<&[u8]>,
    ) -> Result<ResolvedWebhook, WebhookError> {
        let name = webhook.name.clone();
        if webhook.format == WebhookFormat::Email {
            return ResolvedWebhook::email(webhook, url, ca_pem);
        }
        if webhook.email.is_some() {
            return Err(WebhookError::Email {
                webhook: name,
                source: super::email::EmailError::Envelope,
            });
        }
        let url: Uri = url.trim().parse().map_err(|_| WebhookError::InvalidUrl {
            webhook: name.clone(),
        })?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(WebhookError::InvalidUrl { webhook: name });
        }
        let headers = parse_headers(&name, headers.unwrap_or(""))?;
        if let Some(pem) = ca_pem {
            let certs = parse_ca(pem).map_err(|reason| WebhookError::InvalidCaBundle {
                webhook: name.clone(),
                reason,
            })?;
            if certs.is_empty() {
                return Err(WebhookError::InvalidCaBundle {
                    webhook: name,
                    reason: "no certificate found".into(),
                });
            }
        }
        let (template, body) = ResolvedWebhook::templates(webhook)?;
        Ok(ResolvedWebhook {
            name,
            format: webhook.format,
            template,
            body,
            email: None,
            url,
            headers,
            ca_pem: ca_pem.map(<[u8]>::to_vec),
        })
    }

    /// The text template, or for `Generic` the JSON body template (required).
    fn templates(
        webhook: &Webhook,
    ) -> Result<(Option<Template>, Option<super::generic::JsonTemplate>), WebhookError> {
        let name = &webhook.name;
        if webhook.format == WebhookFormat::Generic {
            let src = webhook
                .template
                .as_deref()
                .ok_or_else(|| WebhookError::NoBody {
                    webhook: name.clone(),
                })?;
            let body =
                super::generic::JsonTemplate::parse(src).map_err(|source| WebhookError::Body {
                    webhook: name.clone(),
                    source,
                })?;
            return Ok((None, Some(body)));
        }
        let template = webhook
            .template
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|source| WebhookError::Template {
                webhook: name.clone(),
                source,
            })?;
        Ok((template, None))
    }

    /// An `Email` channel: the SMTP server URL from the Secret, the envelope
    /// from the spec.
    fn email(
        webhook: &Webhook,
        url: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<ResolvedWebhook, WebhookError> {
        let name = webhook.name.clone();
        let target = super::email::EmailTarget::new(url, webhook.email.as_ref(), ca_pem).map_err(
            |source| WebhookError::Email {
                webhook: name.clone(),
                source,
            },
        )?;
        let (template, _) = ResolvedWebhook::templates(webhook)?;
        Ok(ResolvedWebhook {
            name,
            format: WebhookFormat::Email,
            template,
            body: None,
            email: Some(target),
            url: Uri::from_static("smtp://mail"),
            headers: HeaderMap::new(),
            ca_pem: None,
        })
    }
}

/// A webhook that could not be resolved from the spec and its Secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A Secret or key is missing or unreadable.
    #[error("webhook {webhook}: {source}")]
    Secret {
        /// Webhook name.
        webhook: String,
        /// What is missing.
        #[source]
        source: super::secret::SecretError,
    },
    /// The headers or CA bundle reference another Secret than the URL.
    #[error(
        "webhook {webhook}: the URL, headers and CA bundle must come from one Secret; point headersSecretRef and caBundleSecretRef at the Secret of urlSecretRef ({namespace}/{name})"
    )]
    MixedSecrets {
        /// Webhook name.
        webhook: String,
        /// Namespace of the URL's Secret.
        namespace: String,
        /// Name of the URL's Secret.
        name: String,
    },
    /// The values are unusable.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// Resolves a webhook of policy `policy` with `lookup`, which returns the
/// Secret a reference points to (`None` when it does not exist or cannot be
/// read), for example from a reflector store or after
/// `Api::<Secret>::namespaced(..).get_opt(..)`. The URL, headers and CA bundle
/// come from one Secret, which must have opted in (see [`super::secret`]).
pub fn resolve<'s>(
    policy: &str,
    webhook: &Webhook,
    lookup: impl Fn(&crate::api::SecretKeyRef) -> Option<&'s k8s_openapi::api::core::v1::Secret>,
) -> Result<ResolvedWebhook, ResolveError> {
    use super::secret::{secret_bytes, secret_text};
    let err = |source| ResolveError::Secret {
        webhook: webhook.name.clone(),
        source,
    };
    let r = &webhook.url_secret_ref;
    let same = |o: &crate::api::SecretKeyRef| o.namespace == r.namespace && o.name == r.name;
    if ![&webhook.headers_secret_ref, &webhook.ca_bundle_secret_ref]
        .into_iter()
        .flatten()
        .all(same)
    {
        return Err(ResolveError::MixedSecrets {
            webhook: webhook.name.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        });
    }
    let url = secret_text(lookup(r), r, policy).map_err(err)?;
    let headers = match &webhook.headers_secret_ref {
        Some(r) => Some(secret_text(lookup(r), r, policy).map_err(err)?),
        None => None,
    };
    let ca = match &webhook.ca_bundle_secret_ref {
        Some(r) => Some(secret_bytes(lookup(r), r, policy).map_err(err)?),
        None => None,
    };
    Ok(ResolvedWebhook::new(
        webhook,
        &url,
        headers.as_deref(),
        ca.as_deref(),
    )?)
}

/// Headers a webhook Secret may not set: framing, routing and hop-by-hop
/// headers (RFC 9110 section 7.6.1), which would let a Secret smuggle or
/// redirect requests. Lower-case, as `HeaderName` stores them.
pub const FORBIDDEN_HEADERS: [&str; 13] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "user-agent",
];

fn parse_headers(webhook: &str, text: &str) -> Result<HeaderMap, WebhookError> {
    let mut map = HeaderMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| WebhookError::InvalidHeader {
            webhook: webhook.to_string(),
            line: i + 1,
            reason: reason.to_string(),
        };
        let (name, value) = line.split_once(':').ok_or_else(|| err("no ':'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| err("invalid header name"))?;
        if name == CONTENT_TYPE {
            return Err(err("Content-Type is set by the format"));
        }
        if FORBIDDEN_HEADERS.contains(&name.as_str()) {
            return Err(err(
                "this header is set by the HTTP client (framing, routing or hop-by-hop) and may not be overridden",
            ));
        }
        let mut value =
            HeaderValue::from_str(value.trim()).map_err(|_| err("invalid header value"))?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

fn parse_ca(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// One notification to one webhook, rendered and ready to send.
#[derive(Clone)]
pub struct Delivery {
    /// Which notification.
    pub kind: EventKind,
    /// Node of a `NodeFailed`.
    pub node: Option<String>,
    /// The record's `at`, to find the record again.
    pub at: Timestamp,
    /// Deterministic id (the same for every attempt and every webhook).
    pub id: String,
    /// Name of the policy (`metadata.name`), the first part of the lane.
    policy: String,
    /// Delivered in the urgent class (see [`Message::urgent`]).
    urgent: bool,
    webhook: Arc<ResolvedWebhook>,
    payload: Payload,
    carries_details: bool,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("webhook", &self.webhook.name)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Renders `message` for `webhook` (its format and template).
    pub fn new(message: &Message, webhook: Arc<ResolvedWebhook>) -> Delivery {
        let payload = match &webhook.body {
            Some(body) => message.generic(body),
            None => message.payload(webhook.format, webhook.template.as_ref()),
        };
        Delivery {
            kind: message.kind(),
            node: message.node().map(str::to_string),
            at: message.at(),
            id: message.id().to_string(),
            policy: message.policy().to_string(),
            urgent: message.urgent(),
            webhook,
            payload,
            carries_details: message.carries_details(),
        }
    }

    /// True when the rendered request contains embargoed text although its
    /// message does not carry the details (a public field, the policy name or
    /// a template's own text quotes them): such a request must not be sent.
    pub fn leaks(&self, embargo: &super::Embargo) -> bool {
        !self.carries_details && embargo.leaks(&String::from_utf8_lossy(&self.payload.body))
    }

    /// Name of the webhook.
    pub fn webhook(&self) -> &str {
        &self.webhook.name
    }

    /// Name of the policy.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// True when it goes in the urgent class: `UrgentStarted`, or any notice
    /// of an urgent policy.
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// Bytes this delivery holds while it waits (body, id, node): what the
    /// queue's memory budget counts.
    fn size(&self) -> usize {
        self.payload.body.len()
            + self.id.len()
            + self.policy.len()
            + self.node.as_ref().map_or(0, String::len)
            + std::mem::size_of::<Delivery>()
    }

    /// The rendered request body.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
}

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered {
        /// HTTP status.
        status: u16,
    },
    /// Every attempt failed, or the receiver refused it for good (4xx).
    Failed {
        /// Why, without the URL.
        error: String,
    },
}

/// The end of one delivery, sent back to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Which notification.
    pub kind: EventKind,
    /// Node of a `NodeFailed`.
    pub node: Option<String>,
    /// The record's `at`.
    pub at: Timestamp,
    /// Deterministic id.
    pub id: String,
    /// Webhook name.
    pub webhook: String,
    /// Requests made.
    pub attempts: u32,
    /// Result.
    pub outcome: Outcome,
}

impl DeliveryReport {
    /// The report of a delivery that [`Notifier::enqueue`] refused: no request
    /// was made (`attempts: 0`) and the outcome is `failed` with the reason, so
    /// the record is not left `pending` by a controller that keeps running.
    pub fn refused(delivery: &Delivery, error: &EnqueueError) -> DeliveryReport {
        DeliveryReport {
            kind: delivery.kind,
            node: delivery.node.clone(),
            at: delivery.at,
            id: delivery.id.clone(),
            webhook: delivery.webhook.name.clone(),
            attempts: 0,
            outcome: Outcome::Failed {
                error: format!("not queued: {error}"),
            },
        }
    }

    /// `delivered` or `failed`, as in status and the metric.
    pub fn result(&self) -> &'static str {
        match self.outcome {
            Outcome::Delivered { .. } => event::DELIVERED,
            Outcome::Failed { .. } => event::FAILED,
        }
    }

    /// Writes `webhook=delivered|failed` into the matching status record.
    /// Returns false when the record is gone (revision changed, history cut).
    pub fn apply(&self, records: &mut [NotificationRecord]) -> bool {
        event::set_result(
            records,
            self.kind,
            self.node.as_deref(),
            self.at,
            &self.webhook,
            self.result(),
        )
    }
}

/// Delivery settings.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Deliveries per lane at most (waiting plus the one in flight); beyond,
    /// [`Notifier::enqueue`] refuses the new one with [`EnqueueError::LaneFull`].
    pub lane_queue: usize,
    /// Routine deliveries held at most over all lanes (waiting or in flight).
    pub queue: usize,
    /// Urgent deliveries held at most over all lanes (a budget of their own,
    /// so routine ones can never use it up).
    pub urgent_queue: usize,
    /// Bytes held at most per class (routine, urgent), payloads included.
    pub max_queued_bytes: usize,
    /// Routine requests in flight at once over all lanes. Urgent requests do
    /// not take these slots (at most one in flight per urgent lane).
    pub concurrency: usize,
    /// Per request: the TCP connect.
    pub connect_timeout: Duration,
    /// Per request, in all: connect, TLS and response headers.
    pub timeout: Duration,
    /// Requests per delivery, the first included.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubles per attempt.
    pub initial_backoff: Duration,
    /// Upper bound of one delay (also for `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            lane_queue: 32,
            queue: 512,
            urgent_queue: 256,
            max_queued_bytes: 16 << 20,
            concurrency: 8,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl DeliveryConfig {
    /// Delay before attempt `attempt + 1` after `attempt` failed (1-based):
    /// `initial * 2^(attempt-1)`, capped, with jitter in [50%, 100%].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(nanos / 2 + fastrand::u64(0..=nanos / 2))
    }
}

/// Why [`Notifier::enqueue`] refused a delivery. The controller marks the
/// record `failed` for this webhook ([`DeliveryReport::refused`]); it is
/// counted as `dropped`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// This webhook's lane of this policy holds its maximum.
    #[error(
        "the delivery queue of this webhook is full ({0} held); its receiver is slow or down: check it, the notification is not retried"
    )]
    LaneFull(usize),
    /// Every lane of this class together holds its maximum.
    #[error(
        "the notification queues are full ({0} held); receivers are slow or down: check the NotificationFailed Events of other policies"
    )]
    Full(usize),
    /// The queues hold their maximum of bytes.
    #[error(
        "the notification queues hold their memory limit ({0} bytes); receivers are slow or down"
    )]
    TooLarge(usize),
}

/// The queue a delivery waits in: one per policy, webhook and class, so a
/// slow receiver delays only its own lane, and an urgent notice never waits
/// behind a routine one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LaneKey {
    policy: String,
    webhook: String,
    urgent: bool,
}

/// A lane exists while it holds a delivery; exactly one task works it.
struct Lane {
    waiting: VecDeque<Delivery>,
    /// The delivery the lane's task is sending (0 or 1).
    in_flight: usize,
}

/// What one class (routine, urgent) holds, waiting or in flight.
#[derive(Default, Debug, Clone, Copy)]
struct Usage {
    deliveries: usize,
    bytes: usize,
}

#[derive(Default)]
struct Lanes {
    lanes: HashMap<LaneKey, Lane>,
    /// `[routine, urgent]`.
    usage: [Usage; 2],
}

struct Shared {
    config: DeliveryConfig,
    metrics: NotifyMetrics,
    state: Mutex<Lanes>,
    /// Routine requests in flight; urgent ones do not take a slot.
    routine_slots: Semaphore,
    clients: Mutex<Clients>,
    reports: mpsc::Sender<DeliveryReport>,
    runtime: tokio::runtime::Handle,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every await-free step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle to the delivery lanes. Cheap to clone. When every handle is dropped
/// the lanes finish the deliveries they hold, then the report channel closes.
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = locked(&self.shared.state);
        f.debug_struct("Notifier")
            .field("lanes", &st.lanes.len())
            .field("routine", &st.usage[0])
            .field("urgent", &st.usage[1])
            .finish()
    }
}

impl Notifier {
    /// Queues a delivery in its lane without waiting. Refuses it (and counts
    /// it as `dropped`) when its lane, its class or the memory budget is full;
    /// the deliveries already held are kept.
    pub fn enqueue(&self, delivery: Delivery) -> Result<(), EnqueueError> {
        self.try_enqueue(delivery).map_err(|b| b.0)
    }

    /// Like [`Notifier::enqueue`], but a refusal comes back as the
    /// [`DeliveryReport::refused`] to write into the delivery's record.
    pub fn enqueue_or_refuse(&self, delivery: Delivery) -> Result<(), Box<DeliveryReport>> {
        self.try_enqueue(delivery)
            .map_err(|b| Box::new(DeliveryReport::refused(&b.1, &b.0)))
    }

    fn try_enqueue(&self, delivery: Delivery) -> Result<(), Box<(EnqueueError, Delivery)>> {
        let c = &self.shared.config;
        let key = LaneKey {
            policy: delivery.policy.clone(),
            webhook: delivery.webhook.name.clone(),
            urgent: delivery.urgent,
        };
        let class = usize::from(key.urgent);
        let size = delivery.size();
        let (kind, spawn) = {
            let mut st = locked(&self.shared.state);
            let used = st.usage[class];
            let held = st
                .lanes
                .get(&key)
                .map_or(0, |l| l.waiting.len() + l.in_flight);
            let class_max = if key.urgent { c.urgent_queue } else { c.queue };
            let refused = if held >= c.lane_queue.max(1) {
                Some(EnqueueError::LaneFull(held))
            } else if used.deliveries >= class_max.max(1) {
                Some(EnqueueError::Full(used.deliveries))
            } else if used.bytes.saturating_add(size) > c.max_queued_bytes && used.deliveries > 0 {
                Some(EnqueueError::TooLarge(used.bytes))
            } else {
                None
            };
            if let Some(e) = refused {
                drop(st);
                self.shared
                    .metrics
                    .inc(&key.webhook, delivery.kind.as_str(), "dropped");
                // Names only (the policy's metadata.name, a validated webhook
                // name, the event): no spec text, no URL, no payload.
                tracing::warn!(
                    policy = %key.policy, webhook = %key.webhook, event = %delivery.kind,
                    urgent = key.urgent, reason = %e,
                    "notification not queued; its record is marked failed"
                );
                return Err(Box::new((e, delivery)));
            }
            st.usage[class].deliveries += 1;
            st.usage[class].bytes += size;
            let kind = delivery.kind;
            // A lane that exists has its task, which removes it once empty
            // (under this lock): a new lane gets a new task.
            let spawn = !st.lanes.contains_key(&key);
            let lane = st.lanes.entry(key.clone()).or_insert_with(|| Lane {
                waiting: VecDeque::new(),
                in_flight: 0,
            });
            lane.waiting.push_back(delivery);
            (kind, spawn)
        };
        tracing::debug!(policy = %key.policy, webhook = %key.webhook, event = %kind, urgent = key.urgent, "notification queued");
        if spawn {
            let shared = self.shared.clone();
            self.shared.runtime.spawn(run_lane(shared, key));
        }
        Ok(())
    }
}

/// Starts the delivery lanes on the current tokio runtime. Returns the handle
/// and the channel of reports (one per queued delivery).
pub fn start(
    config: DeliveryConfig,
    metrics: NotifyMetrics,
) -> (Notifier, mpsc::Receiver<DeliveryReport>) {
    // Every held delivery can have its report waiting: lanes never block on a
    // controller that reads reports slower than they come.
    let capacity = config
        .queue
        .max(1)
        .saturating_add(config.urgent_queue.max(1));
    let (report_tx, report_rx) = mpsc::channel(capacity);
    let routine_slots = Semaphore::new(config.concurrency.max(1));
    let shared = Arc::new(Shared {
        config,
        metrics,
        state: Mutex::new(Lanes::default()),
        routine_slots,
        clients: Mutex::new(HashMap::new()),
        reports: report_tx,
        runtime: tokio::runtime::Handle::current(),
    });
    (Notifier { shared }, report_rx)
}

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One HTTP client per CA bundle (`None`: the system roots only).
type Clients = HashMap<Option<Vec<u8>>, Result<HttpClient, String>>;

/// Works one lane: its deliveries one after the other, in order, until it is
/// empty, then removes it.
async fn run_lane(shared: Arc<Shared>, key: LaneKey) {
    let class = usize::from(key.urgent);
    loop {
        let next = {
            let mut st = locked(&shared.state);
            let Some(lane) = st.lanes.get_mut(&key) else {
                return;
            };
            match lane.waiting.pop_front() {
                Some(d) => {
                    lane.in_flight = 1;
                    d
                }
                None => {
                    st.lanes.remove(&key);
                    return;
                }
            }
        };
        let size = next.size();
        let client = {
            let mut clients = locked(&shared.clients);
            clients
                .entry(next.webhook.ca_pem.clone())
                .or_insert_with(|| build_client(next.webhook.ca_pem.as_deref(), &shared.config))
                .clone()
        };
        let slots = (!key.urgent).then_some(&shared.routine_slots);
        let report = deliver(&shared.config, client, slots, &next).await;
        drop(next);
        {
            let mut st = locked(&shared.state);
            let u = &mut st.usage[class];
            u.deliveries = u.deliveries.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(size);
            if let Some(lane) = st.lanes.get_mut(&key) {
                lane.in_flight = 0;
            }
        }
        shared
            .metrics
            .inc(&report.webhook, report.kind.as_str(), report.result());
        match &report.outcome {
            Outcome::Delivered { status } => tracing::info!(
                webhook = %report.webhook, event = %report.kind, id = %report.id,
                attempts = report.attempts, status, "notification delivered"
            ),
            Outcome::Failed { error } => tracing::warn!(
                webhook = %report.webhook, event = %report.kind, id = %report.id,
                attempts = report.attempts, error = %error, "notification failed"
            ),
        }
        // A controller that stopped reading just loses the report.
        let _ = shared.reports.send(report).await;
    }
}

fn build_client(ca_pem: Option<&[u8]>, config: &DeliveryConfig) -> Result<HttpClient, String> {
    https_client(ca_pem, config.connect_timeout)
}

/// An HTTP/1 client for http:// and https:// with the system's CAs plus
/// `ca_pem` (PEM certificates), connecting within `connect_timeout`. Also
/// used by the health gates' Prometheus and Alertmanager clients.
pub(crate) fn https_client(
    ca_pem: Option<&[u8]>,
    connect_timeout: std::time::Duration,
) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 && ca_pem.is_none() {
        tracing::warn!("no system CA certificates found; https webhooks need a caBundleSecretRef");
    }
    if let Some(pem) = ca_pem {
        for cert in parse_ca(pem)? {
            roots
                .add(cert)
                .map_err(|e| format!("CA bundle certificate rejected: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// What one attempt gave.
enum Attempt {
    Done(u16),
    Retry {
        error: String,
        after: Option<Duration>,
    },
    Fatal(String),
}

/// Sends one delivery with its retries. A routine one holds one of `slots`
/// per attempt only, never while it waits to retry.
async fn deliver(
    config: &DeliveryConfig,
    client: Result<HttpClient, String>,
    slots: Option<&Semaphore>,
    d: &Delivery,
) -> DeliveryReport {
    let mut report = DeliveryReport {
        kind: d.kind,
        node: d.node.clone(),
        at: d.at,
        id: d.id.clone(),
        webhook: d.webhook.name.clone(),
        attempts: 0,
        outcome: Outcome::Failed {
            error: String::new(),
        },
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            report.outcome = Outcome::Failed { error: e };
            return report;
        }
    };
    let max = config.max_attempts.max(1);
    loop {
        report.attempts += 1;
        let permit = match slots {
            Some(s) => match s.acquire().await {
                Ok(p) => Some(p),
                Err(_) => {
                    report.outcome = Outcome::Failed {
                        error: "notification delivery stopped".into(),
                    };
                    return report;
                }
            },
            None => None,
        };
        let result = attempt(config, &client, d).await;
        drop(permit);
        let (error, after) = match result {
            Attempt::Done(status) => {
                report.outcome = Outcome::Delivered { status };
                return report;
            }
            Attempt::Fatal(error) => {
                report.outcome = Outcome::Failed { error };
                return report;
            }
            Attempt::Retry { error, after } => (error, after),
        };
        if report.attempts >= max {
            report.outcome = Outcome::Failed {
                error: format!("{error} (gave up after {} attempts)", report.attempts),
            };
            return report;
        }
        let delay = config
            .backoff(report.attempts)
            .max(after.unwrap_or_default().min(config.max_backoff));
        tracing::debug!(
            webhook = %d.webhook.name, event = %d.kind, attempt = report.attempts,
            delay_ms = delay.as_millis(), error = %error, "notification attempt failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

async fn attempt(config: &DeliveryConfig, client: &HttpClient, d: &Delivery) -> Attempt {
    let w = &d.webhook;
    if let Some(target) = &w.email {
        use super::email::SendResult;
        return match super::email::send(target, &d.id, &d.payload, config.timeout).await {
            SendResult::Accepted(code) => Attempt::Done(code),
            SendResult::Transient(error) => Attempt::Retry { error, after: None },
            SendResult::Permanent(error) => Attempt::Fatal(error),
        };
    }
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(w.url.clone())
        .header(CONTENT_TYPE, d.payload.content_type)
        .header(USER_AGENT, concat!("sofort/", env!("CARGO_PKG_VERSION")));
    if let Some(h) = builder.headers_mut() {
        for (k, v) in &w.headers {
            h.append(k.clone(), v.clone());
        }
    }
    let req = match builder.body(Full::new(Bytes::from(d.payload.body.clone()))) {
        Ok(r) => r,
        Err(_) => return Attempt::Fatal("request could not be built".into()),
    };
    match tokio::time::timeout(config.timeout, client.request(req)).await {
        Err(_) => Attempt::Retry {
            error: format!("no response within {:?}", config.timeout),
            after: None,
        },
        Ok(Err(e)) => Attempt::Retry {
            error: redact(&error_chain(&e), &w.url),
            after: None,
        },
        Ok(Ok(resp)) => {
            let status = resp.status();
            if status.is_success() {
                Attempt::Done(status.as_u16())
            } else if status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error()
            {
                let after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Attempt::Retry {
                    error: format!("receiver answered {status}"),
                    after,
                }
            } else {
                Attempt::Fatal(format!(
                    "receiver answered {status}; check the URL and headers in the webhook's Secret"
                ))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Removes the URL and its host from an error text: the URL is a credential.
fn redact(text: &str, url: &Uri) -> String {
    let mut out = text.replace(&url.to_string(), "<webhook url>");
    if let Some(path) = url
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.len() > 1)
    {
        out = out.replace(path, "<path>");
    }
    if let Some(host) = url.host() {
        out = out.replace(host, "<webhook host>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(template: Option<&str>) -> Webhook {
        Webhook {
            name: "statuspage".into(),
            url_secret_ref: crate::api::SecretKeyRef {
                namespace: "ns".into(),
                name: "s".into(),
                key: "url".into(),
            },
            format: WebhookFormat::CloudEvents,
            headers_secret_ref: None,
            ca_bundle_secret_ref: None,
            template: template.map(str::to_string),
            email: None,
            audience: Default::default(),
            node_events: Vec::new(),
        }
    }

    #[test]
    fn resolves_and_never_prints_credentials() {
        let w = ResolvedWebhook::new(
            &webhook(Some("{text}")),
            "https://hooks.example.com/T000/B000/SECRET\n",
            Some("# comment\nAuthorization: Bearer tok123\n\nX-Team: ops"),
            None,
        )
        .unwrap();
        assert_eq!(w.headers.len(), 2);
        let dbg = format!("{w:?}");
        assert!(!dbg.contains("SECRET") && !dbg.contains("tok123"), "{dbg}");
    }

    #[test]
    fn rejects_bad_settings_without_echoing_them() {
        let e =
            ResolvedWebhook::new(&webhook(None), "ftp://secret-host/x", None, None).unwrap_err();
        assert!(matches!(e, WebhookError::InvalidUrl { .. }));
        assert!(!e.to_string().contains("secret-host"));
        let e = ResolvedWebhook::new(&webhook(None), "not a url", None, None).unwrap_err();
        assert!(matches!(e, WebhookError::InvalidUrl { .. }));
        let e = ResolvedWebhook::new(&webhook(None), "https://h/x", Some("Bearer tok123"), None)
            .unwrap_err();
        assert!(matches!(e, WebhookError::InvalidHeader { line: 1, .. }));
        assert!(!e.to_string().contains("tok123"));
        let e = ResolvedWebhook::new(&webhook(None), "https://h/x", None, Some(b"garbage"))
            .unwrap_err();
        assert!(matches!(e, WebhookError::InvalidCaBundle { .. }), "{e}");
        let e =
            ResolvedWebhook::new(&webhook(Some("{cve}")), "https://h/x", None, None).unwrap_err();
        assert!(matches!(e, WebhookError::Template { .. }));
    }

    #[test]
    fn resolves_from_secrets() {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        use std::collections::BTreeMap;
        let mut w = webhook(None);
        w.headers_secret_ref = Some(crate::api::SecretKeyRef {
            namespace: "ns".into(),
            name: "s".into(),
            key: "headers".into(),
        });
        let secret = Secret {
            data: Some(BTreeMap::from([
                (
                    "url".to_string(),
                    ByteString(b"https://h.example/x\n".to_vec()),
                ),
                ("headers".to_string(), ByteString(b"X-Token: t".to_vec())),
            ])),
            ..Secret::default()
        };
        let mut secret = secret;
        secret.metadata.labels = Some(BTreeMap::from([(
            crate::notify::secret::OPT_IN_LABEL.to_string(),
            "true".to_string(),
        )]));
        let ok = resolve("p", &w, |r| (r.name == "s").then_some(&secret)).unwrap();
        assert_eq!(ok.headers.len(), 1);
        let e = resolve("p", &w, |_| None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("webhook statuspage: Secret ns/s key \"url\" cannot be used"),
            "{e}"
        );
        w.ca_bundle_secret_ref = Some(crate::api::SecretKeyRef {
            namespace: "ns".into(),
            name: "s".into(),
            key: "ca.crt".into(),
        });
        let e = resolve("p", &w, |_| Some(&secret)).unwrap_err();
        assert!(
            e.to_string().contains("key \"ca.crt\" cannot be used"),
            "{e}"
        );
        // Headers of another Secret than the URL's: refused before any lookup.
        w.ca_bundle_secret_ref = None;
        w.headers_secret_ref = Some(crate::api::SecretKeyRef {
            namespace: "other-team".into(),
            name: "slack".into(),
            key: "url".into(),
        });
        let e = resolve("p", &w, |_| Some(&secret)).unwrap_err();
        assert!(matches!(e, ResolveError::MixedSecrets { .. }), "{e}");
    }

    #[test]
    fn headers_may_not_override_framing_or_routing() {
        for h in [
            "Host: evil.example",
            "content-length: 0",
            "Transfer-Encoding: chunked",
            "Connection: close",
            "Keep-Alive: 1",
            "Upgrade: h2c",
            "TE: trailers",
            "Proxy-Authorization: Basic x",
        ] {
            let e = ResolvedWebhook::new(&webhook(None), "https://h/x", Some(h), None)
                .err()
                .unwrap_or_else(|| panic!("{h} was accepted"));
            assert!(
                matches!(e, WebhookError::InvalidHeader { line: 1, .. }),
                "{e}"
            );
            assert!(e.to_string().contains("may not be overridden"), "{e}");
        }
        assert!(
            ResolvedWebhook::new(
                &webhook(None),
                "https://h/x",
                Some("Authorization: Bearer t\nX-Team: ops"),
                None
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_without_waiting_and_counts_dropped() {
        let metrics = NotifyMetrics::new();
        let config = DeliveryConfig {
            urgent_queue: 1,
            ..DeliveryConfig::default()
        };
        let (notifier, _reports) = start(config, metrics.clone());
        let hook = Arc::new(
            ResolvedWebhook::new(&webhook(None), "http://127.0.0.1:9/x", None, None).unwrap(),
        );
        let mut spec = crate::api::PatchPolicySpec::new("r1");
        spec.urgent = true;
        let rollout = super::super::event::Rollout {
            policy: "p",
            spec: &spec,
            previous_phase: None,
            phase: crate::api::Phase::Progressing,
            counts: super::super::event::Counts::default(),
            failed: &[],
            first_window: None,
            expected_completion: None,
            now: Timestamp::UNIX_EPOCH,
        };
        let due = super::super::event::due(&rollout, &[]);
        let msg = Message::new(&rollout, &due[0]);
        // The single-threaded test runtime has not run the lane's task yet.
        assert!(notifier.enqueue(Delivery::new(&msg, hook.clone())).is_ok());
        assert_eq!(
            notifier.enqueue(Delivery::new(&msg, hook.clone())),
            Err(EnqueueError::Full(1))
        );
        assert_eq!(metrics.get("statuspage", "UrgentStarted", "dropped"), 1);
        // A routine notice of the same webhook is in its own lane and budget.
        let mut routine_spec = spec.clone();
        routine_spec.urgent = false;
        let routine = super::super::event::Rollout {
            spec: &routine_spec,
            ..rollout
        };
        let msg = Message::new(&routine, &due[0]);
        let d = Delivery::new(&msg, hook);
        assert!(d.urgent(), "UrgentStarted is urgent whatever the policy");
        let started = super::super::event::Due {
            kind: EventKind::Started,
            ..due[0].clone()
        };
        let d = Delivery::new(&Message::new(&routine, &started), d.webhook.clone());
        assert!(!d.urgent());
        assert!(notifier.enqueue(d).is_ok());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let c = DeliveryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..DeliveryConfig::default()
        };
        for _ in 0..50 {
            let b1 = c.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = c.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b10 = c.backoff(10);
            assert!(b10 >= Duration::from_millis(500) && b10 <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn redacts_url_parts() {
        let u: Uri = "https://hooks.example.com/T1/B2/XYZ".parse().unwrap();
        let r = redact("error connecting to hooks.example.com /T1/B2/XYZ", &u);
        assert!(
            !r.contains("XYZ") && !r.contains("hooks.example.com"),
            "{r}"
        );
    }
}

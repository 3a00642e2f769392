//! Customer notifications: what is due, what it says, and its delivery.
//!
//! The people running sofort promise their customers to announce routine
//! maintenance ahead, to tell them at once about urgent maintenance, and not to
//! reveal the nature of a security hole before it is fixed everywhere. This
//! module is that promise in code:
//!
//! - [`event`]: the pure decision of which notification is due now
//!   ([`due`]), with the records in `status.notifications` as its memory;
//! - [`render`]: the [`Message`] of a notification and its CloudEvents 1.0,
//!   Slack, Microsoft Teams and e-mail payloads, default texts and user
//!   [`template`]s; [`generic`]: the JSON body template of a generic webhook;
//!   [`email`]: the SMTP channel (TLS or required STARTTLS);
//! - [`status_page`]: the public status page, JSON document and Atom feed,
//!   rendered purely from the policies that opted in;
//! - [`embargo`]: the advisory details only in `Completed`, and the
//!   [`Embargo::scrub`] for Events, status and logs before completion;
//! - [`deliver`]: background delivery in bounded lanes per policy, webhook and
//!   class (urgent first), with timeouts, retries, backoff and jitter,
//!   reporting each outcome back; [`metrics`]: the counter;
//! - [`node_progress`]: the per-node progress notices (draining, rebooting,
//!   back) for admin channels that subscribed to them;
//! - [`secret`]: reading the URL, headers and CA bundle from one Secret that
//!   opted in to webhook use.
//!
//! # How the controller uses it
//!
//! ```text
//! at start:   let metrics = NotifyMetrics::new(); metrics.register(&mut registry);
//!             let (notifier, mut reports) = start(DeliveryConfig::default(), metrics);
//! per policy: let hooks = spec.notify.webhooks.iter().map(|w| resolve(policy, w, |r| secrets.get(r)));
//!             (an Err is an Event on the policy; its records get `webhook=failed`)
//! let records = records_for_revision(status.revision, &status.notifications, &spec.revision);
//! let due = due(&rollout, records);                       // pure
//! append_records(&mut new_status.notifications, &due, webhook_names);  // webhook=pending
//! patch status (new phase + records) ------------------- only if this succeeds:
//! for d in due { let m = Message::new(&rollout, &d);
//!                for w in webhooks { notifier.enqueue_or_refuse(Delivery::new(&m, w.clone())) } }
//!             (a refusal, its lane full, is a DeliveryReport like any other: webhook=failed)
//! on each DeliveryReport: report.apply(&mut status.notifications); patch status; Event
//! after a restart / on becoming leader: pending(&records) -> Due::from_record -> enqueue
//! ```
//!
//! # Exactly once, at least once
//!
//! The *decision* is exactly once per (policy, revision, event[, node]): a
//! notification is decided only if no record of it is in status, and its record
//! is written together with the phase that caused it before anything is sent.
//! Two replicas or a restarted controller read the same status, so they cannot
//! decide it twice; a status write that loses a conflict sends nothing.
//!
//! The *delivery* is at least once. Between queuing a request and writing its
//! result the controller may die; the record then still says
//! `webhook=pending`, and the next leader delivers it again with the same
//! CloudEvents `id`. We chose this side on purpose: a customer who gets a
//! duplicate "maintenance started" (which a receiver can drop by `id`) is far
//! better off than one who never hears that maintenance is scheduled, or never
//! learns that the security fix is done.

pub mod deliver;
pub mod email;
pub mod embargo;
pub mod event;
pub mod generic;
pub mod metrics;
pub mod node_progress;
pub mod render;
pub mod secret;
pub mod status_page;
pub mod template;

pub use deliver::{
    Delivery, DeliveryConfig, DeliveryReport, EnqueueError, Notifier, Outcome, ResolveError,
    ResolvedWebhook, WebhookError, resolve, start,
};
pub use embargo::Embargo;
pub use event::{
    Counts, Due, EventKind, Rollout, Window, append_records, due, pending, records_for_revision,
};
pub use metrics::NotifyMetrics;
pub use render::{Message, Payload};
pub use secret::{SecretError, secret_bytes, secret_text};
pub use template::{Template, TemplateError};

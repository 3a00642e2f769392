//! The notification metric, `sofort_notifications_total{webhook,event,result}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `sofort_notifications_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `spec.notify.webhooks[].name`.
    pub webhook: String,
    /// Event name, for example `Started`.
    pub event: String,
    /// `delivered`, `failed` (after the retries) or `dropped` (queue full).
    pub result: String,
}

/// Notification metrics; clones share the same counters.
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    notifications: Family<NotificationLabels, Counter>,
}

impl NotifyMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> NotifyMetrics {
        NotifyMetrics::default()
    }

    /// Registers `sofort_notifications_total` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sofort_notifications",
            "Customer notifications by webhook, event and result (delivered, failed, dropped)",
            self.notifications.clone(),
        );
    }

    /// Registers the counter as `notifications` in a registry created with the
    /// `sofort` prefix (the controller's), so it is still exported as
    /// `sofort_notifications_total`.
    pub fn register_prefixed(&self, registry: &mut Registry) {
        registry.register(
            "notifications",
            "Customer notifications by webhook, event and result (delivered, failed, dropped)",
            self.notifications.clone(),
        );
    }

    /// Counts one notification outcome.
    pub fn inc(&self, webhook: &str, event: &str, result: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                webhook: webhook.to_string(),
                event: event.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Current value of one series (for tests and diagnostics).
    pub fn get(&self, webhook: &str, event: &str, result: &str) -> u64 {
        self.notifications
            .get_or_create(&NotificationLabels {
                webhook: webhook.to_string(),
                event: event.to_string(),
                result: result.to_string(),
            })
            .get()
    }
}

//! `/healthz` and `/metrics` of the agent.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// 1 when the host asks for a reboot, 0 when not (unchanged on a failed check).
    pub reboot_required: Gauge,
    /// Reboots the agent asked the host for.
    pub reboots: Counter,
    /// Run time of host patch commands.
    pub patch_seconds: Histogram,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let reboot_required = Gauge::default();
        let reboots = Counter::default();
        // 1 s … about 2.3 h.
        let patch_seconds = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let mut registry = Registry::default();
        registry.register(
            "sofort_agent_reboot_required",
            "1 when the host's reboot sentinel asks for a reboot",
            reboot_required.clone(),
        );
        registry.register(
            "sofort_agent_reboots",
            "Reboots requested from the host by this agent",
            reboots.clone(),
        );
        registry.register(
            "sofort_agent_patch_seconds",
            "Run time of the host patch command",
            patch_seconds.clone(),
        );
        Metrics {
            reboot_required,
            reboots,
            patch_seconds,
            registry,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Routes for `/healthz` and `/metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Serves the endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_the_documented_ones() {
        let m = Metrics::new();
        m.reboot_required.set(1);
        m.reboots.inc();
        m.patch_seconds.observe(3.0);
        let text = m.encode();
        assert!(text.contains("sofort_agent_reboot_required 1"), "{text}");
        assert!(text.contains("sofort_agent_reboots_total 1"), "{text}");
        assert!(
            text.contains("sofort_agent_patch_seconds_count 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn healthz_and_metrics_are_served() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), async {
            let _ = rx.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            body
        };
        assert!(get("/healthz").await.ends_with("ok"));
        assert!(
            get("/metrics")
                .await
                .contains("sofort_agent_reboots_total 0")
        );
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

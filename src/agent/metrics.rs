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

use crate::metrics::ServeLimits;

/// The agent's metrics.
#[derive(Debug)]
pub struct AgentMetrics {
    /// 1 when the host asks for a reboot, 0 when not (unchanged on a failed check).
    pub reboot_required: Gauge,
    /// Reboots the agent asked the host for.
    pub reboots: Counter,
    /// Run time of host patch commands.
    pub patch_seconds: Histogram,
    registry: Registry,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
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
        AgentMetrics {
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
pub fn router(metrics: Arc<AgentMetrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Serves the endpoints on `listener` until `shutdown` completes, with the
/// same limits as the controller's server (header-read timeout, connection
/// lifetime and count): anyone who reaches the node's port may connect.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, metrics, ServeLimits::default(), shutdown).await
}

/// Like [`serve`], with explicit limits.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::metrics::serve_router(listener, router(metrics), limits, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_the_documented_ones() {
        let m = AgentMetrics::new();
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
    async fn agent_server_cuts_half_open_connections_after_the_header_timeout()
    -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let limits = ServeLimits {
            header_read_timeout: std::time::Duration::from_millis(200),
            ..ServeLimits::default()
        };
        let server = tokio::spawn(serve_with_limits(
            listener,
            Arc::new(AgentMetrics::new()),
            limits,
            std::future::pending(),
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        // Headers that never end: without a header timeout the read below
        // would wait forever (bounded here at 10 s).
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await?;
        let mut buf = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .map_err(|_| "the half-open connection was not closed")??;
        assert!(!String::from_utf8_lossy(&buf).contains(" 200 "));
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn healthz_and_metrics_are_served() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(AgentMetrics::new()), async {
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

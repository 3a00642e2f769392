//! Controller metrics (Prometheus text format) and the health endpoints.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sofort_nodes` | gauge | `policy`, `step` — selected nodes by step |
//! | `sofort_step_duration_seconds` | histogram | `step` — how long finished steps took |
//! | `sofort_evictions_total` | counter | `result` (`evicted`, `blocked`, `error`) |
//! | `sofort_rollout_phase` | gauge | `policy`, `phase` — 1 for the current phase |
//! | `sofort_window_open` | gauge | `policy` — 1 while a maintenance window is open |
//! | `sofort_reconcile_errors_total` | counter | `policy` |
//! | `sofort_node_writes_total` | counter | `action` (`claim`, `cordon_again`, `drain`, `request_patch`, `request_reboot`, `set_step`, `mark_failed`, `release`, `give_back`), `result` (`stored`, `conflict`, `error`; not sent: `held`, `unchanged`) — the controller's node writes |
//! | `sofort_leader` | gauge | — 1 on the replica holding the Lease |
//! | `sofort_step_started_timestamp_seconds` | gauge | `policy`, `step` — when the node longest in the step entered it (Unix time; no series while no node is in it) |
//! | `sofort_step_timeout_seconds` | gauge | `policy`, `step` — the policy's timeout of the step (steps that have one) |
//! | `sofort_events_total` | counter | `result` (`published`, `failed`, `dropped`) — Kubernetes Events the controller published, could not publish, or dropped because its queue was full |
//! | `sofort_notifications_total` | counter | `webhook`, `event`, `result` (`delivered`, `failed`, `dropped`) — customer notifications |

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn new_histogram() -> Histogram {
    // 1 s … ~4.5 h
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

const PHASES: [&str; 6] = [
    "Scheduled",
    "Waiting",
    "Progressing",
    "Paused",
    "Completed",
    "Halted",
];

/// All controller metrics.
#[derive(Clone)]
pub struct ControllerMetrics {
    nodes: Family<Labels, Gauge>,
    step_duration: Family<Labels, Histogram, fn() -> Histogram>,
    evictions: Family<Labels, Counter>,
    phase: Family<Labels, Gauge>,
    window_open: Family<Labels, Gauge>,
    reconcile_errors: Family<Labels, Counter>,
    node_writes: Family<Labels, Counter>,
    leader: Gauge,
    step_started: Family<Labels, Gauge>,
    step_timeout: Family<Labels, Gauge>,
    gate_open: Family<Labels, Gauge>,
    gate_checks: Family<Labels, Counter>,
    decision_pass: Histogram,
    events: Family<Labels, Counter>,
    registry: Arc<Registry>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        Self::new_with(|_| {})
    }

    /// Like [`ControllerMetrics::new`], and lets `extra` register more metrics (for
    /// example the notification counter) in the same `sofort`-prefixed registry.
    pub fn new_with(extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("sofort");
        let nodes = Family::<Labels, Gauge>::default();
        let step_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(new_histogram);
        let evictions = Family::<Labels, Counter>::default();
        let phase = Family::<Labels, Gauge>::default();
        let window_open = Family::<Labels, Gauge>::default();
        let reconcile_errors = Family::<Labels, Counter>::default();
        let node_writes = Family::<Labels, Counter>::default();
        let leader = Gauge::default();
        let step_started = Family::<Labels, Gauge>::default();
        let step_timeout = Family::<Labels, Gauge>::default();
        let gate_open = Family::<Labels, Gauge>::default();
        let gate_checks = Family::<Labels, Counter>::default();
        // 1 ms … ~16 s
        let decision_pass = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "events",
            "Kubernetes Events by result (published; failed: the API server refused or did not answer; dropped: more were waiting than the controller queues)",
            events.clone(),
        );
        registry.register(
            "decision_pass_duration_seconds",
            "Duration of one decision pass over every policy and node (the writes it makes included); a node's next step waits for the pass in progress",
            decision_pass.clone(),
        );
        registry.register(
            "gate_open",
            "1 while the health gate of the policy is open, 0 while closed",
            gate_open.clone(),
        );
        registry.register(
            "gate_checks",
            "Health gate checks by gate (alerts, query, silences, blockingPods, workloads) and result (ok: answered; error: failed, the gate counts as closed)",
            gate_checks.clone(),
        );
        registry.register("nodes", "Selected nodes by policy and step", nodes.clone());
        registry.register(
            "step_duration_seconds",
            "Duration of finished node steps",
            step_duration.clone(),
        );
        registry.register("evictions", "Pod evictions by result", evictions.clone());
        registry.register(
            "rollout_phase",
            "1 for the current rollout phase of each policy",
            phase.clone(),
        );
        registry.register(
            "window_open",
            "1 while a maintenance window of the policy is open",
            window_open.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile errors by policy",
            reconcile_errors.clone(),
        );
        registry.register(
            "node_writes",
            "Node writes by action and result (stored, conflict, error; not sent: held, unchanged)",
            node_writes.clone(),
        );
        registry.register(
            "leader",
            "1 on the replica holding the leader Lease",
            leader.clone(),
        );
        registry.register(
            "step_started_timestamp_seconds",
            "When the node longest in the step entered it (Unix time); no series while no node is in the step",
            step_started.clone(),
        );
        registry.register(
            "step_timeout_seconds",
            "Timeout of the step in the policy's spec",
            step_timeout.clone(),
        );
        extra(&mut registry);
        ControllerMetrics {
            nodes,
            step_duration,
            evictions,
            phase,
            window_open,
            reconcile_errors,
            node_writes,
            leader,
            step_started,
            step_timeout,
            gate_open,
            gate_checks,
            decision_pass,
            events,
            registry: Arc::new(registry),
        }
    }

    /// Sets the node count of one policy and step.
    pub fn set_nodes(&self, policy: &str, step: &str, count: i64) {
        self.nodes
            .get_or_create(&labels(&[("policy", policy), ("step", step)]))
            .set(count);
    }

    /// Records a finished step's duration.
    pub fn observe_step(&self, step: &str, seconds: f64) {
        self.step_duration
            .get_or_create(&labels(&[("step", step)]))
            .observe(seconds);
    }

    /// Counts a Kubernetes Event by result (`published`, `failed`, `dropped`).
    pub fn count_event(&self, result: &'static str) {
        self.events
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// Records how long one decision pass took.
    pub fn observe_decision_pass(&self, seconds: f64) {
        self.decision_pass.observe(seconds);
    }

    /// Counts evictions by result.
    pub fn count_evictions(&self, result: &str, n: u64) {
        self.evictions
            .get_or_create(&labels(&[("result", result)]))
            .inc_by(n);
    }

    /// Marks the current phase of a policy (1) and clears the others (0).
    pub fn set_phase(&self, policy: &str, phase: &str) {
        for p in PHASES {
            self.phase
                .get_or_create(&labels(&[("policy", policy), ("phase", p)]))
                .set(i64::from(p == phase));
        }
    }

    /// Whether a window of the policy is open.
    pub fn set_window_open(&self, policy: &str, open: bool) {
        self.window_open
            .get_or_create(&labels(&[("policy", policy)]))
            .set(i64::from(open));
    }

    /// Counts a reconcile error.
    pub fn reconcile_error(&self, policy: &str) {
        self.reconcile_errors
            .get_or_create(&labels(&[("policy", policy)]))
            .inc();
    }

    /// Counts a node write (or one not sent) by action and result; both
    /// come from fixed sets, so the series are bounded.
    pub fn count_node_write(&self, action: &'static str, result: &'static str) {
        self.node_writes
            .get_or_create(&labels(&[("action", action), ("result", result)]))
            .inc();
    }

    /// Sets when the node of a policy longest in a step entered it (Unix
    /// seconds); None removes the series (no node in the step).
    pub fn set_step_started(&self, policy: &str, step: &str, unix_seconds: Option<i64>) {
        let key = labels(&[("policy", policy), ("step", step)]);
        match unix_seconds {
            Some(t) => {
                self.step_started.get_or_create(&key).set(t);
            }
            None => {
                self.step_started.remove(&key);
            }
        }
    }

    /// Sets a policy's timeout of a step.
    pub fn set_step_timeout(&self, policy: &str, step: &str, seconds: i64) {
        self.step_timeout
            .get_or_create(&labels(&[("policy", policy), ("step", step)]))
            .set(seconds);
    }

    /// Sets whether a policy's health gate is open.
    pub fn set_gate_open(&self, policy: &str, gate: &str, open: bool) {
        self.gate_open
            .get_or_create(&labels(&[("policy", policy), ("gate", gate)]))
            .set(i64::from(open));
    }

    /// Removes a policy's gate series (the gate was removed from the spec).
    pub fn forget_gate(&self, policy: &str, gate: &str) {
        self.gate_open
            .remove(&labels(&[("policy", policy), ("gate", gate)]));
    }

    /// Counts one health gate check (`gate`: the gate kind, or `silences`;
    /// `ok`: it answered, else it failed and the result label is `error`).
    /// Whether the answer opens or closes the gate is `sofort_gate_open`.
    pub fn count_gate_check(&self, gate: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.gate_checks
            .get_or_create(&labels(&[("gate", gate), ("result", result)]))
            .inc();
    }

    /// Removes every series of a policy (after it was deleted), so deleted
    /// policies do not stay in the exposition for the life of the process.
    pub fn forget_policy(&self, policy: &str) {
        for step in [
            "Pending",
            "Draining",
            "Patching",
            "Rebooting",
            "WaitingReady",
            "Settling",
            "Done",
            "Failed",
        ] {
            let key = labels(&[("policy", policy), ("step", step)]);
            self.nodes.remove(&key);
            self.step_started.remove(&key);
            self.step_timeout.remove(&key);
        }
        for phase in PHASES {
            self.phase
                .remove(&labels(&[("policy", policy), ("phase", phase)]));
        }
        self.window_open.remove(&labels(&[("policy", policy)]));
        self.reconcile_errors.remove(&labels(&[("policy", policy)]));
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Default bound of the `/healthz` watchdog (`--watchdog-timeout`).
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(300);

/// Shared state of the health endpoints: readiness, and the watchdog of the
/// decision loop behind `/healthz`.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// Milliseconds after `epoch` of the loop's last beat.
    last_beat: Arc<AtomicU64>,
    epoch: Instant,
    watchdog: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::with_watchdog(DEFAULT_WATCHDOG)
    }
}

impl Health {
    /// Health whose `/healthz` fails once no beat came for `watchdog`.
    pub fn with_watchdog(watchdog: Duration) -> Self {
        Health {
            ready: Arc::new(AtomicBool::new(false)),
            last_beat: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            watchdog,
        }
    }

    /// The watchdog bound.
    pub fn watchdog(&self) -> Duration {
        self.watchdog
    }

    /// The decision loop came round.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// The decision loop came round at `at`.
    pub fn beat_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.epoch).as_millis();
        self.last_beat
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long the loop has been silent at `now`, or `None` while it is
    /// within the bound.
    pub fn stalled_at(&self, now: Instant) -> Option<Duration> {
        let last = self.epoch + Duration::from_millis(self.last_beat.load(Ordering::Relaxed));
        let silent = now.saturating_duration_since(last);
        (silent > self.watchdog).then_some(silent)
    }

    /// Whether the decision loop is live now.
    pub fn is_live(&self) -> bool {
        self.stalled_at(Instant::now()).is_none()
    }

    /// Marks the process ready (caches synced) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: ControllerMetrics,
    health: Health,
}

async fn metrics_handler(State(s): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<ServerState>) -> impl IntoResponse {
    match s.health.stalled_at(Instant::now()) {
        None => (StatusCode::OK, "ok".to_string()),
        Some(silent) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the decision loop has not come round for {}s (bound {}s, --watchdog-timeout)",
                silent.as_secs(),
                s.health.watchdog().as_secs()
            ),
        ),
    }
}

async fn readyz(State(s): State<ServerState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: ControllerMetrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ServerState { metrics, health })
}

/// Errors of the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free address with --metrics-addr")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Limits of an HTTP server that anyone on the network can reach.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// A connection is closed this long after it was accepted, whatever it does.
    pub connection_lifetime: Duration,
    /// Connections served at once; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    /// 5 s for the headers, 60 s per connection, 64 connections: a probe or a
    /// scrape needs one short connection, and 64 idle ones cost little memory.
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(60),
            max_connections: 64,
        }
    }
}

/// Binds the metrics address; returns the bound address and the serving future.
pub async fn serve(
    addr: &str,
    metrics: ControllerMetrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    serve_with_limits(addr, metrics, health, ServeLimits::default(), shutdown).await
}

/// Like [`serve`], with explicit limits.
pub async fn serve_with_limits(
    addr: &str,
    metrics: ControllerMetrics,
    health: Health,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let app = router(metrics, health);
    let handle = tokio::spawn(serve_router(listener, app, limits, shutdown));
    Ok((local, handle))
}

/// Serves `app` on `listener` until `shutdown` resolves, within `limits`:
/// half-open or slow clients are cut after the header timeout, every
/// connection after its lifetime, and connections past the limit are closed
/// at once, so no number of idle clients can exhaust the process's memory.
/// Shared by every HTTP endpoint of sofort.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = Box::pin(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics server: accept failed");
                // Out of file descriptors and the like: give it a moment.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the limit: closed at once.
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            // A timeout (lifetime spent) ends the connection like an error.
            if let Ok(Err(e)) = tokio::time::timeout(limits.connection_lifetime, conn).await {
                tracing::debug!(error = %e, "metrics server: connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = ControllerMetrics::new();
        m.set_nodes("workers", "Draining", 2);
        m.observe_step("Draining", 42.0);
        m.count_evictions("evicted", 3);
        m.set_phase("workers", "Progressing");
        m.set_window_open("workers", true);
        m.reconcile_error("workers");
        m.count_node_write("claim", "conflict");
        m.set_leader(true);
        m.set_step_started("workers", "Draining", Some(1_796_000_000));
        m.set_step_started("workers", "Rebooting", Some(1_796_000_100));
        m.set_step_started("workers", "Rebooting", None);
        m.set_step_timeout("workers", "Draining", 900);
        m.set_gate_open("workers", "query api-errors", false);
        m.count_gate_check("alerts", true);
        m.count_gate_check("workloads", false);
        let text = m.render();
        for want in [
            "sofort_nodes{policy=\"workers\",step=\"Draining\"} 2",
            "sofort_step_duration_seconds_count{step=\"Draining\"} 1",
            "sofort_evictions_total{result=\"evicted\"} 3",
            "sofort_rollout_phase{policy=\"workers\",phase=\"Progressing\"} 1",
            "sofort_rollout_phase{policy=\"workers\",phase=\"Halted\"} 0",
            "sofort_window_open{policy=\"workers\"} 1",
            "sofort_reconcile_errors_total{policy=\"workers\"} 1",
            "sofort_node_writes_total{action=\"claim\",result=\"conflict\"} 1",
            "sofort_leader 1",
            "sofort_step_started_timestamp_seconds{policy=\"workers\",step=\"Draining\"} 1796000000",
            "sofort_step_timeout_seconds{policy=\"workers\",step=\"Draining\"} 900",
            "sofort_gate_open{policy=\"workers\",gate=\"query api-errors\"} 0",
            "sofort_gate_checks_total{gate=\"alerts\",result=\"ok\"} 1",
            "sofort_gate_checks_total{gate=\"workloads\",result=\"error\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(
            !text.contains("step=\"Rebooting\""),
            "removed series: {text}"
        );
        // The help text names the result labels the checks emit.
        let help = text
            .lines()
            .find(|l| l.starts_with("# HELP sofort_gate_checks"))
            .unwrap_or_default();
        assert!(
            help.contains("result (ok: ") && help.contains("; error: "),
            "{help}"
        );
    }

    #[tokio::test]
    async fn health_endpoints_follow_readiness() {
        let health = Health::default();
        let (addr, _h) = serve(
            "127.0.0.1:0",
            ControllerMetrics::new(),
            health.clone(),
            std::future::pending(),
        )
        .await
        .unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.unwrap();
            buf
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/readyz").await.contains(" 503 "));
        health.set_ready(true);
        assert!(get("/readyz").await.contains(" 200 "));
        assert!(get("/metrics").await.contains("sofort_leader"));
    }

    async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        Ok(buf)
    }

    #[test]
    fn series_of_deleted_policies_go_away() {
        let m = ControllerMetrics::new();
        for p in ["gone", "kept"] {
            m.set_nodes(p, "Draining", 2);
            m.set_phase(p, "Progressing");
            m.set_window_open(p, true);
            m.reconcile_error(p);
        }
        m.forget_policy("gone");
        let text = m.render();
        assert!(!text.contains("policy=\"gone\""), "{text}");
        assert!(
            text.contains("sofort_nodes{policy=\"kept\",step=\"Draining\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sofort_reconcile_errors_total{policy=\"kept\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn watchdog_trips_only_after_its_bound() {
        let h = Health::with_watchdog(Duration::from_secs(10));
        let t0 = Instant::now();
        h.beat_at(t0);
        assert_eq!(h.stalled_at(t0 + Duration::from_secs(9)), None);
        assert!(h.stalled_at(t0 + Duration::from_secs(11)).is_some());
        // A later beat resets it; an older one does not move it back.
        h.beat_at(t0 + Duration::from_secs(20));
        h.beat_at(t0 + Duration::from_secs(1));
        assert_eq!(h.stalled_at(t0 + Duration::from_secs(29)), None);
    }

    #[tokio::test]
    async fn healthz_fails_when_the_decision_loop_stalls() -> Result<(), Box<dyn std::error::Error>>
    {
        // The loop's last beat was a minute ago; the bound is 10 s.
        let epoch = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .ok_or("clock too young")?;
        let health = Health {
            epoch,
            ..Health::with_watchdog(Duration::from_secs(10))
        };
        let (addr, _h) = serve(
            "127.0.0.1:0",
            ControllerMetrics::new(),
            health.clone(),
            std::future::pending(),
        )
        .await?;
        let stalled = http_get(addr, "/healthz").await?;
        assert!(stalled.contains(" 503 "), "{stalled}");
        assert!(stalled.contains("--watchdog-timeout"), "{stalled}");
        health.beat();
        let live = http_get(addr, "/healthz").await?;
        assert!(live.contains(" 200 "), "{live}");
        Ok(())
    }

    #[tokio::test]
    async fn half_open_connections_are_cut_after_the_header_timeout()
    -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(200),
            ..ServeLimits::default()
        };
        let (addr, _h) = serve_with_limits(
            "127.0.0.1:0",
            ControllerMetrics::new(),
            Health::default(),
            limits,
            std::future::pending(),
        )
        .await?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        // Headers that never end.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await?;
        let mut buf = Vec::new();
        // The server closes the connection; without a header timeout this
        // read would wait forever (bounded here at 10 s).
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .map_err(|_| "the half-open connection was not closed")??;
        assert!(!String::from_utf8_lossy(&buf).contains(" 200 "));
        Ok(())
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_once()
    -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = ServeLimits {
            max_connections: 2,
            ..ServeLimits::default()
        };
        let (addr, _h) = serve_with_limits(
            "127.0.0.1:0",
            ControllerMetrics::new(),
            Health::default(),
            limits,
            std::future::pending(),
        )
        .await?;
        // Two idle clients hold both slots (the accept queue keeps their order).
        let a = tokio::net::TcpStream::connect(addr).await?;
        let _b = tokio::net::TcpStream::connect(addr).await?;
        let mut c = tokio::net::TcpStream::connect(addr).await?;
        let _ = c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf))
            .await
            .map_err(|_| "the connection past the limit was kept waiting")?;
        assert!(
            read.is_err() || buf.is_empty(),
            "served past the limit: {:?}",
            String::from_utf8_lossy(&buf)
        );
        // A slot that is given back serves again.
        drop(a);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if http_get(addr, "/healthz")
                .await
                .is_ok_and(|r| r.contains(" 200 "))
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no slot came free");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

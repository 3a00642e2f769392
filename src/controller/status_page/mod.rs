//! The public status listener (`--status-addr`): `GET /status` (HTML),
//! `/status.json` and `/status.atom`, answered by every replica from its own
//! cache of PatchPolicies.
//!
//! A refresher task renders the three documents from the policy and node
//! caches every `refresh` (and never more often), with the pure
//! [`crate::notify::status_page`]; requests only copy the last rendering out
//! of memory. So the cost of a request does not depend on the fleet, and no
//! number of requests makes a call to the API server. The listener is
//! read-only, shares the limits of the metrics server (header-read timeout,
//! connection lifetime, connection cap, see [`crate::metrics::ServeLimits`]),
//! and answers with cache headers, an `ETag` and a strict
//! `Content-Security-Policy` (no script; styles inline; images https only).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use crate::api::Phase;
use crate::core::clock::Clock;
use crate::core::forecast::{self, Behaviour};
use crate::core::rollout::NodeView;
use crate::notify::status_page::{Board, Branding, PublicRollout};

/// Settings of the status listener.
#[derive(Clone, Debug)]
pub struct StatusPageConfig {
    /// Address to listen on.
    pub addr: String,
    /// How the page looks.
    pub branding: Branding,
    /// Re-rendered this often; also the `max-age` of the responses.
    pub refresh: Duration,
    /// History length.
    pub history: usize,
    /// Set to the bound address once listening (for the sandbox and tests).
    pub bound: Arc<OnceLock<SocketAddr>>,
}

/// One rendering of the three documents.
#[derive(Debug)]
pub struct Rendered {
    html: Bytes,
    json: Bytes,
    atom: Bytes,
    etag: String,
    max_age: u64,
}

impl Rendered {
    /// Renders `board` with `branding`.
    pub fn new(board: &Board, branding: &Branding, max_age: Duration) -> Rendered {
        let html = board.html(branding);
        let json = board.json(branding).to_string();
        let atom = board.atom(branding);
        let etag = crate::notify::status_page::short_hash(&format!("{html}\u{0}{json}\u{0}{atom}"));
        Rendered {
            html: Bytes::from(html),
            json: Bytes::from(json),
            atom: Bytes::from(atom),
            etag: format!("\"{}\"", &etag[..16]),
            max_age: max_age.as_secs().max(1),
        }
    }
}

type Shared = watch::Receiver<Option<Arc<Rendered>>>;

#[derive(Clone, Copy)]
enum Doc {
    Html,
    Json,
    Atom,
}

fn respond(doc: Doc, current: &Shared, req: &HeaderMap) -> Response {
    let Some(r) = current.borrow().clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::RETRY_AFTER, "5"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            "status not available yet\n",
        )
            .into_response();
    };
    let (body, content_type) = match doc {
        Doc::Html => (r.html.clone(), "text/html; charset=utf-8"),
        Doc::Json => (r.json.clone(), "application/json"),
        Doc::Atom => (r.atom.clone(), "application/atom+xml; charset=utf-8"),
    };
    let not_modified = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == r.etag || t.trim() == "*"));
    let mut headers = HeaderMap::new();
    let static_headers = [
        (header::CONTENT_TYPE, content_type),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src https: 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    ];
    for (k, v) in static_headers {
        headers.insert(k, HeaderValue::from_static(v));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", r.max_age)) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(&r.etag) {
        headers.insert(header::ETAG, v);
    }
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, body).into_response()
}

/// The router of the status listener over the current rendering.
pub fn router(current: Shared) -> Router {
    Router::new()
        .route(
            "/",
            get(|State(s): State<Shared>, h: HeaderMap| async move { respond(Doc::Html, &s, &h) }),
        )
        .route(
            "/status",
            get(|State(s): State<Shared>, h: HeaderMap| async move { respond(Doc::Html, &s, &h) }),
        )
        .route(
            "/status.json",
            get(|State(s): State<Shared>, h: HeaderMap| async move { respond(Doc::Json, &s, &h) }),
        )
        .route(
            "/status.atom",
            get(|State(s): State<Shared>, h: HeaderMap| async move { respond(Doc::Atom, &s, &h) }),
        )
        .with_state(current)
}

/// Forecasts of expected completion, per (policy, revision, progress), so
/// the forecast runs again only when a node finished.
#[derive(Default)]
struct Expected {
    cache: HashMap<(String, String, u32, String), Option<Timestamp>>,
    /// The last forecast that gave a completion, per (policy, revision): the
    /// forecast cannot always continue from nodes caught mid-step.
    last: HashMap<(String, String), Timestamp>,
}

/// Expected completion from the progress so far: the time per node spent
/// since the start, for the nodes still to do. `None` before a node is done.
pub fn extrapolate(
    started: Option<Timestamp>,
    updated: u32,
    total: u32,
    now: Timestamp,
) -> Option<Timestamp> {
    let started = started?;
    if updated == 0 || updated >= total {
        return None;
    }
    let spent = now.duration_since(started).as_secs_f64().max(0.0);
    let left = spent / f64::from(updated) * f64::from(total - updated);
    let left = jiff::SignedDuration::try_from_secs_f64(left).ok()?;
    now.checked_add(left).ok()
}

impl Expected {
    async fn of(
        &mut self,
        parsed: &Arc<super::ParsedPolicy>,
        views: &Arc<Vec<NodeView>>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let policy = &parsed.policy;
        let status = policy.status.as_ref()?;
        let phase = status.phase;
        if matches!(phase, Some(Phase::Completed) | Some(Phase::Halted)) {
            return None;
        }
        let key = (
            policy.metadata.name.clone().unwrap_or_default(),
            crate::core::round::effective_revision(policy),
            status.nodes.as_ref().map_or(0, |n| n.updated),
            format!("{phase:?}"),
        );
        let (name, revision) = (key.0.clone(), key.1.clone());
        let fallback = |last: &HashMap<(String, String), Timestamp>| {
            last.get(&(name.clone(), revision.clone()))
                .copied()
                .filter(|t| *t > now)
                .or_else(|| {
                    let n = status.nodes.as_ref()?;
                    extrapolate(
                        status.started_at.as_ref().map(|t| t.0),
                        n.updated,
                        n.total,
                        now,
                    )
                })
        };
        if let Some(e) = self.cache.get(&key) {
            return e.or_else(|| fallback(&self.last));
        }
        let p = policy.clone();
        let cfg = parsed.config.clone();
        let views = views.clone();
        let expected = tokio::task::spawn_blocking(move || {
            // The step durations `sofort plan` assumes, never longer than the
            // policy's own timeouts (as the notifications say).
            let behaviour = Behaviour::healthy(
                cfg.drain_timeout.min(Duration::from_secs(300)),
                cfg.reboot_timeout.min(Duration::from_secs(240)),
                cfg.patch_timeout.min(Duration::from_secs(300)),
            );
            let world = views
                .iter()
                .map(|v| {
                    let mut v = v.clone();
                    if v.reboot_required.is_none()
                        && p.spec.reboot.when == crate::api::RebootWhen::IfRequired
                    {
                        v.reboot_required = Some(true);
                    }
                    (v, behaviour.clone())
                })
                .collect();
            forecast::forecast_views(&p, world, now).completion
        })
        .await
        .ok()
        .flatten();
        self.cache.insert(key, expected);
        if let Some(e) = expected {
            self.last.insert((name.clone(), revision.clone()), e);
        }
        expected.or_else(|| fallback(&self.last))
    }

    fn retain(&mut self, live: &std::collections::HashSet<(String, String)>) {
        self.cache
            .retain(|(name, rev, _, _), _| live.contains(&(name.clone(), rev.clone())));
        self.last.retain(|k, _| live.contains(k));
    }
}

/// Renders from the caches every `refresh` until `stop` is set.
async fn refresh_loop(
    cfg: StatusPageConfig,
    policies: Store<DynamicObject>,
    nodes: Store<Node>,
    clock: Clock,
    tx: watch::Sender<Option<Arc<Rendered>>>,
    mut stop: watch::Receiver<bool>,
) {
    // Nothing is served before both caches hold a full list: an empty cache
    // must not say "all systems operational".
    tokio::select! {
        _ = stop.wait_for(|s| *s) => return,
        r = async { tokio::join!(policies.wait_until_ready(), nodes.wait_until_ready()) } => {
            if r.0.is_err() || r.1.is_err() {
                return;
            }
        }
    }
    let mut decoder = super::PolicyDecoder::default();
    let mut expected = Expected::default();
    loop {
        let now = clock.now();
        let (good, _broken) = decoder.decode_all(&policies.state());
        let public: Vec<Arc<super::ParsedPolicy>> = good
            .into_iter()
            .filter(|p| p.policy.spec.notify.as_ref().is_some_and(|n| n.status_page))
            .collect();
        let views: Arc<Vec<NodeView>> = Arc::new(if public.is_empty() {
            Vec::new()
        } else {
            nodes
                .state()
                .iter()
                .map(|n| NodeView::from_node(n))
                .collect()
        });
        let mut rollouts = Vec::with_capacity(public.len());
        let mut live = std::collections::HashSet::new();
        for parsed in &public {
            let p = &parsed.policy;
            live.insert((
                p.metadata.name.clone().unwrap_or_default(),
                crate::core::round::effective_revision(p),
            ));
            let e = expected.of(parsed, &views, now).await;
            rollouts.extend(PublicRollout::all_of_policy(p, e));
        }
        expected.retain(&live);
        let board = Board::new(rollouts, cfg.history, now);
        tx.send_replace(Some(Arc::new(Rendered::new(
            &board,
            &cfg.branding,
            cfg.refresh,
        ))));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(cfg.refresh) => {}
        }
    }
}

/// Binds the status listener and starts it and its refresher. Returns the
/// bound address and the task serving it.
pub(crate) async fn spawn(
    cfg: StatusPageConfig,
    policies: Store<DynamicObject>,
    nodes: Store<Node>,
    clock: Clock,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), crate::metrics::ServeError> {
    let bind_err = |source| crate::metrics::ServeError::Bind {
        addr: cfg.addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let _ = cfg.bound.set(local);
    let (tx, rx) = watch::channel(None);
    tokio::spawn(refresh_loop(cfg, policies, nodes, clock, tx, stop.clone()));
    let mut stop_serving = stop;
    let app = router(rx);
    let handle = tokio::spawn(crate::metrics::serve_router(
        listener,
        app,
        crate::metrics::ServeLimits::default(),
        async move {
            let _ = stop_serving.wait_for(|s| *s).await;
        },
    ));
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTTP/1.0 GET against the real listener; status, headers (lower-case names), body.
    async fn get(
        addr: SocketAddr,
        path: &str,
        etag: Option<&str>,
    ) -> (u16, HashMap<String, String>, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let extra = etag
            .map(|e| format!("If-None-Match: {e}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n{extra}\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    #[test]
    fn extrapolates_from_progress() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        // 4 of 12 done in 40 min: 80 min to go.
        assert_eq!(
            extrapolate(Some(t(0)), 4, 12, t(2400)),
            Some(t(2400 + 4800))
        );
        assert_eq!(extrapolate(Some(t(0)), 0, 12, t(2400)), None);
        assert_eq!(extrapolate(Some(t(0)), 12, 12, t(2400)), None);
        assert_eq!(extrapolate(None, 4, 12, t(2400)), None);
    }

    #[tokio::test]
    async fn serves_the_last_rendering_with_cache_headers() {
        let (tx, rx) = watch::channel(None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(crate::metrics::serve_router(
            listener,
            router(rx),
            crate::metrics::ServeLimits::default(),
            std::future::pending(),
        ));
        let (s, h, _) = get(addr, "/status", None).await;
        assert_eq!(s, 503);
        assert_eq!(h["cache-control"], "no-store");
        let board = Board::new(vec![], 5, Timestamp::UNIX_EPOCH);
        tx.send_replace(Some(Arc::new(Rendered::new(
            &board,
            &Branding::default(),
            Duration::from_secs(15),
        ))));
        let (s, h, body) = get(addr, "/status", None).await;
        assert_eq!(s, 200);
        assert!(body.contains("All systems operational"));
        assert_eq!(h["cache-control"], "public, max-age=15");
        assert!(h["content-security-policy"].starts_with("default-src 'none'"));
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let etag = h["etag"].clone();
        let (s, _, body) = get(addr, "/status.json", Some(&etag)).await;
        assert_eq!((s, body.as_str()), (304, ""));
        let (s, h, body) = get(addr, "/status.atom", None).await;
        assert_eq!(s, 200);
        assert!(h["content-type"].starts_with("application/atom+xml"));
        assert!(body.starts_with("<?xml"));
        let (s, _, _) = get(addr, "/metrics", None).await;
        assert_eq!(s, 404);
        server.abort();
    }
}

//! HTTP clients of the health gates: Prometheus (`/api/v1/alerts`,
//! `/api/v1/query`) and Alertmanager v2 (`/api/v2/alerts`, `/api/v2/silences`,
//! create and expire).
//!
//! Every request is bounded by a connect and a total timeout, every response
//! body by a size limit. The base URL may come from a Secret and be a
//! credential, so no error here contains it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::gates::alerts::{Alert, AlertState, MatchOp, Matcher, Silence};
use crate::core::gates::query::QueryResult;
use crate::notify::deliver::{HttpClient, https_client};

/// `createdBy` of the silences sofort makes; a silence with it never opens a
/// gate.
pub const SILENCE_CREATED_BY: &str = "sofort";

/// Bounds of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connecting.
    pub connect_timeout: Duration,
    /// The whole request, body included.
    pub timeout: Duration,
    /// The largest response body read.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            max_body: 4 << 20,
        }
    }
}

/// A failed gate request. No variant holds the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateHttpError {
    /// The URL is unusable.
    #[error(
        "the URL is not an absolute http:// or https:// URL without user name or password; give the server's base URL, for example http://prometheus.monitoring:9090"
    )]
    InvalidUrl,
    /// The TLS setup failed (a bad CA bundle).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// No connection or no answer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A non-success status.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// The body exceeded the limit.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not what the API documents.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// A client of one Prometheus or Alertmanager server.
#[derive(Clone)]
pub struct MonitoringClient {
    /// Scheme and authority.
    origin: String,
    /// Path prefix without trailing `/` (a server behind a path).
    prefix: String,
    client: HttpClient,
    limits: Limits,
}

impl std::fmt::Debug for MonitoringClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may be a credential.
        f.debug_struct("MonitoringClient").finish_non_exhaustive()
    }
}

impl MonitoringClient {
    /// A client of the server at `url`, trusting `ca_pem` besides the system's CAs.
    pub fn new(
        url: &str,
        ca_pem: Option<&[u8]>,
        limits: Limits,
    ) -> Result<MonitoringClient, GateHttpError> {
        let uri: Uri = url.trim().parse().map_err(|_| GateHttpError::InvalidUrl)?;
        let scheme = uri.scheme_str().ok_or(GateHttpError::InvalidUrl)?;
        let auth = uri.authority().ok_or(GateHttpError::InvalidUrl)?;
        if !matches!(scheme, "http" | "https")
            || auth.as_str().contains('@')
            || uri.query().is_some()
        {
            return Err(GateHttpError::InvalidUrl);
        }
        let client = https_client(ca_pem, limits.connect_timeout).map_err(GateHttpError::Tls)?;
        Ok(MonitoringClient {
            origin: format!("{scheme}://{auth}"),
            prefix: uri.path().trim_end_matches('/').to_string(),
            client,
            limits,
        })
    }

    async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, GateHttpError> {
        let uri = format!("{}{}{}", self.origin, self.prefix, path_and_query);
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("sofort/", env!("CARGO_PKG_VERSION")));
        if body.is_some() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| GateHttpError::InvalidUrl)?;
        let max = self.limits.max_body;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| GateHttpError::Unreachable(error_chain(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        GateHttpError::TooLarge(max)
                    } else {
                        GateHttpError::Unreachable(e.to_string())
                    }
                })?
                .to_bytes();
            if !status.is_success() {
                return Err(GateHttpError::Status(status.as_u16()));
            }
            Ok(body)
        };
        tokio::time::timeout(self.limits.timeout, work)
            .await
            .map_err(|_| GateHttpError::Timeout(self.limits.timeout))?
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, GateHttpError> {
        let body = self.request(Method::GET, path, None).await?;
        decode(&body)
    }

    /// Prometheus: every alert rule's active alerts.
    pub async fn prometheus_alerts(&self) -> Result<Vec<Alert>, GateHttpError> {
        let r: PromResponse<PromAlerts> = self.get_json("/api/v1/alerts").await?;
        Ok(r.data()?
            .alerts
            .into_iter()
            .map(PromAlert::into_alert)
            .collect())
    }

    /// Prometheus: an instant query at the server's now.
    pub async fn prometheus_query(&self, expr: &str) -> Result<QueryResult, GateHttpError> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let r: PromResponse<PromQuery> = self.get_json(&path).await?;
        r.data()?.into_result()
    }

    /// Alertmanager: its alerts, each `Firing` when active (neither silenced
    /// nor inhibited), else `Inactive`.
    pub async fn alertmanager_alerts(&self) -> Result<Vec<Alert>, GateHttpError> {
        let r: Vec<AmAlert> = self.get_json("/api/v2/alerts").await?;
        Ok(r.into_iter().map(AmAlert::into_alert).collect())
    }

    /// Alertmanager: every silence it holds (active, pending and expired).
    pub async fn silences(&self) -> Result<Vec<SilenceInfo>, GateHttpError> {
        let r: Vec<AmSilence> = self.get_json("/api/v2/silences").await?;
        r.into_iter().map(AmSilence::into_info).collect()
    }

    /// Alertmanager: creates a silence; returns its ID.
    pub async fn create_silence(&self, new: &NewSilence) -> Result<String, GateHttpError> {
        let body = AmPostSilence {
            matchers: new.matchers.iter().map(AmMatcher::from).collect(),
            starts_at: new.starts_at.to_string(),
            ends_at: new.ends_at.to_string(),
            created_by: new.created_by.clone(),
            comment: new.comment.clone(),
        };
        let json = serde_json::to_vec(&body).map_err(|e| GateHttpError::Decode(e.to_string()))?;
        let resp = self
            .request(Method::POST, "/api/v2/silences", Some(json))
            .await?;
        let r: AmSilenceId = decode(&resp)?;
        Ok(r.silence_id)
    }

    /// Alertmanager: expires the silence `id` (an expired one stays expired).
    pub async fn expire_silence(&self, id: &str) -> Result<(), GateHttpError> {
        let path = format!("/api/v2/silence/{}", percent_encode(id));
        self.request(Method::DELETE, &path, None).await.map(|_| ())
    }
}

/// A silence to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    /// Its matchers.
    pub matchers: Vec<Matcher>,
    /// Start.
    pub starts_at: Timestamp,
    /// End.
    pub ends_at: Timestamp,
    /// Comment (sofort's silences are found again by it).
    pub comment: String,
    /// `createdBy`: [`SILENCE_CREATED_BY`] for sofort's own.
    pub created_by: String,
}

/// A silence as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceInfo {
    /// The silence for the gate.
    pub silence: Silence,
    /// `status.state`: `active`, `pending` or `expired`.
    pub state: String,
    /// Its comment.
    pub comment: String,
    /// Its `createdBy`.
    pub created_by: String,
    /// Its end.
    pub ends_at: Option<Timestamp>,
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, GateHttpError> {
    serde_json::from_slice(body).map_err(|e| GateHttpError::Decode(e.to_string()))
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

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct PromResponse<T> {
    status: String,
    data: Option<T>,
    #[serde(default)]
    error: Option<String>,
}

impl<T> PromResponse<T> {
    fn data(self) -> Result<T, GateHttpError> {
        match (self.status.as_str(), self.data) {
            ("success", Some(d)) => Ok(d),
            _ => Err(GateHttpError::Decode(format!(
                "status {:?}: {}",
                self.status,
                crate::core::gates::clean(self.error.as_deref().unwrap_or("no data"))
            ))),
        }
    }
}

#[derive(Deserialize)]
struct PromAlerts {
    alerts: Vec<PromAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    state: String,
    #[serde(default)]
    active_at: Option<String>,
}

impl PromAlert {
    fn into_alert(self) -> Alert {
        let state = match self.state.as_str() {
            "firing" => AlertState::Firing,
            "pending" => AlertState::Pending,
            _ => AlertState::Inactive,
        };
        Alert {
            labels: self.labels,
            state,
            active_at: self.active_at.and_then(|t| t.parse().ok()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromQuery {
    result_type: String,
    result: Value,
}

impl PromQuery {
    fn into_result(self) -> Result<QueryResult, GateHttpError> {
        let bad = || GateHttpError::Decode(format!("result of type {:?}", self.result_type));
        match self.result_type.as_str() {
            "vector" | "matrix" => {
                let series = self.result.as_array().ok_or_else(bad)?;
                let first = series.first();
                let labels = first.and_then(|s| s.get("metric")).and_then(|m| {
                    serde_json::from_value::<BTreeMap<String, String>>(m.clone()).ok()
                });
                let sample = first.and_then(|s| {
                    s.get("value")
                        .or_else(|| s.get("values").and_then(|v| v.as_array()?.last()))
                });
                let value = sample
                    .and_then(|v| v.get(1))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Ok(QueryResult::Series {
                    count: series.len(),
                    first: labels,
                    value,
                })
            }
            "scalar" | "string" => {
                let v = self.result.get(1).and_then(Value::as_str).ok_or_else(bad)?;
                Ok(QueryResult::Scalar(v.to_string()))
            }
            _ => Err(bad()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    status: AmAlertStatus,
}

#[derive(Deserialize)]
struct AmAlertStatus {
    state: String,
}

impl AmAlert {
    fn into_alert(self) -> Alert {
        Alert {
            labels: self.labels,
            state: if self.status.state == "active" {
                AlertState::Firing
            } else {
                AlertState::Inactive
            },
            active_at: self.starts_at.and_then(|t| t.parse().ok()),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmMatcher {
    name: String,
    value: String,
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

impl From<&Matcher> for AmMatcher {
    fn from(m: &Matcher) -> Self {
        AmMatcher {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: m.op.is_regex(),
            is_equal: m.op.is_equal(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmSilence {
    id: String,
    matchers: Vec<AmMatcher>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    ends_at: Option<String>,
    status: AmAlertStatus,
}

impl AmSilence {
    fn into_info(self) -> Result<SilenceInfo, GateHttpError> {
        let matchers = self
            .matchers
            .iter()
            .map(|m| {
                Matcher::new(
                    &m.name,
                    MatchOp::from_flags(m.is_regex, m.is_equal),
                    &m.value,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| GateHttpError::Decode(e.to_string()))?;
        Ok(SilenceInfo {
            silence: Silence {
                id: self.id,
                matchers,
                active: self.status.state == "active",
                ours: self.created_by == SILENCE_CREATED_BY,
            },
            state: self.status.state,
            comment: self.comment,
            created_by: self.created_by,
            ends_at: self.ends_at.and_then(|t| t.parse().ok()),
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AmPostSilence {
    matchers: Vec<AmMatcher>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    comment: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmSilenceId {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_or_queries_are_refused_without_echo() {
        for bad in [
            "prometheus:9090",
            "ftp://p:9090",
            "http://user:secret@p:9090",
            "http://p:9090/?token=secret",
        ] {
            let e = MonitoringClient::new(bad, None, Limits::default()).unwrap_err();
            assert_eq!(e, GateHttpError::InvalidUrl, "{bad}");
            assert!(!e.to_string().contains("secret"));
        }
        let c =
            MonitoringClient::new("https://p.example:9090/prom/", None, Limits::default()).unwrap();
        assert_eq!(
            (c.origin.as_str(), c.prefix.as_str()),
            ("https://p.example:9090", "/prom")
        );
        assert_eq!(format!("{c:?}"), "MonitoringClient { .. }");
    }

    #[test]
    fn decodes_the_documented_answers() {
        let q: PromResponse<PromQuery> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"code":"503"},"value":[1.5,"7"]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            q.data().unwrap().into_result().unwrap(),
            QueryResult::Series {
                count: 1,
                first: Some(BTreeMap::from([("code".into(), "503".into())])),
                value: Some("7".into())
            }
        );
        let s: PromResponse<PromQuery> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"2"]}}"#,
        )
        .unwrap();
        assert_eq!(
            s.data().unwrap().into_result().unwrap(),
            QueryResult::Scalar("2".into())
        );
        let e: PromResponse<PromQuery> = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .unwrap();
        assert!(matches!(e.data(), Err(GateHttpError::Decode(m)) if m.contains("parse error")));
        let sil: Vec<AmSilence> = serde_json::from_str(
            r#"[{"id":"a1","status":{"state":"active"},"createdBy":"sofort","comment":"c","startsAt":"2026-11-27T22:00:00Z","endsAt":"2026-11-27T23:00:00Z","updatedAt":"2026-11-27T22:00:00Z","matchers":[{"name":"instance","value":"w-1(:.*)?","isRegex":true}]}]"#,
        )
        .unwrap();
        let info = sil.into_iter().next().unwrap().into_info().unwrap();
        assert!(info.silence.active && info.silence.ours);
        assert_eq!(info.silence.matchers[0].op, MatchOp::Re);
        assert_eq!(
            percent_encode("up{a=\"b c\"} > 0"),
            "up%7Ba%3D%22b%20c%22%7D%20%3E%200"
        );
    }

    #[tokio::test]
    async fn a_dead_endpoint_fails_within_its_bounds() {
        // A port nothing listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let c = MonitoringClient::new(&format!("http://127.0.0.1:{port}"), None, Limits::default())
            .unwrap();
        let e = c.prometheus_alerts().await.unwrap_err();
        assert!(matches!(e, GateHttpError::Unreachable(_)), "{e:?}");
    }
}

//! The HTTP API: routing, discovery, and the REST verbs over the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::faults::{Faults, RequestRecord, Stats};
use crate::patch;
use crate::registry::{PrinterColumn, Registry, ResourceInfo};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, EventType, Obj, Route, RouteField, Store, meta_str};
use crate::table::{self, Include};

/// Everything the handlers share.
pub struct Shared {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub faults: Faults,
    pub stats: Stats,
    /// Accepted bearer tokens and the users they stand for.
    pub tokens: crate::auth::Tokens,
    pub bookmark_interval: Duration,
    pub addr: String,
}

pub type SharedRef = Arc<Shared>;

// ---------------------------------------------------------------------------
// Responses

fn json_bytes(code: u16, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response {
    json_bytes(code, serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.status());
    if let Some(s) = e.retry_after
        && let Ok(h) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, h);
    }
    r
}

// ---------------------------------------------------------------------------
// Request parsing

#[derive(Clone, Debug)]
pub struct Target {
    pub info: Arc<ResourceInfo>,
    pub ns: String,
    pub name: Option<String>,
    pub sub: String,
}

fn parse_target(
    reg: &Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let nf = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && let Some(info) = reg.lookup(group, version, rest[2]).filter(|i| i.namespaced)
    {
        if rest.len() > 5 {
            return Err(nf());
        }
        return Ok(Target {
            info,
            ns: rest[1].to_string(),
            name: rest.get(3).map(|s| s.to_string()),
            sub: rest.get(4).map(|s| s.to_string()).unwrap_or_default(),
        });
    }
    let res = rest.first().ok_or_else(nf)?;
    let info = reg.lookup(group, version, res).ok_or_else(nf)?;
    if rest.len() > 3 || (info.namespaced && rest.len() > 1) {
        return Err(nf());
    }
    Ok(Target {
        info,
        ns: String::new(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()).unwrap_or_default(),
    })
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if t.name.is_none() => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                "watch"
            } else {
                "list"
            }
        }
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

pub(crate) fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if ct.contains("yaml") {
        let y: serde_yaml::Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        return serde_json::to_value(y)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    if ct.contains("protobuf") {
        return crate::protobuf::decode(body);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml: {e}")))
}

// ---------------------------------------------------------------------------
// Entry point

pub async fn handle(State(sh): State<SharedRef>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 256 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("cannot read body: {e}"))),
    };
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let ua = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let user_info = match crate::auth::authenticate(&sh, &parts.headers) {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    let user = user_info.username.clone();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(r) =
        crate::rbac::reviews(&sh, &user_info, &parts.method, &segs, &parts.headers, &body)
    {
        return r;
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g, v, rest),
        _ => {
            let a = crate::rbac::Attributes::of_path(&parts.method, &path);
            if !crate::rbac::authorize(&sh, &user_info, &a) {
                return error_response(&crate::rbac::forbidden(&user_info, &a));
            }
            return non_resource(&sh, &parts.method, &segs, &parts.headers);
        }
    };
    let target = match parse_target(&sh.registry, group, version, rest) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let verb = verb_of(&parts.method, &target, &query);
    let authz = crate::rbac::Attributes::of_request(verb, &target, &query);
    if !crate::rbac::authorize(&sh, &user_info, &authz) {
        let e = crate::rbac::forbidden(&user_info, &authz);
        sh.stats.record(RequestRecord {
            verb: verb.to_string(),
            group: target.info.group.clone(),
            resource: target.info.resource.clone(),
            subresource: target.sub.clone(),
            namespace: target.ns.clone(),
            name: target.name.clone().unwrap_or_default(),
            user_agent: ua,
            user,
            code: 403,
            at: std::time::Instant::now(),
        });
        return error_response(&e);
    }
    let (delay, fault) = sh.faults.draw(verb, &target.info.resource, &target.sub);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut record = RequestRecord {
        verb: verb.to_string(),
        group: target.info.group.clone(),
        resource: target.info.resource.clone(),
        subresource: target.sub.clone(),
        namespace: target.ns.clone(),
        name: target.name.clone().unwrap_or_default(),
        user_agent: ua.clone(),
        user,
        code: 0,
        at: std::time::Instant::now(),
    };
    if let Some(code) = fault {
        let e = injected(code, &target);
        record.code = code;
        sh.stats.record(record);
        tracing::debug!(verb, resource = %target.info.resource, code, "injected fault");
        return error_response(&e);
    }
    let ctx = Ctx {
        sh: sh.clone(),
        query,
        headers: parts.headers.clone(),
        ua,
    };
    let admission = crate::admission::prepare(&sh, &user_info, verb, &target, ctx.dry_run());
    let run = async {
        if verb == "create" && target.sub == "token" && target.info.resource == "serviceaccounts" {
            let v = crate::wire::decode_body(&ctx.headers, &body)?;
            let name = target.name.as_deref().unwrap_or("");
            return Ok(json_response(
                201,
                &crate::auth::token_request(&sh, &target.ns, name, &v)?,
            ));
        }
        dispatch(&ctx, &parts.method, verb, &target, &body).await
    };
    let resp = match crate::admission::admitted(&sh, admission, run).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let resp = crate::protobuf::respond(ctx.accept(), verb, resp).await;
    record.code = resp.status().as_u16();
    tracing::debug!(verb, resource = %target.info.resource, ns = %target.ns, name = ?target.name, code = record.code, "request");
    sh.stats.record(record);
    resp
}

fn injected(code: u16, t: &Target) -> ApiError {
    let name = t.name.clone().unwrap_or_default();
    match code {
        429 => ApiError::too_many_requests(
            "injected fault: too many requests, please try again later",
            1,
        ),
        409 => ApiError::stale(&t.info.group, &t.info.resource, &name),
        404 => ApiError::not_found(&t.info.group, &t.info.resource, &name),
        503 => ApiError::new(
            503,
            "ServiceUnavailable",
            "injected fault: service unavailable",
        ),
        _ => ApiError::new(
            code,
            "InternalError",
            format!("Internal error occurred: injected fault ({code})"),
        ),
    }
}

pub struct Ctx {
    pub sh: SharedRef,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub ua: String,
}

impl Ctx {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub(crate) fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
    /// The field manager: the query parameter, else the User-Agent's program name.
    pub(crate) fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let prog = self.ua.split('/').next().unwrap_or("").trim();
        if prog.is_empty() {
            "unknown".into()
        } else {
            prog.chars().take(128).collect()
        }
    }
    fn accept(&self) -> &str {
        self.headers
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    }
    fn wants_table(&self) -> bool {
        self.accept().contains("as=Table")
    }
    fn wants_partial(&self) -> bool {
        let a = self.accept();
        a.contains("as=PartialObjectMetadata") && !a.contains("as=Table")
    }
}

async fn dispatch(
    ctx: &Ctx,
    method: &Method,
    verb: &str,
    t: &Target,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let info = &t.info;
    if !t.sub.is_empty() {
        let ok = match t.sub.as_str() {
            "status" => info.status && matches!(verb, "get" | "update" | "patch"),
            "eviction" => info.resource == "pods" && info.group.is_empty() && verb == "create",
            "scale" => {
                crate::scale::serves(&info.group, &info.resource)
                    && matches!(verb, "get" | "update" | "patch")
            }
            _ => false,
        };
        if !ok {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    }
    if t.sub == "scale" {
        return Ok(json_response(
            200,
            &crate::scale::handle(ctx, t, verb, body)?,
        ));
    }
    match verb {
        "get" => get(ctx, t),
        "list" => list(ctx, t),
        "watch" => watch(ctx, t).await,
        "create" if t.sub == "eviction" => {
            let v = parse_body(&ctx.headers, body)?;
            crate::eviction::evict(
                &ctx.sh,
                &t.ns,
                t.name.as_deref().unwrap_or(""),
                &v,
                ctx.dry_run(),
            )
        }
        "create" => {
            if t.name.is_some() {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let v = parse_body(&ctx.headers, body)?;
            create(ctx, t, v)
        }
        "update" => {
            let v = parse_body(&ctx.headers, body)?;
            update(ctx, t, v)
        }
        "patch" => patch_handler(ctx, t, body),
        "delete" => {
            let v = parse_body(&ctx.headers, body)?;
            delete_handler(ctx, t, v)
        }
        "deletecollection" => delete_collection(ctx, t),
        _ => Err(ApiError::method_not_allowed(format!(
            "method {method} is not allowed on the requested resource"
        ))),
    }
}

// ---------------------------------------------------------------------------
// Discovery and other non-resource paths

fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let all: Vec<_> = reg
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if all.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for r in &all {
        let mut e = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": crate::registry::standard_verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        if r.status {
            out.push(json!({
                "name": format!("{}/status", r.resource),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if crate::scale::serves(&r.group, &r.resource) {
            out.push(json!({
                "name": format!("{}/scale", r.resource),
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if r.group.is_empty() && r.resource == "pods" {
            out.push(json!({
                "name": "pods/eviction",
                "singularName": "",
                "namespaced": true,
                "group": "policy",
                "version": "v1",
                "kind": "Eviction",
                "verbs": ["create"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

fn group_entry(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

fn non_resource(sh: &Shared, method: &Method, segs: &[&str], _headers: &HeaderMap) -> Response {
    if *method != Method::GET {
        return error_response(&ApiError::method_not_allowed("only GET is served here"));
    }
    let nf = || {
        error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ))
    };
    match segs {
        ["version"] => json_response(200, &version_doc()),
        ["healthz"] | ["readyz"] | ["livez"] => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        ["api"] => json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": sh.addr}],
            }),
        ),
        ["api", "v1"] => {
            resource_list(&sh.registry, "", "v1").map_or_else(nf, |v| json_response(200, &v))
        }
        ["apis"] => {
            let groups: Vec<Value> = sh
                .registry
                .groups()
                .iter()
                .map(|(g, vs)| group_entry(g, vs))
                .collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["apis", g] => match sh.registry.groups().into_iter().find(|(name, _)| name == g) {
            Some((name, vs)) => {
                let mut e = group_entry(&name, &vs);
                e["kind"] = json!("APIGroup");
                e["apiVersion"] = json!("v1");
                json_response(200, &e)
            }
            None => nf(),
        },
        ["apis", g, v] => {
            resource_list(&sh.registry, g, v).map_or_else(nf, |v| json_response(200, &v))
        }
        ["openapi", "v3"] => json_response(200, &crate::openapi::root(&sh.registry)),
        ["openapi", "v3", rest @ ..] => {
            match crate::openapi::group_doc(&sh.registry, &rest.join("/")) {
                Some(doc) => {
                    let mut r = json_response(200, &doc);
                    r.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("no-cache, private"),
                    );
                    r
                }
                None => nf(),
            }
        }
        _ => nf(),
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the verbs

/// The object as served at this version.
pub fn present(obj: &Obj, info: &ResourceInfo) -> Value {
    let mut v = (**obj).clone();
    if v.get("apiVersion").and_then(Value::as_str) != Some(info.api_version().as_str()) {
        v["apiVersion"] = json!(info.api_version());
    }
    v
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn ensure_meta(obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    Ok(())
}

fn spec_part(v: &Value, info: &ResourceInfo) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if info.status || info.crd.is_none() {
            m.remove("status");
        }
    }
    c
}

/// Options of one write.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    pub sub: String,
    /// Field manager for managedFields (None: internal write, not tracked).
    pub manager: Option<String>,
    /// fieldValidation: Strict, Warn, Ignore.
    pub validation: String,
    pub apply: bool,
}

/// Everything common to create, update and patch: type meta, status
/// isolation, immutable metadata, schema, defaults, generation, managedFields,
/// and finishing a deletion when the last finalizer goes.
pub fn finish_write(
    info: &ResourceInfo,
    old: Option<&Value>,
    mut new: Value,
    opts: &WriteOpts,
    warnings: &mut Vec<String>,
) -> Result<Change, ApiError> {
    ensure_meta(&mut new)?;
    let name = meta_str(&new, "name").to_string();
    if let Some(old) = old {
        if opts.sub == "status" {
            let mut base = old.clone();
            match new.get("status") {
                Some(s) => base["status"] = s.clone(),
                None => {
                    if let Some(m) = base.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if opts.manager.is_some() || opts.apply {
                base["metadata"]["managedFields"] = new["metadata"]
                    .get("managedFields")
                    .cloned()
                    .unwrap_or(Value::Null);
            }
            new = base;
        } else if info.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        if new["metadata"]
            .get("managedFields")
            .is_none_or(Value::is_null)
            && let Some(mf) = old["metadata"].get("managedFields")
        {
            new["metadata"]["managedFields"] = mf.clone();
        }
        if name != meta_str(old, "name") {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                meta_str(old, "name")
            )));
        }
    }
    new["apiVersion"] = json!(info.api_version());
    new["kind"] = json!(info.kind);
    if let Some(m) = new["metadata"].as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    if let Some(schema_doc) = &info.schema {
        let (unknown, mut causes) = schema::process(&mut new, schema_doc);
        if causes.is_empty() {
            causes = crate::cel::validate(info, schema_doc, &new, old)?;
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
        }
        if !unknown.is_empty() {
            match opts.validation.as_str() {
                "Strict" => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(
                        format!(".{}", list.join(", ")).replacen('.', "strict decoding error: ", 1),
                    ));
                }
                "Warn" => warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\""))),
                _ => {}
            }
        }
    }
    if info.crd.is_none() {
        crate::defaults::apply(info, &mut new, old.is_none());
    }
    let generation = match old {
        None => 1,
        Some(o) => {
            let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
            if opts.sub != "status" && spec_part(o, info) != spec_part(&new, info) {
                g + 1
            } else {
                g
            }
        }
    };
    new["metadata"]["generation"] = json!(generation);
    if let Some(m) = &opts.manager
        && !opts.apply
    {
        patch::track_update(
            old,
            &mut new,
            m,
            &info.api_version(),
            &opts.sub,
            info.status,
        );
    }
    crate::admission::validate(info, old, &new)?;
    if let Some(old) = old
        && old["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|d| !d.is_null())
        && old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        && new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty)
    {
        return Ok(Change::Delete);
    }
    Ok(Change::Put(new))
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {:?}", w)) {
            r.headers_mut().append("Warning", h);
        }
    }
    r
}

fn namespace_exists(sh: &Shared, ns: &str) -> Result<(), ApiError> {
    if sh.store.get("namespaces", "", ns).is_none() {
        return Err(ApiError::not_found("", "namespaces", ns));
    }
    Ok(())
}

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn random_suffix(n: usize) -> String {
    (0..n)
        .map(|_| NAME_CHARS[fastrand::usize(..NAME_CHARS.len())] as char)
        .collect()
}

// ---------------------------------------------------------------------------
// Verbs

fn get(ctx: &Ctx, t: &Target) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let obj = ctx
        .sh
        .store
        .get(&t.info.gr(), &t.ns, name)
        .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.resource, name))?;
    if ctx.wants_table() {
        let v = present(&obj, &t.info);
        return Ok(json_response(
            200,
            &table::table(
                &t.info,
                &[&v],
                include_of(ctx),
                meta_str(&v, "resourceVersion"),
                None,
            ),
        ));
    }
    if ctx.wants_partial() {
        return Ok(json_response(200, &table::partial_metadata(&obj)));
    }
    Ok(json_response(200, &present(&obj, &t.info)))
}

fn include_of(ctx: &Ctx) -> Include {
    match ctx.q("includeObject") {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    }
}

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn from_ctx(ctx: &Ctx, info: &ResourceInfo) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(ctx.q("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or(""), |f| {
            info.field_allowed(f)
        })?;
        Ok(Filter { labels, fields })
    }
    fn matches(&self, v: &Value) -> bool {
        self.labels.matches(v) && self.fields.matches(v)
    }
    /// How the store routes changes to a watch with this filter: by the one
    /// name or node its field selector pins, else every change.
    /// (`spec.nodeName=` with no value selects the unbound pods: not routed.)
    fn route(&self) -> Route {
        for f in [RouteField::NodeName, RouteField::Name] {
            if let Some(v) = self.pinned(f) {
                return Route::Field(f, v.to_string());
            }
        }
        Route::All
    }
    fn pinned(&self, f: RouteField) -> Option<&str> {
        self.fields
            .required(f.selector_name())
            .filter(|v| !v.is_empty())
    }
    /// The node a pod list is confined to (served from the index).
    fn node(&self) -> Option<&str> {
        self.pinned(RouteField::NodeName)
    }
}

fn encode_continue(rv: u64, key: &(String, String)) -> String {
    let v = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]});
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

fn decode_continue(s: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: the token was not produced by this server",
        )
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let ns = v["start"][0].as_str().ok_or_else(bad)?.to_string();
    let name = v["start"][1].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, (ns, name)))
}

/// The real server's message when a continue token's version was compacted.
const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

fn list(ctx: &Ctx, t: &Target) -> Result<Response, ApiError> {
    let info = &t.info;
    let filter = Filter::from_ctx(ctx, info)?;
    let limit = ctx
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // Every page of a paged list is served at the first page's version,
    // which its continue token carries (as a real API server does).
    let (start, token_rv) = match ctx.q("continue") {
        Some(c) => {
            let (rv, key) = decode_continue(c)?;
            (Some(key), Some(rv))
        }
        None => (None, None),
    };
    let exact = ctx
        .q("resourceVersion")
        .and_then(|r| r.parse::<u64>().ok())
        .filter(|_| ctx.q("resourceVersionMatch") == Some("Exact"));
    let ns = if t.ns.is_empty() {
        None
    } else {
        Some(t.ns.as_str())
    };
    let matches = |v: &Value| filter.matches(v);
    let gr = info.gr();
    let at = token_rv.or(exact.filter(|rv| *rv <= ctx.sh.store.rv()));
    let page = match at {
        Some(at) => ctx
            .sh
            .store
            .list_at(&gr, ns, filter.node(), start, limit, matches, at)
            .map_err(|oldest| {
                ApiError::gone(if token_rv.is_some() {
                    CONTINUE_EXPIRED.to_string()
                } else {
                    format!("too old resource version: {at} ({oldest})")
                })
            })?,
        None => ctx
            .sh
            .store
            .list_on_node(&gr, ns, filter.node(), start, limit, matches),
    };
    let rv = page.rv;
    let cont = page.next.as_ref().map(|k| encode_continue(rv, k));
    let rv_s = page.rv.to_string();
    if ctx.wants_table() {
        let items: Vec<Value> = page.items.iter().map(|o| present(o, info)).collect();
        let refs: Vec<&Value> = items.iter().collect();
        return Ok(json_response(
            200,
            &table::table(info, &refs, include_of(ctx), &rv_s, cont.as_deref()),
        ));
    }
    let partial = ctx.wants_partial();
    let (kind, api_version) = if partial {
        (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        )
    } else {
        (info.list_kind(), info.api_version())
    };
    let mut meta = json!({"resourceVersion": rv_s});
    if let Some(c) = &cont {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(page.remaining);
    }
    let mut out = Vec::with_capacity(page.items.len() * 1024 + 256);
    out.extend_from_slice(
        format!(
            "{{\"kind\":{:?},\"apiVersion\":{:?},\"metadata\":{},\"items\":[",
            kind, api_version, meta
        )
        .as_bytes(),
    );
    let av = info.api_version();
    for (i, o) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if partial {
            let _ = serde_json::to_writer(&mut out, &table::partial_metadata(o));
        } else if o.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
            let _ = serde_json::to_writer(&mut out, &**o);
        } else {
            let _ = serde_json::to_writer(&mut out, &present(o, info));
        }
    }
    out.extend_from_slice(b"]}");
    Ok(json_bytes(200, out))
}

async fn watch(ctx: &Ctx, t: &Target) -> Result<Response, ApiError> {
    let info = t.info.clone();
    let filter = Filter::from_ctx(ctx, &info)?;
    let sh = ctx.sh.clone();
    let send_initial = ctx.q("sendInitialEvents") == Some("true");
    let bookmarks = ctx.q("allowWatchBookmarks") == Some("true");
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rv_param = ctx.q("resourceVersion").unwrap_or("").to_string();
    let since =
        if rv_param.is_empty() || rv_param == "0" || send_initial {
            None
        } else {
            Some(rv_param.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param}"))
            })?)
        };
    let table_mode = ctx.wants_table();
    let partial = ctx.wants_partial();
    let include = include_of(ctx);
    let ns = t.ns.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let guard = sh.stats.watch_guard();
    let mut kill = sh.faults.watch_kill();
    kill.mark_unchanged();
    tokio::spawn(async move {
        let _guard = guard;
        let gr = info.gr();
        let render = |kind: &str, obj: &Obj| -> Bytes {
            let object = if table_mode {
                let v = present(obj, &info);
                table::table(&info, &[&v], include, meta_str(&v, "resourceVersion"), None)
            } else if partial {
                table::partial_metadata(obj)
            } else {
                present(obj, &info)
            };
            let mut b =
                serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        };
        let bookmark = |rv: u64, initial_end: bool| -> Bytes {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let mut b = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}})).unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        };
        let in_ns = |v: &Value| ns.is_empty() || meta_str(v, "namespace") == ns;
        let matches = |v: &Value| in_ns(v) && filter.matches(v);
        let mut last_rv;
        let mut sub;
        match since {
            None => {
                let ns_opt = if ns.is_empty() {
                    None
                } else {
                    Some(ns.as_str())
                };
                let (rv, items, rx) = sh.store.snapshot_and_subscribe(&gr, ns_opt, filter.route());
                sub = rx;
                last_rv = rv;
                for o in items.iter().filter(|o| filter.matches(o)) {
                    if tx.send(render("ADDED", o)).await.is_err() {
                        return;
                    }
                }
                if send_initial && tx.send(bookmark(rv, true)).await.is_err() {
                    return;
                }
            }
            Some(rv) => match sh.store.watch(&gr, rv, filter.route()) {
                Ok((backlog, rx)) => {
                    sub = rx;
                    last_rv = rv;
                    for ev in backlog {
                        last_rv = ev.rv;
                        if let Some((k, o)) = transition(&ev, &matches)
                            && tx.send(render(k, &o)).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Err(oldest) => {
                    let e = ApiError::gone(format!("too old resource version: {rv} ({oldest})"));
                    let mut b = serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()}))
                        .unwrap_or_default();
                    b.push(b'\n');
                    let _ = tx.send(Bytes::from(b)).await;
                    return;
                }
            },
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(sh.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = sub.recv() => match ev {
                    Some(ev) => {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if *ev.gr != *gr { continue; }
                        if let Some((k, o)) = transition(&ev, &matches)
                            && tx.send(render(k, &o)).await.is_err()
                        {
                            return;
                        }
                    }
                    None => return,
                },
                _ = ticker.tick() => {
                    if bookmarks && tx.send(bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = kill.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// The event a watcher with a filter sees for a change.
fn transition(
    ev: &crate::store::WatchEvent,
    matches: &impl Fn(&Value) -> bool,
) -> Option<(&'static str, Obj)> {
    match ev.kind {
        EventType::Added => matches(&ev.object).then(|| ("ADDED", ev.object.clone())),
        EventType::Deleted => matches(&ev.object).then(|| ("DELETED", ev.object.clone())),
        EventType::Modified => {
            let now = matches(&ev.object);
            let before = ev.old.as_ref().is_some_and(|o| matches(o));
            match (before, now) {
                (true, true) => Some(("MODIFIED", ev.object.clone())),
                (false, true) => Some(("ADDED", ev.object.clone())),
                (true, false) => Some(("DELETED", ev.object.clone())),
                (false, false) => None,
            }
        }
    }
}

fn create(ctx: &Ctx, t: &Target, mut obj: Value) -> Result<Response, ApiError> {
    let info = &t.info;
    ensure_meta(&mut obj)?;
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && k != info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({k}) does not match the resource {} ({})",
            info.resource, info.kind
        )));
    }
    let opts = WriteOpts {
        sub: String::new(),
        manager: Some(ctx.manager()),
        validation: ctx.q("fieldValidation").unwrap_or("Ignore").to_string(),
        apply: false,
    };
    let (v, warnings, code) = create_object(&ctx.sh, info, &t.ns, obj, &opts, ctx.dry_run())?;
    Ok(with_warnings(json_response(code, &v), &warnings))
}

/// Create an object (HTTP and internal callers). Returns the stored object.
pub fn create_object(
    sh: &Shared,
    info: &ResourceInfo,
    ns: &str,
    mut obj: Value,
    opts: &WriteOpts,
    dry_run: bool,
) -> Result<(Value, Vec<String>, u16), ApiError> {
    ensure_meta(&mut obj)?;
    if info.namespaced {
        let body_ns = meta_str(&obj, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        obj["metadata"]["namespace"] = json!(ns);
        namespace_exists(sh, ns)?;
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let mut name = meta_str(&obj, "name").to_string();
    if name.is_empty() {
        let prefix = meta_str(&obj, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                "",
                vec![(
                    "metadata.name".into(),
                    "FieldValueRequired".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        name = format!("{prefix}{}", random_suffix(5));
        obj["metadata"]["name"] = json!(name);
    }
    if !valid_name(&name)
        && info.resource != "events"
        && !crate::rbac::path_segment_name(info, &name)
    {
        return Err(ApiError::invalid(
            &info.group,
            &info.kind,
            &name,
            vec![(
                "metadata.name".into(),
                "FieldValueInvalid".into(),
                format!(
                    "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )],
        ));
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            m.remove(f);
        }
    }
    if info.crd.is_some()
        && info.status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if info.group == "apiextensions.k8s.io" {
        crate::crd::validate(&obj)?;
    }
    let mut warnings = Vec::new();
    let (stored, dry) = sh.store.mutate(&info.gr(), ns, &name, |cur| {
        if cur.is_some() {
            return Err(ApiError::already_exists(&info.group, &info.resource, &name));
        }
        match finish_write(info, None, obj, opts, &mut warnings)? {
            Change::Put(v) if dry_run => Ok((Change::Keep, Some(v))),
            c => Ok((c, None)),
        }
    })?;
    if let Some(v) = dry {
        return Ok((v, warnings, 201));
    }
    let stored = stored.ok_or_else(|| ApiError::internal("object vanished after create"))?;
    if info.group == "apiextensions.k8s.io" {
        crate::crd::register(sh, &stored);
    }
    let stored = sh.store.get(&info.gr(), ns, &name).unwrap_or(stored);
    Ok((present(&stored, info), warnings, 201))
}

fn update(ctx: &Ctx, t: &Target, mut obj: Value) -> Result<Response, ApiError> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    ensure_meta(&mut obj)?;
    if meta_str(&obj, "name").is_empty() {
        obj["metadata"]["name"] = json!(name);
    }
    if meta_str(&obj, "name") != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&obj, "name")
        )));
    }
    if info.namespaced {
        obj["metadata"]["namespace"] = json!(t.ns);
    }
    let want_rv = meta_str(&obj, "resourceVersion").to_string();
    let opts = WriteOpts {
        sub: t.sub.clone(),
        manager: Some(ctx.manager()),
        validation: ctx.q("fieldValidation").unwrap_or("Ignore").to_string(),
        apply: false,
    };
    let dry_run = ctx.dry_run();
    let mut warnings = Vec::new();
    let (stored, dry) = ctx.sh.store.mutate(&info.gr(), &t.ns, &name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&info.group, &info.resource, &name));
        };
        if !want_rv.is_empty() && want_rv != meta_str(cur, "resourceVersion") {
            return Err(ApiError::stale(&info.group, &info.resource, &name));
        }
        match finish_write(info, Some(cur), obj, &opts, &mut warnings)? {
            Change::Put(v) if dry_run => Ok((Change::Keep, Some(v))),
            c => Ok((c, None)),
        }
    })?;
    written(ctx, info, &name, stored, dry, &warnings)
}

/// The 200 answer to an update or patch: the dry-run result, or the stored
/// object (a CRD written this way is (re-)registered first).
fn written(
    ctx: &Ctx,
    info: &ResourceInfo,
    name: &str,
    stored: Option<Obj>,
    dry: Option<Value>,
    warnings: &[String],
) -> Result<Response, ApiError> {
    let out = match (dry, stored) {
        (Some(v), _) => v,
        (None, Some(s)) => {
            if info.group == "apiextensions.k8s.io" {
                crate::crd::register(&ctx.sh, &s);
            }
            present(&s, info)
        }
        (None, None) => return Err(ApiError::not_found(&info.group, &info.resource, name)),
    };
    Ok(with_warnings(json_response(200, &out), warnings))
}

fn patch_handler(ctx: &Ctx, t: &Target, body: &Bytes) -> Result<Response, ApiError> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    let ct = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ptype = ct.split(';').next().unwrap_or("").trim().to_string();
    let is_apply =
        ptype == "application/apply-patch+yaml" || ptype == "application/apply-patch+cbor";
    if ptype == "application/strategic-merge-patch+json" && info.crd.is_some() {
        return Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if !matches!(
        ptype.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ptype:?})"
        )));
    }
    let body_v: Value = if is_apply {
        let y: serde_yaml::Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        serde_json::to_value(y).map_err(|e| ApiError::bad_request(e.to_string()))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    let manager = if is_apply {
        match ctx.q("fieldManager") {
            Some(m) => m.to_string(),
            None => {
                return Err(ApiError::bad_request(
                    "PATCH /apply requests require a fieldManager",
                ));
            }
        }
    } else {
        ctx.manager()
    };
    if is_apply {
        if !body_v.is_object() {
            return Err(ApiError::bad_request(
                "apply configuration must be an object",
            ));
        }
        let ak = (
            body_v.get("apiVersion").and_then(Value::as_str),
            body_v.get("kind").and_then(Value::as_str),
        );
        if ak.0.is_none_or(str::is_empty) || ak.1.is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "invalid object type: apply configurations must set apiVersion and kind",
            ));
        }
        let bn = meta_str(&body_v, "name");
        if !bn.is_empty() && bn != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bn}) does not match the name on the URL ({name})"
            )));
        }
    }
    let force = ctx.q("force") == Some("true");
    let opts = WriteOpts {
        sub: t.sub.clone(),
        manager: Some(manager.clone()),
        validation: ctx.q("fieldValidation").unwrap_or("Ignore").to_string(),
        apply: is_apply,
    };
    let dry_run = ctx.dry_run();
    let av = info.api_version();
    let mut warnings = Vec::new();
    if is_apply && t.sub.is_empty() && ctx.sh.store.get(&info.gr(), &t.ns, &name).is_none() {
        let mut obj = patch::apply(None, &body_v, &manager, force, &av, "", info.status)?;
        obj["metadata"]["name"] = json!(name);
        let managed = obj["metadata"]["managedFields"].clone();
        if info.namespaced {
            namespace_exists(&ctx.sh, &t.ns)?;
        }
        let (mut v, w, code) = create_object(
            &ctx.sh,
            info,
            &t.ns,
            obj,
            &WriteOpts {
                manager: None,
                ..opts.clone()
            },
            dry_run,
        )?;
        if !dry_run {
            // Keep the apply ownership computed above.
            let (s, _) = ctx
                .sh
                .store
                .mutate(&info.gr(), &t.ns, &name, |cur| match cur {
                    Some(c) => {
                        let mut n = (**c).clone();
                        n["metadata"]["managedFields"] = managed.clone();
                        Ok((Change::Put(n), ()))
                    }
                    None => Ok((Change::Keep, ())),
                })?;
            if let Some(s) = s {
                v = present(&s, info);
            }
        }
        return Ok(with_warnings(json_response(code, &v), &w));
    }
    let (stored, dry) = ctx.sh.store.mutate(&info.gr(), &t.ns, &name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&info.group, &info.resource, &name));
        };
        let mut new = (**cur).clone();
        match ptype.as_str() {
            "application/json-patch+json" => {
                let ops: json_patch::Patch =
                    serde_json::from_value(body_v.clone()).map_err(|e| {
                        ApiError::bad_request(format!("error decoding JSON patch: {e}"))
                    })?;
                json_patch::patch(&mut new, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
            }
            "application/merge-patch+json" => json_patch::merge(&mut new, &body_v),
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge(&mut new, &body_v).map_err(ApiError::bad_request)?
            }
            _ => {
                new = patch::apply(
                    Some(cur),
                    &body_v,
                    &manager,
                    force,
                    &av,
                    &t.sub,
                    info.status,
                )?;
            }
        }
        let want_rv = meta_str(&new, "resourceVersion");
        if !is_apply && !want_rv.is_empty() && want_rv != meta_str(cur, "resourceVersion") {
            return Err(ApiError::stale(&info.group, &info.resource, &name));
        }
        if is_apply {
            new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        }
        match finish_write(info, Some(cur), new, &opts, &mut warnings)? {
            Change::Put(v) if dry_run => Ok((Change::Keep, Some(v))),
            c => Ok((c, None)),
        }
    })?;
    written(ctx, info, &name, stored, dry, &warnings)
}

/// Options of a deletion.
#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub propagation: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    fn from(ctx: &Ctx, body: &Value) -> Self {
        let mut o = DeleteOpts {
            grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
            precondition_uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            precondition_rv: body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
            propagation: body
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from),
            dry_run: body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All")),
        };
        if let Some(g) = ctx.q("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
            o.grace_period = Some(g);
        }
        if let Some(p) = ctx.q("propagationPolicy") {
            o.propagation = Some(p.into());
        }
        o.dry_run |= ctx.dry_run();
        o
    }
}

/// Delete (or mark for deletion) one object. Returns the object and whether
/// it is gone (false: it waits for finalizers or graceful termination).
pub fn delete_object(
    sh: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<(Value, bool), ApiError> {
    let is_pod = info.group.is_empty() && info.resource == "pods";
    let (obj, gone) = sh.store.mutate(&info.gr(), ns, name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&info.group, &info.resource, name));
        };
        if let Some(u) = &opts.precondition_uid
            && u != meta_str(cur, "uid")
        {
            return Err(ApiError::conflict(&info.group, &info.resource, name, &format!("Precondition failed: UID in precondition: {u}, UID in object meta: {}", meta_str(cur, "uid"))));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != meta_str(cur, "resourceVersion")
        {
            return Err(ApiError::conflict(&info.group, &info.resource, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta_str(cur, "resourceVersion"))));
        }
        let has_finalizers = cur["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        let terminating = cur["metadata"].get("deletionTimestamp").is_some_and(|d| !d.is_null());
        let grace = if is_pod {
            opts.grace_period
                .or_else(|| cur["metadata"]["deletionGracePeriodSeconds"].as_i64())
                .or_else(|| cur["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
        } else {
            0
        };
        let on_node = is_pod && cur["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        let finished = is_pod && matches!(cur["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        let graceful = on_node && grace > 0 && !finished;
        if has_finalizers || graceful {
            if terminating {
                let cur_grace = cur["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
                if !graceful || grace >= cur_grace {
                    return Ok((Change::Keep, false));
                }
            }
            let mut n = (**cur).clone();
            let g = if graceful { grace } else { 0 };
            let ts = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(g))
                .unwrap_or_else(|_| jiff::Timestamp::now());
            n["metadata"]["deletionTimestamp"] = json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            n["metadata"]["deletionGracePeriodSeconds"] = json!(g);
            if !terminating {
                n["metadata"]["generation"] = json!(n["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            }
            if opts.dry_run {
                return Ok((Change::Keep, false));
            }
            return Ok((Change::Put(n), false));
        }
        if opts.dry_run {
            return Ok((Change::Keep, true));
        }
        Ok((Change::Delete, true))
    })?;
    let obj = obj.ok_or_else(|| ApiError::not_found(&info.group, &info.resource, name))?;
    if gone && !opts.dry_run {
        if info.group == "apiextensions.k8s.io" {
            crate::crd::unregister(sh, &obj);
        }
        if info.group.is_empty() && info.resource == "namespaces" {
            delete_namespace_contents(sh, name);
        }
    }
    Ok((present(&obj, info), gone))
}

fn delete_namespace_contents(sh: &Shared, ns: &str) {
    for info in sh.registry.all().into_iter().filter(|r| r.namespaced) {
        for o in sh.store.all(&info.gr(), Some(ns)) {
            let _ = delete_object(
                sh,
                &info,
                ns,
                meta_str(&o, "name"),
                &DeleteOpts {
                    grace_period: Some(0),
                    ..Default::default()
                },
            );
        }
    }
}

fn delete_handler(ctx: &Ctx, t: &Target, body: Value) -> Result<Response, ApiError> {
    let opts = DeleteOpts::from(ctx, &body);
    let name = t.name.clone().unwrap_or_default();
    let (v, gone) = delete_object(&ctx.sh, &t.info, &t.ns, &name, &opts)?;
    Ok(json_response(if gone { 200 } else { 202 }, &v))
}

fn delete_collection(ctx: &Ctx, t: &Target) -> Result<Response, ApiError> {
    let info = &t.info;
    let filter = Filter::from_ctx(ctx, info)?;
    let ns = if t.ns.is_empty() {
        None
    } else {
        Some(t.ns.as_str())
    };
    let opts = DeleteOpts::from(ctx, &Value::Null);
    let page = ctx
        .sh
        .store
        .list(&info.gr(), ns, None, None, |v| filter.matches(v));
    let mut items = Vec::new();
    for o in page.items {
        if let Ok((v, _)) = delete_object(
            &ctx.sh,
            info,
            meta_str(&o, "namespace"),
            meta_str(&o, "name"),
            &opts,
        ) {
            items.push(v);
        }
    }
    Ok(json_response(
        200,
        &json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": {"resourceVersion": ctx.sh.store.rv().to_string()}, "items": items}),
    ))
}

/// Printer columns from a CRD version.
pub fn printer_columns(v: &Value) -> Vec<PrinterColumn> {
    let cols: Vec<PrinterColumn> = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| PrinterColumn {
                    name: c["name"].as_str().unwrap_or("").into(),
                    type_: c["type"].as_str().unwrap_or("string").into(),
                    format: c["format"].as_str().unwrap_or("").into(),
                    description: c["description"].as_str().unwrap_or("").into(),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    json_path: c["jsonPath"].as_str().unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default();
    if cols.is_empty() {
        return vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            ..Default::default()
        }];
    }
    cols
}

/// Build the router.
pub fn router(sh: SharedRef) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(sh)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

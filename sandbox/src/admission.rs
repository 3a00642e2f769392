//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1), enforced on
//! writes that come through the API: the policies and bindings stored in the
//! sandbox, their CEL (`kube-cel`'s Kubernetes functions over the `cel`
//! crate) over `object`, `oldObject`, `request`, `params`, `namespaceObject`
//! and `variables`, `matchConstraints`/`matchResources`, `matchConditions`,
//! `paramRef`, `failurePolicy` and `validationActions`.
//!
//! [`prepare`] picks the bindings that can apply to a request before it runs
//! (reading the store outside its write lock); [`admitted`] runs the request
//! with them in scope; [`validate`] is called by the write path with the
//! object as it would be stored, before it is stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::http::HeaderValue;
use axum::response::Response;
use kube_cel::KubeCelExt;
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

use crate::api::{Shared, Target};
use crate::auth::UserInfo;
use crate::error::{ApiError, qualified};
use crate::registry::ResourceInfo;
use crate::selector::LabelSelector;
use crate::store::{Obj, meta_str};

const GROUP: &str = "admissionregistration.k8s.io";

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// One binding that may apply to the request, with its policy and params.
struct Bound {
    policy: Obj,
    binding: Obj,
    /// None: the policy has no paramKind. Some(empty): none found.
    params: Option<Vec<Obj>>,
}

/// The admission context of one request.
pub struct Scope {
    user: UserInfo,
    info: Arc<ResourceInfo>,
    sub: String,
    ns: String,
    name: String,
    delete: bool,
    dry_run: bool,
    namespace_object: Option<Obj>,
    bound: Vec<Bound>,
    warnings: Mutex<Vec<String>>,
}

fn str_list<'a>(v: &'a Value, field: &str) -> Vec<&'a str> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn listed(list: &[&str], v: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == v)
}

/// Does a `NamedRuleWithOperations` match (operation "" matches any)?
fn rule_matches(rule: &Value, op: &str, info: &ResourceInfo, sub: &str, name: &str) -> bool {
    if !op.is_empty() && !listed(&str_list(rule, "operations"), op) {
        return false;
    }
    if !listed(&str_list(rule, "apiGroups"), &info.group)
        || !listed(&str_list(rule, "apiVersions"), &info.version)
    {
        return false;
    }
    let resources_match = str_list(rule, "resources")
        .iter()
        .any(|r| match r.split_once('/') {
            None => (*r == "*" || *r == info.resource) && sub.is_empty(),
            Some((res, s)) => {
                (res == "*" || res == info.resource) && !sub.is_empty() && (s == "*" || s == sub)
            }
        });
    if !resources_match {
        return false;
    }
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !info.namespaced,
        "Namespaced" => info.namespaced,
        _ => true,
    };
    let names = str_list(rule, "resourceNames");
    scope_ok && (names.is_empty() || names.contains(&name))
}

/// `matchConstraints` of a policy or `matchResources` of a binding, for the
/// resource alone (operation and selectors are checked per object).
fn resources_match(m: &Value, op: &str, info: &ResourceInfo, sub: &str, name: &str) -> bool {
    let rules = m["resourceRules"].as_array().cloned().unwrap_or_default();
    let excluded = m["excludeResourceRules"]
        .as_array()
        .is_some_and(|ex| ex.iter().any(|r| rule_matches(r, op, info, sub, name)));
    rules.iter().any(|r| rule_matches(r, op, info, sub, name)) && !excluded
}

fn labels_match(selector: &Value, labels: Option<&serde_json::Map<String, Value>>) -> bool {
    if selector.is_null() {
        return true;
    }
    LabelSelector::from_object(selector).is_some_and(|s| s.matches_labels(labels))
}

/// The bindings that may apply to a write; None when none can (the common case).
pub fn prepare(
    sh: &Shared,
    user: &UserInfo,
    verb: &str,
    t: &Target,
    dry_run: bool,
) -> Option<Scope> {
    if !matches!(verb, "create" | "update" | "patch" | "delete") {
        return None;
    }
    let name = t.name.clone().unwrap_or_default();
    let bindings = sh
        .store
        .all(&format!("validatingadmissionpolicybindings.{GROUP}"), None);
    let mut bound = Vec::new();
    for binding in bindings {
        let policy_name = binding["spec"]["policyName"].as_str().unwrap_or("");
        let Some(policy) = sh.store.get(
            &format!("validatingadmissionpolicies.{GROUP}"),
            "",
            policy_name,
        ) else {
            continue;
        };
        let spec = &policy["spec"];
        if !resources_match(&spec["matchConstraints"], "", &t.info, &t.sub, &name) {
            continue;
        }
        let mr = &binding["spec"]["matchResources"];
        if mr.is_object()
            && mr.get("resourceRules").is_some()
            && !resources_match(mr, "", &t.info, &t.sub, &name)
        {
            continue;
        }
        let params = spec
            .get("paramKind")
            .filter(|p| p.is_object())
            .map(|pk| find_params(sh, pk, &binding["spec"]["paramRef"], &t.ns));
        bound.push(Bound {
            policy,
            binding,
            params,
        });
    }
    if bound.is_empty() {
        return None;
    }
    let namespace_object = if t.info.namespaced {
        sh.store.get("namespaces", "", &t.ns)
    } else {
        None
    };
    Some(Scope {
        user: user.clone(),
        info: t.info.clone(),
        sub: t.sub.clone(),
        ns: t.ns.clone(),
        name,
        delete: verb == "delete",
        dry_run,
        namespace_object,
        bound,
        warnings: Mutex::new(Vec::new()),
    })
}

fn find_params(sh: &Shared, kind: &Value, r: &Value, request_ns: &str) -> Vec<Obj> {
    let Some(info) = sh.registry.by_kind(
        kind["apiVersion"].as_str().unwrap_or(""),
        kind["kind"].as_str().unwrap_or(""),
    ) else {
        return Vec::new();
    };
    let ns = if info.namespaced {
        r["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(request_ns)
            .to_string()
    } else {
        String::new()
    };
    if let Some(name) = r["name"].as_str().filter(|n| !n.is_empty()) {
        return sh.store.get(&info.gr(), &ns, name).into_iter().collect();
    }
    let Some(sel) = r.get("selector").and_then(LabelSelector::from_object) else {
        return Vec::new();
    };
    sh.store
        .all(&info.gr(), info.namespaced.then_some(ns.as_str()))
        .into_iter()
        .filter(|o| sel.matches_labels(o["metadata"]["labels"].as_object()))
        .collect()
}

/// Runs a request with its admission scope; DELETEs are checked here
/// against the stored object. Warnings of Warn actions become `Warning` headers.
pub async fn admitted(
    sh: &Shared,
    scope: Option<Scope>,
    fut: impl Future<Output = Result<Response, ApiError>>,
) -> Result<Response, ApiError> {
    let Some(scope) = scope else {
        return fut.await;
    };
    if scope.delete
        && let Some(old) = sh.store.get(&scope.info.gr(), &scope.ns, &scope.name)
    {
        scope.check(Some(&old), None)?;
    }
    let scope = Arc::new(scope);
    let mut resp = SCOPE.scope(scope.clone(), fut).await?;
    let warnings = std::mem::take(&mut *scope.warnings.lock().unwrap_or_else(|e| e.into_inner()));
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {w:?}")) {
            resp.headers_mut().append("Warning", h);
        }
    }
    Ok(resp)
}

/// Called with the object about to be stored by a create, update or patch.
/// No-op outside an API request (the sandbox's own controllers).
pub fn validate(info: &ResourceInfo, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
    SCOPE
        .try_with(|s| {
            if s.info.gr() != info.gr() || s.delete {
                return Ok(());
            }
            s.check(old, Some(new))
        })
        .unwrap_or(Ok(()))
}

/// JSON to a CEL value (integers stay integers).
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => match n.as_u64() {
                Some(u) => Cel::UInt(u),
                None => Cel::Float(n.as_f64().unwrap_or(0.0)),
            },
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<Key, Cel> = m
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

enum Outcome {
    /// Allowed, or the policy does not apply.
    Pass,
    /// (message, reason)
    Fail(String, String),
}

/// Compiled expressions, so that a policy is parsed once, not on every write
/// (bounded: cleared when full).
fn compiled(src: &str) -> Result<Arc<Program>, String> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Arc<Program>>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(src) {
        return Ok(p.clone());
    }
    let p = Arc::new(Program::compile(src).map_err(|e| format!("compilation failed: {e}"))?);
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= 4096 {
        c.clear();
    }
    c.insert(src.to_string(), p.clone());
    Ok(p)
}

fn eval(ctx: &Context, src: &str) -> Result<Cel, String> {
    let p = compiled(src)?;
    p.execute(ctx)
        .map_err(|e| format!("expression '{src}' resulted in error: {e}"))
}

fn eval_bool(ctx: &Context, src: &str) -> Result<bool, String> {
    match eval(ctx, src)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!(
            "expression '{src}' resulted in a {:?}, not a bool",
            other.type_of()
        )),
    }
}

impl Scope {
    fn request(&self, op: &str, name: &str) -> Value {
        let i = &self.info;
        json!({
            "uid": crate::store::new_uid(),
            "kind": {"group": i.group, "version": i.version, "kind": i.kind},
            "resource": {"group": i.group, "version": i.version, "resource": i.resource},
            "subResource": self.sub,
            "requestKind": {"group": i.group, "version": i.version, "kind": i.kind},
            "requestResource": {"group": i.group, "version": i.version, "resource": i.resource},
            "requestSubResource": self.sub,
            "name": name,
            "namespace": self.ns,
            "operation": op,
            "userInfo": {
                "username": self.user.username,
                "uid": self.user.uid,
                "groups": self.user.groups,
                "extra": self.user.extra,
            },
            "dryRun": self.dry_run,
            "options": {},
        })
    }

    fn check(&self, old: Option<&Value>, new: Option<&Value>) -> Result<(), ApiError> {
        let op = match (old, new) {
            (None, _) => "CREATE",
            (Some(_), Some(_)) => "UPDATE",
            (Some(_), None) => "DELETE",
        };
        let subject = new.or(old).cloned().unwrap_or(Value::Null);
        let name = match meta_str(&subject, "name") {
            "" => self.name.clone(),
            n => n.to_string(),
        };
        let request = self.request(op, &name);
        for b in &self.bound {
            let pspec = &b.policy["spec"];
            let bspec = &b.binding["spec"];
            let policy_name = meta_str(&b.policy, "name");
            let binding_name = meta_str(&b.binding, "name");
            if !resources_match(&pspec["matchConstraints"], op, &self.info, &self.sub, &name) {
                continue;
            }
            let mr = &bspec["matchResources"];
            if mr.get("resourceRules").is_some()
                && !resources_match(mr, op, &self.info, &self.sub, &name)
            {
                continue;
            }
            if !self.selectors_match(&pspec["matchConstraints"], old, new)
                || !self.selectors_match(mr, old, new)
            {
                continue;
            }
            let fail_closed = pspec["failurePolicy"].as_str() != Some("Ignore");
            let params: Vec<Option<&Obj>> = match &b.params {
                None => vec![None],
                Some(ps) if ps.is_empty() => {
                    let deny =
                        bspec["paramRef"]["parameterNotFoundAction"].as_str() != Some("Allow");
                    if deny {
                        self.decide(
                            b,
                            policy_name,
                            binding_name,
                            &name,
                            Outcome::Fail(
                                "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction".into(),
                                "Invalid".into(),
                            ),
                        )?;
                    }
                    continue;
                }
                Some(ps) => ps.iter().map(Some).collect(),
            };
            for p in params {
                let outcome = match self.evaluate(pspec, &request, old, new, p) {
                    Ok(o) => o,
                    Err(msg) if fail_closed => Outcome::Fail(msg, "Invalid".into()),
                    Err(msg) => {
                        tracing::debug!(policy = policy_name, error = %msg, "admission policy error ignored (failurePolicy Ignore)");
                        Outcome::Pass
                    }
                };
                self.decide(b, policy_name, binding_name, &name, outcome)?;
            }
        }
        Ok(())
    }

    fn selectors_match(&self, m: &Value, old: Option<&Value>, new: Option<&Value>) -> bool {
        let ns_ok = if self.info.namespaced {
            labels_match(
                &m["namespaceSelector"],
                self.namespace_object
                    .as_ref()
                    .and_then(|n| n["metadata"]["labels"].as_object()),
            )
        } else {
            true
        };
        let os = &m["objectSelector"];
        let obj_ok = [old, new]
            .into_iter()
            .flatten()
            .any(|o| labels_match(os, o["metadata"]["labels"].as_object()));
        ns_ok && obj_ok
    }

    fn evaluate(
        &self,
        spec: &Value,
        request: &Value,
        old: Option<&Value>,
        new: Option<&Value>,
        params: Option<&Obj>,
    ) -> Result<Outcome, String> {
        let mut ctx = Context::default();
        ctx.register_all();
        ctx.add_variable_from_value("object", new.map_or(Cel::Null, to_cel));
        ctx.add_variable_from_value("oldObject", old.map_or(Cel::Null, to_cel));
        ctx.add_variable_from_value("request", to_cel(request));
        ctx.add_variable_from_value("params", params.map_or(Cel::Null, |p| to_cel(p)));
        ctx.add_variable_from_value(
            "namespaceObject",
            self.namespace_object
                .as_ref()
                .map_or(Cel::Null, |n| to_cel(n)),
        );
        for mc in spec["matchConditions"].as_array().into_iter().flatten() {
            let expr = mc["expression"].as_str().unwrap_or("false");
            if !eval_bool(&ctx, expr)? {
                return Ok(Outcome::Pass);
            }
        }
        let mut vars: HashMap<Key, Cel> = HashMap::new();
        ctx.add_variable_from_value(
            "variables",
            Cel::Map(Map {
                map: Arc::new(vars.clone()),
            }),
        );
        for v in spec["variables"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or("");
            let value = eval(&ctx, v["expression"].as_str().unwrap_or("null"))?;
            vars.insert(Key::String(Arc::new(name.to_string())), value);
            ctx.add_variable_from_value(
                "variables",
                Cel::Map(Map {
                    map: Arc::new(vars.clone()),
                }),
            );
        }
        for val in spec["validations"].as_array().into_iter().flatten() {
            let expr = val["expression"].as_str().unwrap_or("false");
            if eval_bool(&ctx, expr)? {
                continue;
            }
            let from_expr = val["messageExpression"]
                .as_str()
                .and_then(|m| match eval(&ctx, m) {
                    Ok(Cel::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    _ => None,
                });
            let message = from_expr
                .or_else(|| val["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("failed expression: {}", expr.trim()));
            let reason = val["reason"].as_str().unwrap_or("Invalid").to_string();
            return Ok(Outcome::Fail(message, reason));
        }
        Ok(Outcome::Pass)
    }

    fn decide(
        &self,
        b: &Bound,
        policy: &str,
        binding: &str,
        name: &str,
        outcome: Outcome,
    ) -> Result<(), ApiError> {
        let Outcome::Fail(message, reason) = outcome else {
            return Ok(());
        };
        let actions = str_list(&b.binding["spec"], "validationActions");
        if actions.contains(&"Warn") {
            self.warnings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{policy}' with binding '{binding}': {message}"
                ));
        }
        if actions.contains(&"Audit") {
            tracing::info!(policy, binding, message = %message, "admission policy audit: validation failed");
        }
        if !actions.contains(&"Deny") {
            return Ok(());
        }
        let text = format!(
            "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {message}"
        );
        let gr = qualified(&self.info.group, &self.info.resource);
        let full = if name.is_empty() {
            format!("{gr} is forbidden: {text}")
        } else {
            format!("{gr} {name:?} is forbidden: {text}")
        };
        let code = match reason.as_str() {
            "Unauthorized" => 401,
            "Forbidden" => 403,
            "RequestEntityTooLarge" => 413,
            _ => 422,
        };
        let mut details =
            json!({"name": name, "kind": self.info.resource, "causes": [{"message": text}]});
        if !self.info.group.is_empty() {
            details["group"] = json!(self.info.group);
        }
        Err(ApiError::new(code, &reason, full).with_details(details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_resources_subresources_and_operations() {
        let info = ResourceInfo {
            group: String::new(),
            version: "v1".into(),
            resource: "nodes".into(),
            ..Default::default()
        };
        let rule = json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]});
        assert!(rule_matches(&rule, "UPDATE", &info, "", "n"));
        assert!(!rule_matches(&rule, "CREATE", &info, "", "n"));
        assert!(!rule_matches(&rule, "UPDATE", &info, "status", "n"));
        let sub = json!({"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*/status"]});
        assert!(rule_matches(&sub, "UPDATE", &info, "status", "n"));
        assert!(!rule_matches(&sub, "UPDATE", &info, "", "n"));
    }

    #[test]
    fn json_becomes_cel_with_integers_and_maps() -> Result<(), String> {
        let mut ctx = Context::default();
        ctx.register_all();
        ctx.add_variable_from_value(
            "object",
            to_cel(&json!({"spec": {"replicas": 3}, "metadata": {"labels": {"a": "b"}}})),
        );
        assert!(eval_bool(&ctx, "object.spec.replicas == 3")?);
        assert!(eval_bool(&ctx, "'a' in object.metadata.labels")?);
        assert!(eval_bool(&ctx, "object.metadata.labels.all(k, k == 'a')")?);
        assert!(eval(&ctx, "object.nope").is_err());
        Ok(())
    }
}

//! The RBAC authorizer over the stored Roles, ClusterRoles and their
//! bindings, the default roles every cluster has, and the access review APIs
//! (`kubectl auth can-i`, `kubectl auth can-i --list`, `kubectl auth whoami`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::{Shared, Target, error_response, json_response};
use crate::auth::UserInfo;
use crate::error::{ApiError, qualified};
use crate::selector::LabelSelector;
use crate::store::meta_str;

const GROUP: &str = "rbac.authorization.k8s.io";

/// What a request asks to do, as the authorizer sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    pub group: String,
    pub resource: String,
    pub sub: String,
    pub ns: String,
    pub name: String,
    /// Non-resource requests: the URL path.
    pub path: String,
}

impl Attributes {
    /// A resource request as routed: `verb` as the HTTP method and `?watch`
    /// make it; list and watch selecting `metadata.name=` by field name it.
    pub fn of_request(verb: &str, t: &Target, query: &HashMap<String, String>) -> Self {
        let mut name = t.name.clone().unwrap_or_default();
        if name.is_empty()
            && matches!(verb, "list" | "watch")
            && let Some(fs) = query.get("fieldSelector")
        {
            for term in fs.split(',') {
                let term = term.trim();
                if let Some(v) = term
                    .strip_prefix("metadata.name==")
                    .or_else(|| term.strip_prefix("metadata.name="))
                {
                    name = v.to_string();
                }
            }
        }
        let ns = if t.info.group.is_empty() && t.info.resource == "namespaces" {
            name.clone()
        } else {
            t.ns.clone()
        };
        Attributes {
            verb: verb.to_string(),
            resource_request: true,
            group: t.info.group.clone(),
            resource: t.info.resource.clone(),
            sub: t.sub.clone(),
            ns,
            name,
            path: String::new(),
        }
    }

    /// A request for a path outside the resource API (discovery, /healthz...).
    pub fn of_path(method: &Method, path: &str) -> Self {
        let verb = match *method {
            Method::GET | Method::HEAD => "get".to_string(),
            ref m => m.as_str().to_ascii_lowercase(),
        };
        Attributes {
            verb,
            path: path.to_string(),
            ..Attributes::default()
        }
    }

    pub fn impersonate(resource: &str, ns: &str, name: &str) -> Self {
        Attributes {
            verb: "impersonate".into(),
            resource_request: true,
            group: if resource == "userextras" || resource == "uids" {
                "authentication.k8s.io".into()
            } else {
                String::new()
            },
            resource: resource.into(),
            ns: ns.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }
}

/// RBAC objects are named by path segments (`system:discovery`), not DNS names.
pub fn path_segment_name(info: &crate::registry::ResourceInfo, name: &str) -> bool {
    info.group == GROUP
        && !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '%'])
}

fn str_list<'a>(v: &'a Value, field: &str) -> Vec<&'a str> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Does one PolicyRule allow the request (the real `RuleAllows`)?
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = str_list(rule, "verbs");
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    if !a.resource_request {
        return str_list(rule, "nonResourceURLs").iter().any(|u| {
            *u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
        });
    }
    if !str_list(rule, "apiGroups")
        .iter()
        .any(|g| *g == "*" || *g == a.group)
    {
        return false;
    }
    let combined = if a.sub.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.sub)
    };
    let resources_match = str_list(rule, "resources").iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.sub.is_empty() && r.strip_prefix("*/") == Some(a.sub.as_str()))
    });
    if !resources_match {
        return false;
    }
    let names = str_list(rule, "resourceNames");
    names.is_empty() || names.contains(&a.name.as_str())
}

fn subject_matches(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
    match s.get("kind").and_then(Value::as_str).unwrap_or("") {
        "User" => name == user.username,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = s
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn cluster_role_rules(sh: &Shared, name: &str) -> Vec<Value> {
    let Some(role) = sh.store.get(&format!("clusterroles.{GROUP}"), "", name) else {
        return Vec::new();
    };
    let mut rules: Vec<Value> = role["rules"].as_array().cloned().unwrap_or_default();
    // Aggregated ClusterRoles: the union of the roles their selectors pick
    // (the real controller writes that union into the role; computed here on read).
    if let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() {
        let selectors: Vec<LabelSelector> = selectors
            .iter()
            .filter_map(LabelSelector::from_object)
            .collect();
        for other in sh.store.all(&format!("clusterroles.{GROUP}"), None) {
            if meta_str(&other, "name") == name {
                continue;
            }
            let labels = other["metadata"]["labels"].as_object();
            if selectors.iter().any(|s| s.matches_labels(labels)) {
                rules.extend(other["rules"].as_array().cloned().unwrap_or_default());
            }
        }
    }
    rules
}

fn role_rules(sh: &Shared, binding: &Value, ns: &str) -> Vec<Value> {
    let r = &binding["roleRef"];
    let name = r["name"].as_str().unwrap_or("");
    match r["kind"].as_str().unwrap_or("") {
        "ClusterRole" => cluster_role_rules(sh, name),
        "Role" if !ns.is_empty() => sh
            .store
            .get(&format!("roles.{GROUP}"), ns, name)
            .and_then(|role| role["rules"].as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Every rule that applies to `user` in `ns` (cluster-wide only for ""),
/// each with the binding that grants it.
fn rules_for(sh: &Shared, user: &UserInfo, ns: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for b in sh.store.all(&format!("clusterrolebindings.{GROUP}"), None) {
        let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
        if subjects.iter().any(|s| subject_matches(s, user, "")) {
            let why = format!(
                "ClusterRoleBinding {:?} of ClusterRole {:?}",
                meta_str(&b, "name"),
                b["roleRef"]["name"].as_str().unwrap_or("")
            );
            for rule in role_rules(sh, &b, "") {
                out.push((why.clone(), rule));
            }
        }
    }
    if !ns.is_empty() {
        for b in sh.store.all(&format!("rolebindings.{GROUP}"), Some(ns)) {
            let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
            if subjects.iter().any(|s| subject_matches(s, user, ns)) {
                let why = format!(
                    "RoleBinding {:?} of {} {:?}",
                    format!("{ns}/{}", meta_str(&b, "name")),
                    b["roleRef"]["kind"].as_str().unwrap_or(""),
                    b["roleRef"]["name"].as_str().unwrap_or("")
                );
                for rule in role_rules(sh, &b, ns) {
                    out.push((why.clone(), rule));
                }
            }
        }
    }
    out
}

/// Why the request is allowed, or None when it is not.
pub fn decide(sh: &Shared, user: &UserInfo, a: &Attributes) -> Option<String> {
    if user.is_master() {
        return Some("allowed to members of system:masters".into());
    }
    rules_for(sh, user, &a.ns)
        .into_iter()
        .find(|(_, rule)| rule_allows(rule, a))
        .map(|(why, _)| format!("RBAC: allowed by {why} to User {:?}", user.username))
}

pub fn authorize(sh: &Shared, user: &UserInfo, a: &Attributes) -> bool {
    decide(sh, user, a).is_some()
}

/// The 403 the real server answers.
pub fn forbidden(user: &UserInfo, a: &Attributes) -> ApiError {
    let who = &user.username;
    if !a.resource_request {
        return ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User {who:?} cannot {} path {:?}",
                a.verb, a.path
            ),
        )
        .with_details(json!({}));
    }
    let resource = if a.sub.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.sub)
    };
    let scope = if a.ns.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.ns)
    };
    let why = format!(
        "User {who:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        a.verb, a.group
    );
    let gr = qualified(&a.group, &a.resource);
    let message = if a.name.is_empty() {
        format!("{gr} is forbidden: {why}")
    } else {
        format!("{gr} {:?} is forbidden: {why}", a.name)
    };
    let mut details = json!({"kind": a.resource});
    if !a.name.is_empty() {
        details["name"] = json!(a.name);
    }
    if !a.group.is_empty() {
        details["group"] = json!(a.group);
    }
    ApiError::new(403, "Forbidden", message).with_details(details)
}

/// The roles and bindings the real server creates at start (the subset
/// whose subjects exist here: admins, every authenticated user, anonymous).
pub fn bootstrap_objects() -> Vec<Value> {
    let meta = |name: &str| {
        json!({
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        })
    };
    let role = |name: &str, rules: Value| json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRole", "metadata": meta(name), "rules": rules});
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g}))
            .collect();
        json!({
            "apiVersion": format!("{GROUP}/v1"),
            "kind": "ClusterRoleBinding",
            "metadata": meta(name),
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
            "subjects": subjects,
        })
    };
    vec![
        role(
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
        ),
        binding("cluster-admin", &["system:masters"]),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                "/openapi/*", "/readyz", "/version", "/version/"
            ], "verbs": ["get"]}]),
        ),
        binding("system:discovery", &["system:authenticated"]),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": [
                "/healthz", "/livez", "/readyz", "/version", "/version/"
            ], "verbs": ["get"]}]),
        ),
        binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        role(
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
        ),
        binding("system:basic-user", &["system:authenticated"]),
    ]
}

// ---------------------------------------------------------------------------
// Review APIs

fn review_attributes(spec: &Value) -> Attributes {
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        Attributes {
            verb: s("verb"),
            resource_request: true,
            group: s("group"),
            resource: s("resource"),
            sub: s("subresource"),
            ns: s("namespace"),
            name: s("name"),
            path: String::new(),
        }
    } else {
        let r = &spec["nonResourceAttributes"];
        let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        Attributes {
            verb: s("verb"),
            path: s("path"),
            ..Attributes::default()
        }
    }
}

fn access_status(sh: &Shared, user: &UserInfo, spec: &Value) -> Value {
    match decide(sh, user, &review_attributes(spec)) {
        Some(reason) => json!({"allowed": true, "reason": reason}),
        None => json!({"allowed": false}),
    }
}

fn rules_status(sh: &Shared, user: &UserInfo, ns: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for (_, rule) in rules_for(sh, user, ns) {
        if rule.get("nonResourceURLs").is_some_and(|u| !u.is_null()) {
            non_resource_rules
                .push(json!({"verbs": rule["verbs"], "nonResourceURLs": rule["nonResourceURLs"]}));
        }
        if rule.get("resources").is_some_and(|u| !u.is_null()) {
            let mut r = json!({"verbs": rule["verbs"], "apiGroups": rule["apiGroups"], "resources": rule["resources"]});
            if let Some(n) = rule.get("resourceNames").filter(|n| !n.is_null()) {
                r["resourceNames"] = n.clone();
            }
            resource_rules.push(r);
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}

/// Serves the review APIs; None for every other path.
pub fn reviews(
    sh: &Shared,
    user: &UserInfo,
    method: &Method,
    segs: &[&str],
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    let (group, resource) = match segs {
        [
            "apis",
            g @ ("authorization.k8s.io" | "authentication.k8s.io"),
            "v1",
            r,
        ] => (*g, *r),
        _ => return None,
    };
    let kind = match (group, resource) {
        ("authorization.k8s.io", "selfsubjectaccessreviews") => "SelfSubjectAccessReview",
        ("authorization.k8s.io", "selfsubjectrulesreviews") => "SelfSubjectRulesReview",
        ("authorization.k8s.io", "subjectaccessreviews") => "SubjectAccessReview",
        ("authentication.k8s.io", "selfsubjectreviews") => "SelfSubjectReview",
        _ => return None,
    };
    let result = (|| {
        if *method != Method::POST {
            return Err(ApiError::method_not_allowed(format!(
                "{resource} can only be created (POST)"
            )));
        }
        let a = Attributes {
            verb: "create".into(),
            resource_request: true,
            group: group.into(),
            resource: resource.into(),
            ..Attributes::default()
        };
        if !authorize(sh, user, &a) {
            return Err(forbidden(user, &a));
        }
        let v = crate::wire::decode_body(headers, body)?;
        let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
        let status = match kind {
            "SelfSubjectAccessReview" => access_status(sh, user, &spec),
            "SelfSubjectRulesReview" => {
                rules_status(sh, user, spec["namespace"].as_str().unwrap_or(""))
            }
            "SubjectAccessReview" => {
                let subject = UserInfo {
                    username: spec["user"].as_str().unwrap_or("").to_string(),
                    uid: spec["uid"].as_str().unwrap_or("").to_string(),
                    groups: str_list(&spec, "groups")
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    extra: Default::default(),
                };
                access_status(sh, &subject, &spec)
            }
            _ => json!({"userInfo": {
                "username": user.username,
                "uid": user.uid,
                "groups": user.groups,
                "extra": user.extra,
            }}),
        };
        Ok(json!({
            "kind": kind,
            "apiVersion": format!("{group}/v1"),
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }))
    })();
    Some(match result {
        Ok(v) => json_response(201, &v),
        Err(e) => error_response(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            group: group.into(),
            resource: resource.into(),
            sub: sub.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn rules_match_like_the_real_authorizer() {
        let rule = json!({"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]});
        assert!(rule_allows(
            &rule,
            &res("create", "", "pods", "eviction", "p")
        ));
        assert!(!rule_allows(&rule, &res("create", "", "pods", "", "")));
        let star = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(
            &star,
            &res("patch", "x", "nodes", "status", "n")
        ));
        assert!(!rule_allows(&star, &res("patch", "x", "nodes", "", "n")));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get", "list"]});
        assert!(rule_allows(&named, &res("get", "", "secrets", "", "a")));
        assert!(!rule_allows(&named, &res("get", "", "secrets", "", "b")));
        assert!(!rule_allows(&named, &res("list", "", "secrets", "", "")));
        let urls = json!({"nonResourceURLs": ["/apis/*", "/healthz"], "verbs": ["get"]});
        let path = |p: &str| Attributes::of_path(&Method::GET, p);
        assert!(rule_allows(&urls, &path("/healthz")));
        assert!(rule_allows(&urls, &path("/apis/apps/v1")));
        assert!(!rule_allows(&urls, &path("/version")));
        assert!(!rule_allows(
            &urls,
            &Attributes::of_path(&Method::POST, "/healthz")
        ));
    }

    #[test]
    fn forbidden_messages_are_the_real_servers() {
        let u = UserInfo::named("system:serviceaccount:ns:sa");
        let e = forbidden(&u, &res("patch", "", "nodes", "", "w-1"));
        assert_eq!(
            e.message,
            "nodes \"w-1\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let mut a = res("list", "apps", "deployments", "", "");
        a.ns = "shop".into();
        assert_eq!(
            forbidden(&u, &a).message,
            "deployments.apps is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"shop\""
        );
        assert_eq!(
            forbidden(&u, &Attributes::of_path(&Method::GET, "/api")).message,
            "forbidden: User \"system:serviceaccount:ns:sa\" cannot get path \"/api\""
        );
    }
}

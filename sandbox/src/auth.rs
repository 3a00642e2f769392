//! Authentication: bearer tokens (the admin's, configured ones, and
//! ServiceAccount tokens the sandbox mints), impersonation headers, and the
//! TokenRequest subresource (`kubectl create token`).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use axum::http::HeaderMap;
use axum::http::header;
use serde_json::{Value, json};

use crate::api::Shared;
use crate::error::ApiError;
use crate::rbac::{self, Attributes};
use crate::store::{meta_str, new_uid};

/// The extra key bound ServiceAccount tokens carry for the node of their pod.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Who a request comes from, as the authorizer and admission see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The admin of the kubeconfig: a cluster-admin through `system:masters`.
    pub fn admin() -> Self {
        UserInfo {
            username: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    /// A user by name with the groups the real authenticators give it:
    /// ServiceAccounts get `system:serviceaccounts[:NS]`, everyone
    /// `system:authenticated`.
    pub fn named(username: &str) -> Self {
        let mut groups = Vec::new();
        if let Some((ns, _)) = service_account(username) {
            groups.push("system:serviceaccounts".to_string());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        groups.push("system:authenticated".into());
        UserInfo {
            username: username.into(),
            uid: String::new(),
            groups,
            extra: BTreeMap::new(),
        }
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// `system:serviceaccount:NS:NAME` -> (NS, NAME).
pub fn service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// Accepted bearer tokens.
pub struct Tokens {
    by_token: RwLock<HashMap<String, UserInfo>>,
    /// Requests without credentials are refused (an admin token is configured);
    /// otherwise they act as the admin.
    required: bool,
}

impl Tokens {
    pub fn new(admin_token: Option<&str>, extra: &[(String, String)]) -> Self {
        let mut by_token: HashMap<String, UserInfo> = extra
            .iter()
            .map(|(t, u)| (t.clone(), UserInfo::named(u)))
            .collect();
        if let Some(t) = admin_token {
            by_token.insert(t.to_string(), UserInfo::admin());
        }
        Tokens {
            by_token: RwLock::new(by_token),
            required: admin_token.is_some(),
        }
    }

    /// A new token for a ServiceAccount, optionally bound to a node (as the
    /// kubelet's projected tokens are, through the pod they belong to).
    pub fn mint(&self, namespace: &str, name: &str, node: Option<&str>) -> String {
        let mut user = UserInfo::named(&format!("system:serviceaccount:{namespace}:{name}"));
        user.uid = new_uid();
        if let Some(n) = node {
            user.extra
                .insert(NODE_NAME_EXTRA.into(), vec![n.to_string()]);
        }
        self.insert(user)
    }

    fn insert(&self, user: UserInfo) -> String {
        let token = format!("sandbox.{}", new_uid().replace('-', ""));
        self.by_token
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), user);
        token
    }

    fn lookup(&self, token: &str) -> Option<UserInfo> {
        self.by_token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

/// The user of a request: its bearer token, then impersonation headers.
pub fn authenticate(sh: &Shared, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let user = match auth.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(tok) => sh
            .tokens
            .lookup(tok.trim())
            .ok_or_else(ApiError::unauthorized)?,
        None if sh.tokens.required || auth.is_some() => return Err(ApiError::unauthorized()),
        None => UserInfo::admin(),
    };
    impersonate(sh, user, headers)
}

fn impersonate(sh: &Shared, user: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let as_user = values("impersonate-user").into_iter().next();
    let as_groups = values("impersonate-group");
    let as_uid = values("impersonate-uid").into_iter().next();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = v.to_str()
        {
            let key = percent_decode(key);
            extra.entry(key).or_default().push(v.to_string());
        }
    }
    let Some(as_user) = as_user else {
        if !as_groups.is_empty() || !extra.is_empty() || as_uid.is_some() {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, extra or uid without impersonating a user: add Impersonate-User",
            ));
        }
        return Ok(user);
    };
    let check = |a: Attributes| -> Result<(), ApiError> {
        if rbac::authorize(sh, &user, &a) {
            Ok(())
        } else {
            Err(rbac::forbidden(&user, &a))
        }
    };
    let sa = service_account(&as_user);
    match sa {
        Some((ns, name)) => check(Attributes::impersonate("serviceaccounts", ns, name))?,
        None => check(Attributes::impersonate("users", "", &as_user))?,
    }
    for g in &as_groups {
        check(Attributes::impersonate("groups", "", g))?;
    }
    for (k, vs) in &extra {
        for v in vs {
            check(Attributes {
                sub: k.clone(),
                ..Attributes::impersonate("userextras", "", v)
            })?;
        }
    }
    if let Some(uid) = &as_uid {
        check(Attributes::impersonate("uids", "", uid))?;
    }
    let mut groups = as_groups;
    if groups.is_empty()
        && let Some((ns, _)) = sa
    {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    if as_user != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        username: as_user,
        uid: as_uid.unwrap_or_default(),
        groups,
        extra,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(x) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("-"), 16)
        {
            out.push(x);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST .../serviceaccounts/NAME/token`: a token for an existing
/// ServiceAccount; a `boundObjectRef` to a Pod binds it to the pod's node.
pub fn token_request(sh: &Shared, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
    if sh.store.get("serviceaccounts", ns, name).is_none() {
        return Err(ApiError::not_found("", "serviceaccounts", name));
    }
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut user = UserInfo::named(&format!("system:serviceaccount:{ns}:{name}"));
    user.uid = new_uid();
    if let Some(r) = spec.get("boundObjectRef").filter(|r| !r.is_null()) {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
        let obj = r.get("name").and_then(Value::as_str).unwrap_or("");
        if kind != "Pod" && kind != "Secret" {
            return Err(ApiError::bad_request(format!(
                "cannot bind a token to a {kind}: use boundObjectRef kind Pod or Secret"
            )));
        }
        if kind == "Pod" {
            let pod = sh
                .store
                .get("pods", ns, obj)
                .ok_or_else(|| ApiError::not_found("", "pods", obj))?;
            user.extra
                .insert(POD_NAME_EXTRA.into(), vec![obj.to_string()]);
            user.extra.insert(
                POD_UID_EXTRA.into(),
                vec![meta_str(&pod, "uid").to_string()],
            );
            if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                user.extra
                    .insert(NODE_NAME_EXTRA.into(), vec![node.to_string()]);
            }
        }
    }
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600)
        .clamp(600, 1 << 32);
    let token = sh.tokens.insert(user);
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let mut spec = spec;
    spec["expirationSeconds"] = json!(seconds);
    if spec.get("audiences").is_none_or(Value::is_null) {
        spec["audiences"] = json!(["https://kubernetes.default.svc"]);
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": crate::store::now_rfc3339()},
        "spec": spec,
        "status": {
            "token": token,
            "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_parse() {
        assert_eq!(
            service_account("system:serviceaccount:ns:sa"),
            Some(("ns", "sa"))
        );
        assert_eq!(service_account("system:serviceaccount:ns"), None);
        assert_eq!(service_account("alice"), None);
        let u = UserInfo::named("system:serviceaccount:ns:sa");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn extra_keys_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("plain%"), "plain%");
    }
}

//! Reading webhook settings from Secrets. The values are credentials (a Slack
//! URL is a bearer token): they are never logged and never put in errors.
//!
//! A Secret is used only by consent: it must carry the label
//! `sofort.dev/webhook: "true"`, and when it has the annotation
//! `sofort.dev/webhook-policies` (policy names separated by commas or spaces),
//! the policy must be named there. A policy author cannot point a webhook at
//! another team's Secret that did not opt in. The error is the same whether
//! the Secret is missing, has not opted in, does not allow the policy or lacks
//! the key, so Events do not tell which Secrets exist.

use k8s_openapi::api::core::v1::Secret;

use crate::api::SecretKeyRef;

/// Label a Secret must carry, with the value `"true"`, to be used by webhooks.
pub const OPT_IN_LABEL: &str = "sofort.dev/webhook";
/// Optional annotation of an opted-in Secret: the policies allowed to use it.
pub const POLICIES_ANNOTATION: &str = "sofort.dev/webhook-policies";

/// A Secret value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The Secret is missing, did not opt in, does not allow this policy, or
    /// lacks the key: deliberately one message for all four.
    #[error(
        "Secret {namespace}/{name} key {key:?} cannot be used: a webhook Secret must exist, carry the label {OPT_IN_LABEL}: \"true\", name this policy in its annotation {POLICIES_ANNOTATION} if it has one, and hold the key (see the notification docs)"
    )]
    Unusable {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key that was wanted.
        key: String,
    },
    /// The value is not UTF-8 text.
    #[error(
        "Secret {namespace}/{name} key {key:?} is not UTF-8 text; store the value as plain text"
    )]
    NotText {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
}

/// True when `secret` opted in to webhook use and allows `policy`.
pub fn opted_in(secret: &Secret, policy: &str) -> bool {
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OPT_IN_LABEL))
        .is_some_and(|v| v == "true");
    let allowed = match secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POLICIES_ANNOTATION))
    {
        None => true,
        Some(list) => list
            .split(|c: char| c == ',' || c.is_whitespace())
            .any(|p| p == policy),
    };
    labelled && allowed
}

/// The bytes at `r` in `secret` (`None` when the Secret was not found or
/// could not be read) for `policy`.
/// `stringData` is honoured too, for Secrets built in memory.
pub fn secret_bytes(
    secret: Option<&Secret>,
    r: &SecretKeyRef,
    policy: &str,
) -> Result<Vec<u8>, SecretError> {
    let unusable = || SecretError::Unusable {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        key: r.key.clone(),
    };
    let Some(secret) = secret.filter(|s| opted_in(s, policy)) else {
        return Err(unusable());
    };
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(&r.key)) {
        return Ok(v.0.clone());
    }
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(&r.key)) {
        return Ok(v.clone().into_bytes());
    }
    Err(unusable())
}

/// The text at `r` in `secret`, trimmed of surrounding whitespace (a URL stored
/// with `echo` ends with a newline).
pub fn secret_text(
    secret: Option<&Secret>,
    r: &SecretKeyRef,
    policy: &str,
) -> Result<String, SecretError> {
    let bytes = secret_bytes(secret, r, policy)?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| SecretError::NotText {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            key: r.key.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn r(key: &str) -> SecretKeyRef {
        SecretKeyRef {
            namespace: "sofort-system".into(),
            name: "statuspage".into(),
            key: key.into(),
        }
    }

    fn opted(mut s: Secret, policies: Option<&str>) -> Secret {
        s.metadata.labels = Some(BTreeMap::from([(OPT_IN_LABEL.into(), "true".into())]));
        s.metadata.annotations =
            policies.map(|p| BTreeMap::from([(POLICIES_ANNOTATION.into(), p.into())]));
        s
    }

    #[test]
    fn reads_data_and_string_data() -> Result<(), SecretError> {
        let s = opted(
            Secret {
                data: Some(BTreeMap::from([(
                    "url".to_string(),
                    ByteString(b"https://hooks.example.com/x\n".to_vec()),
                )])),
                string_data: Some(BTreeMap::from([(
                    "headers".to_string(),
                    "A: b".to_string(),
                )])),
                ..Secret::default()
            },
            None,
        );
        assert_eq!(
            secret_text(Some(&s), &r("url"), "p")?,
            "https://hooks.example.com/x"
        );
        assert_eq!(secret_text(Some(&s), &r("headers"), "p")?, "A: b");
        let bad = opted(
            Secret {
                data: Some(BTreeMap::from([(
                    "url".to_string(),
                    ByteString(vec![0xff, 0xfe]),
                )])),
                ..Secret::default()
            },
            None,
        );
        assert!(matches!(
            secret_text(Some(&bad), &r("url"), "p"),
            Err(SecretError::NotText { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_secret_that_did_not_opt_in_is_never_used() {
        let plain = Secret {
            string_data: Some(BTreeMap::from([(
                "url".to_string(),
                "https://hooks.slack.com/services/T0/B0/OTHERTEAM".to_string(),
            )])),
            ..Secret::default()
        };
        let mut wrong_value = opted(plain.clone(), None);
        if let Some(l) = wrong_value.metadata.labels.as_mut() {
            l.insert(OPT_IN_LABEL.into(), "yes".into());
        }
        let other_policies = opted(plain.clone(), Some("team-a, team-b"));
        let no_key = opted(Secret::default(), None);
        let missing = secret_text(None, &r("url"), "mine");
        // Not opted in, a label value other than "true", the policy not
        // allowed, the key missing, the Secret missing: one error, one message.
        for s in [&plain, &wrong_value, &other_policies, &no_key] {
            let got = secret_text(Some(s), &r("url"), "mine");
            assert_eq!(got, missing);
        }
        let Err(e) = missing else {
            panic!("a missing Secret was usable")
        };
        let text = e.to_string();
        assert!(text.contains("sofort.dev/webhook: \"true\""), "{text}");
        assert!(!text.contains("OTHERTEAM"), "{text}");
        // Allowed policies may use it.
        assert!(secret_text(Some(&other_policies), &r("url"), "team-b").is_ok());
        assert!(secret_text(Some(&opted(plain, None)), &r("url"), "mine").is_ok());
    }
}

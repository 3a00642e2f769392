//! Reading webhook settings from Secrets. The values are credentials (a Slack
//! URL is a bearer token): they are never logged and never put in errors.

use k8s_openapi::api::core::v1::Secret;

use crate::api::SecretKeyRef;

/// A Secret value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The Secret does not exist.
    #[error(
        "Secret {namespace}/{name} not found; create it, for example: kubectl -n {namespace} create secret generic {name} --from-literal={key}=..."
    )]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key that was wanted.
        key: String,
    },
    /// The Secret has no such key.
    #[error(
        "Secret {namespace}/{name} has no key {key:?}; add it (kubectl -n {namespace} edit secret {name}) or fix the key in the policy"
    )]
    MissingKey {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Missing key.
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

/// The bytes at `r` in `secret` (`None` when the Secret was not found).
/// `stringData` is honoured too, for Secrets built in memory.
pub fn secret_bytes(secret: Option<&Secret>, r: &SecretKeyRef) -> Result<Vec<u8>, SecretError> {
    let Some(secret) = secret else {
        return Err(SecretError::NotFound {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            key: r.key.clone(),
        });
    };
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(&r.key)) {
        return Ok(v.0.clone());
    }
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(&r.key)) {
        return Ok(v.clone().into_bytes());
    }
    Err(SecretError::MissingKey {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        key: r.key.clone(),
    })
}

/// The text at `r` in `secret`, trimmed of surrounding whitespace (a URL stored
/// with `echo` ends with a newline).
pub fn secret_text(secret: Option<&Secret>, r: &SecretKeyRef) -> Result<String, SecretError> {
    let bytes = secret_bytes(secret, r)?;
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

    #[test]
    fn reads_data_and_string_data() {
        let s = Secret {
            data: Some(BTreeMap::from([(
                "url".to_string(),
                ByteString(b"https://hooks.example.com/x\n".to_vec()),
            )])),
            string_data: Some(BTreeMap::from([(
                "headers".to_string(),
                "A: b".to_string(),
            )])),
            ..Secret::default()
        };
        assert_eq!(
            secret_text(Some(&s), &r("url")).unwrap(),
            "https://hooks.example.com/x"
        );
        assert_eq!(secret_text(Some(&s), &r("headers")).unwrap(), "A: b");
        let e = secret_text(Some(&s), &r("ca.crt")).unwrap_err();
        assert!(e.to_string().contains("has no key \"ca.crt\""), "{e}");
        let e = secret_text(None, &r("url")).unwrap_err();
        assert!(
            e.to_string().contains("create secret generic statuspage"),
            "{e}"
        );
        let bad = Secret {
            data: Some(BTreeMap::from([(
                "url".to_string(),
                ByteString(vec![0xff, 0xfe]),
            )])),
            ..Secret::default()
        };
        assert!(matches!(
            secret_text(Some(&bad), &r("url")),
            Err(SecretError::NotText { .. })
        ));
    }
}

//! Label keys, label values and DNS names, checked the way Kubernetes does.

/// Checks a label key (`[prefix/]name`) the way Kubernetes does.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(format!(
            "{key:?} is not a valid label key: prefix {p:?} must be a DNS subdomain such as example.com"
        ));
    }
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err(format!(
            "{key:?} is not a valid label key: the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 name characters.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || (v.len() <= 63 && is_label_name(v)) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Labels under these prefixes (and their subdomains) belong to Kubernetes
/// or to sofort itself and may not be set by `rollout.nodeLabels.during`.
const RESERVED_PREFIXES: [&str; 3] = ["sofort.dev", "kubernetes.io", "k8s.io"];

/// Reserved labels that exist to be set during maintenance.
pub const ALLOWED_RESERVED_LABELS: [&str; 2] = [
    "node.kubernetes.io/exclude-from-external-load-balancers",
    "node.kubernetes.io/exclude-disruption",
];

/// Checks a key of `rollout.nodeLabels.during`: a valid label key, not under a
/// reserved prefix (`sofort.dev`, `kubernetes.io`, `k8s.io` or a subdomain of
/// one, such as `node-role.kubernetes.io`) unless it is one of
/// [`ALLOWED_RESERVED_LABELS`].
pub fn check_during_label_key(key: &str) -> Result<(), String> {
    check_label_key(key)?;
    if ALLOWED_RESERVED_LABELS.contains(&key) {
        return Ok(());
    }
    let Some((prefix, _)) = key.rsplit_once('/') else {
        return Ok(());
    };
    let reserved = RESERVED_PREFIXES
        .iter()
        .any(|r| prefix == *r || prefix.ends_with(&format!(".{r}")));
    if reserved {
        return Err(format!(
            "{key:?} is reserved: labels under sofort.dev/, kubernetes.io/ and k8s.io/ (and their subdomains) belong to Kubernetes or sofort; allowed of these are only {}",
            ALLOWED_RESERVED_LABELS.join(" and ")
        ));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS label (RFC 1123): 1-63 lower-case letters, digits and '-'.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS subdomain (RFC 1123): dot-separated DNS labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        assert!(check_label_key("topology.kubernetes.io/zone").is_ok());
        assert!(check_label_key("sofort.dev/priority").is_ok());
        assert!(check_label_key("tier").is_ok());
        assert!(check_label_key("Bad Key").is_err());
        assert!(check_label_key("-lead").is_err());
        assert!(check_label_key("UPPER.example/x").is_err());
        assert!(check_label_key(&"a".repeat(64)).is_err());
        assert!(check_label_key("example.com/").is_err());
    }

    #[test]
    fn during_labels_refuse_reserved_prefixes_but_the_exclusion_labels() {
        for ok in [
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "node.kubernetes.io/exclude-disruption",
            "example.com/maintenance",
            "maintenance",
            "kubernetes.io.example.com/x",
        ] {
            assert!(check_during_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "sofort.dev/step",
            "sofort.dev/anything",
            "x.sofort.dev/y",
            "kubernetes.io/hostname",
            "node.kubernetes.io/instance-type",
            "node-role.kubernetes.io/worker",
            "k8s.io/x",
            "Bad Key",
        ] {
            assert!(check_during_label_key(bad).is_err(), "{bad}");
        }
        assert!(
            check_during_label_key("node-role.kubernetes.io/worker")
                .unwrap_err()
                .contains("reserved")
        );
    }
}

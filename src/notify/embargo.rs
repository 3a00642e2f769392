//! The advisory embargo: `spec.notify.advisory.details` stays secret until the
//! rollout has completed.
//!
//! Two layers keep it in:
//! 1. Notifications are rendered from a [`super::Message`], whose constructor
//!    copies the details only for `Completed`; no other payload ever receives them.
//! 2. Everything else the controller writes before completion (Events, status
//!    messages, conditions, logs) goes through [`Embargo::scrub`], which replaces
//!    the details, and identifiers taken from them such as `CVE-2026-1234`,
//!    with `[embargoed]`.

use std::borrow::Cow;

use crate::api::{PatchPolicySpec, Phase};

/// What replaces embargoed text.
pub const REDACTED: &str = "[embargoed]";

/// The secrets of one policy's advisory while they are embargoed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Embargo {
    /// Lower-case needles, longest first.
    needles: Vec<String>,
}

impl std::fmt::Debug for Embargo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        f.debug_struct("Embargo")
            .field("needles", &self.needles.len())
            .finish()
    }
}

impl Embargo {
    /// The embargo of a policy in `phase`: lifted once the phase is `Completed`.
    pub fn for_policy(spec: &PatchPolicySpec, phase: Phase) -> Embargo {
        if phase == Phase::Completed {
            return Embargo::default();
        }
        Embargo::new(
            spec.notify
                .as_ref()
                .and_then(|n| n.advisory.as_ref())
                .and_then(|a| a.details.as_deref()),
        )
    }

    /// An embargo on `details` (none for `None` or blank).
    pub fn new(details: Option<&str>) -> Embargo {
        let Some(details) = details.map(str::trim).filter(|d| !d.is_empty()) else {
            return Embargo::default();
        };
        let mut needles = vec![details.to_ascii_lowercase()];
        // Identifiers inside the details (CVE-2026-1234, GHSA-xxxx-…, USN-1234-1)
        // are as telling as the whole text.
        for token in
            details.split(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
        {
            let token = token.trim_matches(|c: char| matches!(c, '.' | ':' | '-' | '_'));
            if token.chars().count() >= 6
                && token.chars().any(|c| c.is_ascii_digit())
                && token.chars().any(|c| c.is_alphabetic())
            {
                needles.push(token.to_ascii_lowercase());
            }
        }
        // Too short to search for without redacting ordinary words.
        needles.retain(|n| n.chars().count() >= 5);
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Embargo { needles }
    }

    /// True when nothing is embargoed.
    pub fn is_lifted(&self) -> bool {
        self.needles.is_empty()
    }

    /// True when `text` contains embargoed text.
    pub fn leaks(&self, text: &str) -> bool {
        let lower = text.to_ascii_lowercase();
        self.needles.iter().any(|n| lower.contains(n.as_str()))
    }

    /// `text` with every embargoed part replaced by [`REDACTED`]. Use it on every
    /// Event message, status message, condition message and log field that may
    /// quote user or node text before the rollout completed.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.leaks(text) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for n in &self.needles {
            loop {
                // ASCII lower-casing keeps byte offsets, so positions carry over.
                let lower = out.to_ascii_lowercase();
                let Some(pos) = lower.find(n.as_str()) else {
                    break;
                };
                out.replace_range(pos..pos + n.len(), REDACTED);
            }
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_details_and_identifiers_case_insensitively() {
        let e = Embargo::new(Some("CVE-2026-1234 (local root exploit in the kernel)"));
        assert!(!e.is_lifted());
        assert_eq!(
            e.scrub("fixing CVE-2026-1234 (local root exploit in the kernel) now"),
            "fixing [embargoed] now"
        );
        assert_eq!(e.scrub("see cve-2026-1234."), "see [embargoed].");
        assert_eq!(e.scrub("drain of w-3 timed out"), "drain of w-3 timed out");
        assert!(matches!(e.scrub("nothing here"), Cow::Borrowed(_)));
        assert!(!format!("{e:?}").contains("CVE"));
    }

    #[test]
    fn lifted_after_completion_or_without_details() {
        let mut spec = PatchPolicySpec::new("r1");
        spec.notify = Some(crate::api::NotifySpec {
            webhooks: vec![],
            advisory: Some(crate::api::Advisory {
                summary: "s".into(),
                details: Some("CVE-2026-1234".into()),
            }),
        });
        assert!(!Embargo::for_policy(&spec, Phase::Progressing).is_lifted());
        assert!(Embargo::for_policy(&spec, Phase::Completed).is_lifted());
        assert!(Embargo::new(None).is_lifted());
        assert!(Embargo::new(Some("  ")).is_lifted());
        assert!(Embargo::new(Some("xss")).is_lifted());
        assert_eq!(Embargo::new(None).scrub("CVE-2026-1234"), "CVE-2026-1234");
    }
}

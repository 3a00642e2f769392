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
//!
//! The scrubber makes one forward pass over the text and never looks at its own
//! output again, so it ends for every input. Should its output still contain
//! embargoed text (the replacement marker next to other text can spell a
//! needle), the whole text is withheld instead.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::api::{PatchPolicySpec, PatchPolicyStatus, Phase};

/// What replaces embargoed text.
pub const REDACTED: &str = "[embargoed]";
/// What a whole text becomes when replacing its parts would not hide the
/// details. Shorter than [`MIN_NEEDLE`], so it can never contain a needle.
pub const WITHHELD: &str = "***";
/// Needles shorter than this are not searched for (they would redact ordinary
/// words); details shorter than this are rejected by validation.
pub const MIN_NEEDLE: usize = 5;

/// The secrets of one policy's advisory while they are embargoed.
#[derive(Clone, Default)]
pub struct Embargo {
    /// Needles, longest first (for the `Debug` count and equality).
    needles: Vec<String>,
    /// One automaton over every needle, ASCII case-insensitive, leftmost-longest.
    /// `None` with needles present means the automaton could not be built:
    /// every text is then withheld (fail closed).
    matcher: Option<AhoCorasick>,
}

impl PartialEq for Embargo {
    fn eq(&self, other: &Self) -> bool {
        self.needles == other.needles
    }
}

impl Eq for Embargo {}

impl std::fmt::Debug for Embargo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        f.debug_struct("Embargo")
            .field("needles", &self.needles.len())
            .finish()
    }
}

/// Why advisory details cannot be embargoed safely (for `sofort validate`).
pub fn check_details(details: &str) -> Result<(), String> {
    let trimmed = details.trim();
    if trimmed.is_empty() {
        return Err("is empty; remove the field or write the embargoed details".into());
    }
    if trimmed.chars().count() < MIN_NEEDLE {
        return Err(format!(
            "is shorter than {MIN_NEEDLE} characters after trimming, too short to withhold reliably from Events, status and logs; write the full advisory, for example `CVE-2026-1234 (local root exploit)`"
        ));
    }
    if REDACTED
        .to_ascii_lowercase()
        .contains(&trimmed.to_ascii_lowercase())
    {
        return Err(format!(
            "is part of the marker {REDACTED:?} that replaces embargoed text, so it could not be withheld; write the real advisory details"
        ));
    }
    Ok(())
}

impl Embargo {
    /// The embargo of a policy whose rollout is in `status` (as stored, or as
    /// decided now): lifted only once the phase is `Completed` with every
    /// selected node updated and none failed, or when an admin set
    /// `advisory.release: Now`. A missing status or node count keeps it.
    pub fn for_status(spec: &PatchPolicySpec, status: Option<&PatchPolicyStatus>) -> Embargo {
        let all_patched = status.is_some_and(|s| {
            s.phase == Some(Phase::Completed)
                && s.failed.is_empty()
                && s.nodes
                    .as_ref()
                    .is_some_and(|n| n.failed == 0 && n.updated >= n.total)
        });
        if all_patched || super::event::release_now(spec) {
            return Embargo::default();
        }
        Embargo::of_spec(spec)
    }

    /// The embargo on the advisory details of `spec`, whatever the rollout.
    pub fn of_spec(spec: &PatchPolicySpec) -> Embargo {
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
        let mut needles = vec![details.to_string()];
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
                needles.push(token.to_string());
            }
        }
        // Too short to search for without redacting ordinary words.
        needles.retain(|n| n.chars().count() >= MIN_NEEDLE);
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        Embargo::from_needles(needles)
    }

    /// An embargo on exactly these needles (longest first).
    fn from_needles(needles: Vec<String>) -> Embargo {
        if needles.is_empty() {
            return Embargo::default();
        }
        let matcher = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .ok();
        Embargo { needles, matcher }
    }

    /// True when nothing is embargoed.
    pub fn is_lifted(&self) -> bool {
        self.needles.is_empty()
    }

    /// True when `text` contains embargoed text.
    pub fn leaks(&self, text: &str) -> bool {
        if self.needles.is_empty() {
            return false;
        }
        match &self.matcher {
            Some(m) => m.is_match(text),
            None => !text.is_empty(),
        }
    }

    /// `text` with every embargoed part replaced by [`REDACTED`], in one forward
    /// pass; [`WITHHELD`] when the result would still contain embargoed text.
    /// Use it on every Event message, status message, condition message and log
    /// field that may quote user or node text before the rollout completed.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.leaks(text) {
            return Cow::Borrowed(text);
        }
        let Some(m) = &self.matcher else {
            return Cow::Borrowed(WITHHELD);
        };
        let mut out = String::with_capacity(text.len());
        m.replace_all_with(text, &mut out, |_, _, dst| {
            dst.push_str(REDACTED);
            true
        });
        // The marker next to the remaining text can spell a needle again; one
        // check, not another pass: then nothing of the text is shown.
        if m.is_match(&out) {
            return Cow::Borrowed(WITHHELD);
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
                release: Default::default(),
            }),
            ..Default::default()
        });
        let status = |phase, updated, failed| PatchPolicyStatus {
            phase: Some(phase),
            nodes: Some(crate::api::NodeCounts {
                total: 3,
                updated,
                failed,
                ..crate::api::NodeCounts::default()
            }),
            ..PatchPolicyStatus::default()
        };
        let embargoed = |s: &PatchPolicyStatus| !Embargo::for_status(&spec, Some(s)).is_lifted();
        assert!(embargoed(&status(Phase::Progressing, 2, 0)));
        assert!(!embargoed(&status(Phase::Completed, 3, 0)));
        assert!(!Embargo::for_status(&spec, None).is_lifted());
        assert!(Embargo::new(None).is_lifted());
        assert!(Embargo::new(Some("  ")).is_lifted());
        assert!(Embargo::new(Some("xss")).is_lifted());
        assert_eq!(Embargo::new(None).scrub("CVE-2026-1234"), "CVE-2026-1234");
    }

    #[test]
    fn embargo_holds_while_a_node_failed() {
        let mut spec = PatchPolicySpec::new("r1");
        spec.notify = Some(crate::api::NotifySpec {
            webhooks: vec![],
            advisory: Some(crate::api::Advisory {
                summary: "s".into(),
                details: Some("CVE-2026-1234".into()),
                release: Default::default(),
            }),
            ..Default::default()
        });
        // Completed (tolerated) with one failed node, or with a node left behind.
        for (updated, failed) in [(2, 1), (2, 0)] {
            let s = PatchPolicyStatus {
                phase: Some(Phase::Completed),
                nodes: Some(crate::api::NodeCounts {
                    total: 3,
                    updated,
                    failed,
                    ..crate::api::NodeCounts::default()
                }),
                ..PatchPolicyStatus::default()
            };
            assert!(!Embargo::for_status(&spec, Some(&s)).is_lifted());
            // An admin lifts it explicitly.
            let mut now = spec.clone();
            if let Some(a) = now.notify.as_mut().and_then(|n| n.advisory.as_mut()) {
                a.release = crate::api::AdvisoryRelease::Now;
            }
            assert!(Embargo::for_status(&now, Some(&s)).is_lifted());
        }
    }

    /// Runs `scrub` on another thread and fails (rather than hangs) if it does
    /// not return: the scrubber's end must not depend on its input.
    fn scrub_bounded(e: &Embargo, text: &str) -> String {
        let (e, text) = (e.clone(), text.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(e.scrub(&text).into_owned());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(out) => out,
            Err(_) => panic!("scrub did not return"),
        }
    }

    #[test]
    fn scrubber_terminates_when_details_are_inside_the_marker() {
        for details in ["Embargoed", "embargoed]", "[embar", "mbarg", "goed]"] {
            let e = Embargo::new(Some(details));
            assert!(!e.is_lifted(), "{details}");
            for text in [
                details.to_string(),
                format!("fix {details} now"),
                format!("{details}{details}{details}"),
                REDACTED.to_string(),
            ] {
                let out = scrub_bounded(&e, &text);
                assert!(!e.leaks(&out), "{details:?} in {text:?} -> {out:?}");
                assert!(out.len() <= text.len() * REDACTED.len(), "{out:?}");
            }
            // Validation refuses such details with a reason.
            let err = check_details(details).unwrap_err();
            assert!(err.contains("marker"), "{err}");
        }
    }

    #[test]
    fn scrubber_withholds_text_where_the_marker_spells_a_needle() {
        // "xxxxxfoo" -> "[embargoed]foo", which contains the needle "ed]foo".
        let e = Embargo::from_needles(vec!["ed]foo".into(), "xxxxx".into()]);
        assert_eq!(scrub_bounded(&e, "xxxxxfoo"), WITHHELD);
        assert_eq!(scrub_bounded(&e, "a xxxxx b"), "a [embargoed] b");
    }

    #[test]
    fn details_that_cannot_be_withheld_are_rejected() {
        assert!(check_details("CVE-2026-1234 (local root exploit)").is_ok());
        assert!(check_details("   ").unwrap_err().contains("empty"));
        assert!(
            check_details(" xss ")
                .unwrap_err()
                .contains("shorter than 5")
        );
        assert!(check_details("EMBARGO").unwrap_err().contains("marker"));
        assert!(check_details("kernel").is_ok());
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any details and any text: the scrubber returns, its output is bounded
        /// and holds no embargoed text.
        #[test]
        fn scrub_terminates_and_leaves_no_details(
            details in proptest::prop_oneof![
                "\\PC{0,40}",
                "[\\[\\]a-zE ]{0,14}",
                proptest::sample::select(vec![
                    "", " ", "Embargoed", "[embargoed]", "embargoed]x", "aaaaa",
                    "CVE-2026-1234", "Grüße-2026-ü", "ababa",
                ]).prop_map(|s: &str| s.to_string()),
            ],
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    "\\PC{0,12}",
                    proptest::sample::select(vec![
                        "[embargoed]", "embargoed", "aaaa", "ab", "CVE-2026-1234", "ü", "ed]",
                    ]).prop_map(|s: &str| s.to_string()),
                ],
                0..8,
            ),
            use_details in proptest::bool::ANY,
        ) {
            let e = Embargo::new(Some(&details));
            let mut text = String::new();
            for p in &pieces {
                text.push_str(p);
                if use_details {
                    text.push_str(&details);
                }
            }
            let out = e.scrub(&text);
            proptest::prop_assert!(!e.leaks(&out), "{:?} in {:?} -> {:?}", details, text, out);
            proptest::prop_assert!(out.len() <= text.len().max(1) * REDACTED.len());
            if !e.leaks(&text) {
                proptest::prop_assert_eq!(out.as_ref(), text.as_str());
            }
        }
    }
}

//! User message templates: plain text with `{variable}` placeholders.
//!
//! `{{` and `}}` stand for literal braces. Unknown variables and unbalanced
//! braces are errors, reported by `sofort validate` and by the controller before
//! anything is sent. `{details}` renders the embargoed advisory details in the
//! `Completed` notification and nothing in every other one.

use std::fmt;

/// Every variable a template may use, with its meaning (for docs and hints).
pub const VARIABLES: &[(&str, &str)] = &[
    ("policy", "name of the PatchPolicy"),
    ("revision", "revision being rolled out"),
    ("event", "notification name, for example Started"),
    ("summary", "advisory summary (public)"),
    ("nodes", "number of servers selected"),
    ("updated", "number of servers updated so far"),
    ("failed", "number of servers that failed"),
    ("node", "the failed server (NodeFailed only)"),
    ("failed_nodes", "failed servers, comma-separated"),
    (
        "window",
        "first maintenance window, in the policy's time zone",
    ),
    (
        "expected_done",
        "expected completion, in the policy's time zone",
    ),
    (
        "details",
        "advisory details; only in Completed, empty otherwise",
    ),
    ("text", "the default message text of this notification"),
];

/// A parse error, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` with a name that is not a variable.
    #[error(
        "unknown variable {{{name}}} at position {offset}{hint}; variables are {}",
        variable_list()
    )]
    UnknownVariable {
        /// The name used.
        name: String,
        /// Byte offset of the `{`.
        offset: usize,
        /// `; did you mean {x}?` or empty.
        hint: String,
    },
    /// A `{` without its `}`.
    #[error(
        "unclosed '{{' at position {offset}; close it with '}}' or write '{{{{' for a literal brace"
    )]
    Unclosed {
        /// Byte offset of the `{`.
        offset: usize,
    },
    /// A `}` without a `{`.
    #[error("unmatched '}}' at position {offset}; write '}}}}' for a literal brace")]
    Unmatched {
        /// Byte offset of the `}`.
        offset: usize,
    },
}

fn variable_list() -> String {
    VARIABLES
        .iter()
        .map(|(n, _)| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(&'static str),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template, rejecting unknown variables and unbalanced braces.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = src.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(TemplateError::Unmatched { offset: i }),
                '{' => {
                    let rest = &src[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(TemplateError::Unclosed { offset: i });
                    };
                    let name = rest[..end].trim();
                    if name.contains('{') {
                        return Err(TemplateError::Unclosed { offset: i });
                    }
                    let Some(&(var, _)) = VARIABLES.iter().find(|(v, _)| *v == name) else {
                        return Err(TemplateError::UnknownVariable {
                            name: name.to_string(),
                            offset: i,
                            hint: suggest(name)
                                .map(|s| format!("; did you mean {{{s}}}?"))
                                .unwrap_or_default(),
                        });
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Var(var));
                    // Skip the name and the closing brace.
                    while let Some(&(j, _)) = chars.peek() {
                        chars.next();
                        if j == i + 1 + end {
                            break;
                        }
                    }
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// Renders with `lookup` giving each variable's value.
    pub fn render(&self, lookup: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&lookup(v)),
            }
        }
        out
    }

    /// True when the template uses `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if *v == name))
    }
}

fn suggest(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .map(|(v, _)| (strsim::levenshtein(name, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 4))
        .min()
        .map(|(_, v)| v)
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Text(t) => f.write_str(&t.replace('{', "{{").replace('}', "}}"))?,
                Part::Var(v) => write!(f, "{{{v}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_known_variables_and_escapes() {
        let t = Template::parse("{{x}} {policy}: { summary } done").unwrap();
        let out = t.render(|v| format!("<{v}>"));
        assert_eq!(out, "{x} <policy>: <summary> done");
        assert!(t.uses("summary"));
        assert!(!t.uses("details"));
        assert_eq!(Template::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn rejects_unknown_variables_with_a_hint() {
        let e = Template::parse("hello {sumary}").unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownVariable {
                name: "sumary".into(),
                offset: 6,
                hint: "; did you mean {summary}?".into()
            }
        );
        assert!(e.to_string().contains("{expected_done}"), "{e}");
        assert!(matches!(
            Template::parse("{cve}"),
            Err(TemplateError::UnknownVariable { .. })
        ));
    }

    #[test]
    fn rejects_unbalanced_braces() {
        assert_eq!(
            Template::parse("a {policy"),
            Err(TemplateError::Unclosed { offset: 2 })
        );
        assert_eq!(
            Template::parse("a } b"),
            Err(TemplateError::Unmatched { offset: 2 })
        );
        assert_eq!(
            Template::parse("{ {policy}"),
            Err(TemplateError::Unclosed { offset: 0 })
        );
        assert!(Template::parse("").is_ok());
        assert!(Template::parse("ünïcode {event} ✓").is_ok());
    }
}

//! The body of a generic webhook: a JSON document written by the user, whose
//! string values may use the template variables (see [`super::template`]).
//!
//! The document is parsed once, when the webhook is resolved; every string in
//! it (object keys stay as written) is parsed as a [`Template`]. Rendering
//! fills each string in and builds the JSON value again, so whatever a
//! variable holds (quotes, braces, newlines) stays inside its string: a
//! summary can never add fields or break the document.

use serde_json::Value;

use super::template::{Template, TemplateError};

/// Nesting deeper than this is refused (the document is at most 4 KiB anyway).
pub const MAX_DEPTH: usize = 16;

/// Why a generic webhook's template is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonTemplateError {
    /// Not JSON.
    #[error(
        "is not a JSON document ({0}); write the request body as JSON, for example {{\"name\": \"{{summary}}\", \"status\": \"{{event}}\"}}"
    )]
    NotJson(String),
    /// Too deeply nested.
    #[error("nests deeper than {MAX_DEPTH} levels; flatten the request body")]
    TooDeep,
    /// A string value is not a valid template.
    #[error("string at {path}: {source}")]
    Template {
        /// JSON pointer of the string.
        path: String,
        /// The template problem.
        #[source]
        source: TemplateError,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    Text(Template),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A parsed generic-webhook body.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate {
    root: Node,
    uses: Vec<&'static str>,
}

fn build(
    v: &Value,
    path: &str,
    depth: usize,
    uses: &mut Vec<&'static str>,
) -> Result<Node, JsonTemplateError> {
    if depth > MAX_DEPTH {
        return Err(JsonTemplateError::TooDeep);
    }
    Ok(match v {
        Value::String(s) => {
            let t = Template::parse(s).map_err(|source| JsonTemplateError::Template {
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
                source,
            })?;
            for (name, _) in super::template::VARIABLES {
                if t.uses(name) && !uses.contains(name) {
                    uses.push(name);
                }
            }
            Node::Text(t)
        }
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| build(x, &format!("{path}/{i}"), depth + 1, uses))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, x)| {
                    let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                    Ok((k.clone(), build(x, &p, depth + 1, uses)?))
                })
                .collect::<Result<_, JsonTemplateError>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

fn fill(n: &Node, value: &dyn Fn(&str) -> String) -> Value {
    match n {
        Node::Literal(v) => v.clone(),
        Node::Text(t) => Value::String(t.render(value)),
        Node::Array(items) => Value::Array(items.iter().map(|x| fill(x, value)).collect()),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, x)| (k.clone(), fill(x, value)))
                .collect(),
        ),
    }
}

impl JsonTemplate {
    /// Parses the body template.
    pub fn parse(src: &str) -> Result<JsonTemplate, JsonTemplateError> {
        let v: Value =
            serde_json::from_str(src).map_err(|e| JsonTemplateError::NotJson(e.to_string()))?;
        let mut uses = Vec::new();
        let root = build(&v, "", 0, &mut uses)?;
        Ok(JsonTemplate { root, uses })
    }

    /// True when some string uses `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.uses.contains(&name)
    }

    /// The body with every variable filled in by `value`.
    pub fn render(&self, value: impl Fn(&str) -> String) -> Value {
        fill(&self.root, &value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_strings_and_keeps_structure() {
        let t = JsonTemplate::parse(
            r#"{"name": "{summary}", "status": "{event}", "components": ["web"], "impact": 2, "deliver": true, "meta": {"n": "{nodes} servers"}}"#,
        )
        .unwrap();
        assert!(t.uses("summary") && t.uses("nodes") && !t.uses("details"));
        let v = t.render(|n| match n {
            "summary" => "R\"&D\" {x}\n".into(),
            "event" => "Started".into(),
            "nodes" => "12".into(),
            _ => String::new(),
        });
        assert_eq!(v["name"], "R\"&D\" {x}\n");
        assert_eq!(v["status"], "Started");
        assert_eq!(v["components"][0], "web");
        assert_eq!(v["impact"], 2);
        assert_eq!(v["deliver"], true);
        assert_eq!(v["meta"]["n"], "12 servers");
        // The text of a variable cannot add a field.
        assert_eq!(v.as_object().map(|o| o.len()), Some(6));
    }

    #[test]
    fn refuses_bad_documents_with_their_path() {
        assert!(matches!(
            JsonTemplate::parse("{summary}"),
            Err(JsonTemplateError::NotJson(_))
        ));
        let e = JsonTemplate::parse(r#"{"a": [1, "{nope}"]}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("string at /a/1: unknown variable"),
            "{e}"
        );
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(JsonTemplate::parse(&deep), Err(JsonTemplateError::TooDeep));
    }
}

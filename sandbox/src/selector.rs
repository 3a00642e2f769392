//! Label selectors (string form and `metav1.LabelSelector`) and field selectors.

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = |why: &str| ApiError::bad_request(format!("unable to parse requirement: {why}"));
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let req = if let Some(open) = part.find('(') {
                let close = part
                    .rfind(')')
                    .ok_or_else(|| bad(&format!("missing ')' in {part:?}")))?;
                let head: Vec<&str> = part[..open].split_whitespace().collect();
                let values: Vec<String> = part[open + 1..close]
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if head.len() != 2 {
                    return Err(bad(&format!(
                        "expected `key in (...)` or `key notin (...)`, got {part:?}"
                    )));
                }
                let op = match head[1] {
                    "in" => Op::In(values),
                    "notin" => Op::NotIn(values),
                    other => return Err(bad(&format!("unknown operator {other:?}"))),
                };
                Requirement {
                    key: head[0].to_string(),
                    op,
                }
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement {
                    key: k.trim().to_string(),
                    op: Op::NotExists,
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement {
                    key: k.trim().to_string(),
                    op: Op::Ne(v.trim().to_string()),
                }
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement {
                    key: k.trim().to_string(),
                    op: Op::Eq(v.trim().to_string()),
                }
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement {
                    key: k.trim().to_string(),
                    op: Op::Eq(v.trim().to_string()),
                }
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(&format!("{v:?} is not an integer")))?;
                Requirement {
                    key: k.trim().to_string(),
                    op: Op::Gt(n),
                }
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(&format!("{v:?} is not an integer")))?;
                Requirement {
                    key: k.trim().to_string(),
                    op: Op::Lt(n),
                }
            } else {
                Requirement {
                    key: part.clone(),
                    op: Op::Exists,
                }
            };
            if !valid_key(&req.key) {
                return Err(bad(&format!("invalid label key {:?}", req.key)));
            }
            let values: Vec<&String> = match &req.op {
                Op::Eq(v) | Op::Ne(v) => vec![v],
                Op::In(vs) | Op::NotIn(vs) => vs.iter().collect(),
                _ => vec![],
            };
            if let Some(v) = values.into_iter().find(|v| !valid_value(v)) {
                return Err(bad(&format!("invalid label value {v:?}")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    /// From a `metav1.LabelSelector` object. `None` means the object is malformed.
    pub fn from_object(sel: &Value) -> Option<Self> {
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::Eq(v.as_str()?.to_string()),
                });
            }
        }
        if let Some(me) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in me {
                let key = e.get("key")?.as_str()?.to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator")?.as_str()? {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::NotExists,
                    _ => return None,
                };
                reqs.push(Requirement { key, op });
            }
        }
        Some(LabelSelector { reqs })
    }

    pub fn matches_labels(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match &r.op {
                Op::Eq(x) => v == Some(x.as_str()),
                Op::Ne(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if self.reqs.is_empty() {
            return true;
        }
        self.matches_labels(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// The value a field label has on an object, as the real server renders it.
pub fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => {
                return match field {
                    "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
                    _ => String::new(),
                };
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parse and check every field is one the resource supports.
    pub fn parse(s: &str, allowed: impl Fn(&str) -> bool) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, neg, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !allowed(field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), neg, unescape(value.trim())));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs
            .iter()
            .all(|(f, neg, v)| (field_value(obj, f) == *v) != *neg)
    }

    /// The value `field` must equal, when the selector requires one.
    pub fn required(&self, field: &str) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(f, neg, _)| f == field && !neg)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_forms() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front", "n": "5"}}});
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "tier notin (back)",
            "app",
            "!missing",
            "app=web,tier in (front)",
            "n>3",
            "n<7",
            "",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&obj),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "tier notin (front,x)",
            "missing",
            "!app",
            "n>5",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&obj),
                "{s} should not match"
            );
        }
        assert!(LabelSelector::parse("app in (a").is_err());
    }

    #[test]
    fn field_selector_forms() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let ok = |_: &str| true;
        assert!(
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", ok)
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("spec.nodeName==n2", ok)
                .unwrap()
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.unschedulable=false", ok)
                .unwrap()
                .matches(&json!({}))
        );
        assert!(FieldSelector::parse("bogus=1", |f| f == "x").is_err());
    }
}

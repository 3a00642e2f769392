//! `sofort validate`: every problem of the PatchPolicy documents of YAML
//! files, each with its field path and a hint that says how to fix it.
//!
//! The rules live in the pure core ([`crate::core::spec::parse`]); this module
//! adds what belongs to files and to the API server: reading multi-document
//! YAML (bounded in documents, nesting and values), walking the CRD's own
//! schema the way the API server's structural validation does
//! ([`SchemaChecker`]), decoding into the controller's types, and the CLI.
//! [`parse_spec`] is the rules plus the schema's bounds: the controller and
//! `sofort plan` parse a spec with it, so a GitOps repository's CI, the
//! controller's `Stalled` message and the forecast report the same problems.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::api::{PatchPolicy, PatchPolicySpec};
use crate::core::spec::Parsed;
pub use crate::core::spec::{Problem, check_label_key, problem, suggest_time_zone};

/// Validates a whole PatchPolicy object (metadata and spec).
pub fn validate_policy(policy: &PatchPolicy) -> Vec<Problem> {
    let mut out = crate::core::spec::policy_problems(policy);
    let spec_problems = spec_schema_problems(&policy.spec);
    let mut seen: BTreeSet<String> = out.iter().map(|p| p.path.clone()).collect();
    for p in spec_problems {
        if seen.insert(p.path.clone()) {
            out.push(p);
        }
    }
    out
}

/// Validates a spec and returns every problem found (empty when valid).
pub fn validate_spec(spec: &PatchPolicySpec) -> Vec<Problem> {
    parse_spec(spec).problems
}

/// The spec parsed by [`crate::core::spec::parse`] and held to the CRD
/// schema's own bounds (lengths, list sizes, number ranges, patterns), so the
/// controller refuses exactly what the API server would have refused, also
/// for an object stored before a bound was added. The controller (once per
/// resourceVersion), `sofort validate` and `sofort plan` use this.
pub fn parse_spec(spec: &PatchPolicySpec) -> Parsed {
    let mut parsed = crate::core::spec::parse(spec);
    parsed.add_problems(spec_schema_problems(spec));
    parsed
}

/// The CRD's schema, built once.
fn whole_schema() -> Option<&'static Value> {
    static SCHEMA: std::sync::OnceLock<Option<Value>> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(crd_schema).as_ref()
}

/// The spec's schema within the CRD.
fn spec_schema() -> Option<&'static Value> {
    whole_schema()?.pointer("/properties/spec")
}

fn spec_schema_problems(spec: &PatchPolicySpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let (Some(schema), Ok(value)) = (spec_schema(), serde_json::to_value(spec)) else {
        return out;
    };
    let mut checker = SchemaChecker::default();
    checker.check_under("spec", &value, schema, &mut out);
    out
}

/// A problem found in one document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocProblem {
    /// 1-based index of the YAML document in its file.
    pub doc: usize,
    /// The policy's name, when it has one.
    pub name: Option<String>,
    /// The problem.
    pub problem: Problem,
}

/// Summary of checking one YAML text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TextReport {
    /// PatchPolicy documents found.
    pub policies: usize,
    /// Problems found.
    pub problems: Vec<DocProblem>,
    /// Schema nodes visited: a measure of the work done, linear in the input.
    pub work: usize,
}

/// Most problems reported for one document; the rest are counted.
pub const MAX_PROBLEMS_PER_DOCUMENT: usize = 100;
/// Most values of one document that are checked against the schema. A policy
/// within the CRD's own limits has far fewer; a larger document is refused.
pub const MAX_VALUES_PER_DOCUMENT: usize = 200_000;
/// Most documents read from one text.
pub const MAX_DOCUMENTS: usize = 10_000;

/// Checks every PatchPolicy document of a (multi-document) YAML text. Documents
/// of other kinds are skipped, so a whole GitOps directory can be passed.
///
/// Each document is checked three ways, and every problem of all three is
/// reported: against the CRD's schema (types, unknown fields, the length, list
/// and number bounds), by decoding into the controller's types (what the
/// controller would report as `InvalidSpec`), and by [`validate_policy`].
pub fn validate_yaml_text(text: &str) -> TextReport {
    let mut report = TextReport::default();
    let Some(schema) = whole_schema() else {
        report.problems.push(DocProblem {
            doc: 0,
            name: None,
            problem: problem("(document)", "the built-in CRD schema cannot be read"),
        });
        return report;
    };
    if flow_depth(text) > MAX_FLOW_DEPTH {
        report.problems.push(DocProblem {
            doc: 1,
            name: None,
            problem: problem(
                "(document)",
                format!("nested more than {MAX_FLOW_DEPTH} levels deep in [ ] or {{ }}; no PatchPolicy is"),
            ),
        });
        return report;
    }
    let mut checker = SchemaChecker::default();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        if doc > MAX_DOCUMENTS {
            report.problems.push(DocProblem {
                doc,
                name: None,
                problem: problem(
                    "(document)",
                    format!("more than {MAX_DOCUMENTS} documents; split the file"),
                ),
            });
            break;
        }
        let value: Value = match serde::Deserialize::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                report.problems.push(DocProblem {
                    doc,
                    name: None,
                    problem: problem("(document)", format!("not valid YAML: {e}")),
                });
                // The YAML stream cannot be resumed after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str);
        let api_version = value.get("apiVersion").and_then(Value::as_str);
        if kind != Some("PatchPolicy") {
            continue;
        }
        report.policies += 1;
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let want = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
        let problems = if api_version != Some(want.as_str()) {
            vec![problem(
                "apiVersion",
                format!("{:?} is not served; use {want}", api_version.unwrap_or("")),
            )]
        } else {
            check_document(&value, schema, &mut checker)
        };
        let total = problems.len();
        for p in problems.into_iter().take(MAX_PROBLEMS_PER_DOCUMENT) {
            report.problems.push(DocProblem {
                doc,
                name: name.clone(),
                problem: p,
            });
        }
        if total > MAX_PROBLEMS_PER_DOCUMENT {
            report.problems.push(DocProblem {
                doc,
                name: name.clone(),
                problem: problem(
                    "(document)",
                    format!(
                        "{} more problems not shown; fix the ones above first",
                        total - MAX_PROBLEMS_PER_DOCUMENT
                    ),
                ),
            });
        }
    }
    report.work = checker.work;
    report
}

/// Deepest `[ ]`/`{ }` nesting read. The YAML parser's work grows with the
/// square of this depth, and its own limit for decoding is 128 levels anyway.
pub const MAX_FLOW_DEPTH: usize = 128;

/// The deepest flow-collection nesting of a YAML text, in one linear scan.
/// Brackets inside strings count too: skipping quotes would let a stray
/// apostrophe hide the nesting from this guard, and no policy has 128
/// unclosed brackets in a string.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in text.bytes() {
        match c {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Every problem of one PatchPolicy document: the checks of
/// [`validate_policy`] first (their messages say most about the fix), then the
/// schema's, then the decoding error; a path already reported by an earlier
/// stage is not reported again. The semantic checks run only on a document
/// within the schema's size limits, so their cost stays bounded.
fn check_document(value: &Value, schema: &Value, checker: &mut SchemaChecker) -> Vec<Problem> {
    let mut schema_problems = Vec::new();
    checker.check(value, schema, &mut schema_problems);
    let decoded = crate::api::decode_policy(value);
    let mut out = Vec::new();
    if let Ok(policy) = &decoded
        && !checker.oversize
    {
        out = validate_policy(policy);
    }
    let mut seen: BTreeSet<String> = out.iter().map(|p| p.path.clone()).collect();
    for p in schema_problems {
        if seen.insert(p.path.clone()) {
            out.push(p);
        }
    }
    if let Err(e) = decoded {
        let path = if e.path == "(object)" {
            "(document)".to_string()
        } else {
            e.path
        };
        // A missing field is reported at the object that lacks it.
        let covered = seen.contains(&path)
            || (e.message.starts_with("missing field")
                && seen.iter().any(|p| p.starts_with(&path)));
        if !covered {
            out.push(problem(path, e.message));
        }
    }
    out
}

fn crd_schema() -> Option<Value> {
    let crd = crate::cmd::crd::patch_policy_crd();
    let schema = crd
        .spec
        .versions
        .first()?
        .schema
        .as_ref()?
        .open_api_v3_schema
        .as_ref()?;
    serde_json::to_value(schema).ok()
}

/// Checks a value against the CRD's OpenAPI schema the way the API server's
/// structural validation does: types, unknown fields, required fields, enums,
/// patterns, `maxLength`/`minLength`, `maxItems`/`minItems`, `maximum`/`minimum`
/// and the int32/int64 ranges. CEL rules are not evaluated here (see
/// [`crate::cmd::validate::validate_policy`] for the same rules in code).
///
/// The work is linear in the size of the value: the field path is kept as a
/// stack and written out only for a problem, and at most
/// [`MAX_VALUES_PER_DOCUMENT`] values are visited.
#[derive(Default)]
pub struct SchemaChecker {
    /// Values visited so far.
    pub work: usize,
    /// The last document broke a length, list-size or value-count limit.
    pub oversize: bool,
    budget_left: usize,
    path: Vec<Segment>,
    patterns: BTreeMap<String, Option<regex::Regex>>,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl SchemaChecker {
    /// Checks `value` (a whole object) against `schema`; problems go to `out`.
    pub fn check(&mut self, value: &Value, schema: &Value, out: &mut Vec<Problem>) {
        self.budget_left = MAX_VALUES_PER_DOCUMENT;
        self.oversize = false;
        self.path.clear();
        self.walk(value, schema, out, true);
        if self.budget_left == 0 {
            self.oversize = true;
            out.push(problem(
                "(document)",
                format!(
                    "more than {MAX_VALUES_PER_DOCUMENT} values; a PatchPolicy within the CRD's limits is far smaller"
                ),
            ));
        }
    }

    /// Checks `value`, the field `key` of a whole object, against its schema.
    pub fn check_under(
        &mut self,
        key: &str,
        value: &Value,
        schema: &Value,
        out: &mut Vec<Problem>,
    ) {
        self.budget_left = MAX_VALUES_PER_DOCUMENT;
        self.oversize = false;
        self.path.clear();
        self.path.push(Segment::Key(key.to_string()));
        self.walk(value, schema, out, false);
        self.path.clear();
    }

    fn path_string(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                Segment::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Segment::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        if s.is_empty() {
            "(document)".to_string()
        } else {
            s
        }
    }

    fn report(&self, out: &mut Vec<Problem>, message: String) {
        if out.len() <= MAX_PROBLEMS_PER_DOCUMENT {
            out.push(problem(self.path_string(), message));
        }
    }

    fn walk(&mut self, value: &Value, schema: &Value, out: &mut Vec<Problem>, root: bool) {
        if self.budget_left == 0 {
            return;
        }
        self.budget_left -= 1;
        self.work += 1;
        if value.is_null() {
            // Kubernetes drops nulls of nullable fields; others are type errors.
            if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
                self.report(out, "must not be null; remove the field instead".into());
            }
            return;
        }
        let int_or_string = schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true);
        let ty = schema.get("type").and_then(Value::as_str);
        let fits = match (ty, value) {
            _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
            (None, _) => true,
            (Some("object"), Value::Object(_)) => true,
            (Some("array"), Value::Array(_)) => true,
            (Some("string"), Value::String(_)) => true,
            (Some("boolean"), Value::Bool(_)) => true,
            (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Some("number"), Value::Number(_)) => true,
            _ => false,
        };
        if !fits {
            let want = if int_or_string {
                "an integer or a string"
            } else {
                match ty {
                    Some("object") => "an object (key: value lines)",
                    Some("array") => "a list",
                    Some("string") => "a string",
                    Some("boolean") => "true or false",
                    Some("integer") => "a whole number",
                    Some("number") => "a number",
                    _ => "another type",
                }
            };
            self.report(out, format!("must be {want}"));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            self.report(out, format!("must be one of {}", names.join(", ")));
        }
        match value {
            Value::String(s) => self.check_string(s, schema, out),
            Value::Number(n) => self.check_number(n, schema, int_or_string, out),
            Value::Array(items) => self.check_array(items, schema, out),
            Value::Object(map) => self.check_object(map, schema, out, root),
            _ => {}
        }
    }

    fn check_string(&mut self, s: &str, schema: &Value, out: &mut Vec<Problem>) {
        let max = schema.get("maxLength").and_then(Value::as_u64);
        let min = schema.get("minLength").and_then(Value::as_u64);
        if max.is_some() || min.is_some() {
            // Characters, as the API server counts them.
            let len = s.chars().count() as u64;
            if let Some(max) = max.filter(|m| len > *m) {
                self.oversize = true;
                self.report(
                    out,
                    format!("is {len} characters long; at most {max} are allowed"),
                );
                return;
            }
            if let Some(min) = min.filter(|m| len < *m) {
                self.report(out, format!("must be at least {min} characters long"));
                return;
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let re = self
                .patterns
                .entry(pattern.to_string())
                .or_insert_with(|| regex::Regex::new(pattern).ok());
            if let Some(re) = re
                && !re.is_match(s)
            {
                let message = format!("does not match the pattern {pattern}");
                self.report(out, message);
            }
        }
    }

    fn check_number(
        &mut self,
        n: &serde_json::Number,
        schema: &Value,
        int_or_string: bool,
        out: &mut Vec<Problem>,
    ) {
        let format = schema.get("format").and_then(Value::as_str);
        let (lo, hi) = match format {
            // The API server stores int-or-string integers as int32.
            _ if int_or_string => (i64::from(i32::MIN), i64::from(i32::MAX)),
            Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
            Some("uint32") => (0, i64::from(u32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        let Some(v) = n.as_i64() else {
            if n.is_u64()
                || n.is_f64() && schema.get("type").and_then(Value::as_str) == Some("integer")
            {
                self.report(out, format!("is too large; at most {hi}"));
            }
            return;
        };
        if v < lo || v > hi {
            self.report(out, format!("is out of range; use {lo} to {hi}"));
            return;
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && (v as f64) > max
        {
            self.report(out, format!("{v} is more than the maximum {max}"));
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (v as f64) < min
        {
            self.report(out, format!("{v} is less than the minimum {min}"));
        }
    }

    fn check_array(&mut self, items: &[Value], schema: &Value, out: &mut Vec<Problem>) {
        let len = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            self.oversize = true;
            self.report(out, format!("has {len} items; at most {max} are allowed"));
            return;
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            self.report(out, format!("must have at least {min} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                self.path.push(Segment::Index(i));
                self.walk(v, item_schema, out, false);
                self.path.pop();
                if self.budget_left == 0 {
                    return;
                }
            }
        }
    }

    fn check_object(
        &mut self,
        map: &serde_json::Map<String, Value>,
        schema: &Value,
        out: &mut Vec<Problem>,
        root: bool,
    ) {
        if schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return;
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    self.path.push(Segment::Key(r.to_string()));
                    self.report(out, "is required".into());
                    self.path.pop();
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (k, v) in map {
            if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                continue;
            }
            self.path.push(Segment::Key(k.clone()));
            if let Some(s) = props.and_then(|p| p.get(k)) {
                self.walk(v, s, out, false);
            } else if let Some(s) = additional {
                self.walk(v, s, out, false);
            } else if props.is_some() {
                self.report(
                    out,
                    "unknown field; check the spelling (`kubectl explain patchpolicy.spec` lists the fields)".into(),
                );
            }
            self.path.pop();
            if self.budget_left == 0 {
                return;
            }
        }
    }
}

/// Errors reading policy files.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}; check the path and permissions")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn read_input(path: &Path) -> Result<String, ReadError> {
    let shown = path.display().to_string();
    if shown == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| ReadError::Io {
                path: shown,
                source,
            })?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(|source| ReadError::Io {
            path: shown,
            source,
        })
    }
}

/// `sofort validate`: prints one line per problem, exits 1 when any was found.
pub fn run_cli(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    let mut policies = 0;
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    for path in files {
        let shown = if path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let text = match read_input(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let report = validate_yaml_text(&text);
        policies += report.policies;
        per_file.insert(shown.clone(), report.policies);
        for p in &report.problems {
            failed = true;
            println!("{shown}:{}: {}", p.doc, p.problem);
        }
        if report.policies == 0 && report.problems.is_empty() {
            eprintln!("{shown}: note: no PatchPolicy documents found");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        eprintln!(
            "{policies} PatchPolic{} valid",
            if policies == 1 { "y" } else { "ies" }
        );
        ExitCode::SUCCESS
    }
}

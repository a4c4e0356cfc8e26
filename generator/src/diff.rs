//! What changed between two versions of a spec, and which changes break
//! clients that were written against the old one.

use std::collections::{BTreeMap, BTreeSet};

use bmm_spec::{Tool, ToolSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tool names added, removed and changed, plus one sentence per breaking change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// e.g. "tool get_weather was removed", "tool search: argument limit is now required".
    pub breaking: Vec<String>,
}

impl SpecDiff {
    /// No tool was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    pub fn is_breaking(&self) -> bool {
        !self.breaking.is_empty()
    }
}

/// Compares two specs tool by tool (tools are matched by name).
pub fn diff(old: &ToolSpec, new: &ToolSpec) -> SpecDiff {
    let mut d = SpecDiff::default();
    for t in &old.tools {
        if new.tool(&t.name).is_none() {
            d.removed.push(t.name.clone());
            d.breaking.push(format!("tool {} was removed", t.name));
        }
    }
    for t in &new.tools {
        match old.tool(&t.name) {
            None => d.added.push(t.name.clone()),
            Some(o) if o != t => {
                d.changed.push(t.name.clone());
                breaking_changes(o, t, &mut d.breaking);
            }
            Some(_) => {}
        }
    }
    d
}

fn properties(schema: &Value) -> BTreeMap<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn type_name(schema: &Value) -> Option<String> {
    match schema.get("type")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or ")),
        _ => None,
    }
}

fn breaking_changes(old: &Tool, new: &Tool, out: &mut Vec<String>) {
    let name = &new.name;
    let (old_props, new_props) = (properties(&old.input_schema), properties(&new.input_schema));
    let (old_req, new_req) = (required(&old.input_schema), required(&new.input_schema));
    for arg in old_props.keys() {
        if !new_props.contains_key(arg) {
            out.push(format!("tool {name}: argument {arg} was removed"));
        }
    }
    for arg in new_req.difference(&old_req) {
        if old_props.contains_key(arg) {
            out.push(format!("tool {name}: argument {arg} is now required"));
        } else {
            out.push(format!("tool {name}: new argument {arg} is required"));
        }
    }
    for (arg, new_schema) in &new_props {
        let Some(old_schema) = old_props.get(arg) else { continue };
        if let (Some(a), Some(b)) = (type_name(old_schema), type_name(new_schema))
            && a != b
        {
            out.push(format!("tool {name}: argument {arg} changed type from {a} to {b}"));
        }
        if let Some(new_enum) = new_schema.get("enum").and_then(Value::as_array) {
            let dropped: Vec<String> = match old_schema.get("enum").and_then(Value::as_array) {
                Some(old_enum) => old_enum.iter().filter(|v| !new_enum.contains(v)).map(Value::to_string).collect(),
                // An argument that took anything now takes only a list.
                None => vec![],
            };
            if old_schema.get("enum").is_none() {
                out.push(format!("tool {name}: argument {arg} now only accepts a fixed list of values"));
            } else if !dropped.is_empty() {
                out.push(format!("tool {name}: argument {arg} no longer accepts {}", dropped.join(", ")));
            }
        }
    }
    if old.input_schema.get("additionalProperties") != Some(&Value::Bool(false))
        && new.input_schema.get("additionalProperties") == Some(&Value::Bool(false))
    {
        out.push(format!("tool {name}: arguments that are not declared are now refused"));
    }
    for scope in &new.scopes {
        if !old.scopes.contains(scope) {
            out.push(format!("tool {name} now needs the scope {scope}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bmm_spec::{Annotations, Handler, SPEC_VERSION};
    use serde_json::json;

    fn tool(name: &str, schema: Value) -> Tool {
        Tool {
            name: name.into(),
            title: None,
            description: format!("{name} tool"),
            input_schema: schema,
            annotations: Annotations::default(),
            scopes: vec![],
            handler: Handler::Code { typescript: "return 1;".into() },
        }
    }

    fn spec(tools: Vec<Tool>) -> ToolSpec {
        ToolSpec {
            spec_version: SPEC_VERSION.into(),
            name: "S".into(),
            description: "s".into(),
            tools,
            credentials: vec![],
            allowed_hosts: vec![],
        }
    }

    #[test]
    fn identical_specs_have_no_diff() {
        let s = spec(vec![tool("a", json!({"type": "object"}))]);
        let d = diff(&s, &s);
        assert!(d.is_empty() && !d.is_breaking(), "{d:?}");
    }

    #[test]
    fn added_tools_and_description_changes_are_not_breaking() {
        let old = spec(vec![tool("a", json!({"type": "object"}))]);
        let mut changed = tool("a", json!({"type": "object"}));
        changed.description = "better words".into();
        let new = spec(vec![changed, tool("b", json!({"type": "object"}))]);
        let d = diff(&old, &new);
        assert_eq!(d.added, ["b"]);
        assert_eq!(d.changed, ["a"]);
        assert!(d.removed.is_empty());
        assert!(!d.is_breaking(), "{:?}", d.breaking);
    }

    #[test]
    fn breaking_changes_are_named() {
        let old = spec(vec![
            tool("get_weather", json!({"type": "object"})),
            tool(
                "search",
                json!({"type": "object", "properties": {
                    "q": {"type": "string"}, "limit": {"type": "integer"}, "sort": {"type": "string", "enum": ["new", "top", "old"]},
                    "page": {"type": "integer"}, "lang": {"type": "string"},
                }, "required": ["q"]}),
            ),
        ]);
        let mut search = tool(
            "search",
            json!({"type": "object", "properties": {
                "q": {"type": "string"}, "limit": {"type": "integer"}, "sort": {"type": "string", "enum": ["new", "top"]},
                "page": {"type": "string"}, "region": {"type": "string"}, "lang": {"type": "string", "enum": ["en"]},
            }, "required": ["q", "limit", "region"], "additionalProperties": false}),
        );
        search.scopes = vec!["search:write".into()];
        let new = spec(vec![search]);
        let d = diff(&old, &new);
        assert_eq!(d.removed, ["get_weather"]);
        assert_eq!(d.changed, ["search"]);
        assert_eq!(
            d.breaking,
            [
                "tool get_weather was removed",
                "tool search: argument limit is now required",
                "tool search: new argument region is required",
                "tool search: argument lang now only accepts a fixed list of values",
                "tool search: argument page changed type from integer to string",
                "tool search: argument sort no longer accepts \"old\"",
                "tool search: arguments that are not declared are now refused",
                "tool search now needs the scope search:write",
            ]
        );
    }

    #[test]
    fn removed_argument_is_breaking() {
        let old = spec(vec![tool("t", json!({"type": "object", "properties": {"a": {}, "b": {}}}))]);
        let new = spec(vec![tool("t", json!({"type": "object", "properties": {"a": {}}}))]);
        assert_eq!(diff(&old, &new).breaking, ["tool t: argument b was removed"]);
    }
}

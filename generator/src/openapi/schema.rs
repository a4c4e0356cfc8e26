//! OpenAPI schemas → self-contained JSON Schemas for tool inputs.
//!
//! Local `$ref`s are inlined (a tool's input schema must stand alone), with
//! cycle protection, a depth limit and a size budget so a hostile or merely
//! huge document cannot blow up. OpenAPI-only keywords are translated
//! (`nullable`, boolean `exclusiveMinimum`) or dropped.

use serde_json::{Map, Value, json};

use crate::GenerateError;

/// Deeper than this, a schema is replaced by `{}` (accept anything).
const MAX_DEPTH: usize = 12;
/// Schema nodes one tool's input may hold before deeper parts become `{}`.
const NODE_BUDGET: usize = 4_000;

/// JSON Schema keywords kept as they are (after their subschemas are converted).
const KEPT: &[&str] = &[
    "type",
    "title",
    "description",
    "default",
    "enum",
    "const",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "required",
    "minProperties",
    "maxProperties",
    "deprecated",
    "contentEncoding",
    "contentMediaType",
];

/// Resolves references against one document and records what it had to approximate.
pub(crate) struct Resolver<'a> {
    doc: &'a Value,
    stack: Vec<String>,
    nodes: usize,
    pub(crate) warnings: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(doc: &'a Value) -> Self {
        Resolver { doc, stack: Vec::new(), nodes: 0, warnings: Vec::new() }
    }

    /// Starts a new size budget (one per tool).
    pub(crate) fn reset_budget(&mut self) {
        self.nodes = 0;
    }

    /// The object a local `$ref` points at (for parameters, request bodies, security schemes).
    pub(crate) fn deref<'v>(&self, mut v: &'v Value) -> Result<&'v Value, GenerateError>
    where
        'a: 'v,
    {
        // Chains of references are followed, but not forever.
        for _ in 0..16 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => v = self.lookup(r)?,
                None => return Ok(v),
            }
        }
        Err(GenerateError::bad_input("openapi", "has a chain of more than 16 $refs (a reference loop?)"))
    }

    fn lookup(&self, reference: &str) -> Result<&'a Value, GenerateError> {
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(GenerateError::bad_input(
                "openapi",
                format!("$ref {reference:?} points outside the document; bundle it into one file first"),
            ));
        };
        let decoded = percent_decode(pointer);
        self.doc.pointer(&decoded).ok_or_else(|| {
            GenerateError::bad_input(
                "openapi",
                format!("$ref {reference:?} does not resolve to anything in the document"),
            )
        })
    }

    /// A self-contained JSON Schema for `schema`.
    pub(crate) fn convert(&mut self, schema: &Value) -> Result<Value, GenerateError> {
        self.convert_at(schema, 0)
    }

    fn convert_at(&mut self, schema: &Value, depth: usize) -> Result<Value, GenerateError> {
        self.nodes += 1;
        if depth > MAX_DEPTH || self.nodes > NODE_BUDGET {
            return Ok(json!({}));
        }
        let Some(obj) = schema.as_object() else {
            // `true` / `false` schemas (3.1) and junk: `true` accepts anything.
            return Ok(if schema == &Value::Bool(false) { Value::Bool(false) } else { json!({}) });
        };
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            if !reference.starts_with('#') {
                self.warnings.push(format!(
                    "$ref {reference:?} points outside the document; that part of the input accepts any value"
                ));
                return Ok(json!({}));
            }
            if self.stack.iter().any(|r| r == reference) {
                // A recursive type: stop here and accept any object.
                let name = reference.rsplit('/').next().unwrap_or(reference);
                return Ok(json!({"type": "object", "description": format!("A {name} (recursive)")}));
            }
            let target = self.lookup(reference)?;
            self.stack.push(reference.to_owned());
            let resolved = self.convert_at(target, depth + 1);
            self.stack.pop();
            let mut resolved = resolved?;
            // OpenAPI 3.1 allows keywords beside `$ref`; they refine the target.
            let siblings: Map<String, Value> =
                obj.iter().filter(|(k, _)| *k != "$ref").map(|(k, v)| (k.clone(), v.clone())).collect();
            if !siblings.is_empty() {
                let refined = self.convert_at(&Value::Object(siblings), depth + 1)?;
                if let (Some(r), Some(s)) = (resolved.as_object_mut(), refined.as_object()) {
                    for (k, v) in s {
                        r.insert(k.clone(), v.clone());
                    }
                }
            }
            return Ok(resolved);
        }

        let mut out = Map::new();
        for key in KEPT {
            if let Some(v) = obj.get(*key) {
                out.insert((*key).to_owned(), v.clone());
            }
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            let mut converted = Map::new();
            let mut read_only = Vec::new();
            for (name, sub) in props {
                let c = self.convert_at(sub, depth + 1)?;
                // Tool inputs are requests: read-only properties are the server's to set.
                if self.is_read_only(sub) {
                    read_only.push(name.clone());
                    continue;
                }
                converted.insert(name.clone(), c);
            }
            out.insert("properties".into(), Value::Object(converted));
            if let Some(Value::Array(req)) = out.get_mut("required") {
                req.retain(|r| !r.as_str().is_some_and(|r| read_only.iter().any(|n| n == r)));
                if req.is_empty() {
                    out.remove("required");
                }
            }
        }
        for key in ["items", "not"] {
            if let Some(sub) = obj.get(key) {
                let c = self.convert_at(sub, depth + 1)?;
                out.insert(key.into(), c);
            }
        }
        if let Some(sub) = obj.get("additionalProperties") {
            let c = if sub.is_boolean() { sub.clone() } else { self.convert_at(sub, depth + 1)? };
            out.insert("additionalProperties".into(), c);
        }
        for key in ["allOf", "anyOf", "oneOf", "prefixItems"] {
            if let Some(Value::Array(subs)) = obj.get(key) {
                let mut converted = Vec::with_capacity(subs.len());
                for sub in subs {
                    converted.push(self.convert_at(sub, depth + 1)?);
                }
                out.insert(key.into(), Value::Array(converted));
            }
        }
        if let Some(Value::Object(pp)) = obj.get("patternProperties") {
            let mut converted = Map::new();
            for (k, sub) in pp {
                converted.insert(k.clone(), self.convert_at(sub, depth + 1)?);
            }
            out.insert("patternProperties".into(), Value::Object(converted));
        }
        // OpenAPI 3.0 → JSON Schema: `nullable: true` widens the type.
        if obj.get("nullable") == Some(&Value::Bool(true)) {
            if let Some(Value::String(t)) = out.get("type").cloned() {
                out.insert("type".into(), json!([t, "null"]));
            } else if let Some(Value::Array(alternatives)) = out.get_mut("oneOf") {
                alternatives.push(json!({"type": "null"}));
            } else if let Some(Value::Array(alternatives)) = out.get_mut("anyOf") {
                alternatives.push(json!({"type": "null"}));
            }
        }
        // OpenAPI 3.0's boolean exclusive bounds → JSON Schema's numeric ones.
        for (flag, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
            match obj.get(flag) {
                Some(Value::Bool(true)) => {
                    if let Some(b) = out.remove(bound) {
                        out.insert(flag.into(), b);
                    }
                }
                Some(n @ Value::Number(_)) => {
                    out.insert(flag.into(), n.clone());
                }
                _ => {}
            }
        }
        Ok(Value::Object(out))
    }

    fn is_read_only(&self, schema: &Value) -> bool {
        let target = self.deref(schema).unwrap_or(schema);
        schema.get("readOnly") == Some(&Value::Bool(true)) || target.get("readOnly") == Some(&Value::Bool(true))
    }
}

/// Properties and required names of an object schema (already converted),
/// merging `allOf` parts; `None` when it is not an object with properties.
pub(crate) fn object_shape(schema: &Value) -> Option<(Map<String, Value>, Vec<String>)> {
    let mut props = Map::new();
    let mut required = Vec::new();
    let mut found = false;
    collect_shape(schema, &mut props, &mut required, &mut found, 0);
    found.then_some((props, required))
}

fn collect_shape(
    schema: &Value,
    props: &mut Map<String, Value>,
    required: &mut Vec<String>,
    found: &mut bool,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        *found = true;
        for (k, v) in p {
            props.insert(k.clone(), v.clone());
        }
    }
    if let Some(r) = schema.get("required").and_then(Value::as_array) {
        for name in r.iter().filter_map(Value::as_str) {
            if !required.iter().any(|x| x == name) {
                required.push(name.to_owned());
            }
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            collect_shape(part, props, required, found, depth + 1);
        }
    }
}

/// Whether a converted schema describes something other than a JSON object.
pub(crate) fn non_object_type(schema: &Value) -> Option<String> {
    match schema.get("type") {
        Some(Value::String(t)) if t != "object" => Some(t.clone()),
        Some(Value::Array(ts)) if !ts.iter().any(|t| t == "object") => {
            Some(ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "))
        }
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_inlined_and_cycles_stop() {
        let doc = json!({"components": {"schemas": {
            "Node": {"type": "object", "properties": {"name": {"type": "string"}, "child": {"$ref": "#/components/schemas/Node"}}},
        }}});
        let mut r = Resolver::new(&doc);
        let s = r.convert(&json!({"$ref": "#/components/schemas/Node"})).unwrap();
        assert_eq!(s["properties"]["name"], json!({"type": "string"}));
        assert_eq!(s["properties"]["child"], json!({"type": "object", "description": "A Node (recursive)"}));
    }

    #[test]
    fn broken_and_external_refs() {
        let doc = json!({});
        let mut r = Resolver::new(&doc);
        let e = r.convert(&json!({"$ref": "#/components/schemas/Missing"})).unwrap_err();
        assert!(e.to_string().contains("does not resolve"), "{e}");
        let s = r.convert(&json!({"$ref": "common.yaml#/Pet"})).unwrap();
        assert_eq!(s, json!({}));
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn openapi_keywords_are_translated() {
        let doc = json!({});
        let mut r = Resolver::new(&doc);
        let s = r
            .convert(&json!({
                "type": "object", "required": ["id", "n"], "x-internal": true, "example": {"n": 1},
                "properties": {
                    "id": {"type": "integer", "readOnly": true},
                    "n": {"type": "integer", "nullable": true, "minimum": 0, "exclusiveMinimum": true, "xml": {"name": "n"}},
                },
            }))
            .unwrap();
        assert_eq!(
            s,
            json!({"type": "object", "required": ["n"], "properties": {"n": {"type": ["integer", "null"], "exclusiveMinimum": 0}}})
        );
    }

    #[test]
    fn nullable_alternatives_accept_null() {
        let doc = json!({});
        let mut r = Resolver::new(&doc);
        let s = r.convert(&json!({"nullable": true, "oneOf": [{"type": "string"}, {"type": "integer"}]})).unwrap();
        assert_eq!(s, json!({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}));
    }

    #[test]
    fn escaped_pointers_resolve() {
        let doc = json!({"paths": {"/a/{b}": {"x": {"type": "string"}}}});
        let r = Resolver::new(&doc);
        let reference = json!({"$ref": "#/paths/~1a~1%7Bb%7D/x"});
        let v = r.deref(&reference).unwrap();
        assert_eq!(v, &json!({"type": "string"}));
    }

    #[test]
    fn object_shape_merges_all_of() {
        let s = json!({"allOf": [
            {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            {"properties": {"tag": {"type": "string"}}},
        ]});
        let (props, req) = object_shape(&s).unwrap();
        assert_eq!(props.keys().collect::<Vec<_>>(), ["name", "tag"]);
        assert_eq!(req, ["name"]);
        assert!(object_shape(&json!({"type": "array"})).is_none());
        assert_eq!(non_object_type(&json!({"type": "array"})).as_deref(), Some("array"));
    }
}

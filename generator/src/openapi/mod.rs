//! The OpenAPI 3.0 / 3.1 importer: one tool per operation, each an HTTP
//! handler. Deterministic: the same document always gives the same spec.

mod schema;
mod security;

use std::collections::{BTreeMap, BTreeSet};

use bmm_spec::{Annotations, Credential, Handler, HttpCall, SPEC_VERSION, Tool, ToolSpec};
use serde_json::{Map, Value, json};
use url::Url;

use crate::GenerateError;
use crate::check::{MAX_DESCRIPTION_BYTES, MAX_TOOLS};
use crate::names::{arg_name, is_arg_name, snake_case, unique};
use schema::{Resolver, non_object_type, object_shape};
use security::{Placement, Requirement, Schemes, read_schemes, requirement};

/// Longest tool description taken from a document, in bytes (tool lists are read by models: keep them short).
const MAX_TOOL_DESCRIPTION: usize = 1_000;
/// Longest server description taken from a document, in bytes.
const MAX_SERVER_DESCRIPTION: usize = MAX_DESCRIPTION_BYTES;
/// Longest server name, in bytes.
const MAX_SERVER_NAME: usize = 80;

/// Methods a tool can call, in the order tools are listed for each path.
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];
/// Methods an OpenAPI path may have that the HTTP handler cannot send.
const SKIPPED_METHODS: &[&str] = &["head", "options", "trace"];

/// A spec imported from a document, and what could not be imported exactly.
#[derive(Debug, Clone)]
pub struct Imported {
    pub spec: ToolSpec,
    pub warnings: Vec<String>,
}

/// The checks a document must pass before a model sees it: JSON or YAML,
/// OpenAPI 3.0 / 3.1 (not Swagger 2), with `paths` and an absolute server.
/// Unlike [`import`] it does not require operations the offline importer can
/// turn into HTTP tools: a model may implement those with code handlers.
pub fn check_document(text: &str) -> Result<(), GenerateError> {
    let doc = parse_document(text)?;
    check_version(&doc)?;
    if !doc.get("paths").is_some_and(Value::is_object) {
        return Err(GenerateError::bad_input("openapi", "has no `paths`; there are no operations to make tools from"));
    }
    let resolver = Resolver::new(&doc);
    let mut imp = Importer {
        doc: &doc,
        resolver,
        title: String::new(),
        warnings: Vec::new(),
        hosts: BTreeSet::new(),
        used_schemes: BTreeMap::new(),
        tool_names: BTreeSet::new(),
        schemes: Schemes { supported: BTreeMap::new(), unsupported: BTreeMap::new() },
        root_server: None,
    };
    if imp.server(doc.get("servers"), "servers")?.is_none() {
        return Err(GenerateError::bad_input(
            "openapi",
            "has no `servers`; the tools need to know which host to call. \
             Add `servers: [{url: https://api.example.com}]`",
        ));
    }
    Ok(())
}

/// Imports an OpenAPI 3.0 / 3.1 document (JSON or YAML). `description` (the
/// user's words, may be empty) describes the server when the document does not.
pub fn import(text: &str, description: &str) -> Result<Imported, GenerateError> {
    let doc = parse_document(text)?;
    check_version(&doc)?;
    let title = doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("API")
        .to_owned();
    let mut imp = Importer {
        doc: &doc,
        resolver: Resolver::new(&doc),
        title: clip(&title, MAX_SERVER_NAME),
        warnings: Vec::new(),
        hosts: BTreeSet::new(),
        used_schemes: BTreeMap::new(),
        tool_names: BTreeSet::new(),
        schemes: Schemes { supported: BTreeMap::new(), unsupported: BTreeMap::new() },
        root_server: None,
    };
    imp.schemes = read_schemes(&doc, &imp.resolver, &imp.title)?;
    imp.root_server = imp.server(doc.get("servers"), "servers")?;

    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Err(GenerateError::bad_input("openapi", "has no `paths`; there are no operations to make tools from"));
    };
    let mut tools = Vec::new();
    let mut operations = 0usize;
    for (path, item) in paths {
        let item = imp.resolver.deref(item)?;
        for method in SKIPPED_METHODS {
            if item.get(*method).is_some() {
                imp.warnings.push(format!(
                    "{} {path}: {} requests are not supported; skipped",
                    method.to_uppercase(),
                    method.to_uppercase()
                ));
            }
        }
        for method in METHODS {
            let Some(op) = item.get(*method) else { continue };
            operations += 1;
            if let Some(tool) = imp.operation(path, method, item, op)? {
                tools.push(tool);
            }
        }
    }
    if operations == 0 {
        return Err(GenerateError::bad_input(
            "openapi",
            "has no operations under `paths`; there is nothing to make tools from",
        ));
    }
    if tools.is_empty() {
        return Err(GenerateError::bad_input(
            "openapi",
            format!("none of its {operations} operations can be made into a tool: {}", imp.warnings.join("; ")),
        ));
    }
    if tools.len() > MAX_TOOLS {
        imp.warnings.push(format!(
            "the document has {} usable operations; only the first {MAX_TOOLS} (by path) became tools",
            tools.len()
        ));
        tools.truncate(MAX_TOOLS);
    }

    let credentials = imp.credentials(&tools);
    if doc.pointer("/components/securitySchemes").is_none_or(|s| s.as_object().is_none_or(Map::is_empty)) {
        imp.warnings.push(
            "the document declares no security schemes, so the tools send no credentials; \
             calls the API only allows when authenticated will be refused"
                .into(),
        );
    }
    let info_description = doc.pointer("/info/description").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    let server_description = if !info_description.is_empty() {
        clip(info_description, MAX_SERVER_DESCRIPTION)
    } else if !description.trim().is_empty() {
        clip(description.trim(), MAX_SERVER_DESCRIPTION)
    } else {
        format!("Tools for the {} API.", imp.title)
    };
    let mut warnings = imp.warnings;
    warnings.extend(imp.resolver.warnings);
    Ok(Imported {
        spec: ToolSpec {
            spec_version: SPEC_VERSION.into(),
            name: imp.title,
            description: server_description,
            tools,
            credentials,
            allowed_hosts: imp.hosts.into_iter().collect(),
        },
        warnings,
    })
}

struct Importer<'a> {
    doc: &'a Value,
    resolver: Resolver<'a>,
    title: String,
    warnings: Vec<String>,
    hosts: BTreeSet<String>,
    /// Scheme name → whether some tool needs it unconditionally.
    used_schemes: BTreeMap<String, bool>,
    tool_names: BTreeSet<String>,
    schemes: Schemes,
    root_server: Option<Url>,
}

/// One argument of a tool and where it goes.
struct Arg {
    name: String,
    schema: Value,
    required: bool,
}

impl Importer<'_> {
    /// The base URL from a `servers` list, or `None` when the list is absent or empty.
    fn server(&mut self, servers: Option<&Value>, field: &str) -> Result<Option<Url>, GenerateError> {
        let Some(first) = servers.and_then(Value::as_array).and_then(|s| s.first()) else {
            return Ok(None);
        };
        let raw = first.get("url").and_then(Value::as_str).unwrap_or_default().trim();
        let mut url_text = raw.to_owned();
        // Server variables are filled with their defaults.
        if let Some(vars) = first.get("variables").and_then(Value::as_object) {
            for (name, var) in vars {
                let Some(default) = var.get("default").and_then(Value::as_str) else {
                    return Err(GenerateError::bad_input(
                        "openapi",
                        format!("{field}[0].variables.{name} has no default value"),
                    ));
                };
                url_text = url_text.replace(&format!("{{{name}}}"), default);
            }
        }
        if url_text.contains('{') {
            return Err(GenerateError::bad_input(
                "openapi",
                format!("{field}[0].url {raw:?} has a variable that is not declared in `variables`"),
            ));
        }
        let mut url = match Url::parse(&url_text) {
            Ok(u) => u,
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                return Err(GenerateError::bad_input(
                    "openapi",
                    format!(
                        "{field}[0].url {raw:?} is relative; the tools need to know which host to call. \
                         Put an absolute URL such as https://api.example.com{} in `servers`",
                        if raw.starts_with('/') { raw } else { "" }
                    ),
                ));
            }
            Err(e) => {
                return Err(GenerateError::bad_input("openapi", format!("{field}[0].url {raw:?} is not a URL ({e})")));
            }
        };
        match url.scheme() {
            "https" => {}
            "http" => {
                // Generated servers only make TLS calls; the same host almost always serves https.
                let _ = url.set_scheme("https");
                self.warn_once(format!(
                    "{field}[0].url {raw:?} uses plain http; the tools call https://{} instead",
                    host_port(&url)
                ));
            }
            other => {
                return Err(GenerateError::bad_input(
                    "openapi",
                    format!("{field}[0].url {raw:?} uses {other}; only https APIs can be called"),
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(GenerateError::bad_input("openapi", format!("{field}[0].url {raw:?} has no host")));
        }
        Ok(Some(url))
    }

    fn warn_once(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn operation(&mut self, path: &str, method: &str, item: &Value, op: &Value) -> Result<Option<Tool>, GenerateError> {
        let label = format!("{} {path}", method.to_uppercase());
        self.resolver.reset_budget();
        let base = match self.server(op.get("servers"), &format!("paths.{path}.{method}.servers"))? {
            Some(u) => u,
            None => match self.server(item.get("servers"), &format!("paths.{path}.servers"))? {
                Some(u) => u,
                None => self.root_server.clone().ok_or_else(|| {
                    GenerateError::bad_input(
                        "openapi",
                        "has no `servers`; the tools need to know which host to call. \
                         Add `servers: [{url: https://api.example.com}]`",
                    )
                })?,
            },
        };

        // Security first: an operation the server cannot authenticate is left out.
        let security = op.get("security").or_else(|| self.doc.get("security"));
        let (scheme_names, optional_auth) = match requirement(security, &self.schemes) {
            Requirement::None => (Vec::new(), true),
            Requirement::Schemes { names, optional } => (names, optional),
            Requirement::Unsupported(why) => {
                self.warnings
                    .push(format!("{label}: needs authentication the generated server cannot supply ({why}); skipped"));
                return Ok(None);
            }
        };
        let mut headers = BTreeMap::new();
        let mut query = BTreeMap::new();
        for name in &scheme_names {
            let scheme = &self.schemes.supported[name];
            match &scheme.placement {
                Placement::Header { name, value } => headers.insert(name.clone(), value.clone()),
                Placement::Query { name, value } => query.insert(name.clone(), value.clone()),
            };
        }

        let mut args: Vec<Arg> = Vec::new();
        let mut arg_names = BTreeSet::new();
        let mut url_path = path.to_owned();
        for param in self.parameters(item, op)? {
            let p = self.resolver.deref(&param)?;
            let wire = p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let location = p.get("in").and_then(Value::as_str).unwrap_or_default();
            if wire.is_empty() {
                return Err(GenerateError::bad_input("openapi", format!("{label}: a parameter has no `name`")));
            }
            let placed = match location {
                "path" => true,
                "query" => !query.contains_key(&wire),
                // Content negotiation and auth headers are the platform's to set.
                "header" => {
                    !["accept", "content-type", "authorization"].contains(&wire.to_ascii_lowercase().as_str())
                        && !headers.keys().any(|h| h.eq_ignore_ascii_case(&wire))
                }
                "cookie" => {
                    self.warnings.push(format!("{label}: cookie parameter {wire} is not supported; left out"));
                    false
                }
                other => {
                    return Err(GenerateError::bad_input(
                        "openapi",
                        format!("{label}: parameter {wire} has unknown `in: {other}`"),
                    ));
                }
            };
            if !placed {
                continue;
            }
            let mut name = arg_name(&wire);
            if arg_names.contains(&name) {
                name = arg_name(&format!("{wire}_{location}"));
            }
            arg_names.insert(name.clone());
            let raw_schema = p
                .get("schema")
                .or_else(|| {
                    p.get("content")
                        .and_then(Value::as_object)
                        .and_then(|c| c.values().next())
                        .and_then(|m| m.get("schema"))
                })
                .cloned()
                .unwrap_or_else(|| json!({"type": "string"}));
            let mut schema = self.resolver.convert(&raw_schema)?;
            if let Some(d) = p.get("description").and_then(Value::as_str).map(str::trim).filter(|d| !d.is_empty())
                && let Some(o) = schema.as_object_mut()
            {
                o.insert("description".into(), Value::String(d.to_owned()));
            }
            let required = location == "path" || p.get("required") == Some(&Value::Bool(true));
            let placeholder = format!("{{{name}}}");
            match location {
                "path" => url_path = url_path.replace(&format!("{{{wire}}}"), &placeholder),
                "query" => {
                    query.insert(wire.clone(), placeholder);
                }
                _ => {
                    headers.insert(wire.clone(), placeholder);
                }
            }
            args.push(Arg { name, schema, required });
        }
        // Path templates the parameters forgot to declare still need a value.
        let declared: BTreeSet<String> = args.iter().map(|a| a.name.clone()).collect();
        for segment in template_names(&url_path) {
            if !declared.contains(&segment) {
                let name = arg_name(&segment);
                url_path = url_path.replace(&format!("{{{segment}}}"), &format!("{{{name}}}"));
                self.warnings
                    .push(format!("{label}: path parameter {segment} is not declared; treated as a required string"));
                arg_names.insert(name.clone());
                args.push(Arg { name, schema: json!({"type": "string"}), required: true });
            }
        }

        let mut body_args = Vec::new();
        let mut body_from_args = false;
        let mut free_form_body = false;
        if let Some(raw_body) = op.get("requestBody") {
            let body = self.resolver.deref(raw_body)?;
            let body_required = body.get("required") == Some(&Value::Bool(true));
            let content = body.get("content").and_then(Value::as_object).cloned().unwrap_or_default();
            let json_media = content.iter().find(|(m, _)| is_json_media(m)).map(|(_, v)| v.clone());
            match json_media {
                None if content.is_empty() || content.values().all(|m| self.sends_nothing(m)) => {
                    // e.g. Stripe's GET operations declare an empty form body.
                }
                None => {
                    let kinds = content.keys().cloned().collect::<Vec<_>>().join(", ");
                    self.warnings
                        .push(format!("{label}: the request body is {kinds}, but tools can only send JSON; skipped"));
                    return Ok(None);
                }
                Some(media) => {
                    let schema = self.resolver.convert(media.get("schema").unwrap_or(&json!({})))?;
                    if let Some(kind) = non_object_type(&schema) {
                        self.warnings.push(format!(
                            "{label}: the request body is a JSON {kind}, but tools can only send JSON objects; skipped"
                        ));
                        return Ok(None);
                    }
                    match object_shape(&schema) {
                        Some((props, required)) => {
                            for (prop, prop_schema) in props {
                                let needed = body_required && required.contains(&prop);
                                if !is_arg_name(&prop) || arg_names.contains(&prop) {
                                    let why = if arg_names.contains(&prop) {
                                        "clashes with a parameter"
                                    } else {
                                        "is not a usable argument name"
                                    };
                                    if needed {
                                        self.warnings
                                            .push(format!("{label}: required body field {prop:?} {why}; skipped"));
                                        return Ok(None);
                                    }
                                    self.warnings.push(format!("{label}: body field {prop:?} {why}; left out"));
                                    continue;
                                }
                                arg_names.insert(prop.clone());
                                body_args.push(prop.clone());
                                args.push(Arg { name: prop, schema: prop_schema, required: needed });
                            }
                        }
                        None => {
                            // A free-form object: whatever arguments remain are the body.
                            body_from_args = true;
                            free_form_body = true;
                        }
                    }
                }
            }
        }

        let mut properties = Map::new();
        let mut required = Vec::new();
        for a in &args {
            properties.insert(a.name.clone(), a.schema.clone());
            if a.required {
                required.push(Value::String(a.name.clone()));
            }
        }
        let mut input_schema = Map::new();
        input_schema.insert("type".into(), json!("object"));
        input_schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            input_schema.insert("required".into(), Value::Array(required));
        }
        input_schema.insert("additionalProperties".into(), Value::Bool(free_form_body));

        for name in &scheme_names {
            let entry = self.used_schemes.entry(name.clone()).or_insert(false);
            *entry |= !optional_auth;
        }
        self.hosts.insert(host_port(&base));
        let operation_id = op.get("operationId").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        let base_name = snake_case(operation_id.unwrap_or(&format!("{method} {path}")));
        let name = unique(&base_name, &mut self.tool_names);
        let (title, description) = describe(op, &label);
        let is_read = method == "get";
        let annotations = Annotations {
            read_only_hint: Some(is_read),
            destructive_hint: match method {
                "delete" => Some(true),
                "post" | "patch" => Some(false),
                _ => None,
            },
            idempotent_hint: matches!(method, "put" | "delete").then_some(true),
            open_world_hint: Some(true),
        };
        Ok(Some(Tool {
            name,
            title,
            description,
            input_schema: Value::Object(input_schema),
            annotations,
            scopes: Vec::new(),
            handler: Handler::Http(HttpCall {
                method: method.to_uppercase(),
                url: format!("{}{}", base.as_str().trim_end_matches('/'), url_path),
                query,
                headers,
                body_args,
                body_from_args,
            }),
        }))
    }

    /// Whether a (non-JSON) media type's schema is an object that can hold nothing.
    fn sends_nothing(&self, media: &Value) -> bool {
        let Some(schema) = media.get("schema") else { return true };
        let Ok(s) = self.resolver.deref(schema) else { return false };
        s.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty)
            && s.get("additionalProperties") == Some(&Value::Bool(false))
    }

    /// Path-level parameters overridden by operation-level ones (same name and location).
    fn parameters(&self, item: &Value, op: &Value) -> Result<Vec<Value>, GenerateError> {
        let mut merged: Vec<(String, String, Value)> = Vec::new();
        for list in [item.get("parameters"), op.get("parameters")] {
            for raw in list.and_then(Value::as_array).into_iter().flatten() {
                let p = self.resolver.deref(raw)?;
                let key = (
                    p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    p.get("in").and_then(Value::as_str).unwrap_or_default().to_owned(),
                );
                merged.retain(|(n, i, _)| (n, i) != (&key.0, &key.1));
                merged.push((key.0, key.1, p.clone()));
            }
        }
        Ok(merged.into_iter().map(|(_, _, p)| p).collect())
    }

    /// Credentials for the schemes the kept tools use.
    fn credentials(&self, tools: &[Tool]) -> Vec<Credential> {
        let used: BTreeSet<&str> = tools
            .iter()
            .filter_map(|t| match &t.handler {
                Handler::Http(h) => Some(h),
                _ => None,
            })
            .flat_map(|h| h.headers.values().chain(h.query.values()))
            .filter_map(|v| v.split("{{credentials.").nth(1))
            .filter_map(|rest| rest.split("}}").next())
            .collect();
        self.used_schemes
            .iter()
            .filter_map(|(name, required)| {
                let s = &self.schemes.supported[name];
                used.contains(s.key.as_str()).then(|| Credential {
                    key: s.key.clone(),
                    label: s.label.clone(),
                    description: (!s.description.is_empty()).then(|| clip(&s.description, 500)),
                    used_in: Some(s.used_in.clone()),
                    required: *required,
                })
            })
            .collect()
    }
}

/// `(title, description)` of an operation: its summary and the summary plus description.
fn describe(op: &Value, label: &str) -> (Option<String>, String) {
    let text = |k: &str| op.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let summary = text("summary");
    let mut description = match (summary, text("description")) {
        (Some(s), Some(d)) if d.starts_with(s) => d.to_owned(),
        (Some(s), Some(d)) => format!("{s}\n\n{d}"),
        (Some(s), None) => s.to_owned(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => format!("Calls {label}."),
    };
    if op.get("deprecated") == Some(&Value::Bool(true)) {
        description = format!("(Deprecated) {description}");
    }
    (summary.map(|s| clip(s, 100)), clip(&description, MAX_TOOL_DESCRIPTION))
}

fn is_json_media(media: &str) -> bool {
    let m = media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    m == "application/json" || m.ends_with("+json") || m == "*/*" || m == "application/*"
}

fn template_names(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else { break };
        out.push(rest[start + 1..start + len].to_owned());
        rest = &rest[start + len + 1..];
    }
    out
}

fn host_port(u: &Url) -> String {
    match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_owned(),
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s[..end].trim_end())
}

/// JSON or YAML text → a JSON value (YAML keys such as `200:` become strings).
fn parse_document(text: &str) -> Result<Value, GenerateError> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let value = if text.starts_with('{') {
        serde_json::from_str::<Value>(text)
            .map_err(|e| GenerateError::bad_input("openapi", format!("is not valid JSON ({e})")))?
    } else {
        let yaml = serde_yaml::from_str::<serde_yaml::Value>(text)
            .map_err(|e| GenerateError::bad_input("openapi", format!("is neither JSON nor valid YAML ({e})")))?;
        yaml_to_json(yaml, 0)?
    };
    if !value.is_object() {
        return Err(GenerateError::bad_input(
            "openapi",
            "is not an OpenAPI document (expected a mapping with an `openapi` field at the top)",
        ));
    }
    Ok(value)
}

fn yaml_to_json(v: serde_yaml::Value, depth: usize) -> Result<Value, GenerateError> {
    use serde_yaml::Value as Y;
    if depth > 128 {
        return Err(GenerateError::bad_input("openapi", "is nested too deeply"));
    }
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                n.as_f64().and_then(serde_json::Number::from_f64).map(Value::Number).unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(|i| yaml_to_json(i, depth + 1)).collect::<Result<_, _>>()?)
        }
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".into(),
                    _ => return Err(GenerateError::bad_input("openapi", "has a mapping key that is not a string")),
                };
                out.insert(key, yaml_to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, depth + 1)?,
    })
}

fn check_version(doc: &Value) -> Result<(), GenerateError> {
    if doc.get("swagger").is_some() {
        return Err(GenerateError::bad_input(
            "openapi",
            "is a Swagger 2.0 document; convert it to OpenAPI 3 first (for example with swagger2openapi or editor.swagger.io)",
        ));
    }
    let version = match doc.get("openapi") {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(GenerateError::bad_input(
                "openapi",
                "is not an OpenAPI document: it has no `openapi: 3.x` version field",
            ));
        }
    };
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        return Err(GenerateError::bad_input(
            "openapi",
            format!("is OpenAPI {version}; only OpenAPI 3.0 and 3.1 are supported"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! The last gate every generated spec passes before it leaves this crate.
//!
//! Until `bmm_spec::validate` lands this is a structural check of the rules
//! the renderer depends on (names, schemas, HTTP calls, credentials, hosts);
//! the messages name the field like `tools[2].name` so a model can fix them.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use bmm_spec::{Handler, SPEC_VERSION, ToolSpec};
use regex::Regex;

static TOOL_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$").expect("regex"));
static CREDENTIAL_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Z][A-Z0-9_]{0,63}$").expect("regex"));
static ARG_PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}").expect("regex"));
static CREDENTIAL_PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{credentials\.([A-Z][A-Z0-9_]*)\}\}").expect("regex"));

pub(crate) const MAX_TOOLS: usize = 100;

/// Problems with `spec`, each as `field: message`; empty when the spec is usable.
pub fn validate_spec(spec: &ToolSpec) -> Vec<String> {
    let mut errors = Vec::new();
    let mut err = |field: String, message: &str| errors.push(format!("{field}: {message}"));
    if spec.spec_version != SPEC_VERSION {
        err("specVersion".into(), &format!("must be {SPEC_VERSION}"));
    }
    if spec.name.trim().is_empty() {
        err("name".into(), "must not be empty");
    }
    if spec.tools.is_empty() {
        err("tools".into(), "must contain at least one tool");
    }
    if spec.tools.len() > MAX_TOOLS {
        err("tools".into(), &format!("at most {MAX_TOOLS} tools are allowed"));
    }
    let credential_keys: BTreeSet<&str> = spec.credentials.iter().map(|c| c.key.as_str()).collect();
    for (i, c) in spec.credentials.iter().enumerate() {
        if !CREDENTIAL_KEY.is_match(&c.key) {
            err(format!("credentials[{i}].key"), "must match ^[A-Z][A-Z0-9_]{0,63}$");
        }
    }
    if credential_keys.len() != spec.credentials.len() {
        err("credentials".into(), "keys must be unique");
    }
    let mut names = BTreeSet::new();
    for (i, tool) in spec.tools.iter().enumerate() {
        if !TOOL_NAME.is_match(&tool.name) {
            err(format!("tools[{i}].name"), "must match ^[a-zA-Z][a-zA-Z0-9_-]{0,63}$");
        }
        if !names.insert(tool.name.as_str()) {
            err(format!("tools[{i}].name"), &format!("duplicate tool name {}", tool.name));
        }
        if tool.description.trim().is_empty() {
            err(format!("tools[{i}].description"), "must not be empty");
        }
        let schema = &tool.input_schema;
        if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            err(format!("tools[{i}].inputSchema"), "must be a JSON Schema with \"type\": \"object\"");
        }
        let args: BTreeSet<&str> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        match &tool.handler {
            Handler::Code { typescript } => {
                if typescript.trim().is_empty() {
                    err(format!("tools[{i}].handler.typescript"), "must not be empty");
                }
            }
            Handler::Http(call) => {
                let field = format!("tools[{i}].handler");
                if !matches!(call.method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                    err(format!("{field}.method"), "must be GET, POST, PUT, PATCH or DELETE");
                }
                // The host is checked on the template with placeholders removed.
                let concrete = ARG_PLACEHOLDER.replace_all(&call.url, "x");
                match url::Url::parse(&concrete) {
                    Ok(u) if u.scheme() == "https" => {
                        let host = match u.port() {
                            Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                            None => u.host_str().unwrap_or_default().to_owned(),
                        };
                        if !spec.allowed_hosts.contains(&host) {
                            err(format!("{field}.url"), &format!("host {host} is not in allowedHosts"));
                        }
                    }
                    _ => err(format!("{field}.url"), "must be an absolute https URL"),
                }
                let templates = std::iter::once(&call.url).chain(call.query.values()).chain(call.headers.values());
                for t in templates {
                    let without_credentials = CREDENTIAL_PLACEHOLDER.replace_all(t, "");
                    for cap in ARG_PLACEHOLDER.captures_iter(&without_credentials) {
                        if !args.contains(&cap[1]) {
                            err(field.clone(), &format!("placeholder {{{}}} is not an argument", &cap[1]));
                        }
                    }
                    for cap in CREDENTIAL_PLACEHOLDER.captures_iter(t) {
                        if !credential_keys.contains(&cap[1]) {
                            err(field.clone(), &format!("credential {} is not declared", &cap[1]));
                        }
                    }
                }
                for a in &call.body_args {
                    if !args.contains(a.as_str()) {
                        err(format!("{field}.bodyArgs"), &format!("{a} is not an argument"));
                    }
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use bmm_spec::{Annotations, Credential, HttpCall, Tool};
    use serde_json::json;

    fn http_spec() -> ToolSpec {
        ToolSpec {
            spec_version: SPEC_VERSION.into(),
            name: "Pets".into(),
            description: "pets".into(),
            tools: vec![Tool {
                name: "get_pet".into(),
                title: None,
                description: "Get a pet".into(),
                input_schema: json!({"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}),
                annotations: Annotations::default(),
                scopes: vec![],
                handler: Handler::Http(HttpCall {
                    method: "GET".into(),
                    url: "https://api.example.com/pets/{id}".into(),
                    query: Default::default(),
                    headers: [("Authorization".to_owned(), "Bearer {{credentials.PET_TOKEN}}".to_owned())].into(),
                    body_args: vec![],
                    body_from_args: false,
                }),
            }],
            credentials: vec![Credential {
                key: "PET_TOKEN".into(),
                label: "token".into(),
                description: None,
                used_in: None,
                required: true,
            }],
            allowed_hosts: vec!["api.example.com".into()],
        }
    }

    #[test]
    fn a_good_spec_passes() {
        assert_eq!(validate_spec(&http_spec()), Vec::<String>::new());
    }

    #[test]
    fn each_structural_rule_refuses() {
        let mut s = http_spec();
        s.tools.push(s.tools[0].clone());
        s.tools[1].name = "get pet".into();
        s.allowed_hosts.clear();
        s.credentials.clear();
        if let Handler::Http(h) = &mut s.tools[0].handler {
            h.url = "https://api.example.com/pets/{petId}".into();
        }
        let e = validate_spec(&s).join("\n");
        assert!(e.contains("tools[1].name: must match"), "{e}");
        assert!(e.contains("host api.example.com is not in allowedHosts"), "{e}");
        assert!(e.contains("placeholder {petId} is not an argument"), "{e}");
        assert!(e.contains("credential PET_TOKEN is not declared"), "{e}");
    }
}

//! OpenAPI security schemes → the credentials a generated server needs and
//! where each one goes on the wire.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::schema::Resolver;
use crate::GenerateError;
use crate::names::{env_key, unique};

/// Where a credential is put on each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    Header { name: String, value: String },
    Query { name: String, value: String },
}

/// One supported security scheme.
#[derive(Debug, Clone)]
pub(crate) struct Scheme {
    pub key: String,
    pub label: String,
    pub description: String,
    pub used_in: String,
    pub placement: Placement,
}

/// The document's security schemes, by scheme name; unsupported ones map to why.
pub(crate) struct Schemes {
    pub supported: BTreeMap<String, Scheme>,
    pub unsupported: BTreeMap<String, String>,
}

pub(crate) fn read_schemes(doc: &Value, resolver: &Resolver, api: &str) -> Result<Schemes, GenerateError> {
    let mut supported = BTreeMap::new();
    let mut unsupported = BTreeMap::new();
    let mut keys = BTreeSet::new();
    let Some(map) = doc.pointer("/components/securitySchemes").and_then(Value::as_object) else {
        return Ok(Schemes { supported, unsupported });
    };
    for (name, raw) in map {
        let s = resolver.deref(raw)?;
        let kind = s.get("type").and_then(Value::as_str).unwrap_or_default();
        let desc = s.get("description").and_then(Value::as_str).map(str::trim).filter(|d| !d.is_empty());
        let key = unique(&env_key(name), &mut keys);
        let credential = format!("{{{{credentials.{key}}}}}");
        let scheme = match kind {
            "apiKey" => {
                let param = s.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                if param.is_empty() {
                    return Err(GenerateError::bad_input(
                        "openapi",
                        format!("security scheme {name:?} (apiKey) has no `name`"),
                    ));
                }
                let location = s.get("in").and_then(Value::as_str).unwrap_or_default();
                let (placement, used_in) = match location {
                    "header" => (
                        Placement::Header { name: param.clone(), value: credential },
                        format!("the {param} header of every call that needs it"),
                    ),
                    "query" => (
                        Placement::Query { name: param.clone(), value: credential },
                        format!("the {param} query parameter of every call that needs it"),
                    ),
                    "cookie" => (
                        Placement::Header { name: "Cookie".into(), value: format!("{param}={credential}") },
                        format!("the {param} cookie of every call that needs it"),
                    ),
                    other => {
                        unsupported.insert(name.clone(), format!("apiKey in {other:?}"));
                        continue;
                    }
                };
                Scheme { key, label: format!("{api} API key"), description: String::new(), used_in, placement }
            }
            "http" => {
                let scheme = s.get("scheme").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
                match scheme.as_str() {
                    "bearer" => Scheme {
                        key,
                        label: format!("{api} bearer token"),
                        description: match s.get("bearerFormat").and_then(Value::as_str) {
                            Some(f) => format!("A {f} bearer token."),
                            None => String::new(),
                        },
                        used_in: "the Authorization header (Bearer) of every call that needs it".into(),
                        placement: Placement::Header {
                            name: "Authorization".into(),
                            value: format!("Bearer {credential}"),
                        },
                    },
                    "basic" => Scheme {
                        key,
                        label: format!("{api} Basic credentials"),
                        description: "username:password encoded in base64, as sent in a Basic Authorization header."
                            .into(),
                        used_in: "the Authorization header (Basic) of every call that needs it".into(),
                        placement: Placement::Header {
                            name: "Authorization".into(),
                            value: format!("Basic {credential}"),
                        },
                    },
                    other => {
                        unsupported.insert(name.clone(), format!("HTTP {other} authentication"));
                        continue;
                    }
                }
            }
            // The server cannot run an OAuth flow for its callers' upstream
            // accounts; it sends a token the user obtained and supplied.
            "oauth2" | "openIdConnect" => Scheme {
                key,
                label: format!("{api} OAuth access token"),
                description: "An access token for the API, obtained through its OAuth flow.".into(),
                used_in: "the Authorization header (Bearer) of every call that needs it".into(),
                placement: Placement::Header { name: "Authorization".into(), value: format!("Bearer {credential}") },
            },
            other => {
                unsupported.insert(name.clone(), format!("{other:?} security"));
                continue;
            }
        };
        let description = desc.map(str::to_owned).unwrap_or_else(|| scheme.description.clone());
        supported.insert(name.clone(), Scheme { description, ..scheme });
    }
    Ok(Schemes { supported, unsupported })
}

/// What an operation's `security` asks for, as the scheme names to apply.
pub(crate) enum Requirement {
    /// No authentication (none declared, or an empty alternative exists and nothing else is supported).
    None,
    /// These schemes together; `optional` when the document also allows anonymous calls.
    Schemes { names: Vec<String>, optional: bool },
    /// Every alternative needs a scheme the generated server cannot supply.
    Unsupported(String),
}

/// Picks the first alternative of `security` whose schemes are all supported.
pub(crate) fn requirement(security: Option<&Value>, schemes: &Schemes) -> Requirement {
    let Some(alternatives) = security.and_then(Value::as_array) else {
        return Requirement::None;
    };
    if alternatives.is_empty() {
        return Requirement::None;
    }
    let optional = alternatives.iter().any(|a| a.as_object().is_some_and(|o| o.is_empty()));
    let mut why = Vec::new();
    for alt in alternatives {
        let Some(o) = alt.as_object() else { continue };
        if o.is_empty() {
            continue;
        }
        let names: Vec<String> = o.keys().cloned().collect();
        let missing: Vec<&String> = names.iter().filter(|n| !schemes.supported.contains_key(*n)).collect();
        if missing.is_empty() {
            return Requirement::Schemes { names, optional };
        }
        for m in missing {
            why.push(match schemes.unsupported.get(m) {
                Some(reason) => format!("{m} ({reason})"),
                None => format!("{m} (not defined in components.securitySchemes)"),
            });
        }
    }
    if optional { Requirement::None } else { Requirement::Unsupported(why.join(", ")) }
}

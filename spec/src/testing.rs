//! Valid sample specs for tests here and in other crates (the build pipeline's
//! tests use [`echo_spec`] as the smallest server that does something).

use std::collections::BTreeMap;

use serde_json::json;

use crate::model::{Annotations, Credential, Handler, HttpCall, SPEC_VERSION, Tool, ToolSpec};

/// One `echo` tool with a code handler; no credentials, no hosts.
pub fn echo_spec() -> ToolSpec {
    ToolSpec {
        spec_version: SPEC_VERSION.into(),
        name: "Echo".into(),
        description: "Repeats what it is given.".into(),
        tools: vec![Tool {
            name: "echo".into(),
            title: Some("Echo".into()),
            description: "Returns the text it is given.".into(),
            input_schema: json!({
                "type": "object",
                "properties": { "text": { "type": "string", "description": "What to repeat" } },
                "required": ["text"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only_hint: Some(true), ..Annotations::default() },
            scopes: vec![],
            handler: Handler::Code { typescript: "return String(args.text);".into() },
        }],
        credentials: vec![],
        allowed_hosts: vec![],
    }
}

/// Two declarative HTTP tools (GET with query and header templates, POST with
/// a JSON body) against `api.example.com`, with one credential and one scoped tool.
pub fn http_spec() -> ToolSpec {
    ToolSpec {
        spec_version: SPEC_VERSION.into(),
        name: "Weather & Notes".into(),
        description: "Forecasts from the Example weather API, and notes.".into(),
        tools: vec![
            Tool {
                name: "get_forecast".into(),
                title: None,
                description: "The forecast for a city.".into(),
                input_schema: json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {
                        "city": { "type": "string", "minLength": 1 },
                        "days": { "type": "integer", "minimum": 1, "maximum": 14 }
                    },
                    "required": ["city"]
                }),
                annotations: Annotations {
                    read_only_hint: Some(true),
                    open_world_hint: Some(true),
                    ..Default::default()
                },
                scopes: vec![],
                handler: Handler::Http(HttpCall {
                    method: "GET".into(),
                    url: "https://api.example.com/v1/forecast/{city}".into(),
                    query: BTreeMap::from([("days".into(), "{days}".into())]),
                    headers: BTreeMap::from([(
                        "Authorization".into(),
                        "Bearer {{credentials.WEATHER_API_KEY}}".into(),
                    )]),
                    body_args: vec![],
                    body_from_args: false,
                }),
            },
            Tool {
                name: "create-note".into(),
                title: Some("Create a note".into()),
                description: "Stores a note.".into(),
                input_schema: json!({
                    "type": "object",
                    "properties": { "title": { "type": "string" }, "body": { "type": "string" } },
                    "required": ["title", "body"]
                }),
                annotations: Annotations { destructive_hint: Some(false), ..Default::default() },
                scopes: vec!["notes:write".into()],
                handler: Handler::Http(HttpCall {
                    method: "POST".into(),
                    url: "https://api.example.com:8443/v1/notes".into(),
                    query: BTreeMap::new(),
                    headers: BTreeMap::from([("X-Api-Key".into(), "{{credentials.WEATHER_API_KEY}}".into())]),
                    body_args: vec![],
                    body_from_args: true,
                }),
            },
        ],
        credentials: vec![Credential {
            key: "WEATHER_API_KEY".into(),
            label: "Example weather API key".into(),
            description: None,
            used_in: Some("Authorization header of every call".into()),
            required: true,
        }],
        allowed_hosts: vec!["api.example.com".into(), "api.example.com:8443".into()],
    }
}

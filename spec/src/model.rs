//! The tool-spec format, version `bmm.tool-spec/v1`.
//!
//! A spec is what the generator produces and what the renderer turns into the
//! runner template's TypeScript. It is stored as JSON on every server version.
//! Field names on the wire are camelCase; unknown fields are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SPEC_VERSION: &str = "bmm.tool-spec/v1";

/// A whole MCP server: its name, tools, the credentials it needs and the hosts it may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolSpec {
    /// Always [`SPEC_VERSION`].
    pub spec_version: String,
    /// Human name of the server, e.g. "Weather".
    pub name: String,
    /// What the server does, one paragraph.
    pub description: String,
    pub tools: Vec<Tool>,
    /// Credentials the server reads from its environment; the wizard asks for exactly these.
    #[serde(default)]
    pub credentials: Vec<Credential>,
    /// Hosts (`api.example.com` or `api.example.com:8443`) the handlers may call; nothing else is reachable.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tool {
    /// MCP-safe name: `^[a-zA-Z][a-zA-Z0-9_-]{0,63}$`, unique in the spec.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub description: String,
    /// A JSON Schema object (`{"type":"object","properties":…,"required":…}`).
    pub input_schema: serde_json::Value,
    #[serde(default)]
    pub annotations: Annotations,
    /// OAuth scopes a caller's token must carry to call this tool (besides the server's base scope).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub handler: Handler,
}

/// MCP tool annotations (hints to clients, not guarantees).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Annotations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

/// How a tool does its work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Handler {
    /// The body of an async TypeScript function
    /// `(args: Args, ctx: ToolContext) => Promise<ToolResult>`; see the runner template.
    Code { typescript: String },
    /// A declarative HTTP call; `{name}` in `url`, `query`, `headers` and `body`
    /// is replaced by the argument of that name, `{{credentials.KEY}}` by a credential.
    Http(HttpCall),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCall {
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// Absolute https URL template; its host must be in `allowedHosts`.
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Argument names sent as the JSON body (all remaining arguments when `bodyFromArgs` is true).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_args: Vec<String>,
    #[serde(default)]
    pub body_from_args: bool,
}

/// A credential the server needs, supplied by the user at build time and
/// injected into the container's environment as `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credential {
    /// Environment variable name: `^[A-Z][A-Z0-9_]{0,63}$`.
    pub key: String,
    /// What the wizard shows, e.g. "GitHub personal access token".
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where it is used, e.g. "Authorization header of every GitHub call".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_in: Option<String>,
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

impl ToolSpec {
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// Canonical JSON (sorted keys via serde_json's map ordering), the input of digests.
    pub fn canonical_json(&self) -> String {
        let v = serde_json::to_value(self).expect("spec serialises");
        serde_json::to_string(&v).expect("value serialises")
    }
}

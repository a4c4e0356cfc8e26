//! Output types shared by several domains.

use async_graphql::{Enum, Json, SimpleObject};
use bmm_spec::ToolSpec;

/// MCP tool annotations: hints to clients, not guarantees.
#[derive(SimpleObject, Clone, Debug, Default)]
pub struct ToolAnnotations {
    pub read_only_hint: Option<bool>,
    pub destructive_hint: Option<bool>,
    pub idempotent_hint: Option<bool>,
    pub open_world_hint: Option<bool>,
}

/// One tool of a server.
#[derive(SimpleObject, Clone, Debug)]
pub struct Tool {
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    /// The tool's input JSON Schema.
    pub input_schema: Json<serde_json::Value>,
    pub annotations: ToolAnnotations,
    /// OAuth scopes a caller needs besides the base scope.
    pub scopes: Vec<String>,
}

/// A credential the server needs, supplied by the user.
#[derive(SimpleObject, Clone, Debug)]
pub struct Credential {
    /// Environment variable name, e.g. `GITHUB_TOKEN`.
    pub key: String,
    pub label: String,
    pub description: Option<String>,
    pub used_in: Option<String>,
    pub required: bool,
}

pub fn tools_of(spec: &ToolSpec) -> Vec<Tool> {
    spec.tools
        .iter()
        .map(|t| Tool {
            name: t.name.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            input_schema: Json(t.input_schema.clone()),
            annotations: ToolAnnotations {
                read_only_hint: t.annotations.read_only_hint,
                destructive_hint: t.annotations.destructive_hint,
                idempotent_hint: t.annotations.idempotent_hint,
                open_world_hint: t.annotations.open_world_hint,
            },
            scopes: t.scopes.clone(),
        })
        .collect()
}

pub fn credentials_of(spec: &ToolSpec) -> Vec<Credential> {
    spec.credentials
        .iter()
        .map(|c| Credential {
            key: c.key.clone(),
            label: c.label.clone(),
            description: c.description.clone(),
            used_in: c.used_in.clone(),
            required: c.required,
        })
        .collect()
}

/// Parse a stored spec; a spec that no longer parses is an internal error.
pub fn parse_spec(v: &serde_json::Value) -> crate::error::ApiResult<ToolSpec> {
    serde_json::from_value(v.clone())
        .map_err(|e| crate::error::ApiError::internal(format!("stored spec unreadable: {e}")))
}

/// Build status.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildStatus {
    pub fn from_db(s: &str) -> BuildStatus {
        match bmm_db::models::BuildStatus::parse(s) {
            Some(bmm_db::models::BuildStatus::Queued) | None => BuildStatus::Queued,
            Some(bmm_db::models::BuildStatus::Running) => BuildStatus::Running,
            Some(bmm_db::models::BuildStatus::Succeeded) => BuildStatus::Succeeded,
            Some(bmm_db::models::BuildStatus::Failed) => BuildStatus::Failed,
            Some(bmm_db::models::BuildStatus::Cancelled) => BuildStatus::Cancelled,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, BuildStatus::Succeeded | BuildStatus::Failed | BuildStatus::Cancelled)
    }
}

/// Server status.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServerStatus {
    /// Its first build has not finished.
    Building,
    /// Routed by the gateway.
    Live,
    /// Its last build failed and no version is live.
    Failed,
    Stopped,
    Deleted,
    /// Its live version stopped answering and is being restored (see `statusReason`).
    Degraded,
    /// Its live version is not answering and could not be restored yet (see `statusReason`).
    Down,
}

impl ServerStatus {
    pub fn from_db(s: &str) -> ServerStatus {
        match s {
            "LIVE" => ServerStatus::Live,
            "FAILED" => ServerStatus::Failed,
            "STOPPED" => ServerStatus::Stopped,
            "DELETED" => ServerStatus::Deleted,
            "DEGRADED" => ServerStatus::Degraded,
            "DOWN" => ServerStatus::Down,
            _ => ServerStatus::Building,
        }
    }
}

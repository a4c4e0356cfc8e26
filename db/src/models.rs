//! Row types. Status columns hold the upper-case names of the enums here.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::schema::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = users)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = orgs)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = servers)]
pub struct Server {
    pub id: Uuid,
    pub org_id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub status: String,
    pub current_version_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Why the server is DEGRADED or DOWN (none while it is fine).
    pub status_reason: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = server_versions)]
pub struct ServerVersion {
    pub id: Uuid,
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub version: i32,
    pub spec: Option<serde_json::Value>,
    pub spec_digest: Option<String>,
    pub source_digest: Option<String>,
    pub bundle_digest: Option<String>,
    pub image_id: Option<String>,
    pub generator: String,
    pub instruction: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = builds)]
pub struct Build {
    pub id: Uuid,
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub version_id: Uuid,
    pub status: String,
    pub current_step: Option<String>,
    pub workflow_id: String,
    pub run_id: Option<String>,
    pub trace_id: Option<String>,
    pub preview_id: Option<Uuid>,
    pub generator: Option<String>,
    pub usage: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize, PartialEq)]
#[diesel(table_name = server_events)]
pub struct ServerEvent {
    pub id: i64,
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub kind: String,
    pub message: String,
    pub data: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize, PartialEq)]
#[diesel(table_name = build_events)]
pub struct BuildEvent {
    pub id: i64,
    pub org_id: Uuid,
    pub build_id: Uuid,
    pub seq: i32,
    pub step: String,
    pub kind: String,
    pub message: String,
    pub data: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = deployments)]
pub struct Deployment {
    pub id: Uuid,
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub version_id: Uuid,
    pub build_id: Uuid,
    pub container_name: String,
    pub container_id: Option<String>,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub live_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = previews)]
pub struct Preview {
    pub id: Uuid,
    pub org_id: Uuid,
    pub user_id: Option<Uuid>,
    pub server_id: Option<Uuid>,
    pub description: String,
    pub openapi: Option<String>,
    pub instruction: Option<String>,
    pub spec: serde_json::Value,
    pub generator: String,
    pub usage: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    pub id: i64,
    pub org_id: Uuid,
    pub user_id: Option<Uuid>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub metadata: serde_json::Value,
    pub ip: Option<String>,
    pub at: DateTime<Utc>,
}

/// Build status, as stored and as GraphQL shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "QUEUED",
            BuildStatus::Running => "RUNNING",
            BuildStatus::Succeeded => "SUCCEEDED",
            BuildStatus::Failed => "FAILED",
            BuildStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<BuildStatus> {
        Some(match s {
            "QUEUED" => BuildStatus::Queued,
            "RUNNING" => BuildStatus::Running,
            "SUCCEEDED" => BuildStatus::Succeeded,
            "FAILED" => BuildStatus::Failed,
            "CANCELLED" => BuildStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, BuildStatus::Succeeded | BuildStatus::Failed | BuildStatus::Cancelled)
    }
}

//! What the API needs from the crates that run builds, generate specs and
//! run containers, as narrow traits. The adapters to the real crates live in
//! one place each, so the GraphQL code never depends on their details.

use async_trait::async_trait;
use bmm_spec::ToolSpec;
use futures::stream::BoxStream;
use uuid::Uuid;

/// What a build needs to start (mirrors `bmm_workflows::client::BuildInput`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub build_id: Uuid,
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub version_id: Uuid,
    pub version: i32,
    pub slug: String,
    pub preview_id: Option<Uuid>,
}

/// Starts, cancels and inspects builds (Temporal workflows).
#[async_trait]
pub trait BuildRunner: Send + Sync {
    /// Start the build's workflow (`build-<build id>`); returns its run id if known.
    async fn start(&self, req: BuildRequest) -> Result<Option<String>, String>;
    /// Ask the workflow to cancel; it writes `BUILD_CANCELLED` itself.
    async fn cancel(&self, build_id: Uuid) -> Result<(), String>;
    /// Whether the workflow service answers (for `/readyz`).
    async fn ping(&self) -> Result<(), String>;
}

/// What to generate a spec from.
#[derive(Debug, Clone, Default)]
pub struct GenerateInput {
    pub description: String,
    pub openapi: Option<String>,
    /// The current spec, when iterating on a server.
    pub base: Option<ToolSpec>,
    pub instruction: Option<String>,
}

/// A generated, validated spec.
#[derive(Debug, Clone)]
pub struct GeneratedSpec {
    pub spec: ToolSpec,
    /// Which generator made it (`offline`, `anthropic`, …).
    pub generator: String,
    pub usage: Option<serde_json::Value>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum GenerateFailure {
    /// The input cannot make a valid spec; `field` names the input field.
    BadInput { field: String, message: String },
    /// The provider failed (network, quota, unusable output). The message is
    /// written for the user (no keys, no model output) and is shown.
    Failed(String),
}

/// Turns descriptions and OpenAPI documents into tool specs.
#[async_trait]
pub trait SpecGenerator: Send + Sync {
    async fn generate(&self, input: GenerateInput) -> Result<GeneratedSpec, GenerateFailure>;
    /// The spec differences between two versions.
    fn diff(&self, old: &ToolSpec, new: &ToolSpec) -> SpecDiff;
}

/// Tool-level difference between two specs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Changes that break existing clients, in words.
    pub breaking: Vec<String>,
}

/// The containers generated servers run in.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Stop and remove every container of a server.
    async fn stop_server(&self, server_id: Uuid) -> Result<(), String>;
    /// The container's log lines: the last `tail`, then new ones as they come.
    fn logs(&self, container_name: &str, tail: usize) -> BoxStream<'static, Result<String, String>>;
    /// Whether the container engine answers (for `/readyz`).
    async fn ping(&self) -> Result<(), String>;
}

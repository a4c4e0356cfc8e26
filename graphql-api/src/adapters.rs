//! The adapters from [`crate::ports`] to the real crates: the spec generator
//! (`bmm-generator`), the build workflows (`bmm-workflows`, Temporal) and the
//! server runtime (`bmm-runtime`). Each is the only place the
//! API calls into that crate.

use std::sync::Arc;

use async_trait::async_trait;
use bmm_spec::ToolSpec;

use bmm_core::Config;
use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::ports::{
    BuildRequest, BuildRunner, GenerateFailure, GenerateInput, GeneratedSpec, Runtime, SpecDiff, SpecGenerator,
};

/// `bmm_generator::Generator` as the API's [`SpecGenerator`].
pub struct Generator(pub Arc<dyn bmm_generator::Generator>);

#[async_trait]
impl SpecGenerator for Generator {
    async fn generate(&self, input: GenerateInput) -> Result<GeneratedSpec, GenerateFailure> {
        let req = bmm_generator::GenerateRequest {
            description: input.description,
            openapi: input.openapi,
            base: input.base,
            instruction: input.instruction,
            repair: None,
        };
        match self.0.generate(&req).await {
            Ok(g) => Ok(GeneratedSpec {
                spec: g.spec,
                generator: g.generator,
                usage: g
                    .usage
                    .map(|u| serde_json::json!({ "inputTokens": u.input_tokens, "outputTokens": u.output_tokens })),
                warnings: g.warnings,
            }),
            Err(bmm_generator::GenerateError::BadInput { field, message }) => {
                Err(GenerateFailure::BadInput { field, message })
            }
            // Both messages are written for the user by the generator.
            Err(e) => Err(GenerateFailure::Failed(e.to_string())),
        }
    }

    fn diff(&self, old: &ToolSpec, new: &ToolSpec) -> SpecDiff {
        let d = bmm_generator::diff(old, new);
        SpecDiff { added: d.added, removed: d.removed, changed: d.changed, breaking: d.breaking }
    }
}

/// Builds as Temporal workflows (`bmm_workflows::client`).
pub struct TemporalBuilds {
    pub client: bmm_workflows::client::TemporalClient,
    pub cfg: Arc<Config>,
}

#[async_trait]
impl BuildRunner for TemporalBuilds {
    async fn start(&self, req: BuildRequest) -> Result<Option<String>, String> {
        let input = bmm_activities::BuildInput {
            build_id: req.build_id,
            org_id: req.org_id,
            server_id: req.server_id,
            version_id: req.version_id,
            version: req.version,
            slug: req.slug,
            preview_id: req.preview_id,
        };
        // Carry the GraphQL request's trace into the workflow's start.
        let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current());
        opentelemetry::trace::FutureExt::with_context(
            bmm_workflows::client::start_build(&self.client, &self.cfg, input),
            cx,
        )
        .await
        .map(|run| Some(run).filter(|r| !r.is_empty()))
        .map_err(|e| e.to_string())
    }

    async fn cancel(&self, build_id: Uuid) -> Result<(), String> {
        bmm_workflows::client::cancel_build(&self.client, &self.cfg, build_id).await.map_err(|e| e.to_string())
    }

    async fn ping(&self) -> Result<(), String> {
        // A query for a workflow that cannot exist: "not found" means Temporal answered.
        match bmm_workflows::client::current_step(&self.client, &self.cfg, Uuid::nil()).await {
            Ok(_) | Err(bmm_workflows::client::BuildClientError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Servers' containers through the configured `bmm_runtime` backend.
pub struct ServerRuntime(pub Arc<dyn bmm_runtime::Runtime>);

#[async_trait]
impl Runtime for ServerRuntime {
    async fn stop_server(&self, server_id: Uuid) -> Result<(), String> {
        let containers = self.0.list(&bmm_runtime::ListFilter::server(server_id)).await.map_err(|e| e.to_string())?;
        let mut failed = Vec::new();
        for c in containers {
            if let Err(e) = self.0.remove(&c.name).await {
                failed.push(format!("{}: {e}", c.name));
            }
        }
        if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
    }

    fn logs(&self, container_name: &str, tail: usize) -> BoxStream<'static, Result<String, String>> {
        self.0
            .logs(container_name, tail, true)
            .map(|r| r.map(|l| format!("{} {}", l.at.to_rfc3339(), l.line)).map_err(|e| e.to_string()))
            .boxed()
    }

    async fn ping(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

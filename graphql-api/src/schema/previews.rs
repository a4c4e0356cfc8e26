//! Previews: generate a spec synchronously, cache it for five minutes, show
//! its tools and the credentials it needs; iterate on an existing server.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use bmm_db::models::Preview as PreviewRow;
use bmm_db::schema::previews;
use bmm_spec::ToolSpec;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;
use uuid::Uuid;

use crate::context::{audit, parse_id, principal, state};
use crate::error::{ApiError, ApiResult};
use crate::ports::{GenerateFailure, GenerateInput, SpecDiff};
use crate::schema::servers::{current_spec, load_server};
use crate::schema::types::{Credential, Tool, credentials_of, tools_of};

/// The preview's cache time, shown as `expiresAt`.
pub const PREVIEW_TTL: Duration = Duration::minutes(5);
/// Expired previews are kept this long; until then `createServer` still
/// builds exactly their spec (never a regenerated one).
const PREVIEW_RETENTION: Duration = Duration::days(1);
pub use bmm_generator::{MAX_DESCRIPTION_CHARS, MAX_INSTRUCTION_CHARS, MAX_OPENAPI_BYTES};

#[derive(InputObject)]
pub struct PreviewServerInput {
    /// What the server should do, in plain words.
    #[graphql(default)]
    pub description: String,
    /// An OpenAPI 3.0/3.1 document (JSON or YAML) to make one tool per operation from.
    pub openapi: Option<String>,
}

#[derive(InputObject)]
pub struct IterateServerInput {
    pub server_id: ID,
    /// What to change, in plain words.
    pub instruction: String,
}

/// A generated spec for `createServer`. The build uses exactly this spec,
/// also after `expiresAt` (its cache time), until the preview is removed a
/// day later.
#[derive(SimpleObject)]
pub struct Preview {
    pub id: ID,
    pub expires_at: DateTime<Utc>,
    /// Which generator made it (`offline`, `anthropic`, …).
    pub generator: String,
    /// Things the user should know (e.g. the offline generator was used).
    pub warnings: Vec<String>,
    /// The server name the spec proposes.
    pub name: String,
    pub description: String,
    pub tools: Vec<Tool>,
    /// Exactly the credentials the spec needs; the wizard asks for these and no others.
    pub credentials: Vec<Credential>,
    pub allowed_hosts: Vec<String>,
}

/// Tool-level difference between the live spec and a preview.
#[derive(SimpleObject, Default)]
pub struct ToolDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Changes that break existing clients (a removed tool, a newly required argument), in words.
    pub breaking: Vec<String>,
}

impl From<SpecDiff> for ToolDiff {
    fn from(d: SpecDiff) -> Self {
        ToolDiff { added: d.added, removed: d.removed, changed: d.changed, breaking: d.breaking }
    }
}

#[derive(SimpleObject)]
pub struct IteratePreview {
    pub preview: Preview,
    pub diff: ToolDiff,
}

fn preview_of(
    id: Uuid,
    expires_at: DateTime<Utc>,
    generator: String,
    warnings: Vec<String>,
    spec: &ToolSpec,
) -> Preview {
    Preview {
        id: ID(id.to_string()),
        expires_at,
        generator,
        warnings,
        name: spec.name.clone(),
        description: spec.description.clone(),
        tools: tools_of(spec),
        credentials: credentials_of(spec),
        allowed_hosts: spec.allowed_hosts.clone(),
    }
}

fn field_of(prefix: &str, field: &str) -> String {
    if field.is_empty() { prefix.trim_end_matches('.').to_owned() } else { format!("{prefix}{field}") }
}

async fn generate(ctx: &Context<'_>, input: GenerateInput) -> ApiResult<crate::ports::GeneratedSpec> {
    let generator = state(ctx).generator.clone().ok_or_else(|| ApiError::internal("no spec generator configured"))?;
    match generator.generate(input).await {
        Ok(g) => Ok(g),
        Err(GenerateFailure::BadInput { field, message }) => {
            Err(ApiError::bad_input(field_of("input.", &field), message))
        }
        Err(GenerateFailure::Failed(e)) => Err(ApiError::Upstream(e)),
    }
}

struct NewPreview<'a> {
    org_id: Uuid,
    user_id: Uuid,
    server_id: Option<Uuid>,
    description: &'a str,
    openapi: Option<&'a str>,
    instruction: Option<&'a str>,
    generated: &'a crate::ports::GeneratedSpec,
}

async fn store_preview(ctx: &Context<'_>, p: NewPreview<'_>) -> ApiResult<(Uuid, DateTime<Utc>)> {
    let mut conn = state(ctx).pool.get().await?;
    let id = Uuid::now_v7();
    let expires_at = Utc::now() + PREVIEW_TTL;
    let spec = serde_json::to_value(&p.generated.spec).map_err(ApiError::internal)?;
    diesel::insert_into(previews::table)
        .values((
            previews::id.eq(id),
            previews::org_id.eq(p.org_id),
            previews::user_id.eq(Some(p.user_id)),
            previews::server_id.eq(p.server_id),
            previews::description.eq(p.description),
            previews::openapi.eq(p.openapi),
            previews::instruction.eq(p.instruction),
            previews::spec.eq(spec),
            previews::generator.eq(&p.generated.generator),
            previews::usage.eq(&p.generated.usage),
            previews::expires_at.eq(expires_at),
        ))
        .execute(&mut conn)
        .await?;
    // Housekeeping: the org's long-expired previews go.
    let _ = diesel::delete(
        previews::table
            .filter(previews::org_id.eq(p.org_id))
            .filter(previews::expires_at.lt(Utc::now() - PREVIEW_RETENTION)),
    )
    .execute(&mut conn)
    .await;
    Ok((id, expires_at))
}

/// A preview of the caller's org, or NOT_FOUND (`field` names the argument).
pub async fn load_preview(ctx: &Context<'_>, org_id: Uuid, id: Uuid) -> ApiResult<PreviewRow> {
    let mut conn = state(ctx).pool.get().await?;
    previews::table
        .filter(previews::id.eq(id))
        .filter(previews::org_id.eq(org_id))
        .select(PreviewRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound("preview"))
}

#[derive(Default)]
pub struct PreviewMutation;

#[Object]
impl PreviewMutation {
    /// Generate and validate a spec from a description or an OpenAPI
    /// document. The result is cached for five minutes for `createServer`.
    async fn preview_server(&self, ctx: &Context<'_>, input: PreviewServerInput) -> Result<Preview> {
        let p = principal(ctx)?;
        let description = input.description.trim().to_owned();
        let openapi = input.openapi.filter(|o| !o.trim().is_empty());
        if description.is_empty() && openapi.is_none() {
            return Err(ApiError::bad_input(
                "input.description",
                "describe what the server should do, or give an OpenAPI document in input.openapi",
            )
            .into());
        }
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::bad_input(
                "input.description",
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
            )
            .into());
        }
        if openapi.as_ref().is_some_and(|o| o.len() > MAX_OPENAPI_BYTES) {
            return Err(ApiError::bad_input(
                "input.openapi",
                format!("the document is larger than {} MiB", MAX_OPENAPI_BYTES / (1024 * 1024)),
            )
            .into());
        }
        let generated = generate(
            ctx,
            GenerateInput { description: description.clone(), openapi: openapi.clone(), base: None, instruction: None },
        )
        .await?;
        let (id, expires_at) = store_preview(
            ctx,
            NewPreview {
                org_id: p.org_id,
                user_id: p.user_id,
                server_id: None,
                description: &description,
                openapi: openapi.as_deref(),
                instruction: None,
                generated: &generated,
            },
        )
        .await?;
        audit(
            ctx,
            "server.preview",
            "preview",
            Some(id.to_string()),
            json!({
                "generator": generated.generator,
                "tools": generated.spec.tools.len(),
                "fromOpenapi": openapi.is_some(),
            }),
        )
        .await;
        Ok(preview_of(id, expires_at, generated.generator.clone(), generated.warnings.clone(), &generated.spec))
    }

    /// Preview a new version of a server from its current spec and an
    /// instruction, with the tool-level difference and breaking changes.
    /// Build it with `createServerVersion`.
    async fn iterate_server(&self, ctx: &Context<'_>, input: IterateServerInput) -> Result<IteratePreview> {
        let p = principal(ctx)?;
        let server_id = parse_id("input.serverId", &input.server_id)?;
        let instruction = input.instruction.trim().to_owned();
        if instruction.is_empty() {
            return Err(ApiError::bad_input("input.instruction", "say what to change").into());
        }
        if instruction.chars().count() > MAX_INSTRUCTION_CHARS {
            return Err(ApiError::bad_input(
                "input.instruction",
                format!("at most {MAX_INSTRUCTION_CHARS} characters"),
            )
            .into());
        }
        let server = load_server(ctx, p.org_id, server_id).await?;
        let base = current_spec(ctx, &server).await?.ok_or_else(|| {
            ApiError::bad_input("input.serverId", "the server has no spec yet; wait for its first build to finish")
        })?;
        let generated = generate(
            ctx,
            GenerateInput {
                description: server.description.clone(),
                openapi: None,
                base: Some(base.clone()),
                instruction: Some(instruction.clone()),
            },
        )
        .await?;
        let diff = state(ctx).generator.as_ref().map(|g| g.diff(&base, &generated.spec)).unwrap_or_default();
        let (id, expires_at) = store_preview(
            ctx,
            NewPreview {
                org_id: p.org_id,
                user_id: p.user_id,
                server_id: Some(server_id),
                description: &server.description,
                openapi: None,
                instruction: Some(&instruction),
                generated: &generated,
            },
        )
        .await?;
        audit(
            ctx,
            "server.iterate",
            "server",
            Some(server_id.to_string()),
            json!({ "previewId": id, "generator": generated.generator, "breaking": diff.breaking.len() }),
        )
        .await;
        Ok(IteratePreview {
            preview: preview_of(
                id,
                expires_at,
                generated.generator.clone(),
                generated.warnings.clone(),
                &generated.spec,
            ),
            diff: diff.into(),
        })
    }
}

//! Servers: listing, details, creating (from a preview), new versions,
//! rollback, redeploy, deletion, secrets, and live status and logs.

use std::collections::HashSet;

use async_graphql::{Context, ID, InputObject, Json, Object, Result, SimpleObject};
use bmm_core::crypto::SecretBox;
use bmm_db::models::{
    Build as BuildRow, Deployment as DeploymentRow, Server as ServerRow, ServerVersion as VersionRow,
};
use bmm_db::schema::{builds, deployments, secrets, server_versions, servers};
use bmm_spec::ToolSpec;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use uuid::Uuid;

use crate::context::{audit, parse_id, principal, require_admin, state};
use crate::error::{ApiError, ApiResult};
use crate::ports::BuildRequest;
use crate::schema::builds::Build;
use crate::schema::previews::load_preview;
use crate::schema::types::{ServerStatus, Tool, parse_spec, tools_of};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_SECRET_BYTES: usize = 8 * 1024;

// ---------------------------------------------------------------- types

/// Something that happened to a running server: a status change, a restart or
/// redeploy by the reconciler, a changed endpoint, refused egress.
#[derive(SimpleObject, Clone, Debug)]
pub struct ServerEvent {
    /// Increasing per platform; page with `after`.
    pub id: ID,
    /// `STATUS_CHANGED`, `RESTARTED`, `REDEPLOYED`, `ENDPOINT_CHANGED`,
    /// `ORPHAN_REMOVED`, `RECONCILE_FAILED` or `EGRESS_REFUSED`.
    pub kind: String,
    pub message: String,
    pub at: DateTime<Utc>,
    pub data: Option<Json<serde_json::Value>>,
}

impl From<bmm_db::models::ServerEvent> for ServerEvent {
    fn from(e: bmm_db::models::ServerEvent) -> Self {
        ServerEvent { id: ID(e.id.to_string()), kind: e.kind, message: e.message, at: e.at, data: e.data.map(Json) }
    }
}

pub struct Server(pub ServerRow);

#[derive(SimpleObject)]
pub struct ServerVersion {
    pub id: ID,
    pub version: i32,
    pub generator: String,
    /// The instruction this version was iterated with.
    pub instruction: Option<String>,
    pub spec_digest: Option<String>,
    pub bundle_digest: Option<String>,
    /// Whether this version is the one live now.
    pub is_current: bool,
    pub created_at: DateTime<Utc>,
    /// Empty until the build's generate step has produced the spec.
    pub tools: Vec<Tool>,
}

#[derive(SimpleObject)]
pub struct Deployment {
    pub id: ID,
    pub build_id: ID,
    pub version_id: ID,
    pub container_name: String,
    /// STARTING, READY, LIVE, DRAINING, STOPPED or FAILED.
    pub status: String,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub live_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
}

impl From<DeploymentRow> for Deployment {
    fn from(d: DeploymentRow) -> Self {
        Deployment {
            id: ID(d.id.to_string()),
            build_id: ID(d.build_id.to_string()),
            version_id: ID(d.version_id.to_string()),
            container_name: d.container_name,
            status: d.status,
            host: d.host,
            port: d.port,
            created_at: d.created_at,
            live_at: d.live_at,
            stopped_at: d.stopped_at,
        }
    }
}

/// One step an MCP client took while connecting (discovery, registration,
/// authorize, token, mcp) and how it went, in plain words.
#[derive(SimpleObject)]
pub struct ConnectionTraceEvent {
    pub at: DateTime<Utc>,
    pub step: String,
    pub ok: bool,
    pub detail: String,
    pub client_id: Option<String>,
    pub client_name: Option<String>,
}

/// How to add the server to one MCP client. No snippet carries a secret.
#[derive(SimpleObject)]
pub struct InstallSnippet {
    /// `claude-desktop`, `claude-code`, `cursor`, `vscode` or `chatgpt`.
    pub client: String,
    pub title: String,
    /// How to show `body`: `text` (steps), `shell` or `json`.
    pub format: String,
    pub body: String,
}

/// A stored secret: its key only, never the value.
#[derive(SimpleObject)]
pub struct ServerSecret {
    pub key: String,
    pub updated_at: DateTime<Utc>,
}

fn version_of(v: VersionRow, current: Option<Uuid>) -> ApiResult<ServerVersion> {
    let tools = match &v.spec {
        Some(s) => tools_of(&parse_spec(s)?),
        None => Vec::new(),
    };
    Ok(ServerVersion {
        id: ID(v.id.to_string()),
        version: v.version,
        generator: v.generator,
        instruction: v.instruction,
        spec_digest: v.spec_digest,
        bundle_digest: v.bundle_digest,
        is_current: current == Some(v.id),
        created_at: v.created_at,
        tools,
    })
}

#[Object]
impl Server {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The stable part of the URL.
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// The MCP endpoint clients connect to.
    async fn url(&self, ctx: &Context<'_>) -> String {
        state(ctx).cfg.server_url(&self.0.slug)
    }
    async fn status(&self) -> ServerStatus {
        ServerStatus::from_db(&self.0.status)
    }
    /// Why the server is `DEGRADED` or `DOWN`; null otherwise.
    async fn status_reason(&self) -> Option<&str> {
        self.0.status_reason.as_deref()
    }
    /// When the status last changed between `LIVE`, `DEGRADED` and `DOWN` (or went live).
    async fn status_changed_at(&self) -> Option<DateTime<Utc>> {
        self.0.status_changed_at
    }
    /// What happened to the running server, newest first (at most `limit`, default 50, up to 200).
    #[graphql(complexity = "limit.unwrap_or(50).clamp(1, 200) as usize * child_complexity")]
    async fn events(&self, ctx: &Context<'_>, limit: Option<i32>) -> Result<Vec<ServerEvent>> {
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::bad_input("limit", "must be between 1 and 200").into());
        }
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = bmm_db::server_events::latest(&mut conn, self.0.org_id, self.0.id, i64::from(limit))
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(ServerEvent::from).collect())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The live version number, if any.
    async fn current_version(&self, ctx: &Context<'_>) -> Result<Option<i32>> {
        let Some(vid) = self.0.current_version_id else { return Ok(None) };
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        Ok(server_versions::table
            .filter(server_versions::id.eq(vid))
            .filter(server_versions::org_id.eq(self.0.org_id))
            .select(server_versions::version)
            .first(&mut conn)
            .await
            .optional()
            .map_err(ApiError::from)?)
    }
    /// The tools of the live version (or of the newest spec while the first build runs).
    async fn tools(&self, ctx: &Context<'_>) -> Result<Vec<Tool>> {
        Ok(current_spec(ctx, &self.0).await?.map(|s| tools_of(&s)).unwrap_or_default())
    }
    /// Every version, newest first.
    async fn versions(&self, ctx: &Context<'_>) -> Result<Vec<ServerVersion>> {
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = server_versions::table
            .filter(server_versions::server_id.eq(self.0.id))
            .filter(server_versions::org_id.eq(self.0.org_id))
            .order(server_versions::version.desc())
            .select(VersionRow::as_select())
            .load(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(|v| version_of(v, self.0.current_version_id)).collect::<ApiResult<_>>()?)
    }
    /// Builds, newest first.
    #[graphql(complexity = "limit.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn builds(&self, ctx: &Context<'_>, limit: Option<i32>) -> Result<Vec<Build>> {
        let limit = limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_input("limit", "must be between 1 and 100").into());
        }
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = builds::table
            .filter(builds::server_id.eq(self.0.id))
            .filter(builds::org_id.eq(self.0.org_id))
            .order(builds::created_at.desc())
            .limit(limit as i64)
            .select(BuildRow::as_select())
            .load(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Build).collect())
    }
    /// Containers, newest first.
    async fn deployments(&self, ctx: &Context<'_>) -> Result<Vec<Deployment>> {
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = deployments::table
            .filter(deployments::server_id.eq(self.0.id))
            .filter(deployments::org_id.eq(self.0.org_id))
            .order(deployments::created_at.desc())
            .limit(50)
            .select(DeploymentRow::as_select())
            .load(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Deployment::from).collect())
    }
    /// What MCP clients did while connecting, newest first.
    #[graphql(complexity = "limit.unwrap_or(50).clamp(1, 200) as usize * child_complexity")]
    async fn connection_trace(&self, ctx: &Context<'_>, limit: Option<i32>) -> Result<Vec<ConnectionTraceEvent>> {
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::bad_input("limit", "must be between 1 and 200").into());
        }
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = bmm_auth::trace::list(&mut conn, self.0.org_id, Some(self.0.id), limit as i64)
            .await
            .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(|e| ConnectionTraceEvent {
                at: e.at,
                step: e.step,
                ok: e.ok,
                detail: e.detail,
                client_id: e.client_id,
                client_name: e.client_name,
            })
            .collect())
    }
    /// How to add this server to Claude Desktop, Claude Code, Cursor, VS Code and ChatGPT.
    async fn install_snippets(&self, ctx: &Context<'_>) -> Vec<InstallSnippet> {
        let url = state(ctx).cfg.server_url(&self.0.slug);
        bmm_auth::snippets::install_snippets(&self.0.name, &url)
            .into_iter()
            .map(|s| InstallSnippet { client: s.client, title: s.title, format: s.format, body: s.body })
            .collect()
    }
    /// The keys of the secrets stored for this server (never their values).
    async fn secrets(&self, ctx: &Context<'_>) -> Result<Vec<ServerSecret>> {
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows: Vec<(String, DateTime<Utc>)> = secrets::table
            .filter(secrets::server_id.eq(self.0.id))
            .filter(secrets::org_id.eq(self.0.org_id))
            .order(secrets::key.asc())
            .select((secrets::key, secrets::updated_at))
            .load(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(|(key, updated_at)| ServerSecret { key, updated_at }).collect())
    }
}

// ---------------------------------------------------------------- loading

/// A server of the caller's org that is not deleted, or NOT_FOUND.
pub async fn load_server(ctx: &Context<'_>, org_id: Uuid, id: Uuid) -> ApiResult<ServerRow> {
    let mut conn = state(ctx).pool.get().await?;
    servers::table
        .filter(servers::id.eq(id))
        .filter(servers::org_id.eq(org_id))
        .filter(servers::deleted_at.is_null())
        .select(ServerRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound("server"))
}

/// The live version's spec, else the newest version that has one.
pub async fn current_spec(ctx: &Context<'_>, server: &ServerRow) -> ApiResult<Option<ToolSpec>> {
    let mut conn = state(ctx).pool.get().await?;
    let mut q = server_versions::table
        .filter(server_versions::server_id.eq(server.id))
        .filter(server_versions::org_id.eq(server.org_id))
        .filter(server_versions::spec.is_not_null())
        .into_boxed();
    if let Some(cur) = server.current_version_id {
        q = q.filter(server_versions::id.eq(cur));
    }
    let spec: Option<Option<serde_json::Value>> =
        q.order(server_versions::version.desc()).select(server_versions::spec).first(&mut conn).await.optional()?;
    spec.flatten().map(|s| parse_spec(&s)).transpose()
}

// ---------------------------------------------------------------- inputs

#[derive(InputObject)]
pub struct CredentialValue {
    /// The credential's key, as the preview listed it.
    pub key: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct CreateServerInput {
    /// From `previewServer`.
    pub preview_id: ID,
    /// The server's name; its URL slug is made from it.
    pub name: String,
    /// Values for the credentials the preview asked for.
    #[graphql(default)]
    pub credentials: Vec<CredentialValue>,
}

#[derive(InputObject)]
pub struct CreateServerVersionInput {
    pub server_id: ID,
    /// From `iterateServer` on this server.
    pub preview_id: ID,
    /// Values for credentials the new version adds (existing ones are kept).
    #[graphql(default)]
    pub credentials: Vec<CredentialValue>,
}

#[derive(SimpleObject)]
pub struct ServerBuild {
    pub server: Server,
    pub build: Build,
}

/// Check credentials against what the spec asks for. `existing` keys count
/// as provided (a new version keeps the server's stored secrets).
fn check_credentials(
    spec: &ToolSpec,
    given: &[CredentialValue],
    existing: &HashSet<String>,
    field: &str,
) -> ApiResult<()> {
    let wanted: Vec<&str> = spec.credentials.iter().map(|c| c.key.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, c) in given.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if !wanted.contains(&c.key.as_str()) {
            let asks = if wanted.is_empty() { "none".to_owned() } else { wanted.join(", ") };
            return Err(ApiError::bad_input(
                format!("{f}.key"),
                format!("the server does not use a credential {:?}; it asks for: {asks}", c.key),
            ));
        }
        if !seen.insert(c.key.as_str()) {
            return Err(ApiError::bad_input(format!("{f}.key"), format!("{:?} is given twice", c.key)));
        }
        if c.value.is_empty() {
            return Err(ApiError::bad_input(format!("{f}.value"), "must not be empty"));
        }
        if c.value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::bad_input(format!("{f}.value"), format!("at most {MAX_SECRET_BYTES} bytes")));
        }
    }
    for c in spec.credentials.iter().filter(|c| c.required) {
        if !seen.contains(c.key.as_str()) && !existing.contains(&c.key) {
            return Err(ApiError::bad_input(field, format!("missing the required credential {} ({})", c.key, c.label)));
        }
    }
    Ok(())
}

fn validate_secret_key(field: &str, key: &str) -> ApiResult<()> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key.as_bytes()[0].is_ascii_uppercase()
        && key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_input(
            field,
            "must look like an environment variable: A-Z, 0-9 and _, starting with a letter",
        ))
    }
}

/// Seal and upsert one secret. The context binds the ciphertext to its server and key.
async fn put_secret(
    conn: &mut AsyncPgConnection,
    sb: &SecretBox,
    org_id: Uuid,
    server_id: Uuid,
    key: &str,
    value: &str,
) -> QueryResult<DateTime<Utc>> {
    let sealed = sb.seal(value.as_bytes(), format!("secret:{server_id}:{key}").as_bytes());
    diesel::insert_into(secrets::table)
        .values((
            secrets::id.eq(Uuid::now_v7()),
            secrets::org_id.eq(org_id),
            secrets::server_id.eq(server_id),
            secrets::key.eq(key),
            secrets::nonce.eq(&sealed.nonce),
            secrets::ciphertext.eq(&sealed.ciphertext),
        ))
        .on_conflict((secrets::server_id, secrets::key))
        .do_update()
        .set((
            secrets::nonce.eq(&sealed.nonce),
            secrets::ciphertext.eq(&sealed.ciphertext),
            secrets::updated_at.eq(diesel::dsl::now),
        ))
        .returning(secrets::updated_at)
        .get_result(conn)
        .await
}

fn slug_candidates(name: &str) -> Vec<String> {
    let base: String =
        bmm_core::slug::slugify(name).chars().take(40).collect::<String>().trim_end_matches('-').to_owned();
    let mut out = vec![base.clone()];
    out.extend((2..=5).map(|n| format!("{base}-{n}")));
    for _ in 0..5 {
        out.push(format!("{base}-{}", &Uuid::new_v4().simple().to_string()[..6]));
    }
    out
}

struct NewBuild {
    build_id: Uuid,
    version_id: Uuid,
    version: i32,
    preview_id: Option<Uuid>,
    generator: Option<String>,
}

async fn insert_build(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    server_id: Uuid,
    user_id: Uuid,
    b: &NewBuild,
) -> QueryResult<()> {
    diesel::insert_into(builds::table)
        .values((
            builds::id.eq(b.build_id),
            builds::org_id.eq(org_id),
            builds::server_id.eq(server_id),
            builds::version_id.eq(b.version_id),
            builds::status.eq("QUEUED"),
            builds::workflow_id.eq(format!("build-{}", b.build_id)),
            builds::preview_id.eq(b.preview_id),
            builds::generator.eq(&b.generator),
            builds::created_by.eq(Some(user_id)),
            builds::trace_id.eq(current_trace_id()),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// The trace this request belongs to (when traces are exported), so the
/// dashboard can link a build to its trace.
fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current());
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Start the build's workflow; a failure to start marks the build failed
/// (so nothing waits on it forever) and is reported as INTERNAL.
async fn start_build(ctx: &Context<'_>, server: &ServerRow, b: &NewBuild) -> ApiResult<()> {
    let st = state(ctx);
    let req = BuildRequest {
        build_id: b.build_id,
        org_id: server.org_id,
        server_id: server.id,
        version_id: b.version_id,
        version: b.version,
        slug: server.slug.clone(),
        preview_id: b.preview_id,
    };
    let started = match st.builds.clone() {
        Some(runner) => runner.start(req).await,
        None => Err("no build runner configured".to_owned()),
    };
    let mut conn = st.pool.get().await?;
    match started {
        Ok(run_id) => {
            if run_id.is_some() {
                diesel::update(builds::table.filter(builds::id.eq(b.build_id)))
                    .set(builds::run_id.eq(run_id))
                    .execute(&mut conn)
                    .await?;
            }
            Ok(())
        }
        Err(e) => {
            diesel::update(builds::table.filter(builds::id.eq(b.build_id)))
                .set((
                    builds::status.eq("FAILED"),
                    builds::error.eq("the build could not be started; try again"),
                    builds::finished_at.eq(diesel::dsl::now),
                ))
                .execute(&mut conn)
                .await?;
            Err(ApiError::internal(format!("start build {}: {e}", b.build_id)))
        }
    }
}

/// Version `version` of a server, or BAD_USER_INPUT naming the argument.
async fn load_version_row(ctx: &Context<'_>, server: &ServerRow, version: i32) -> ApiResult<VersionRow> {
    let mut conn = state(ctx).pool.get().await?;
    server_versions::table
        .filter(server_versions::server_id.eq(server.id))
        .filter(server_versions::org_id.eq(server.org_id))
        .filter(server_versions::version.eq(version))
        .select(VersionRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| ApiError::bad_input("version", format!("the server has no version {version}")))
}

/// A new build of an existing version's spec (rollback, redeploy): the
/// workflow builds, smoke-tests and cuts over to it like any other, with the
/// server's secrets as they are now. `action` names it in the audit log.
async fn rebuild(ctx: &Context<'_>, server: ServerRow, target: VersionRow, action: &str) -> ApiResult<ServerBuild> {
    let p = principal(ctx)?;
    let b = NewBuild {
        build_id: Uuid::now_v7(),
        version_id: target.id,
        version: target.version,
        preview_id: None,
        generator: Some(target.generator.clone()),
    };
    let mut conn = state(ctx).pool.get().await?;
    insert_build(&mut conn, server.org_id, server.id, p.user_id, &b).await?;
    drop(conn);
    audit(
        ctx,
        action,
        "server",
        Some(server.id.to_string()),
        json!({ "version": target.version, "buildId": b.build_id }),
    )
    .await;
    start_build(ctx, &server, &b).await?;
    let build = load_build_row(ctx, server.org_id, b.build_id).await?;
    Ok(ServerBuild { server: Server(server), build: Build(build) })
}

async fn load_build_row(ctx: &Context<'_>, org_id: Uuid, id: Uuid) -> ApiResult<BuildRow> {
    crate::schema::builds::load_build(ctx, org_id, id).await
}

// ---------------------------------------------------------------- queries

#[derive(Default)]
pub struct ServerQuery;

#[Object]
impl ServerQuery {
    /// The org's servers, newest first (deleted ones are not listed).
    async fn servers(&self, ctx: &Context<'_>) -> Result<Vec<Server>> {
        let p = principal(ctx)?;
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = servers::table
            .filter(servers::org_id.eq(p.org_id))
            .filter(servers::deleted_at.is_null())
            .order(servers::created_at.desc())
            .select(ServerRow::as_select())
            .load(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Server).collect())
    }

    async fn server(&self, ctx: &Context<'_>, id: ID) -> Result<Server> {
        let p = principal(ctx)?;
        let id = parse_id("id", &id)?;
        Ok(Server(load_server(ctx, p.org_id, id).await?))
    }
}

// ---------------------------------------------------------------- mutations

#[derive(Default)]
pub struct ServerMutation;

#[Object]
impl ServerMutation {
    /// Create a server from a preview and start its first build. The build
    /// uses exactly the preview's spec (the one reviewed), also after the
    /// preview's `expiresAt`; a preview is kept for a day.
    async fn create_server(&self, ctx: &Context<'_>, input: CreateServerInput) -> Result<ServerBuild> {
        let p = principal(ctx)?;
        let preview_id = parse_id("input.previewId", &input.preview_id)?;
        let name = input.name.trim().to_owned();
        if name.is_empty() {
            return Err(ApiError::bad_input("input.name", "give the server a name").into());
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ApiError::bad_input("input.name", format!("at most {MAX_NAME_CHARS} characters")).into());
        }
        let preview = load_preview(ctx, p.org_id, preview_id).await?;
        if preview.server_id.is_some() {
            return Err(ApiError::bad_input(
                "input.previewId",
                "this preview is a new version of an existing server; build it with createServerVersion",
            )
            .into());
        }
        let spec = parse_spec(&preview.spec)?;
        check_credentials(&spec, &input.credentials, &HashSet::new(), "input.credentials")?;
        let fresh = preview.expires_at > Utc::now();
        let st = state(ctx);
        let server_id = Uuid::now_v7();
        let b = NewBuild {
            build_id: Uuid::now_v7(),
            version_id: Uuid::now_v7(),
            version: 1,
            preview_id: Some(preview_id),
            generator: Some(preview.generator.clone()),
        };
        // The spec the user reviewed, however old the preview (never regenerated).
        let spec_json = Some(preview.spec.clone());
        let spec_digest = Some(bmm_core::digest::sha256(spec.canonical_json().as_bytes()));
        let (org_id, user_id) = (p.org_id, p.user_id);
        let description = spec.description.clone();
        let creds = &input.credentials;
        let sb = &st.cfg.secret_box;
        let generator = preview.generator.clone();
        let b = &b;
        let mut conn = st.pool.get().await.map_err(ApiError::from)?;
        let server = conn
            .transaction::<ServerRow, ApiError, _>(|conn| {
                async move {
                    let mut inserted = None;
                    for slug in slug_candidates(&name) {
                        let row = diesel::insert_into(servers::table)
                            .values((
                                servers::id.eq(server_id),
                                servers::org_id.eq(org_id),
                                servers::slug.eq(&slug),
                                servers::name.eq(&name),
                                servers::description.eq(&description),
                                servers::status.eq("BUILDING"),
                            ))
                            .on_conflict(servers::slug)
                            .do_nothing()
                            .returning(ServerRow::as_returning())
                            .get_result(conn)
                            .await
                            .optional()?;
                        if row.is_some() {
                            inserted = row;
                            break;
                        }
                    }
                    let server = inserted.ok_or_else(|| ApiError::internal("no free slug after 11 tries"))?;
                    diesel::insert_into(server_versions::table)
                        .values((
                            server_versions::id.eq(b.version_id),
                            server_versions::org_id.eq(org_id),
                            server_versions::server_id.eq(server_id),
                            server_versions::version.eq(1),
                            server_versions::spec.eq(&spec_json),
                            server_versions::spec_digest.eq(&spec_digest),
                            server_versions::generator.eq(&generator),
                        ))
                        .execute(conn)
                        .await?;
                    insert_build(conn, org_id, server_id, user_id, b).await?;
                    for c in creds {
                        put_secret(conn, sb, org_id, server_id, &c.key, &c.value).await?;
                    }
                    Ok(server)
                }
                .scope_boxed()
            })
            .await?;
        drop(conn);
        audit(
            ctx,
            "server.create",
            "server",
            Some(server.id.to_string()),
            json!({
                "name": server.name,
                "slug": server.slug,
                "previewId": preview_id,
                "previewExpired": !fresh,
                "buildId": b.build_id,
                "credentialKeys": input.credentials.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            }),
        )
        .await;
        start_build(ctx, &server, b).await?;
        let build = load_build_row(ctx, org_id, b.build_id).await?;
        Ok(ServerBuild { server: Server(server), build: Build(build) })
    }

    /// Build a new version of a server from a preview made by `iterateServer`.
    async fn create_server_version(&self, ctx: &Context<'_>, input: CreateServerVersionInput) -> Result<ServerBuild> {
        let p = principal(ctx)?;
        let server_id = parse_id("input.serverId", &input.server_id)?;
        let preview_id = parse_id("input.previewId", &input.preview_id)?;
        let server = load_server(ctx, p.org_id, server_id).await?;
        let preview = load_preview(ctx, p.org_id, preview_id).await?;
        if preview.server_id != Some(server_id) {
            return Err(ApiError::bad_input("input.previewId", "this preview was not made for this server").into());
        }
        let spec = parse_spec(&preview.spec)?;
        let st = state(ctx);
        let existing: HashSet<String> = {
            let mut conn = st.pool.get().await.map_err(ApiError::from)?;
            secrets::table
                .filter(secrets::server_id.eq(server_id))
                .filter(secrets::org_id.eq(p.org_id))
                .select(secrets::key)
                .load::<String>(&mut conn)
                .await
                .map_err(ApiError::from)?
                .into_iter()
                .collect()
        };
        check_credentials(&spec, &input.credentials, &existing, "input.credentials")?;
        let fresh = preview.expires_at > Utc::now();
        // The spec the user reviewed, however old the preview (never regenerated).
        let spec_json = Some(preview.spec.clone());
        let spec_digest = Some(bmm_core::digest::sha256(spec.canonical_json().as_bytes()));
        let (org_id, user_id) = (p.org_id, p.user_id);
        let creds = &input.credentials;
        let sb = &st.cfg.secret_box;
        let generator = preview.generator.clone();
        let instruction = preview.instruction.clone();
        let mut conn = st.pool.get().await.map_err(ApiError::from)?;
        let b = conn
            .transaction::<NewBuild, ApiError, _>(|conn| {
                async move {
                    // Lock the server so two iterations cannot take the same version number.
                    servers::table
                        .filter(servers::id.eq(server_id))
                        .select(servers::id)
                        .for_update()
                        .first::<Uuid>(conn)
                        .await?;
                    let max: Option<i32> = server_versions::table
                        .filter(server_versions::server_id.eq(server_id))
                        .select(diesel::dsl::max(server_versions::version))
                        .first(conn)
                        .await?;
                    let b = NewBuild {
                        build_id: Uuid::now_v7(),
                        version_id: Uuid::now_v7(),
                        version: max.unwrap_or(0) + 1,
                        preview_id: Some(preview_id),
                        generator: Some(generator.clone()),
                    };
                    diesel::insert_into(server_versions::table)
                        .values((
                            server_versions::id.eq(b.version_id),
                            server_versions::org_id.eq(org_id),
                            server_versions::server_id.eq(server_id),
                            server_versions::version.eq(b.version),
                            server_versions::spec.eq(&spec_json),
                            server_versions::spec_digest.eq(&spec_digest),
                            server_versions::generator.eq(&generator),
                            server_versions::instruction.eq(&instruction),
                        ))
                        .execute(conn)
                        .await?;
                    insert_build(conn, org_id, server_id, user_id, &b).await?;
                    for c in creds {
                        put_secret(conn, sb, org_id, server_id, &c.key, &c.value).await?;
                    }
                    Ok(b)
                }
                .scope_boxed()
            })
            .await?;
        drop(conn);
        audit(
            ctx,
            "server.version.create",
            "server",
            Some(server_id.to_string()),
            json!({
                "version": b.version,
                "previewId": preview_id,
                "previewExpired": !fresh,
                "buildId": b.build_id,
                "credentialKeys": input.credentials.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            }),
        )
        .await;
        start_build(ctx, &server, &b).await?;
        let build = load_build_row(ctx, org_id, b.build_id).await?;
        Ok(ServerBuild { server: Server(load_server(ctx, org_id, server_id).await?), build: Build(build) })
    }

    /// Make an older version live again: a new build of that version's spec.
    /// The live version is refused: `redeployServer` restarts it.
    async fn rollback_server(&self, ctx: &Context<'_>, server_id: ID, version: i32) -> Result<ServerBuild> {
        let p = principal(ctx)?;
        let sid = parse_id("serverId", &server_id)?;
        let server = load_server(ctx, p.org_id, sid).await?;
        let target = load_version_row(ctx, &server, version).await?;
        if target.spec.is_none() {
            return Err(
                ApiError::bad_input("version", format!("version {version} never got a spec; pick another")).into()
            );
        }
        if server.current_version_id == Some(target.id) && server.status == "LIVE" {
            return Err(ApiError::bad_input(
                "version",
                format!("version {version} is already live; redeployServer restarts it"),
            )
            .into());
        }
        Ok(rebuild(ctx, server, target, "server.rollback").await?)
    }

    /// Deploy the live version again: a new build of its spec, so secrets set
    /// since its build take effect. The running container serves until the
    /// new one has passed its smoke test, then stops.
    async fn redeploy_server(&self, ctx: &Context<'_>, server_id: ID) -> Result<ServerBuild> {
        let p = principal(ctx)?;
        let sid = parse_id("serverId", &server_id)?;
        let server = load_server(ctx, p.org_id, sid).await?;
        let Some(current) = server.current_version_id else {
            return Err(ApiError::bad_input("serverId", "no version is live yet; wait for the first build").into());
        };
        let st = state(ctx);
        let mut conn = st.pool.get().await.map_err(ApiError::from)?;
        let target: VersionRow = server_versions::table
            .filter(server_versions::id.eq(current))
            .filter(server_versions::org_id.eq(p.org_id))
            .select(VersionRow::as_select())
            .first(&mut conn)
            .await
            .map_err(ApiError::from)?;
        drop(conn);
        if target.spec.is_none() {
            return Err(ApiError::internal(format!("the live version {} has no spec", target.version)).into());
        }
        Ok(rebuild(ctx, server, target, "server.redeploy").await?)
    }

    /// Delete a server: cancel its builds, stop its containers, take its URL
    /// off the gateway. Its slug stays reserved. Needs the owner or admin role.
    async fn delete_server(&self, ctx: &Context<'_>, id: ID) -> Result<Server> {
        let p = principal(ctx)?;
        let sid = parse_id("id", &id)?;
        let server = load_server(ctx, p.org_id, sid).await?;
        require_admin(p)?;
        let st = state(ctx);
        let running: Vec<Uuid> = {
            let mut conn = st.pool.get().await.map_err(ApiError::from)?;
            builds::table
                .filter(builds::server_id.eq(sid))
                .filter(builds::org_id.eq(p.org_id))
                .filter(builds::status.eq_any(["QUEUED", "RUNNING"]))
                .select(builds::id)
                .load(&mut conn)
                .await
                .map_err(ApiError::from)?
        };
        if let Some(runner) = st.builds.clone() {
            for b in &running {
                if let Err(e) = runner.cancel(*b).await {
                    tracing::warn!(build_id = %b, error = %e, "could not cancel a build of a deleted server");
                }
            }
        }
        let mut conn = st.pool.get().await.map_err(ApiError::from)?;
        let deleted = conn
            .transaction::<ServerRow, ApiError, _>(|conn| {
                async move {
                    let row =
                        diesel::update(servers::table.filter(servers::id.eq(sid)).filter(servers::org_id.eq(p.org_id)))
                            .set((
                                servers::status.eq("DELETED"),
                                servers::deleted_at.eq(diesel::dsl::now),
                                servers::updated_at.eq(diesel::dsl::now),
                            ))
                            .returning(ServerRow::as_returning())
                            .get_result(conn)
                            .await?;
                    diesel::update(
                        deployments::table
                            .filter(deployments::server_id.eq(sid))
                            .filter(deployments::status.ne("STOPPED")),
                    )
                    .set((deployments::status.eq("STOPPED"), deployments::stopped_at.eq(diesel::dsl::now)))
                    .execute(conn)
                    .await?;
                    // The gateway drops the route on this.
                    diesel::sql_query("SELECT pg_notify($1, $2)")
                        .bind::<diesel::sql_types::Text, _>(crate::hub::ROUTES_CHANNEL)
                        .bind::<diesel::sql_types::Text, _>(json!({ "server_id": sid, "deleted": true }).to_string())
                        .execute(conn)
                        .await?;
                    Ok(row)
                }
                .scope_boxed()
            })
            .await?;
        drop(conn);
        let stopped = match st.runtime.clone() {
            Some(rt) => match rt.stop_server(sid).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(server_id = %sid, error = %e, "could not stop the containers of a deleted server");
                    false
                }
            },
            None => false,
        };
        audit(
            ctx,
            "server.delete",
            "server",
            Some(sid.to_string()),
            json!({ "slug": server.slug, "cancelledBuilds": running, "containersStopped": stopped }),
        )
        .await;
        Ok(Server(deleted))
    }

    /// Store a secret for a server (sealed at rest; used from the next build
    /// on: `redeployServer` makes one of the live version). The value is
    /// never returned, logged or audited.
    async fn set_server_secret(
        &self,
        ctx: &Context<'_>,
        server_id: ID,
        key: String,
        value: String,
    ) -> Result<ServerSecret> {
        let p = principal(ctx)?;
        let sid = parse_id("serverId", &server_id)?;
        validate_secret_key("key", &key)?;
        if value.is_empty() {
            return Err(ApiError::bad_input("value", "must not be empty").into());
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::bad_input("value", format!("at most {MAX_SECRET_BYTES} bytes")).into());
        }
        load_server(ctx, p.org_id, sid).await?;
        let st = state(ctx);
        let mut conn = st.pool.get().await.map_err(ApiError::from)?;
        let updated_at =
            put_secret(&mut conn, &st.cfg.secret_box, p.org_id, sid, &key, &value).await.map_err(ApiError::from)?;
        drop(conn);
        audit(ctx, "server.secret.set", "server", Some(sid.to_string()), json!({ "key": key })).await;
        Ok(ServerSecret { key, updated_at })
    }
}

// ---------------------------------------------------------------- subscriptions

/// A server's state, sent when it changes.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct ServerStatusUpdate {
    pub server_id: ID,
    pub status: ServerStatus,
    /// Why the server is `DEGRADED` or `DOWN`.
    pub status_reason: Option<String>,
    pub current_version: Option<i32>,
    pub latest_build_id: Option<ID>,
    pub latest_build_status: Option<crate::schema::types::BuildStatus>,
    pub latest_build_step: Option<String>,
}

async fn status_snapshot(
    st: &crate::state::AppState,
    org_id: Uuid,
    sid: Uuid,
) -> ApiResult<Option<ServerStatusUpdate>> {
    let mut conn = st.pool.get().await?;
    let row: Option<(String, Option<String>, Option<Uuid>)> = servers::table
        .filter(servers::id.eq(sid))
        .filter(servers::org_id.eq(org_id))
        .select((servers::status, servers::status_reason, servers::current_version_id))
        .first(&mut conn)
        .await
        .optional()?;
    let Some((status, status_reason, current)) = row else { return Ok(None) };
    let current_version = match current {
        Some(v) => server_versions::table
            .filter(server_versions::id.eq(v))
            .select(server_versions::version)
            .first::<i32>(&mut conn)
            .await
            .optional()?,
        None => None,
    };
    let latest: Option<(Uuid, String, Option<String>)> = builds::table
        .filter(builds::server_id.eq(sid))
        .filter(builds::org_id.eq(org_id))
        .order(builds::created_at.desc())
        .select((builds::id, builds::status, builds::current_step))
        .first(&mut conn)
        .await
        .optional()?;
    Ok(Some(ServerStatusUpdate {
        server_id: ID(sid.to_string()),
        status: ServerStatus::from_db(&status),
        status_reason,
        current_version,
        latest_build_id: latest.as_ref().map(|l| ID(l.0.to_string())),
        latest_build_status: latest.as_ref().map(|l| crate::schema::types::BuildStatus::from_db(&l.1)),
        latest_build_step: latest.and_then(|l| l.2),
    }))
}

pub use subscription::ServerSubscription;

async fn live_container(st: &crate::state::AppState, org_id: Uuid, sid: Uuid) -> ApiResult<Option<String>> {
    let mut conn = st.pool.get().await?;
    Ok(deployments::table
        .filter(deployments::server_id.eq(sid))
        .filter(deployments::org_id.eq(org_id))
        .filter(deployments::status.eq("LIVE"))
        .order(deployments::live_at.desc())
        .select(deployments::container_name)
        .first(&mut conn)
        .await
        .optional()?)
}

/// Kept apart: async-graphql's subscription macro calls a method named
/// `execute`, which diesel's `RunQueryDsl` would shadow.
mod subscription {
    use async_graphql::{Context, ID, Result, Subscription};
    use futures::{Stream, StreamExt};

    use super::{ServerStatusUpdate, load_server, status_snapshot};
    use crate::context::{parse_id, principal, state};
    use crate::error::ApiError;
    use crate::schema::types::ServerStatus;

    #[derive(Default)]
    pub struct ServerSubscription;

    #[Subscription]
    impl ServerSubscription {
        /// The server's status now, then every change (build progress, go-live,
        /// failure, deletion). Completes when the server is deleted.
        async fn server_status(
            &self,
            ctx: &Context<'_>,
            server_id: ID,
        ) -> Result<impl Stream<Item = Result<ServerStatusUpdate>> + use<>> {
            let p = principal(ctx)?;
            let sid = parse_id("serverId", &server_id)?;
            load_server(ctx, p.org_id, sid).await?;
            let st = state(ctx).clone();
            let org_id = p.org_id;
            let changes = st.hub.changes();
            let init: (crate::state::AppState, tokio::sync::watch::Receiver<u64>, Option<ServerStatusUpdate>, bool) =
                (st, changes, None, false);
            Ok(futures::stream::unfold(init, move |(st, mut changes, last, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match status_snapshot(&st, org_id, sid).await {
                        Ok(Some(s)) if Some(&s) != last.as_ref() => {
                            let end = s.status == ServerStatus::Deleted;
                            return Some((Ok(s.clone()), (st, changes, Some(s), end)));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return None,
                        Err(e) => return Some((Err(e.into()), (st, changes, last, true))),
                    }
                    // Wake on any build or route notification, or every few seconds regardless.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed()).await;
                    // Coalesce bursts of notifications (a build logs many lines).
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    changes.borrow_and_update();
                }
            }))
        }

        /// The live container's log: the last `tail` lines (default 100, at most
        /// 1000), then new lines as they are written.
        async fn server_logs(
            &self,
            ctx: &Context<'_>,
            server_id: ID,
            tail: Option<i32>,
        ) -> Result<impl Stream<Item = Result<String>> + use<>> {
            let p = principal(ctx)?;
            let sid = parse_id("serverId", &server_id)?;
            let tail = tail.unwrap_or(100);
            if !(0..=1000).contains(&tail) {
                return Err(ApiError::bad_input("tail", "must be between 0 and 1000").into());
            }
            load_server(ctx, p.org_id, sid).await?;
            let st = state(ctx);
            let container = super::live_container(st, p.org_id, sid).await?;
            let container = container.ok_or(ApiError::NotFound("live deployment"))?;
            let runtime = st.runtime.clone().ok_or_else(|| ApiError::internal("no container runtime configured"))?;
            Ok(runtime
                .logs(&container, tail as usize)
                .map(|line| line.map_err(|e| ApiError::internal(format!("container logs: {e}")).into())))
        }
    }
}

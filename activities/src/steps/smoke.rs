//! smoke: a real MCP client (`crate::smoke`) initializes against the new
//! container with a short-lived platform token and lists its tools, which
//! must be exactly the spec's. A container that does not answer because the
//! runtime lost it fails with `CONTAINER_LOST`, so the workflow deploys it again.

use std::path::PathBuf;
use std::time::Duration;

use bmm_auth::tokens::{AccessGrant, mint_access_token};
use bmm_db::schema::builds;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::build::BuildActivities;
use crate::error::{StepError, kind};
use crate::model::DeployedInput;
use crate::report::Reporter;
use crate::smoke::{SmokeError, smoke_test};

/// How long one smoke attempt may take (the container is already healthy).
const SMOKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the smoke test's token: just this attempt.
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// The OAuth client the platform's own smoke test acts as.
pub const SMOKE_CLIENT_ID: &str = "bmm-smoke-test";

pub async fn run(acts: &BuildActivities, r: Reporter, input: &DeployedInput) -> Result<(), StepError> {
    let b = &input.build;
    let mut conn = r.conn().await?;
    let version = super::load_version(&mut conn, b).await?;
    let created_by: Option<Uuid> =
        builds::table.filter(builds::id.eq(b.build_id)).select(builds::created_by).first(&mut conn).await?;
    drop(conn);
    let spec: bmm_spec::ToolSpec = version
        .spec
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| StepError::rejected(kind::MISSING, "the version has no spec"))?;
    let expected: Vec<String> = spec.tools.iter().map(|t| t.name.clone()).collect();

    // The token a real client would get: audience the stable URL, base scope.
    let audience = acts.cfg.server_url(&b.slug);
    let scope = smoke_scope(&spec);
    let grant = AccessGrant {
        user_id: created_by.unwrap_or(Uuid::nil()),
        org_id: b.org_id,
        audience: &audience,
        scope: &scope,
        client_id: SMOKE_CLIENT_ID,
        ttl: TOKEN_TTL,
    };
    let (token, _) = mint_access_token(&acts.keys, &grant)
        .await
        .map_err(|e| StepError::transient(format!("could not sign the smoke test's token: {e}")))?;
    let url = input.deployed.mcp_url();
    r.log(&format!("MCP initialize + tools/list against {url}")).await?;
    let report = match smoke_test(&url, &token, &expected, SMOKE_TIMEOUT).await {
        Ok(report) => report,
        // No answer: a container lost to the runtime is deployed again by the
        // workflow; one that is still in place gets the step's retries.
        Err(e @ (SmokeError::Unreachable(_) | SmokeError::Timeout(_))) => {
            super::deploy::ensure_in_place(acts, &input.deployed).await?;
            return Err(smoke_error(e));
        }
        Err(e) => return Err(smoke_error(e)),
    };
    r.succeeded(
        &format!(
            "the server answers MCP {} with {} tool(s): {}",
            report.protocol_version,
            report.tools.len(),
            report.tools.join(", ")
        ),
        Some(serde_json::json!({
            "protocolVersion": report.protocol_version,
            "serverName": report.server_name,
            "tools": report.tools,
            "elapsedMs": report.elapsed.as_millis() as u64,
        })),
    )
    .await
}

/// `mcp` plus every scope a tool asks for, so the smoke test can list them all.
fn smoke_scope(spec: &bmm_spec::ToolSpec) -> String {
    let mut scopes: Vec<&str> = vec!["mcp"];
    for t in &spec.tools {
        for s in &t.scopes {
            if !scopes.contains(&s.as_str()) {
                scopes.push(s);
            }
        }
    }
    scopes.join(" ")
}

fn smoke_error(e: SmokeError) -> StepError {
    match e {
        // The container may still be settling, or just rotated keys: try again.
        SmokeError::Unreachable(_) | SmokeError::Timeout(_) | SmokeError::Unauthorized { .. } => {
            StepError::transient(format!("smoke test: {e}"))
        }
        SmokeError::Protocol(_) | SmokeError::ToolMismatch { .. } => {
            StepError::rejected(kind::SMOKE_FAILED, format!("smoke test: {e}"))
        }
    }
}

/// The folder holding the platform's published `jwks.json`, mounted into
/// every container so it can verify access tokens. Written now, so a
/// signing key exists and the file is current before the container starts.
pub(crate) async fn jwks_dir(acts: &BuildActivities) -> Result<PathBuf, StepError> {
    let dir = acts.cfg.data_dir.join("jwks");
    acts.keys.init().await.map_err(|e| StepError::transient(format!("could not publish the signing keys: {e}")))?;
    Ok(dir)
}

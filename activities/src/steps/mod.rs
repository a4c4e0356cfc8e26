//! One module per build step. Each `run` is idempotent: a retried attempt
//! (after a crash, a timeout or a transient error) finds what an earlier
//! attempt stored and carries on from there.

pub mod abandon;
pub mod bundle;
pub mod check;
pub mod cutover;
pub mod deploy;
pub mod generate;
pub mod smoke;

use bmm_db::models::ServerVersion;
use bmm_db::schema::server_versions;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::{StepError, kind};
use crate::model::BuildInput;

/// The version row this build makes, scoped to the build's org.
pub(crate) async fn load_version(conn: &mut AsyncPgConnection, b: &BuildInput) -> Result<ServerVersion, StepError> {
    server_versions::table
        .filter(server_versions::id.eq(b.version_id))
        .filter(server_versions::org_id.eq(b.org_id))
        .filter(server_versions::server_id.eq(b.server_id))
        .select(ServerVersion::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| StepError::rejected(kind::MISSING, format!("server version {} does not exist", b.version_id)))
}

/// The spec stored on the version, checked against the digest the workflow carries.
pub(crate) async fn load_spec(
    conn: &mut AsyncPgConnection,
    b: &BuildInput,
    spec_digest: &str,
) -> Result<bmm_spec::ToolSpec, StepError> {
    let v = load_version(conn, b).await?;
    let json = v.spec.ok_or_else(|| StepError::rejected(kind::MISSING, "the version has no spec yet"))?;
    let spec: bmm_spec::ToolSpec = serde_json::from_value(json)
        .map_err(|e| StepError::rejected(kind::INVALID_SPEC, format!("the stored spec is not a tool spec: {e}")))?;
    let actual = spec_digest_of(&spec);
    if actual != spec_digest {
        return Err(StepError::rejected(
            kind::MISSING,
            format!("the version's spec changed under the build (expected {spec_digest}, found {actual})"),
        ));
    }
    Ok(spec)
}

/// `sha256:` of the spec's canonical JSON.
pub(crate) fn spec_digest_of(spec: &bmm_spec::ToolSpec) -> String {
    bmm_core::digest::sha256(spec.canonical_json().as_bytes())
}

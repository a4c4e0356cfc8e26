//! bundle: esbuild the checked source into one ES module, stored by digest.
//! The same source always gives the same bundle, so a bundle already made
//! from this source digest (by an earlier attempt or another build) is reused.

use bmm_db::schema::server_versions;
use bmm_spec::Toolchain;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::check::load_source;
use crate::blobs;
use crate::build::BuildActivities;
use crate::error::StepError;
use crate::model::{BundleInput, BundleRef};
use crate::report::Reporter;

pub async fn run(acts: &BuildActivities, r: Reporter, input: &BundleInput) -> Result<BundleRef, StepError> {
    let b = &input.build;
    if let Some(digest) = cached(&r, input).await? {
        set_bundle(&r, input, &digest).await?;
        r.succeeded(
            &format!("bundle reused from the cache ({digest})"),
            Some(serde_json::json!({ "bundleDigest": digest, "cached": true })),
        )
        .await?;
        return Ok(BundleRef { bundle_digest: digest });
    }

    let rendered = load_source(&r, &input.source_digest).await?;
    let dir = tempfile::tempdir().map_err(|e| StepError::transient(format!("no scratch directory: {e}")))?;
    bmm_spec::write_tree(&rendered, dir.path()).map_err(|e| StepError::transient(e.to_string()))?;
    r.log("esbuild: bundling src/server.ts for node 20").await?;
    let toolchain = Toolchain::new(acts.cfg.toolchain_dir.clone());
    // A source that type-checked but does not bundle is a toolchain problem
    // (missing, killed, timed out): retried rather than blamed on the spec.
    let bytes = toolchain.bundle(dir.path()).await.map_err(|e| StepError::transient(format!("esbuild failed: {e}")))?;
    let mut conn = r.conn().await?;
    let digest = blobs::put(&mut conn, blobs::BUNDLE, &bytes).await?;
    drop(conn);
    set_bundle(&r, input, &digest).await?;
    tracing::info!(build = %b.build_id, %digest, bytes = bytes.len(), "bundled");
    r.succeeded(
        &format!("bundled {} KiB ({digest})", bytes.len().div_ceil(1024)),
        Some(serde_json::json!({ "bundleDigest": digest, "bytes": bytes.len(), "cached": false })),
    )
    .await?;
    Ok(BundleRef { bundle_digest: digest })
}

/// A stored bundle of this very source, in this org.
async fn cached(r: &Reporter, input: &BundleInput) -> Result<Option<String>, StepError> {
    let mut conn = r.conn().await?;
    let candidates: Vec<Option<String>> = server_versions::table
        .filter(server_versions::org_id.eq(input.build.org_id))
        .filter(server_versions::source_digest.eq(&input.source_digest))
        .filter(server_versions::bundle_digest.is_not_null())
        .select(server_versions::bundle_digest)
        .limit(5)
        .load(&mut conn)
        .await?;
    for digest in candidates.into_iter().flatten() {
        if blobs::exists(&mut conn, &digest).await? {
            return Ok(Some(digest));
        }
    }
    Ok(None)
}

async fn set_bundle(r: &Reporter, input: &BundleInput, digest: &str) -> Result<(), StepError> {
    let mut conn = r.conn().await?;
    diesel::update(server_versions::table.filter(server_versions::id.eq(input.build.version_id)))
        .filter(server_versions::org_id.eq(input.build.org_id))
        .set(server_versions::bundle_digest.eq(Some(digest)))
        .execute(&mut conn)
        .await?;
    Ok(())
}

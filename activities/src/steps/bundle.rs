//! bundle: esbuild the source into one ES module, stored by digest.
//! The same source always gives the same bundle, so a bundle already made
//! from this source digest (by an earlier attempt or another build) is reused.
//!
//! The workflow runs it beside `check`, from the spec: rendering is
//! deterministic, so both steps see the same source. From a spec, it first
//! runs the same security scan as `check` and refuses banned code, because
//! its bundle is deployed (not routed) while the type check still runs.

use bmm_db::schema::server_versions;
use bmm_spec::{Toolchain, ToolchainError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::check::load_source;
use crate::blobs;
use crate::build::BuildActivities;
use crate::error::{StepError, kind};
use crate::model::{BuildInput, BundleInput, BundleRef};
use crate::report::Reporter;

pub async fn run(acts: &BuildActivities, r: Reporter, input: &BundleInput) -> Result<BundleRef, StepError> {
    let b = &input.build;
    let (source_digest, rendered) = match (&input.source_digest, &input.spec_digest) {
        (Some(source), _) => (source.clone(), None),
        (None, Some(spec_digest)) => {
            let mut conn = r.conn().await?;
            let spec = super::load_spec(&mut conn, b, spec_digest).await?;
            drop(conn);
            let rendered = bmm_spec::render(&spec);
            if !super::check::is_clean(&spec, &rendered) {
                return Err(StepError::rejected(
                    kind::BANNED_CODE,
                    "not bundled: the source breaks the code rules (the check step lists where)",
                ));
            }
            (source_digest_of(&rendered), Some(rendered))
        }
        (None, None) => return Err(StepError::rejected(kind::BAD_INPUT, "bundle needs a source or a spec digest")),
    };
    if let Some(digest) = cached(&r, b, &source_digest).await? {
        set_bundle(&r, input, &digest).await?;
        r.succeeded(
            &format!("bundle reused from the cache ({digest})"),
            Some(serde_json::json!({ "bundleDigest": digest, "cached": true })),
        )
        .await?;
        return Ok(BundleRef { bundle_digest: digest, source_digest });
    }

    let rendered = match rendered {
        Some(rendered) => rendered,
        None => load_source(&r, &source_digest).await?,
    };
    let dir = tempfile::tempdir().map_err(|e| StepError::transient(format!("no scratch directory: {e}")))?;
    bmm_spec::write_tree(&rendered, dir.path()).map_err(|e| StepError::transient(e.to_string()))?;
    r.log("esbuild: bundling src/server.ts for node 20").await?;
    let toolchain = Toolchain::new(acts.cfg.toolchain_dir.clone());
    // A source that type-checked but does not bundle is a toolchain problem
    // (missing, killed, timed out): retried rather than blamed on the spec.
    // Except a bundle that read a file from outside the tree: that is the
    // code reaching for the machine, refused for good with the path named.
    let bytes = toolchain.bundle(dir.path()).await.map_err(|e| match e {
        ToolchainError::OutsideInput { .. } => StepError::rejected(kind::BANNED_CODE, format!("not bundled: {e}")),
        e => StepError::transient(format!("esbuild failed: {e}")),
    })?;
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
    Ok(BundleRef { bundle_digest: digest, source_digest })
}

/// The digest `check` stores the same tree under (see `check::store_source`).
pub(crate) fn source_digest_of(rendered: &bmm_spec::Rendered) -> String {
    bmm_core::digest::sha256(&super::check::source_bytes(rendered))
}

/// A stored bundle of this very source, in this org.
async fn cached(r: &Reporter, b: &BuildInput, source_digest: &str) -> Result<Option<String>, StepError> {
    let mut conn = r.conn().await?;
    let candidates: Vec<Option<String>> = server_versions::table
        .filter(server_versions::org_id.eq(b.org_id))
        .filter(server_versions::source_digest.eq(source_digest))
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

//! deploy: the bundle in a hardened container (through `bmm_runtime`), with the
//! server's credentials from the encrypted store as environment.
//!
//! Idempotent: the container name is the build's, so a retried attempt (after
//! a worker crash mid-deploy) adopts the container the earlier one made, and
//! the `deployments` row is keyed by that name too.

use bmm_db::schema::{deployments, secrets, server_versions};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::blobs;
use crate::build::BuildActivities;
use crate::error::{StepError, kind};
use crate::model::{BuildInput, DeployInput, Deployed};
use crate::report::Reporter;
use bmm_runtime::{DeploySpec, Runtime, RuntimeError};

pub async fn run(acts: &BuildActivities, r: Reporter, input: &DeployInput) -> Result<Deployed, StepError> {
    let b = &input.build;
    let name = b.container_name();
    let deployment_id = record_intent(&r, b, &name).await?;

    let mut conn = r.conn().await?;
    let (spec, keys) = deploy_spec(acts, &mut conn, b, &input.bundle_digest).await?;
    drop(conn);
    r.log(&format!(
        "starting container {name} from {} with {} credential(s){}",
        acts.cfg.runtime_image,
        keys.len(),
        if keys.is_empty() { String::new() } else { format!(" ({})", keys.join(", ")) }
    ))
    .await?;
    let runtime = runtime(acts)?;
    let container = runtime.deploy(&spec).await.map_err(runtime_error)?;

    let mut conn = r.conn().await?;
    diesel::update(deployments::table.filter(deployments::id.eq(deployment_id)))
        .set((
            deployments::container_id.eq(Some(&container.id)),
            deployments::host.eq(Some(&container.host)),
            deployments::port.eq(Some(i32::from(container.port))),
            deployments::status.eq("READY"),
        ))
        .execute(&mut conn)
        .await?;
    diesel::update(server_versions::table.filter(server_versions::id.eq(b.version_id)))
        .filter(server_versions::org_id.eq(b.org_id))
        .set(server_versions::image_id.eq(Some(&container.image_id)))
        .execute(&mut conn)
        .await?;
    drop(conn);
    let how =
        if container.adopted { "adopted the container an earlier attempt started" } else { "container is healthy" };
    r.succeeded(
        &format!("{how}: {} on {}:{}", container.name, container.host, container.port),
        Some(serde_json::json!({
            "container": container.name,
            "host": container.host,
            "port": container.port,
            "adopted": container.adopted,
            "image": container.image_tag,
            "timingsMs": container.timings,
        })),
    )
    .await?;
    Ok(Deployed {
        deployment_id,
        container_name: container.name,
        container_id: container.id,
        host: container.host,
        port: container.port,
    })
}

/// What deploying build `b` needs: its bundle from the blob store (by digest),
/// the server's credentials (every one the spec requires, or a clear refusal
/// naming the missing ones) and the platform's settings. Also what the
/// reconciler redeploys a live version from. Returns the credential names too.
pub(crate) async fn deploy_spec(
    acts: &BuildActivities,
    conn: &mut diesel_async::AsyncPgConnection,
    b: &BuildInput,
    bundle_digest: &str,
) -> Result<(DeploySpec, Vec<String>), StepError> {
    let bundle = blobs::get(conn, bundle_digest).await?;
    let version = super::load_version(conn, b).await?;
    let spec: Option<bmm_spec::ToolSpec> = version.spec.and_then(|v| serde_json::from_value(v).ok());
    let credentials = load_credentials(acts, conn, b).await?;

    // Every credential the spec needs must be set; say which by name (never the value).
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(spec) = &spec {
        let missing: Vec<&str> = spec
            .credentials
            .iter()
            .filter(|c| c.required && !credentials.iter().any(|(k, _)| k == &c.key))
            .map(|c| c.key.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(StepError::rejected(
                kind::BAD_INPUT,
                format!("credential(s) not set: {}; add them on the server's page and build again", missing.join(", ")),
            ));
        }
        let wanted: Vec<&str> = spec.credentials.iter().map(|c| c.key.as_str()).collect();
        env.extend(credentials.into_iter().filter(|(k, _)| wanted.contains(&k.as_str())));
    }
    let keys: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    env.push(("BMM_SERVER_URL".into(), acts.cfg.server_url(&b.slug)));
    env.push(("BMM_ISSUER".into(), acts.cfg.issuer()));
    let jwks_dir = super::smoke::jwks_dir(acts).await?;
    let spec = DeploySpec {
        org_id: b.org_id,
        server_id: b.server_id,
        build_id: b.build_id,
        version: b.version,
        slug: b.slug.clone(),
        bundle,
        bundle_digest: bundle_digest.to_owned(),
        env,
        jwks_dir,
    };
    Ok((spec, keys))
}

/// The `deployments` row of this build's container, made before Docker is
/// asked, so a crash between the two still leaves a record cleanup finds.
async fn record_intent(r: &Reporter, b: &BuildInput, name: &str) -> Result<Uuid, StepError> {
    let mut conn = r.conn().await?;
    let id: Uuid = diesel::insert_into(deployments::table)
        .values((
            deployments::id.eq(Uuid::now_v7()),
            deployments::org_id.eq(b.org_id),
            deployments::server_id.eq(b.server_id),
            deployments::version_id.eq(b.version_id),
            deployments::build_id.eq(b.build_id),
            deployments::container_name.eq(name),
            deployments::status.eq("STARTING"),
        ))
        .on_conflict(deployments::container_name)
        .do_update()
        .set(deployments::status.eq("STARTING"))
        .returning(deployments::id)
        .get_result(&mut conn)
        .await?;
    Ok(id)
}

/// The server's credentials, decrypted. Values go to Docker only.
async fn load_credentials(
    acts: &BuildActivities,
    conn: &mut diesel_async::AsyncPgConnection,
    b: &BuildInput,
) -> Result<Vec<(String, String)>, StepError> {
    let rows: Vec<(String, Vec<u8>, Vec<u8>)> = secrets::table
        .filter(secrets::server_id.eq(b.server_id))
        .filter(secrets::org_id.eq(b.org_id))
        .select((secrets::key, secrets::nonce, secrets::ciphertext))
        .order(secrets::key.asc())
        .load(conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (key, nonce, ciphertext) in rows {
        // Bound to its row when sealed (graphql-api's setSecret): `secret:<server id>:<key>`.
        let context = format!("secret:{}:{key}", b.server_id);
        let plain = acts
            .cfg
            .secret_box
            .open(&bmm_core::crypto::Sealed { nonce, ciphertext }, context.as_bytes())
            .map_err(|_| {
                StepError::rejected(
                    kind::BAD_INPUT,
                    format!("credential {key} cannot be decrypted (sealed under another platform key?); set it again"),
                )
            })?;
        let value = String::from_utf8(plain)
            .map_err(|_| StepError::rejected(kind::BAD_INPUT, format!("credential {key} is not UTF-8 text")))?;
        out.push((key, value));
    }
    Ok(out)
}

/// The runtime the configuration names (the engine is contacted on first use).
pub(crate) fn runtime(acts: &BuildActivities) -> Result<std::sync::Arc<dyn Runtime>, StepError> {
    bmm_runtime::connect(&acts.cfg).map_err(runtime_error)
}

/// The runtime's failures in the build's words: an unreachable engine is retried.
pub(crate) fn runtime_error(e: RuntimeError) -> StepError {
    match e {
        RuntimeError::Unavailable(m) => StepError::transient(format!("Docker is unreachable: {m}")),
        RuntimeError::Failed(m) => StepError::rejected(kind::DEPLOY_FAILED, m),
        RuntimeError::BadRequest(m) => StepError::rejected(kind::BAD_INPUT, m),
    }
}

/// Whether the build's container still runs where its deploy left it.
///
/// `CONTAINER_LOST` when it is gone, stopped or answers on another port (the
/// runtime restarted, someone removed it): the workflow then deploys it
/// again. A container the engine is restarting is not lost: the server
/// crashed, which is its own fault, for the step's retries and then its failure.
pub(crate) async fn ensure_in_place(acts: &BuildActivities, deployed: &Deployed) -> Result<(), StepError> {
    let name = &deployed.container_name;
    let lost = |why: String| StepError::rejected(kind::CONTAINER_LOST, format!("the container {name} {why}"));
    let Some(w) = runtime(acts)?.adopt(name).await.map_err(runtime_error)? else {
        return Err(lost("is gone (removed, or lost when the runtime restarted)".to_owned()));
    };
    if w.state == "restarting" {
        return Ok(());
    }
    if !w.running {
        return Err(lost(format!("is not running ({})", w.state)));
    }
    match w.endpoint {
        Some(e) if e.host == deployed.host && e.port == deployed.port => Ok(()),
        Some(e) => Err(lost(format!("now answers on {}:{} (the runtime restarted it)", e.host, e.port))),
        None => Err(lost("publishes no port".to_owned())),
    }
}

/// Remove every container labelled with this build; returns how many went.
pub async fn remove_build_containers(acts: &BuildActivities, build_id: Uuid) -> Result<usize, StepError> {
    runtime(acts)?.remove_build(build_id).await.map_err(runtime_error)
}

/// Mark a deployment stopped (the container is gone or going).
pub(crate) async fn mark_stopped(r: &Reporter, deployment_id: Uuid) -> Result<(), StepError> {
    let mut conn = r.conn().await?;
    diesel::update(deployments::table.filter(deployments::id.eq(deployment_id)))
        .set((deployments::status.eq("STOPPED"), deployments::stopped_at.eq(Some(Utc::now()))))
        .execute(&mut conn)
        .await?;
    Ok(())
}

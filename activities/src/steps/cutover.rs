//! cutover: in one transaction the gateway's cut-over (the new deployment
//! LIVE, the previous one DRAINING, the server LIVE on this version, NOTIFY
//! `bmm_routes` so every API process routes the stable URL to the new
//! container) and the build SUCCEEDED with BUILD_SUCCEEDED. The previous
//! container then gets a moment for requests already inside it, and stops
//! with SIGTERM (the runner finishes in-flight requests before it exits).
//! Nothing is routed to a container the runtime lost since smoke: that fails
//! with `CONTAINER_LOST`, and the workflow deploys it again.

use std::time::Duration;

use bmm_db::events::{EventKind, NewEvent};
use bmm_db::models::BuildStatus;
use bmm_db::schema::{builds, deployments};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use crate::build::BuildActivities;
use crate::error::StepError;
use crate::model::{DeployedInput, Live};
use crate::report::Reporter;

/// Time the old container keeps serving requests that started before the switch.
const DRAIN: Duration = Duration::from_secs(2);
/// SIGTERM → SIGKILL grace of the old container (the runner shuts down gracefully).
const STOP_GRACE: Duration = Duration::from_secs(10);

pub async fn run(acts: &BuildActivities, r: Reporter, input: &DeployedInput) -> Result<Live, StepError> {
    let b = input.build.clone();
    let url = acts.cfg.server_url(&b.slug);
    let deployment_id = input.deployed.deployment_id;
    let mut conn = r.conn().await?;
    // Never route to a container the runtime lost since smoke (the workflow
    // deploys it again); a retry after the commit has nothing left to check.
    let status: String =
        builds::table.filter(builds::id.eq(b.build_id)).select(builds::status).first(&mut conn).await?;
    if status != BuildStatus::Succeeded.as_str() {
        super::deploy::ensure_in_place(acts, &input.deployed).await?;
    }
    let url_for_tx = url.clone();
    let cut = conn
        .transaction::<_, diesel::result::Error, _>(|conn| {
            Box::pin(async move {
                let now = Utc::now();
                // A retried cut-over after the commit finds the build already done.
                let status: String = builds::table
                    .filter(builds::id.eq(b.build_id))
                    .select(builds::status)
                    .for_update()
                    .first(conn)
                    .await?;
                if status == BuildStatus::Succeeded.as_str() {
                    return Ok(false);
                }
                // The gateway's cut-over: LIVE, DRAINING, server on this version, NOTIFY on commit.
                bmm_gateway::cut_over(conn, b.server_id, deployment_id).await?;
                diesel::update(builds::table.filter(builds::id.eq(b.build_id)))
                    .set((
                        builds::status.eq(BuildStatus::Succeeded.as_str()),
                        builds::current_step.eq("cutover"),
                        builds::finished_at.eq(Some(now)),
                        builds::error.eq(None::<String>),
                    ))
                    .execute(conn)
                    .await?;
                bmm_db::events::append(
                    conn,
                    NewEvent {
                        build_id: b.build_id,
                        step: "cutover",
                        kind: EventKind::StepSucceeded,
                        message: &format!("{url_for_tx} now serves version {}", b.version),
                        data: None,
                    },
                )
                .await?;
                bmm_db::events::append(
                    conn,
                    NewEvent {
                        build_id: b.build_id,
                        step: "build",
                        kind: EventKind::BuildSucceeded,
                        message: &format!("live at {url_for_tx}"),
                        data: Some(serde_json::json!({ "url": url_for_tx, "version": b.version })),
                    },
                )
                .await?;
                Ok(true)
            })
        })
        .await?;
    if !cut {
        r.log("the cut-over was already committed by an earlier attempt").await?;
    }
    // Every earlier deployment of this server still draining (this cut-over's
    // predecessor, or one an interrupted cut-over left behind).
    let retired: Vec<(Uuid, String)> = deployments::table
        .filter(deployments::server_id.eq(input.build.server_id))
        .filter(deployments::status.eq("DRAINING"))
        .filter(deployments::id.ne(deployment_id))
        .select((deployments::id, deployments::container_name))
        .load(&mut conn)
        .await?;
    drop(conn);

    // The route now points at the new container; let requests already inside
    // the old one finish, then stop it. A failure here does not undo the build.
    if !retired.is_empty() {
        tokio::time::sleep(DRAIN).await;
        match super::deploy::runtime(acts) {
            Ok(runtime) => {
                for (id, name) in retired {
                    match runtime.stop(&name, STOP_GRACE).await {
                        Ok(()) => {
                            super::deploy::mark_stopped(&r, id).await?;
                            tracing::info!(container = %name, "previous version stopped");
                        }
                        Err(e) => tracing::warn!(container = %name, error = %e, "could not stop the previous version"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not stop the previous version"),
        }
    }
    Ok(Live { url })
}

//! cutover: in one transaction the new deployment becomes LIVE, the server
//! LIVE on this version, the build SUCCEEDED with BUILD_SUCCEEDED, and every
//! API process is told (NOTIFY `bmm_routes`) to route the stable URL to the
//! new container. The previous container then drains and stops.

use std::time::Duration;

use bmm_db::events::{EventKind, NewEvent};
use bmm_db::models::BuildStatus;
use bmm_db::schema::{builds, deployments, servers};
use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use crate::build::BuildActivities;
use crate::error::StepError;
use crate::model::{DeployedInput, Live};
use crate::report::Reporter;

/// The NOTIFY channel the gateway listens on for route changes.
pub const ROUTES_CHANNEL: &str = "bmm_routes";
/// Time the old container keeps serving requests that started before the switch.
const DRAIN: Duration = Duration::from_secs(2);
/// SIGTERM → SIGKILL grace of the old container (the runner shuts down gracefully).
const STOP_GRACE: Duration = Duration::from_secs(10);

pub async fn run(acts: &BuildActivities, r: Reporter, input: &DeployedInput) -> Result<Live, StepError> {
    let b = input.build.clone();
    let url = acts.cfg.server_url(&b.slug);
    let deployment_id = input.deployed.deployment_id;
    let mut conn = r.conn().await?;
    let url_for_tx = url.clone();
    let retired: Vec<(Uuid, String)> = conn
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
                    return Ok(Vec::new());
                }
                let retired: Vec<(Uuid, String)> = diesel::update(
                    deployments::table
                        .filter(deployments::server_id.eq(b.server_id))
                        .filter(deployments::status.eq("LIVE"))
                        .filter(deployments::id.ne(deployment_id)),
                )
                .set(deployments::status.eq("DRAINING"))
                .returning((deployments::id, deployments::container_name))
                .get_results(conn)
                .await?;
                diesel::update(deployments::table.filter(deployments::id.eq(deployment_id)))
                    .set((deployments::status.eq("LIVE"), deployments::live_at.eq(Some(now))))
                    .execute(conn)
                    .await?;
                diesel::update(servers::table.filter(servers::id.eq(b.server_id)))
                    .filter(servers::org_id.eq(b.org_id))
                    .set((
                        servers::status.eq("LIVE"),
                        servers::current_version_id.eq(Some(b.version_id)),
                        servers::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                diesel::update(builds::table.filter(builds::id.eq(b.build_id)))
                    .set((
                        builds::status.eq(BuildStatus::Succeeded.as_str()),
                        builds::current_step.eq("cutover"),
                        builds::finished_at.eq(Some(now)),
                        builds::error.eq(None::<String>),
                    ))
                    .execute(conn)
                    .await?;
                let payload = serde_json::json!({ "slug": b.slug, "server_id": b.server_id }).to_string();
                diesel::sql_query("SELECT pg_notify($1, $2)")
                    .bind::<Text, _>(ROUTES_CHANNEL)
                    .bind::<Text, _>(payload)
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
                Ok(retired)
            })
        })
        .await?;
    drop(conn);

    // The route now points at the new container; let requests already inside
    // the old one finish, then stop it. A failure here does not undo the build.
    if !retired.is_empty() {
        tokio::time::sleep(DRAIN).await;
        match super::deploy::docker(acts) {
            Ok(docker) => {
                for (id, name) in retired {
                    match docker.stop(&name, STOP_GRACE).await {
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

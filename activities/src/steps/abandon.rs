//! abandon: a build that failed or was cancelled removes what it deployed,
//! leaves the previous version serving, and records how it ended (status,
//! error, BUILD_FAILED / BUILD_CANCELLED) exactly once.

use bmm_db::events::EventKind;
use bmm_db::models::BuildStatus;
use bmm_db::schema::{deployments, servers};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::build::BuildActivities;
use crate::error::StepError;
use crate::model::{AbandonInput, Ending};
use crate::report::{Reporter, finish_build};

pub async fn run(acts: &BuildActivities, input: &AbandonInput) -> Result<(), StepError> {
    let b = &input.build;
    let r = Reporter::for_build(acts.pool.clone(), b.build_id);
    if r.is_final().await? {
        // A retried abandon after the ending was recorded, or a build that
        // already succeeded: nothing is left to do.
        return Ok(());
    }

    // Containers this build made (a deployments row exists from the moment a
    // deploy is attempted). Never touch LIVE: that is the version serving.
    let mut conn = r.conn().await?;
    let made: i64 = deployments::table
        .filter(deployments::build_id.eq(b.build_id))
        .filter(deployments::org_id.eq(b.org_id))
        .count()
        .get_result(&mut conn)
        .await?;
    drop(conn);
    let reached_deploy = match &input.ending {
        Ending::Failed { step, .. } => step.deploys(),
        Ending::Cancelled { step, .. } => step.is_some_and(|s| s.deploys()),
    };
    if made > 0 || reached_deploy {
        let removed = super::deploy::remove_build_containers(acts, b.build_id).await?;
        if removed > 0 {
            r.log(&format!("removed {removed} container(s) this build started")).await?;
        }
    }

    let (status, kind, message, error) = match &input.ending {
        Ending::Failed { step, cause } => (
            BuildStatus::Failed,
            EventKind::BuildFailed,
            format!("build failed at {step}: {cause}"),
            Some(format!("{step}: {cause}")),
        ),
        Ending::Cancelled { reason, .. } => (
            BuildStatus::Cancelled,
            EventKind::BuildCancelled,
            match reason.as_deref().filter(|s| !s.is_empty()) {
                Some(why) => format!("build cancelled: {why}"),
                None => "build cancelled".to_owned(),
            },
            None,
        ),
    };

    let mut conn = r.conn().await?;
    let now = Utc::now();
    diesel::update(deployments::table.filter(deployments::build_id.eq(b.build_id)))
        .filter(deployments::status.ne("LIVE"))
        .set((
            deployments::status.eq(if status == BuildStatus::Cancelled { "STOPPED" } else { "FAILED" }),
            deployments::stopped_at.eq(Some(now)),
        ))
        .execute(&mut conn)
        .await?;
    // A server that never went live has nothing serving: it failed. One that
    // is live keeps serving its previous version.
    diesel::update(servers::table.filter(servers::id.eq(b.server_id)))
        .filter(servers::org_id.eq(b.org_id))
        .filter(servers::current_version_id.is_null())
        .filter(servers::status.eq("BUILDING"))
        .set((servers::status.eq("FAILED"), servers::updated_at.eq(now)))
        .execute(&mut conn)
        .await?;
    if finish_build(&mut conn, b.build_id, status, error.as_deref()).await? {
        drop(conn);
        r.event(kind, &message, None).await?;
    }
    Ok(())
}

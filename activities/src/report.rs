//! Build events and build status, written as the steps run.
//!
//! Every event goes through `bmm_db::events::append` (dense `seq`, NOTIFY), so
//! the API streams it as it happens. Messages are for people: they never carry
//! secret values.

use bmm_db::events::{EventKind, NewEvent};
use bmm_db::models::BuildStatus;
use bmm_db::schema::builds;
use bmm_db::{Conn, Pool};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::error::StepError;
use crate::model::Step;

/// Writes one build's events and status.
#[derive(Clone)]
pub struct Reporter {
    pool: Pool,
    pub build_id: Uuid,
    pub step: &'static str,
}

impl Reporter {
    pub fn new(pool: Pool, build_id: Uuid, step: Step) -> Reporter {
        Reporter { pool, build_id, step: step.as_str() }
    }

    /// A reporter for events that belong to no step (the build's ending).
    pub fn for_build(pool: Pool, build_id: Uuid) -> Reporter {
        Reporter { pool, build_id, step: "build" }
    }

    pub async fn conn(&self) -> Result<Conn, StepError> {
        Ok(self.pool.get().await.map_err(bmm_db::DbError::from)?)
    }

    pub async fn event(
        &self,
        kind: EventKind,
        message: &str,
        data: Option<serde_json::Value>,
    ) -> Result<i32, StepError> {
        let mut conn = self.conn().await?;
        let seq = bmm_db::events::append(
            &mut conn,
            NewEvent { build_id: self.build_id, step: self.step, kind, message, data },
        )
        .await?;
        Ok(seq)
    }

    pub async fn log(&self, message: &str) -> Result<(), StepError> {
        self.event(EventKind::Log, message, None).await.map(drop)
    }

    pub async fn log_with(&self, message: &str, data: serde_json::Value) -> Result<(), StepError> {
        self.event(EventKind::Log, message, Some(data)).await.map(drop)
    }

    pub async fn warning(&self, message: &str) -> Result<(), StepError> {
        self.event(EventKind::Warning, message, None).await.map(drop)
    }

    /// The step begins: the build is RUNNING (from its first step on) and this is its current step.
    pub async fn started(&self, attempt: u32) -> Result<(), StepError> {
        let mut conn = self.conn().await?;
        // A build already finished (cancelled while this task was queued) keeps its status.
        diesel::update(builds::table.filter(builds::id.eq(self.build_id)))
            .filter(builds::status.eq_any([BuildStatus::Queued.as_str(), BuildStatus::Running.as_str()]))
            .set((
                builds::status.eq(BuildStatus::Running.as_str()),
                builds::current_step.eq(self.step),
                builds::started_at.eq(diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>>(
                    "COALESCE(started_at, now())",
                )),
            ))
            .execute(&mut conn)
            .await?;
        drop(conn);
        let message = if attempt > 1 {
            format!("{} started (attempt {attempt})", self.step)
        } else {
            format!("{} started", self.step)
        };
        self.event(EventKind::StepStarted, &message, Some(serde_json::json!({ "attempt": attempt }))).await.map(drop)
    }

    pub async fn succeeded(&self, message: &str, data: Option<serde_json::Value>) -> Result<(), StepError> {
        self.event(EventKind::StepSucceeded, message, data).await.map(drop)
    }

    /// Record a failed attempt: STEP_RETRYING when Temporal will try again, STEP_FAILED when not.
    pub async fn attempt_failed(&self, err: &StepError, will_retry: bool, attempt: u32) -> Result<(), StepError> {
        let data = serde_json::json!({ "attempt": attempt, "type": err.kind() });
        if err.kind() == crate::error::kind::CONTAINER_LOST {
            // Not the step's failure: the workflow deploys the container again.
            self.event(EventKind::StepRetrying, &format!("{err}; deploying it again"), Some(data)).await.map(drop)
        } else if will_retry {
            self.event(EventKind::StepRetrying, &format!("{err}; retrying"), Some(data)).await.map(drop)
        } else {
            self.event(EventKind::StepFailed, &format!("{} failed: {err}", self.step), Some(data)).await.map(drop)
        }
    }

    /// Whether the build already has a final status (so a late attempt must not touch it).
    pub async fn is_final(&self) -> Result<bool, StepError> {
        let mut conn = self.conn().await?;
        let status: String =
            builds::table.filter(builds::id.eq(self.build_id)).select(builds::status).first(&mut conn).await?;
        Ok(BuildStatus::parse(&status).is_some_and(BuildStatus::is_final))
    }
}

/// Set a build's final status, error and finish time, once: a build already
/// final is left as it is. Returns whether this call made it final.
pub async fn finish_build(
    conn: &mut bmm_db::Conn,
    build_id: Uuid,
    status: BuildStatus,
    error: Option<&str>,
) -> Result<bool, StepError> {
    let n = diesel::update(builds::table.filter(builds::id.eq(build_id)))
        .filter(builds::status.eq_any([BuildStatus::Queued.as_str(), BuildStatus::Running.as_str()]))
        .set((builds::status.eq(status.as_str()), builds::error.eq(error), builds::finished_at.eq(Some(Utc::now()))))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

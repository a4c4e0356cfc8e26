//! Builds: their status, steps and event log, cancelling, and the live event stream.

use async_graphql::{Context, Enum, ID, Json, Object, Result, SimpleObject};
use bmm_db::models::{Build as BuildRow, BuildEvent as EventRow};
use bmm_db::schema::{build_events, builds, server_versions};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;
use uuid::Uuid;

use crate::context::{audit, parse_id, principal, state};
use crate::error::{ApiError, ApiResult};
use crate::schema::types::BuildStatus;

/// The steps of every build, in order.
pub const STEPS: [&str; 6] = ["generate", "check", "bundle", "deploy", "smoke", "cutover"];

/// What a build event says happened.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BuildEventKind {
    StepStarted,
    Log,
    Warning,
    StepSucceeded,
    StepFailed,
    StepRetrying,
    BuildSucceeded,
    BuildFailed,
    BuildCancelled,
}

impl BuildEventKind {
    fn from_db(s: &str) -> BuildEventKind {
        use bmm_db::events::EventKind as K;
        match K::parse(s) {
            Some(K::StepStarted) => BuildEventKind::StepStarted,
            Some(K::Log) | None => BuildEventKind::Log,
            Some(K::Warning) => BuildEventKind::Warning,
            Some(K::StepSucceeded) => BuildEventKind::StepSucceeded,
            Some(K::StepFailed) => BuildEventKind::StepFailed,
            Some(K::StepRetrying) => BuildEventKind::StepRetrying,
            Some(K::BuildSucceeded) => BuildEventKind::BuildSucceeded,
            Some(K::BuildFailed) => BuildEventKind::BuildFailed,
            Some(K::BuildCancelled) => BuildEventKind::BuildCancelled,
        }
    }
}

/// One line of a build's log. `seq` is dense per build, starting at 1.
#[derive(SimpleObject, Clone, Debug)]
pub struct BuildEvent {
    pub seq: i32,
    pub step: String,
    pub kind: BuildEventKind,
    pub message: String,
    pub at: DateTime<Utc>,
    pub data: Option<Json<serde_json::Value>>,
}

impl From<EventRow> for BuildEvent {
    fn from(e: EventRow) -> Self {
        BuildEvent {
            seq: e.seq,
            step: e.step,
            kind: BuildEventKind::from_db(&e.kind),
            message: e.message,
            at: e.at,
            data: e.data.map(Json),
        }
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Retrying,
    Succeeded,
    Failed,
    /// Never ran: the build ended first.
    Skipped,
    /// Was running when the build ended: cancelled, or stopped because a step
    /// beside it failed (a deploy running beside a check that failed).
    Stopped,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct BuildStep {
    pub name: String,
    pub status: StepStatus,
    /// How many times the step started (retries count).
    pub attempts: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Fold step events into one entry per step.
pub fn steps_from_events(events: &[(String, String, DateTime<Utc>)], build_final: bool) -> Vec<BuildStep> {
    let mut steps: Vec<BuildStep> = STEPS
        .iter()
        .map(|n| BuildStep {
            name: (*n).to_owned(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
        })
        .collect();
    for (step, kind, at) in events {
        let idx = match steps.iter().position(|s| &s.name == step) {
            Some(i) => i,
            None => {
                steps.push(BuildStep {
                    name: step.clone(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                });
                steps.len() - 1
            }
        };
        let s = &mut steps[idx];
        match kind.as_str() {
            "STEP_STARTED" => {
                s.attempts += 1;
                s.status = StepStatus::Running;
                s.started_at.get_or_insert(*at);
                s.finished_at = None;
            }
            "STEP_RETRYING" => s.status = StepStatus::Retrying,
            "STEP_SUCCEEDED" => {
                s.status = StepStatus::Succeeded;
                s.finished_at = Some(*at);
            }
            "STEP_FAILED" => {
                s.status = StepStatus::Failed;
                s.finished_at = Some(*at);
            }
            _ => {}
        }
    }
    if build_final {
        for s in &mut steps {
            match s.status {
                StepStatus::Pending => s.status = StepStatus::Skipped,
                StepStatus::Running | StepStatus::Retrying => s.status = StepStatus::Stopped,
                _ => {}
            }
        }
    }
    steps
}

pub struct Build(pub BuildRow);

#[Object]
impl Build {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn server_id(&self) -> ID {
        ID(self.0.server_id.to_string())
    }
    async fn version_id(&self) -> ID {
        ID(self.0.version_id.to_string())
    }
    /// The server version this build makes live.
    async fn version(&self, ctx: &Context<'_>) -> Result<i32> {
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        Ok(server_versions::table
            .filter(server_versions::id.eq(self.0.version_id))
            .filter(server_versions::org_id.eq(self.0.org_id))
            .select(server_versions::version)
            .first(&mut conn)
            .await
            .map_err(ApiError::from)?)
    }
    async fn status(&self) -> BuildStatus {
        BuildStatus::from_db(&self.0.status)
    }
    async fn current_step(&self) -> Option<&str> {
        self.0.current_step.as_deref()
    }
    /// Every step with its state, derived from the event log.
    async fn steps(&self, ctx: &Context<'_>) -> Result<Vec<BuildStep>> {
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows: Vec<(String, String, DateTime<Utc>)> = build_events::table
            .filter(build_events::org_id.eq(self.0.org_id))
            .filter(build_events::build_id.eq(self.0.id))
            .filter(build_events::kind.eq_any(["STEP_STARTED", "STEP_RETRYING", "STEP_SUCCEEDED", "STEP_FAILED"]))
            .order(build_events::seq.asc())
            .select((build_events::step, build_events::kind, build_events::at))
            .load(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(steps_from_events(&rows, BuildStatus::from_db(&self.0.status).is_final()))
    }
    /// Stored events after `after` (exclusive), oldest first.
    #[graphql(complexity = "limit.unwrap_or(500).clamp(1, 1000) as usize * child_complexity")]
    async fn events(&self, ctx: &Context<'_>, after: Option<i32>, limit: Option<i32>) -> Result<Vec<BuildEvent>> {
        let after = after.unwrap_or(0);
        if after < 0 {
            return Err(ApiError::bad_input("after", "must be 0 or more").into());
        }
        let limit = limit.unwrap_or(500);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::bad_input("limit", "must be between 1 and 1000").into());
        }
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = bmm_db::events::list_after(&mut conn, self.0.org_id, self.0.id, after, limit as i64)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(BuildEvent::from).collect())
    }
    /// The build's workflow in the Temporal Web UI.
    async fn temporal_url(&self, ctx: &Context<'_>) -> String {
        state(ctx).cfg.temporal_workflow_url(&self.0.workflow_id)
    }
    async fn workflow_id(&self) -> &str {
        &self.0.workflow_id
    }
    /// OpenTelemetry trace id of the build, when tracing is on.
    async fn trace_id(&self) -> Option<&str> {
        self.0.trace_id.as_deref()
    }
    /// Which generator made the spec.
    async fn generator(&self) -> Option<&str> {
        self.0.generator.as_deref()
    }
    /// Model usage (tokens) of the generate step.
    async fn usage(&self) -> Option<Json<serde_json::Value>> {
        self.0.usage.clone().map(Json)
    }
    /// Why the build failed, in words.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

/// A build of the caller's org, or NOT_FOUND.
pub async fn load_build(ctx: &Context<'_>, org_id: Uuid, build_id: Uuid) -> ApiResult<BuildRow> {
    let mut conn = state(ctx).pool.get().await?;
    builds::table
        .filter(builds::id.eq(build_id))
        .filter(builds::org_id.eq(org_id))
        .select(BuildRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound("build"))
}

#[derive(Default)]
pub struct BuildQuery;

#[Object]
impl BuildQuery {
    async fn build(&self, ctx: &Context<'_>, id: ID) -> Result<Build> {
        let p = principal(ctx)?;
        let id = parse_id("id", &id)?;
        Ok(Build(load_build(ctx, p.org_id, id).await?))
    }
}

#[derive(Default)]
pub struct BuildMutation;

#[Object]
impl BuildMutation {
    /// Ask a queued or running build to stop. The workflow cleans up and
    /// writes `BUILD_CANCELLED`.
    async fn cancel_build(&self, ctx: &Context<'_>, id: ID) -> Result<Build> {
        let p = principal(ctx)?;
        let build_id = parse_id("id", &id)?;
        let build = load_build(ctx, p.org_id, build_id).await?;
        let status = BuildStatus::from_db(&build.status);
        if status.is_final() {
            return Err(ApiError::bad_input("id", format!("the build already ended ({})", build.status)).into());
        }
        let runner = state(ctx).builds.clone().ok_or_else(|| ApiError::internal("no build runner configured"))?;
        runner.cancel(build_id).await.map_err(|e| ApiError::internal(format!("cancel build {build_id}: {e}")))?;
        audit(ctx, "build.cancel", "build", Some(build_id.to_string()), json!({ "serverId": build.server_id })).await;
        Ok(Build(load_build(ctx, p.org_id, build_id).await?))
    }
}

pub use subscription::BuildSubscription;

/// Kept apart: async-graphql's subscription macro calls a method named
/// `execute`, which diesel's `RunQueryDsl` would shadow.
mod subscription {
    use async_graphql::{Context, ID, Result, Subscription};
    use futures::{Stream, StreamExt};

    use super::{BuildEvent, load_build};
    use crate::context::{parse_id, principal, state};
    use crate::error::ApiError;

    #[derive(Default)]
    pub struct BuildSubscription;

    #[Subscription]
    impl BuildSubscription {
        /// The build's stored events after `after` (exclusive; default 0 = from
        /// the start), then new ones as they happen, with no gap and no
        /// duplicate. Completes after `BUILD_SUCCEEDED`, `BUILD_FAILED` or
        /// `BUILD_CANCELLED`. To resume after a dropped connection, pass the last
        /// `seq` you received as `after`.
        async fn build_events(
            &self,
            ctx: &Context<'_>,
            build_id: ID,
            after: Option<i32>,
        ) -> Result<impl Stream<Item = Result<BuildEvent>> + use<>> {
            let p = principal(ctx)?;
            let id = parse_id("buildId", &build_id)?;
            let after = after.unwrap_or(0);
            if after < 0 {
                return Err(ApiError::bad_input("after", "must be 0 or more").into());
            }
            load_build(ctx, p.org_id, id).await?;
            let rx = state(ctx).hub.follow(p.org_id, id, after);
            Ok(tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map(BuildEvent::from).map_err(Into::into)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(step: &str, kind: &str, ms: i64) -> (String, String, DateTime<Utc>) {
        (step.to_owned(), kind.to_owned(), DateTime::<Utc>::from_timestamp_millis(ms).unwrap())
    }

    fn status_of(steps: &[BuildStep], name: &str) -> StepStatus {
        steps.iter().find(|s| s.name == name).unwrap().status
    }

    #[test]
    fn steps_side_by_side_end_as_the_build_ended() {
        // check fails while deploy (beside it) runs; the build then fails.
        let events = vec![
            ev("generate", "STEP_STARTED", 0),
            ev("generate", "STEP_SUCCEEDED", 5),
            ev("check", "STEP_STARTED", 10),
            ev("bundle", "STEP_STARTED", 11),
            ev("bundle", "STEP_SUCCEEDED", 200),
            ev("deploy", "STEP_STARTED", 230),
            ev("check", "STEP_FAILED", 500),
        ];
        let running = steps_from_events(&events, false);
        assert_eq!(status_of(&running, "deploy"), StepStatus::Running);
        assert_eq!(status_of(&running, "smoke"), StepStatus::Pending);

        let ended = steps_from_events(&events, true);
        assert_eq!(status_of(&ended, "generate"), StepStatus::Succeeded);
        assert_eq!(status_of(&ended, "check"), StepStatus::Failed);
        assert_eq!(status_of(&ended, "bundle"), StepStatus::Succeeded);
        assert_eq!(status_of(&ended, "deploy"), StepStatus::Stopped);
        assert_eq!(status_of(&ended, "smoke"), StepStatus::Skipped);
        let check = ended.iter().find(|s| s.name == "check").unwrap();
        assert_eq!((check.attempts, check.finished_at.map(|t| t.timestamp_millis())), (1, Some(500)));
    }
}

//! [`BuildActivities`]: the activities the build workflow schedules. Each is
//! a thin wrapper that reports the step (events, status), keeps heartbeating
//! while the step runs (so a dead worker is noticed in seconds and a cancel
//! reaches the step), and turns the step's error into a Temporal failure.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bmm_core::Config;
use bmm_db::Pool;
use bmm_generator::Generator;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::error::StepError;
use crate::model::*;
use crate::report::Reporter;
use crate::steps;

/// How often a running step heartbeats. The workflow's heartbeat timeout is a
/// few times this, and the SDK throttles what it sends to 80% of that timeout.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Everything the build steps share: configuration, the database, the
/// generator and the platform's signing keys (for the smoke test's token and
/// the JWKS file the containers verify tokens with).
pub struct BuildActivities {
    pub cfg: Arc<Config>,
    pub pool: Pool,
    pub generator: Arc<dyn Generator>,
    pub keys: bmm_auth::keys::KeyStore,
    /// Test hook: hold the first attempt of these steps for a while after it
    /// starts (heartbeating), so a test can kill the worker mid-step.
    /// From `BMM_TEST_PAUSE`, e.g. `bundle=6,deploy=6` (seconds), in debug builds only.
    pub pauses: Vec<(Step, Duration)>,
}

/// The test-only seam for `BMM_TEST_PAUSE`: debug builds (the ones tests
/// run) honour it; a release build never reads the variable, so nothing in
/// a production environment can hold its build steps.
fn test_pauses() -> Vec<(Step, Duration)> {
    if !cfg!(debug_assertions) {
        return Vec::new();
    }
    std::env::var("BMM_TEST_PAUSE").map(|v| parse_pauses(&v)).unwrap_or_default()
}

impl BuildActivities {
    pub fn new(cfg: Arc<Config>, pool: Pool) -> BuildActivities {
        let generator = bmm_generator::from_config(&cfg.generator);
        BuildActivities::with_generator(cfg, pool, generator)
    }

    /// With a generator of the caller's choosing (tests use a scripted one).
    pub fn with_generator(cfg: Arc<Config>, pool: Pool, generator: Arc<dyn Generator>) -> BuildActivities {
        let keys = bmm_auth::keys::KeyStore::new(pool.clone(), cfg.clone());
        let pauses = test_pauses();
        BuildActivities { cfg, pool, generator, keys, pauses }
    }

    /// Run one attempt of `step`: STEP_STARTED, the work under heartbeats and
    /// cancellation, then STEP_SUCCEEDED (written by the step itself, which
    /// knows what to say) or STEP_RETRYING / STEP_FAILED.
    async fn run_step<T, F, Fut>(
        &self,
        ctx: &ActivityContext,
        build: &BuildInput,
        step: Step,
        work: F,
    ) -> Result<T, ActivityError>
    where
        F: FnOnce(Reporter) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let info = ctx.info();
        let attempt = info.attempt.max(1);
        let r = Reporter::new(self.pool.clone(), build.build_id, step);
        tracing::info!(build = %build.build_id, %step, attempt, "step attempt starts");
        // Boxed: step futures are large, and worker threads have small stacks.
        let pause = self.pauses.iter().find(|(s, _)| *s == step).map(|(_, d)| *d).filter(|_| attempt == 1);
        let run = Box::pin({
            let r = r.clone();
            async move {
                r.started(attempt).await?;
                if let Some(pause) = pause {
                    tracing::warn!(%step, ?pause, "BMM_TEST_PAUSE: holding the step");
                    tokio::time::sleep(pause).await;
                }
                work(r).await
            }
        });
        let result = tokio::select! {
            res = run => res,
            _ = ctx.cancelled() => Err(StepError::Cancelled),
            _ = heartbeat(ctx) => unreachable!("heartbeats never end"),
        };
        match result {
            Ok(v) => Ok(v),
            Err(StepError::Cancelled) => {
                tracing::info!(build = %build.build_id, %step, "step cancelled");
                Err(StepError::Cancelled.into_activity_error())
            }
            Err(e) => {
                let max = info.retry_policy.as_ref().map(|p| p.maximum_attempts()).unwrap_or(0);
                let will_retry = e.is_retryable() && (max == 0 || attempt < max);
                tracing::warn!(build = %build.build_id, %step, attempt, will_retry, error = %e, "step attempt failed");
                if let Err(report) = r.attempt_failed(&e, will_retry, attempt).await {
                    tracing::warn!(error = %report, "could not record the failed attempt");
                }
                Err(e.into_activity_error())
            }
        }
    }
}

/// `bundle=6,deploy=6` → pauses; unknown steps and bad numbers are ignored.
fn parse_pauses(v: &str) -> Vec<(Step, Duration)> {
    v.split(',')
        .filter_map(|item| {
            let (step, secs) = item.split_once('=')?;
            let step = Step::ALL.into_iter().find(|s| s.as_str() == step.trim())?;
            Some((step, Duration::from_secs(secs.trim().parse().ok()?)))
        })
        .collect()
}

/// Heartbeat forever. Heartbeats carry nothing: steps are idempotent by
/// themselves (digests, container names), so a retry needs no checkpoint.
async fn heartbeat(ctx: &ActivityContext) {
    loop {
        if let Err(e) = ctx.record_heartbeat(()).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

#[activities]
impl BuildActivities {
    /// The spec the user reviewed: from the version row, else the preview row.
    #[activity]
    pub async fn generate(self: Arc<Self>, ctx: ActivityContext, input: BuildInput) -> Result<SpecRef, ActivityError> {
        self.run_step(&ctx, &input, Step::Generate, |r| steps::generate::run(r, &input)).await
    }

    /// Render, scan and type-check; the source goes to the blob store.
    #[activity]
    pub async fn check(self: Arc<Self>, ctx: ActivityContext, input: CheckInput) -> Result<SourceRef, ActivityError> {
        self.run_step(&ctx, &input.build, Step::Check, |r| steps::check::run(&self, r, &input)).await
    }

    /// esbuild to one ESM file, cached by source digest.
    #[activity]
    pub async fn bundle(self: Arc<Self>, ctx: ActivityContext, input: BundleInput) -> Result<BundleRef, ActivityError> {
        self.run_step(&ctx, &input.build, Step::Bundle, |r| steps::bundle::run(&self, r, &input)).await
    }

    /// A hardened container running the bundle (adopted if a previous attempt made it).
    #[activity]
    pub async fn deploy(self: Arc<Self>, ctx: ActivityContext, input: DeployInput) -> Result<Deployed, ActivityError> {
        self.run_step(&ctx, &input.build, Step::Deploy, |r| steps::deploy::run(&self, r, &input)).await
    }

    /// A real MCP client lists the new container's tools.
    #[activity]
    pub async fn smoke(self: Arc<Self>, ctx: ActivityContext, input: DeployedInput) -> Result<(), ActivityError> {
        self.run_step(&ctx, &input.build, Step::Smoke, |r| steps::smoke::run(&self, r, &input)).await
    }

    /// Route the stable URL to the new container; retire the old one.
    #[activity]
    pub async fn cutover(self: Arc<Self>, ctx: ActivityContext, input: DeployedInput) -> Result<Live, ActivityError> {
        self.run_step(&ctx, &input.build, Step::Cutover, |r| steps::cutover::run(&self, r, &input)).await
    }

    /// Remove what the build deployed and record how it ended (failed or cancelled).
    #[activity]
    pub async fn abandon(self: Arc<Self>, ctx: ActivityContext, input: AbandonInput) -> Result<(), ActivityError> {
        let work = Box::pin(steps::abandon::run(&self, &input));
        let result = tokio::select! {
            res = work => res,
            _ = heartbeat(&ctx) => unreachable!("heartbeats never end"),
        };
        result.map_err(|e| {
            tracing::warn!(build = %input.build.build_id, error = %e, "abandoning the build failed");
            e.into_activity_error()
        })
    }

    /// One reconcile pass: restore what should run, route to where it runs, remove orphans.
    #[activity]
    pub async fn reconcile(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: crate::reconcile::ReconcileInput,
    ) -> Result<crate::reconcile::ReconcileReport, ActivityError> {
        let work = Box::pin(crate::reconcile::run(&self, &input));
        let result = tokio::select! {
            res = work => res,
            _ = ctx.cancelled() => Err(StepError::Cancelled),
            _ = heartbeat(&ctx) => unreachable!("heartbeats never end"),
        };
        result.map_err(|e| {
            tracing::warn!(error = %e, "reconcile pass failed");
            e.into_activity_error()
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pauses_parse() {
        use super::*;
        assert_eq!(
            parse_pauses("bundle=6, deploy=2,nope=1,check=x"),
            vec![(Step::Bundle, Duration::from_secs(6)), (Step::Deploy, Duration::from_secs(2))]
        );
    }
}

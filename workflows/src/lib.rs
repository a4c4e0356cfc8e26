//! The build workflow and how the rest of the platform drives it.
//!
//! [`BuildWorkflow`] is deterministic and short: it reads as the list of
//! steps (generate → check, beside it bundle → deploy → then smoke → cutover,
//! deploying again a container the runtime lost before the cut-over),
//! each an activity of `bmm-activities` with timeouts and a retry policy. History
//! carries ids and digests only. [`client`] starts, cancels and queries
//! builds for the API; [`worker`] runs the workflow and its activities.
//! [`rotation`] holds the master-key rotation, a workflow of its own on the
//! same worker.
//! This crate does no I/O of its own inside the workflow.

pub mod client;
pub mod rotation;
pub mod worker;

use std::time::Duration;

use bmm_activities::{
    AbandonInput, BuildActivities, BuildInput, BundleInput, BundleRef, CheckInput, DeployInput, Deployed,
    DeployedInput, Ending, Live, Step, kind,
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflows::join;
use temporalio_sdk::{
    ActivityCancellationType, ActivityExecutionError, ActivityOptions, ApplicationFailure, WorkflowCancellationToken,
    WorkflowContext, WorkflowContextView, WorkflowResult, WorkflowTermination,
};

pub use bmm_activities::model::workflow_id;
pub use rotation::MasterKeyRotationWorkflow;

/// The durable build of one server version.
#[workflow]
#[derive(Default)]
pub struct BuildWorkflow {
    /// The step running now, or how the build ended; what [`BuildWorkflow::current_step`] answers.
    current: String,
}

/// Why the pipeline stopped before going live.
enum Stop {
    Failed { step: Step, cause: String },
    Cancelled { step: Step },
}

#[workflow_methods]
impl BuildWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: BuildInput) -> WorkflowResult<Live> {
        let stop = match pipeline(ctx, &input).await {
            Ok(live) => {
                ctx.state_mut(|s| s.current = "succeeded".to_owned());
                return Ok(live);
            }
            Err(stop) => stop,
        };
        let (ending, end_state) = match stop {
            Stop::Failed { step, cause } => (Ending::Failed { step, cause }, "failed"),
            Stop::Cancelled { step } => {
                (Ending::Cancelled { reason: ctx.cancellation_token().reason(), step: Some(step) }, "cancelled")
            }
        };
        ctx.state_mut(|s| s.current = "cleanup".to_owned());
        // Cleanup must run even though the workflow is cancelled: it gets a
        // token of its own, detached from the workflow's.
        let cleanup = ctx
            .execute_activity(
                BuildActivities::abandon,
                AbandonInput { build: input.clone(), ending: ending.clone() },
                options(Step::Deploy, Some(WorkflowCancellationToken::new())),
            )
            .await;
        if let Err(e) = cleanup {
            // The build's ending could not be recorded; fail loudly so the Web UI shows why.
            let message = format!("cleanup after the build stopped failed: {}", cause_of(&e));
            return Err(WorkflowTermination::failed_application(ApplicationFailure::non_retryable(message)));
        }
        ctx.state_mut(|s| s.current = end_state.to_owned());
        match ending {
            Ending::Cancelled { .. } => Err(WorkflowTermination::cancelled()),
            Ending::Failed { step, cause } => Err(WorkflowTermination::failed_application(
                ApplicationFailure::builder(format!("{step} failed: {cause}"))
                    .type_name("BuildFailed".to_owned())
                    .non_retryable(true)
                    .build(),
            )),
        }
    }

    /// The step running now (`generate` … `cutover`), `cleanup`, or how the
    /// build ended (`succeeded`, `failed`, `cancelled`); `queued` before the first step.
    #[query]
    pub fn current_step(&self, _ctx: &WorkflowContextView) -> String {
        if self.current.is_empty() { "queued".to_owned() } else { self.current.clone() }
    }
}

/// The steps, in order. Each returns the small value the next one needs.
async fn pipeline(ctx: &mut WorkflowContext<BuildWorkflow>, b: &BuildInput) -> Result<Live, Stop> {
    enter(ctx, Step::Generate)?;
    let spec = ctx.execute_activity(BuildActivities::generate, b.clone(), options(Step::Generate, None)).await;
    let spec = settle(ctx, Step::Generate, spec)?;

    let (deployed, bundle_digest) = if ctx.patched(CHECK_BESIDE_DEPLOY) {
        check_beside_deploy(ctx, b, spec.spec_digest).await?
    } else {
        // Histories from before the patch: one step after the other.
        enter(ctx, Step::Check)?;
        let input = CheckInput { build: b.clone(), spec_digest: spec.spec_digest };
        let source = ctx.execute_activity(BuildActivities::check, input, options(Step::Check, None)).await;
        let source = settle(ctx, Step::Check, source)?;
        let bundle = bundle_source(ctx, b, source.source_digest).await?;
        (deploy(ctx, b, bundle.bundle_digest.clone()).await?, bundle.bundle_digest)
    };

    if ctx.patched(REDEPLOY_LOST_CONTAINER) {
        return smoke_and_cut_over(ctx, b, deployed, bundle_digest).await;
    }
    // Histories from before the patch: a lost container fails the build.
    enter(ctx, Step::Smoke)?;
    let input = DeployedInput { build: b.clone(), deployed };
    let smoked = ctx.execute_activity(BuildActivities::smoke, input.clone(), options(Step::Smoke, None)).await;
    settle(ctx, Step::Smoke, smoked)?;

    // Once the cut-over starts it finishes: a cancel arriving now is too late
    // to take back a route other processes may already follow.
    enter(ctx, Step::Cutover)?;
    let live = ctx
        .execute_activity(
            BuildActivities::cutover,
            input,
            options(Step::Cutover, Some(WorkflowCancellationToken::new())),
        )
        .await;
    settle(ctx, Step::Cutover, live)
}

/// The patch id under which the type check runs beside bundle → deploy.
const CHECK_BESIDE_DEPLOY: &str = "check-beside-deploy";
/// The patch id under which a container lost before the cut-over is deployed again.
const REDEPLOY_LOST_CONTAINER: &str = "redeploy-lost-container";
/// How many times one build deploys a lost container again before it gives up.
const MAX_REDEPLOYS: u32 = 3;

/// `smoke` then `cutover`. When either finds the container lost to the
/// runtime (Docker restarted, the container removed: `CONTAINER_LOST`, never
/// the server's own fault), the same idempotent deploy makes it again and
/// both run again, a few times at most.
async fn smoke_and_cut_over(
    ctx: &WorkflowContext<BuildWorkflow>,
    b: &BuildInput,
    mut deployed: Deployed,
    bundle_digest: String,
) -> Result<Live, Stop> {
    let mut redeploys = 0;
    loop {
        enter(ctx, Step::Smoke)?;
        let input = DeployedInput { build: b.clone(), deployed: deployed.clone() };
        let smoked = ctx.execute_activity(BuildActivities::smoke, input.clone(), options(Step::Smoke, None)).await;
        if container_lost(&smoked) && redeploys < MAX_REDEPLOYS && !ctx.cancellation_token().is_cancelled() {
            redeploys += 1;
            deployed = deploy(ctx, b, bundle_digest.clone()).await?;
            continue;
        }
        settle(ctx, Step::Smoke, smoked)?;

        // Once the cut-over starts it finishes: a cancel arriving now is too late
        // to take back a route other processes may already follow.
        enter(ctx, Step::Cutover)?;
        let live = ctx
            .execute_activity(
                BuildActivities::cutover,
                input,
                options(Step::Cutover, Some(WorkflowCancellationToken::new())),
            )
            .await;
        // Lost before anything was routed: deploy, smoke and cut over again.
        if container_lost(&live) && redeploys < MAX_REDEPLOYS && !ctx.cancellation_token().is_cancelled() {
            redeploys += 1;
            deployed = deploy(ctx, b, bundle_digest.clone()).await?;
            continue;
        }
        return settle(ctx, Step::Cutover, live);
    }
}

/// Whether an activity failed because the runtime lost the build's container.
fn container_lost<T>(result: &Result<T, ActivityExecutionError>) -> bool {
    use temporalio_common::error::IncomingError;
    let Err(e) = result else { return false };
    let mut cause = e.cause();
    while let Some(c) = cause {
        if let IncomingError::Application(a) = c
            && a.type_name() == Some(kind::CONTAINER_LOST)
        {
            return true;
        }
        cause = c.cause();
    }
    false
}

/// `check` beside `bundle` → `deploy`, all from the spec (rendering is
/// deterministic, so both sides see the same source).
///
/// Nothing unchecked is ever served: `bundle` refuses banned code itself (the
/// same scan as `check`), the container is not routed until `smoke` and
/// `cutover`, which wait for the check; a failed check stops the deploy at
/// once and cleanup removes its container. When a model repair changed the
/// spec, the checked source is bundled and deployed again.
async fn check_beside_deploy(
    ctx: &mut WorkflowContext<BuildWorkflow>,
    b: &BuildInput,
    spec_digest: String,
) -> Result<(Deployed, String), Stop> {
    enter(ctx, Step::Check)?;
    let ctx: &WorkflowContext<BuildWorkflow> = ctx;
    // Cancelled with the workflow, or by a failed check.
    let ship_token = ctx.cancellation_token().child_token();
    let check = async {
        let input = CheckInput { build: b.clone(), spec_digest: spec_digest.clone() };
        let source = ctx.execute_activity(BuildActivities::check, input, options(Step::Check, None)).await;
        if source.is_err() {
            ship_token.cancel_with_reason("the check failed");
        }
        source
    };
    let ship = async {
        let input = BundleInput { build: b.clone(), source_digest: None, spec_digest: Some(spec_digest.clone()) };
        let bundle = ctx
            .execute_activity(BuildActivities::bundle, input, options(Step::Bundle, Some(ship_token.clone())))
            .await
            .map_err(|e| (Step::Bundle, e))?;
        let input = DeployInput { build: b.clone(), bundle_digest: bundle.bundle_digest.clone() };
        let deployed = ctx
            .execute_activity(BuildActivities::deploy, input, options(Step::Deploy, Some(ship_token.clone())))
            .await
            .map_err(|e| (Step::Deploy, e))?;
        Ok::<_, (Step, ActivityExecutionError)>((bundle, deployed))
    };
    let (source, shipped) = join!(check, ship);
    // The check's verdict comes first: its failure is the build's.
    let source = settle(ctx, Step::Check, source)?;
    match shipped {
        Ok((bundle, deployed)) if bundle.source_digest == source.source_digest => {
            Ok((settle(ctx, Step::Deploy, Ok(deployed))?, bundle.bundle_digest))
        }
        // A failure of the spec the check vouched for is the build's.
        Err((step, e)) if source.spec_digest == spec_digest => settle(ctx, step, Err(e)),
        // Shipped from a spec a repair has since replaced: ship the checked source.
        _ => {
            let bundle = bundle_source(ctx, b, source.source_digest).await?;
            Ok((deploy(ctx, b, bundle.bundle_digest.clone()).await?, bundle.bundle_digest))
        }
    }
}

/// `bundle` of a source `check` stored.
async fn bundle_source(
    ctx: &WorkflowContext<BuildWorkflow>,
    b: &BuildInput,
    source_digest: String,
) -> Result<BundleRef, Stop> {
    enter(ctx, Step::Bundle)?;
    let input = BundleInput { build: b.clone(), source_digest: Some(source_digest), spec_digest: None };
    let bundle = ctx.execute_activity(BuildActivities::bundle, input, options(Step::Bundle, None)).await;
    settle(ctx, Step::Bundle, bundle)
}

/// `deploy` of a bundle (a redeploy of the same build replaces its container).
async fn deploy(ctx: &WorkflowContext<BuildWorkflow>, b: &BuildInput, bundle_digest: String) -> Result<Deployed, Stop> {
    enter(ctx, Step::Deploy)?;
    let input = DeployInput { build: b.clone(), bundle_digest };
    let deployed = ctx.execute_activity(BuildActivities::deploy, input, options(Step::Deploy, None)).await;
    settle(ctx, Step::Deploy, deployed)
}

/// Record the step (for the query) unless the build was cancelled meanwhile.
fn enter(ctx: &WorkflowContext<BuildWorkflow>, step: Step) -> Result<(), Stop> {
    if ctx.cancellation_token().is_cancelled() {
        return Err(Stop::Cancelled { step });
    }
    ctx.state_mut(|s| s.current = step.as_str().to_owned());
    Ok(())
}

/// An activity's outcome as the pipeline sees it. A cancel that the activity
/// did not notice in time still stops the build after it.
fn settle<T>(
    ctx: &WorkflowContext<BuildWorkflow>,
    step: Step,
    result: Result<T, ActivityExecutionError>,
) -> Result<T, Stop> {
    match result {
        Ok(v) if step == Step::Cutover || !ctx.cancellation_token().is_cancelled() => Ok(v),
        Ok(_) | Err(ActivityExecutionError::Cancelled(_)) => Err(Stop::Cancelled { step }),
        Err(_) if ctx.cancellation_token().is_cancelled() && step != Step::Cutover => Err(Stop::Cancelled { step }),
        Err(e) => Err(Stop::Failed { step, cause: cause_of(&e) }),
    }
}

/// The plain-words cause of a failed activity: the innermost message (the
/// step's own error), or what timed out.
fn cause_of(e: &ActivityExecutionError) -> String {
    use temporalio_common::error::IncomingError;
    let mut cause = e.cause();
    let mut message = e.failure().map(|f| f.message.clone()).unwrap_or_else(|| e.to_string());
    while let Some(c) = cause {
        message = match c {
            IncomingError::Timeout(_) => {
                "the step timed out (the worker may have stopped); retries are exhausted".into()
            }
            other => other.failure().message.clone(),
        };
        cause = match c {
            IncomingError::Application(a) => a.cause(),
            _ => None,
        };
    }
    message
}

/// Timeouts and retries per step. Heartbeat timeouts are short so a killed
/// worker's activity is retried within seconds; schedule-to-close bounds the
/// whole step including retries (a Docker outage gets a quarter of an hour).
pub fn options(step: Step, token: Option<WorkflowCancellationToken>) -> ActivityOptions {
    let (start_to_close, schedule_to_close, attempts) = match step {
        // A model call with its own retries and a repair round trip.
        Step::Generate => (Duration::from_secs(600), Duration::from_secs(1800), 5),
        Step::Check => (Duration::from_secs(600), Duration::from_secs(1800), 5),
        Step::Bundle => (Duration::from_secs(300), Duration::from_secs(1200), 5),
        Step::Deploy => (Duration::from_secs(300), Duration::from_secs(900), 0),
        Step::Smoke => (Duration::from_secs(120), Duration::from_secs(600), 5),
        Step::Cutover => (Duration::from_secs(120), Duration::from_secs(900), 0),
    };
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(20))
        .maximum_attempts(attempts)
        .non_retryable_error_types(kind::NON_RETRYABLE)
        .build();
    ActivityOptions::with_close_timeouts(temporalio_common::ActivityCloseTimeouts::ScheduleAndStartToClose {
        schedule_to_close,
        start_to_close,
    })
    .heartbeat_timeout(Duration::from_secs(10))
    .retry_policy(retry)
    // Wait for the activity to acknowledge a cancel, so cleanup never races a
    // deploy that is still creating its container.
    .cancellation_type(ActivityCancellationType::WaitCancellationCompleted)
    .maybe_cancellation_token(token)
    .summary(step.as_str().to_owned())
    .build()
}

/// What the reconciler loop is told when it starts (and carries over each continue-as-new).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReconcileLoop {
    /// Pause between passes.
    pub interval_ms: u64,
    /// Workloads and images younger than this are never taken for orphans.
    pub orphan_grace_secs: u64,
}

/// Passes per run before the loop continues as new, so its history stays short.
const PASSES_PER_RUN: u32 = 200;

/// The reconciler: one per task queue (workflow id [`client::reconciler_id`]),
/// so it runs once however many workers poll. Each pass is one activity
/// ([`BuildActivities::reconcile`], level-triggered and idempotent); a pass
/// that fails is logged and the next one tries again.
#[workflow]
#[derive(Default)]
pub struct ReconcileWorkflow;

#[workflow_methods]
impl ReconcileWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: ReconcileLoop) -> WorkflowResult<()> {
        let pass = bmm_activities::reconcile::ReconcileInput { orphan_grace_secs: input.orphan_grace_secs };
        let options = || {
            ActivityOptions::with_close_timeouts(temporalio_common::ActivityCloseTimeouts::StartToClose(
                Duration::from_secs(120),
            ))
            .heartbeat_timeout(Duration::from_secs(10))
            // The next pass is the retry.
            .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
            .summary("reconcile".to_owned())
            .build()
        };
        for _ in 0..PASSES_PER_RUN {
            // A failed pass changes nothing the next one depends on.
            let _ = ctx.execute_activity(BuildActivities::reconcile, pass.clone(), options()).await;
            ctx.timer(Duration::from_millis(input.interval_ms.max(100))).await;
        }
        ctx.continue_as_new(input, temporalio_sdk::ContinueAsNewOptions::default())?;
        Ok(())
    }
}

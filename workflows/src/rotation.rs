//! The master-key rotation: [`MasterKeyRotationWorkflow`] re-wraps every
//! sealed value under the current master key, one batch per activity, then
//! retires the old keys; [`start_rotation`] and [`rotation_progress`] drive it
//! from the CLI.
//!
//! The database is the checkpoint: a batch picks whatever is still under an
//! old key, so a batch that died with its worker is simply done again, and a
//! second `rotate-master` attaches to the running rotation. The workflow
//! continues as new every few hundred batches to keep its history short.

use std::time::Duration;

use bmm_activities::KeyActivities;
use bmm_activities::keys::{RetireInput, RewrapInput, RewrapOutcome};
use bmm_activities::kind;
use bmm_core::Config;
use serde::{Deserialize, Serialize};
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowStartOptions,
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, ContinueAsNewOptions, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination,
};

use crate::client::BuildClientError;

/// Batches per run before continuing as new.
const BATCHES_PER_RUN: u32 = 500;
/// Between the last batch and retiring the old keys.
const RETIRE_GRACE: Duration = Duration::from_secs(5);
/// Values per table per batch, unless the operator says otherwise.
pub const DEFAULT_BATCH_SIZE: i64 = 200;

/// `master-key-rotation-<target key id>`: one rotation per target key.
pub fn rotation_workflow_id(target_key_id: &str) -> String {
    format!("master-key-rotation-{target_key_id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationInput {
    pub target_key_id: String,
    pub batch_size: i64,
    /// Values re-wrapped by earlier runs (carried across continue-as-new).
    #[serde(default)]
    pub rewrapped_before: u64,
}

/// What the rotation reports (the query, and its result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationProgress {
    pub target_key_id: String,
    /// `starting`, `rewrapping`, `retiring` or `done`.
    pub phase: String,
    pub rewrapped: u64,
    /// Values left after the last batch (none before the first).
    pub remaining: Option<i64>,
    pub batches: u32,
    /// Keys retired when the rotation finished.
    pub retired: Vec<String>,
}

#[workflow]
#[derive(Default)]
pub struct MasterKeyRotationWorkflow {
    progress: RotationProgress,
}

#[workflow_methods]
impl MasterKeyRotationWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: RotationInput) -> WorkflowResult<RotationProgress> {
        ctx.state_mut(|s| {
            s.progress = RotationProgress {
                target_key_id: input.target_key_id.clone(),
                phase: "rewrapping".into(),
                rewrapped: input.rewrapped_before,
                ..Default::default()
            }
        });
        let mut batches = 0u32;
        loop {
            let batch = RewrapInput { target_key_id: input.target_key_id.clone(), batch_size: input.batch_size };
            let outcome: RewrapOutcome = ctx
                .execute_activity(KeyActivities::rewrap_batch, batch, options("rewrap"))
                .await
                .map_err(|e| failed(format!("re-wrapping stopped: {}", crate::cause_of(&e))))?;
            batches += 1;
            ctx.state_mut(|s| {
                s.progress.rewrapped += outcome.rewrapped;
                s.progress.remaining = Some(outcome.remaining);
                s.progress.batches += 1;
            });
            if outcome.remaining == 0 {
                break;
            }
            if batches >= BATCHES_PER_RUN || ctx.continue_as_new_suggested() {
                let rewrapped_before = ctx.state(|s| s.progress.rewrapped);
                ctx.continue_as_new(
                    RotationInput { rewrapped_before, ..input.clone() },
                    ContinueAsNewOptions::default(),
                )?;
            }
        }
        ctx.state_mut(|s| s.progress.phase = "retiring".into());
        // A request that read a value just before the last batch moved it
        // still opens its copy: give such requests time to finish before the
        // old key is refused.
        ctx.timer(RETIRE_GRACE).await;
        let retire = RetireInput {
            target_key_id: input.target_key_id.clone(),
            rotation: rotation_workflow_id(&input.target_key_id),
        };
        // Retiring re-counts under a lock; a value written under an old key
        // since the last batch makes it fail and retry, and the retries
        // interleave with nothing: such a value can only come from a process
        // still sealing with an old key, which the runbook rules out first.
        let retired = ctx
            .execute_activity(KeyActivities::retire_old_keys, retire, options("retire"))
            .await
            .map_err(|e| failed(format!("retiring the old keys failed: {}", crate::cause_of(&e))))?;
        ctx.state_mut(|s| {
            s.progress.phase = "done".into();
            s.progress.remaining = Some(0);
            s.progress.retired = retired.key_ids;
        });
        Ok(ctx.state(|s| s.progress.clone()))
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> RotationProgress {
        let mut p = self.progress.clone();
        if p.phase.is_empty() {
            p.phase = "starting".into();
        }
        p
    }
}

fn failed(message: String) -> WorkflowTermination {
    WorkflowTermination::failed_application(
        ApplicationFailure::builder(message).type_name("RotationFailed".to_owned()).non_retryable(true).build(),
    )
}

/// Short heartbeats so a killed worker's batch is retried within seconds;
/// retries without end (a worker on the old key list waits for its
/// restart), except for values no key opens.
fn options(summary: &str) -> ActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .maximum_attempts(0)
        .non_retryable_error_types(kind::NON_RETRYABLE)
        .build();
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(300))
        .heartbeat_timeout(Duration::from_secs(5))
        .retry_policy(retry)
        .summary(summary.to_owned())
        .build()
}

/// Start the rotation to `cfg`'s current key, or attach to the one running.
/// Returns the workflow id.
pub async fn start_rotation(client: &Client, cfg: &Config, batch_size: i64) -> Result<String, BuildClientError> {
    let target = cfg.secret_box.key_id.clone();
    let id = rotation_workflow_id(&target);
    let options = WorkflowStartOptions::new(cfg.temporal_task_queue.clone(), id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        // A failed or finished rotation may be run again (it resumes from the database).
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary(format!("rotate the master key to {target}"))
        .build();
    let input = RotationInput { target_key_id: target, batch_size, rewrapped_before: 0 };
    match client.start_workflow(MasterKeyRotationWorkflow::run, input, options).await {
        Ok(_) | Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { .. }) => Ok(id),
        Err(e) => Err(BuildClientError::Temporal(e.to_string())),
    }
}

/// The rotation's state as Temporal knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStatus {
    /// `Running`, `Completed`, `Failed`, … (Temporal's words).
    pub status: String,
    /// From the workflow's query while it runs, or its result once done.
    pub progress: Option<RotationProgress>,
}

/// The rotation to `target_key_id`, or `None` when there never was one.
pub async fn rotation_progress(
    client: &Client,
    target_key_id: &str,
) -> Result<Option<RotationStatus>, BuildClientError> {
    let handle = client.get_workflow_handle::<MasterKeyRotationWorkflow>(rotation_workflow_id(target_key_id));
    let d = match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(d) => d,
        Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => return Ok(None),
        Err(e) => return Err(BuildClientError::Temporal(e.to_string())),
    };
    let status = format!("{:?}", d.status());
    // A closed workflow still answers queries from its history.
    let progress = handle.query(MasterKeyRotationWorkflow::progress, (), WorkflowQueryOptions::default()).await.ok();
    Ok(Some(RotationStatus { status, progress }))
}

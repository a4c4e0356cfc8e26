//! [`KeyActivities`]: the master-key rotation's activities. One batch of
//! re-wrapping per activity (the database is the checkpoint: a retried batch
//! picks whatever is still under an old key), and retiring the old keys once
//! none is left.
//!
//! Both refuse to run unless this worker's current key is the one the
//! rotation moves to, so a worker that did not get the new key list yet
//! cannot undo the rotation or retire the key it still seals with.

use std::sync::Arc;
use std::time::Duration;

use bmm_core::Config;
use bmm_db::Pool;
use bmm_db::master_keys::{self, RetireError};
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::error::{StepError, kind};

/// One batch's orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapInput {
    /// The master key values move to (its id).
    pub target_key_id: String,
    /// Values per table per batch (one transaction).
    pub batch_size: i64,
}

/// What a batch did and what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapOutcome {
    pub rewrapped: u64,
    /// Values still not under the target key after this batch.
    pub remaining: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireInput {
    pub target_key_id: String,
    /// The rotation's workflow id, recorded with each retired key.
    pub rotation: String,
}

/// Ids of the keys retired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub key_ids: Vec<String>,
}

pub struct KeyActivities {
    pub cfg: Arc<Config>,
    pub pool: Pool,
    /// Test hook: sleep this long in each batch (heartbeating), so a test can
    /// kill the worker mid-rotation. From `BMM_TEST_REWRAP_PAUSE_MS`.
    pub pause: Option<Duration>,
}

impl KeyActivities {
    pub fn new(cfg: Arc<Config>, pool: Pool) -> KeyActivities {
        let pause =
            std::env::var("BMM_TEST_REWRAP_PAUSE_MS").ok().and_then(|v| v.parse().ok()).map(Duration::from_millis);
        KeyActivities { cfg, pool, pause }
    }

    fn check_target(&self, target: &str) -> Result<(), StepError> {
        let sb = &self.cfg.secret_box;
        if sb.key_id == target {
            return Ok(());
        }
        // Retried: the worker may be restarting with the new key list right now.
        Err(StepError::transient(format!(
            "this worker seals with master key {}, not {target}: give every process the new key list \
             (the new key first) before the rotation can go on",
            sb.key_id
        )))
    }

    async fn rewrap(&self, input: &RewrapInput) -> Result<RewrapOutcome, StepError> {
        self.check_target(&input.target_key_id)?;
        if input.batch_size < 1 {
            return Err(StepError::rejected(kind::BAD_INPUT, "the batch size must be at least 1"));
        }
        if let Some(pause) = self.pause {
            tokio::time::sleep(pause).await;
        }
        let mut conn = self.pool.get().await.map_err(bmm_db::DbError::from)?;
        let batch = master_keys::rewrap_batch(&mut conn, &self.cfg.secret_box, input.batch_size).await?;
        let remaining = master_keys::remaining(&mut conn, &input.target_key_id).await?;
        if !batch.unreadable.is_empty() {
            // No retry opens them: an operator must add the missing key or delete the values.
            return Err(StepError::rejected(
                kind::BAD_INPUT,
                format!(
                    "{} value(s) cannot be re-wrapped (the rotation stops here; fix them and run \
                     `bmm keys rotate-master` again): {}",
                    batch.unreadable.len(),
                    batch.unreadable.join("; ")
                ),
            ));
        }
        tracing::info!(rewrapped = batch.rewrapped, remaining, target = %input.target_key_id, "master key batch");
        Ok(RewrapOutcome { rewrapped: batch.rewrapped, remaining })
    }

    async fn retire(&self, input: &RetireInput) -> Result<Retired, StepError> {
        self.check_target(&input.target_key_id)?;
        let mut conn = self.pool.get().await.map_err(bmm_db::DbError::from)?;
        match master_keys::retire_old_keys(&mut conn, &self.cfg.secret_box, &input.rotation).await {
            Ok(key_ids) => {
                tracing::warn!(?key_ids, successor = %input.target_key_id, "master keys retired");
                Ok(Retired { key_ids })
            }
            // A value written under an old key since the last batch: the workflow batches again.
            Err(e @ RetireError::NotDone(..)) => Err(StepError::transient(e.to_string())),
            Err(e @ RetireError::CurrentRetired(_)) => Err(StepError::rejected(kind::BAD_INPUT, e.to_string())),
            Err(e) => Err(StepError::transient(format!("the database failed: {e}"))),
        }
    }
}

/// Run `work` while heartbeating, so a dead worker's batch is retried within seconds.
async fn heartbeating<T>(
    ctx: &ActivityContext,
    work: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, ActivityError> {
    let work = Box::pin(work);
    let beat = async {
        loop {
            if let Err(e) = ctx.record_heartbeat(()).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        r = work => r.map_err(StepError::into_activity_error),
        _ = ctx.cancelled() => Err(StepError::Cancelled.into_activity_error()),
        () = beat => unreachable!("heartbeats never end"),
    }
}

#[activities]
impl KeyActivities {
    /// Move one batch of sealed values to the target master key.
    #[activity]
    pub async fn rewrap_batch(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RewrapInput,
    ) -> Result<RewrapOutcome, ActivityError> {
        heartbeating(&ctx, self.rewrap(&input)).await
    }

    /// Retire every other configured key once no value needs it.
    #[activity]
    pub async fn retire_old_keys(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RetireInput,
    ) -> Result<Retired, ActivityError> {
        heartbeating(&ctx, self.retire(&input)).await
    }
}

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
    /// kill the worker mid-rotation. From `BMM_TEST_REWRAP_PAUSE_MS`, in
    /// debug builds only (as `BMM_TEST_PAUSE`).
    pub pause: Option<Duration>,
}

impl KeyActivities {
    pub fn new(cfg: Arc<Config>, pool: Pool) -> KeyActivities {
        let pause = std::env::var("BMM_TEST_REWRAP_PAUSE_MS")
            .ok()
            .filter(|_| cfg!(debug_assertions))
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
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
        // Values sealed under an old key since the last batch (a process that
        // was still on the old list) are moved here, so retiring converges
        // instead of waiting for batches the workflow no longer schedules.
        let batch = RewrapInput { target_key_id: input.target_key_id.clone(), batch_size: 500 };
        for _ in 0..100 {
            if master_keys::remaining(&mut conn, &input.target_key_id).await? == 0 {
                break;
            }
            drop(conn);
            self.rewrap(&batch).await?;
            conn = self.pool.get().await.map_err(bmm_db::DbError::from)?;
        }
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

#[cfg(test)]
mod tests {
    use bmm_core::crypto::SecretBox;
    use bmm_db::schema::{orgs, secrets, servers};
    use bmm_db::testing::TestDb;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use uuid::Uuid;

    use super::*;

    fn config(db: &TestDb, keys: &str) -> Arc<Config> {
        let env = vec![("BMM_DATABASE_URL".to_owned(), db.url.clone()), ("BMM_SECRET_KEY".to_owned(), keys.to_owned())];
        Arc::new(Config::from_sources(&env, None).unwrap())
    }

    async fn seed(db: &TestDb, sb: &SecretBox, n: usize) {
        let mut conn = db.pool().get().await.unwrap();
        let (org, server) = (Uuid::new_v4(), Uuid::new_v4());
        diesel::insert_into(orgs::table)
            .values((orgs::id.eq(org), orgs::name.eq("o"), orgs::slug.eq(format!("o-{}", org.simple()))))
            .execute(&mut conn)
            .await
            .unwrap();
        diesel::insert_into(servers::table)
            .values((
                servers::id.eq(server),
                servers::org_id.eq(org),
                servers::slug.eq(format!("s{}", &server.simple().to_string()[..10])),
                servers::name.eq("s"),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        for i in 0..n {
            let sealed = sb.seal(b"v", format!("secret:{server}:K{i}").as_bytes());
            diesel::insert_into(secrets::table)
                .values((
                    secrets::id.eq(Uuid::now_v7()),
                    secrets::org_id.eq(org),
                    secrets::server_id.eq(server),
                    secrets::key.eq(format!("K{i}")),
                    secrets::nonce.eq(&sealed.nonce),
                    secrets::ciphertext.eq(&sealed.ciphertext),
                ))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn retiring_moves_stragglers_first_and_a_worker_on_the_old_list_waits() {
        let db = TestDb::new().await;
        let (old, new) = ("11".repeat(32), "22".repeat(32));
        let old_box = SecretBox::from_hex(&old).unwrap();
        let target = SecretBox::from_hex(&new).unwrap().key_id;
        // Written by a process still on the old list after the last batch.
        seed(&db, &old_box, 3).await;

        let stale = KeyActivities::new(config(&db, &old), db.pool());
        let e = stale.retire(&RetireInput { target_key_id: target.clone(), rotation: "r".into() }).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains(&format!("seals with master key {}, not {target}", old_box.key_id)), "{e}");

        let acts = KeyActivities::new(config(&db, &format!("{new},{old}")), db.pool());
        let e = acts.rewrap(&RewrapInput { target_key_id: target.clone(), batch_size: 0 }).await.unwrap_err();
        assert_eq!(e, StepError::rejected(kind::BAD_INPUT, "the batch size must be at least 1"));
        let retired = acts.retire(&RetireInput { target_key_id: target.clone(), rotation: "r".into() }).await.unwrap();
        assert_eq!(retired.key_ids, vec![old_box.key_id.clone()]);
        let mut conn = db.pool().get().await.unwrap();
        assert_eq!(master_keys::remaining(&mut conn, &target).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_value_no_key_opens_stops_the_batch_with_its_name() {
        let db = TestDb::new().await;
        let stranger = SecretBox::from_hex(&"33".repeat(32)).unwrap();
        seed(&db, &stranger, 1).await;
        let acts = KeyActivities::new(config(&db, &"22".repeat(32)), db.pool());
        let target = acts.cfg.secret_box.key_id.clone();
        let e = acts.rewrap(&RewrapInput { target_key_id: target, batch_size: 10 }).await.unwrap_err();
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.starts_with("1 value(s) cannot be re-wrapped"), "{text}");
        assert!(text.contains("secret K0 of server") && text.contains(&stranger.key_id), "{text}");
    }
}

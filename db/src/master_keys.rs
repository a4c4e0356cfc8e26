//! The master keys' state in the database: which key wrapped each sealed
//! value (a column generated from the value's own envelope header), moving
//! values to the current key in batches, and the keys a finished rotation
//! retired, which every process then refuses.
//!
//! Sealed values live in `secrets` (context `secret:<server id>:<key>`, as the
//! API seals them) and `signing_keys` (context = kid).

use std::time::Duration;

use bmm_core::crypto::{Sealed, SecretBox};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Pool;
use crate::schema::{retired_master_keys, secrets, signing_keys};

/// Serialises retiring with itself ("bmmmastr").
const RETIRE_LOCK: i64 = 0x626d_6d6d_6173_7472;

/// id, server id, key, nonce, ciphertext.
type SecretRow = (Uuid, Uuid, String, Vec<u8>, Vec<u8>);

/// How many values of a table are under one key (`None` = the legacy format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    pub table: String,
    pub key_id: Option<String>,
    pub values: i64,
}

/// Sealed values per table and key.
pub async fn counts(conn: &mut AsyncPgConnection) -> QueryResult<Vec<KeyCount>> {
    let mut out = Vec::new();
    let s: Vec<(Option<String>, i64)> = secrets::table
        .group_by(secrets::master_key_id)
        .select((secrets::master_key_id, diesel::dsl::count_star()))
        .order(secrets::master_key_id.asc())
        .load(conn)
        .await?;
    out.extend(s.into_iter().map(|(key_id, values)| KeyCount { table: "secrets".into(), key_id, values }));
    let k: Vec<(Option<String>, i64)> = signing_keys::table
        .group_by(signing_keys::master_key_id)
        .select((signing_keys::master_key_id, diesel::dsl::count_star()))
        .order(signing_keys::master_key_id.asc())
        .load(conn)
        .await?;
    out.extend(k.into_iter().map(|(key_id, values)| KeyCount { table: "signing_keys".into(), key_id, values }));
    Ok(out)
}

/// Values not yet under `key_id` (legacy ones included).
pub async fn remaining(conn: &mut AsyncPgConnection, key_id: &str) -> QueryResult<i64> {
    let s: i64 = secrets::table
        .filter(secrets::master_key_id.is_null().or(secrets::master_key_id.ne(key_id)))
        .count()
        .get_result(conn)
        .await?;
    let k: i64 = signing_keys::table
        .filter(signing_keys::master_key_id.is_null().or(signing_keys::master_key_id.ne(key_id)))
        .count()
        .get_result(conn)
        .await?;
    Ok(s + k)
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Values now under the current key.
    pub rewrapped: u64,
    /// Values no configured key opens, each named with why (never a value).
    pub unreadable: Vec<String>,
}

/// Move up to `limit` values per table to `sb`'s current key, in one
/// transaction. Rows are locked (`SKIP LOCKED`, so concurrent batches share
/// the work) and each update keeps the value: a v1 value only gets its data
/// key re-wrapped, a legacy one is sealed afresh. Writers of the same row
/// (the API setting a secret) wait for the lock and then overwrite, which is
/// right: their value is sealed under the current key already.
pub async fn rewrap_batch(conn: &mut AsyncPgConnection, sb: &SecretBox, limit: i64) -> QueryResult<Batch> {
    let current = sb.key_id.clone();
    let sb = sb.clone();
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        async move {
            let mut batch = Batch::default();
            let rows: Vec<SecretRow> = secrets::table
                .filter(secrets::master_key_id.is_null().or(secrets::master_key_id.ne(&current)))
                .select((secrets::id, secrets::server_id, secrets::key, secrets::nonce, secrets::ciphertext))
                .order(secrets::id.asc())
                .limit(limit)
                .for_update()
                .skip_locked()
                .load(conn)
                .await?;
            for (id, server_id, key, nonce, ciphertext) in rows {
                let context = format!("secret:{server_id}:{key}");
                match sb.reseal(&Sealed { nonce, ciphertext }, context.as_bytes()) {
                    Ok(Some(s)) => {
                        diesel::update(secrets::table.filter(secrets::id.eq(id)))
                            .set((secrets::nonce.eq(&s.nonce), secrets::ciphertext.eq(&s.ciphertext)))
                            .execute(conn)
                            .await?;
                        batch.rewrapped += 1;
                    }
                    Ok(None) => {}
                    Err(e) => batch.unreadable.push(format!("secret {key} of server {server_id}: {e}")),
                }
            }
            let rows: Vec<(String, Vec<u8>, Vec<u8>)> = signing_keys::table
                .filter(signing_keys::master_key_id.is_null().or(signing_keys::master_key_id.ne(&current)))
                .select((signing_keys::kid, signing_keys::private_nonce, signing_keys::private_sealed))
                .order(signing_keys::kid.asc())
                .limit(limit)
                .for_update()
                .skip_locked()
                .load(conn)
                .await?;
            for (kid, nonce, ciphertext) in rows {
                match sb.reseal(&Sealed { nonce, ciphertext }, kid.as_bytes()) {
                    Ok(Some(s)) => {
                        diesel::update(signing_keys::table.filter(signing_keys::kid.eq(&kid)))
                            .set((
                                signing_keys::private_nonce.eq(&s.nonce),
                                signing_keys::private_sealed.eq(&s.ciphertext),
                            ))
                            .execute(conn)
                            .await?;
                        batch.rewrapped += 1;
                    }
                    Ok(None) => {}
                    Err(e) => batch.unreadable.push(format!("signing key {kid}: {e}")),
                }
            }
            Ok(batch)
        }
        .scope_boxed()
    })
    .await
}

/// A key a finished rotation retired.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = retired_master_keys)]
pub struct RetiredKey {
    pub key_id: String,
    pub retired_at: DateTime<Utc>,
    pub successor: String,
    pub rotation: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error("{0} value(s) are not yet under master key {1}; the old keys stay usable")]
    NotDone(i64, String),
    #[error("{0}")]
    CurrentRetired(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

/// Retire every configured key but the current one, once no value needs them
/// (checked again here, under a lock, not trusted from the caller). The
/// keys are refused by `sb` at once and by other processes at their next
/// [`apply_retired`]. Returns the ids retired now.
pub async fn retire_old_keys(
    conn: &mut AsyncPgConnection,
    sb: &SecretBox,
    rotation: &str,
) -> Result<Vec<String>, RetireError> {
    let current = sb.key_id.clone();
    let old: Vec<String> = sb.key_ids().into_iter().filter(|k| *k != current).collect();
    let rotation = rotation.to_owned();
    let retired = conn
        .transaction::<_, RetireError, _>(|conn| {
            async move {
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<diesel::sql_types::BigInt, _>(RETIRE_LOCK)
                    .execute(conn)
                    .await?;
                let already: i64 = retired_master_keys::table
                    .filter(retired_master_keys::key_id.eq(&current))
                    .count()
                    .get_result(conn)
                    .await?;
                if already > 0 {
                    return Err(RetireError::CurrentRetired(format!(
                        "master key {current} was itself retired by an earlier rotation; configure a new key first"
                    )));
                }
                let left = remaining(conn, &current).await?;
                if left > 0 {
                    return Err(RetireError::NotDone(left, current));
                }
                let mut retired = Vec::new();
                for id in old {
                    let n = diesel::insert_into(retired_master_keys::table)
                        .values((
                            retired_master_keys::key_id.eq(&id),
                            retired_master_keys::successor.eq(&current),
                            retired_master_keys::rotation.eq(&rotation),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if n > 0 {
                        retired.push(id);
                    }
                }
                Ok(retired)
            }
            .scope_boxed()
        })
        .await?;
    sb.retire(sb.key_ids().into_iter().filter(|k| *k != sb.key_id));
    Ok(retired)
}

pub async fn list_retired(conn: &mut AsyncPgConnection) -> QueryResult<Vec<RetiredKey>> {
    retired_master_keys::table
        .select(RetiredKey::as_select())
        .order(retired_master_keys::retired_at.asc())
        .load(conn)
        .await
}

/// Make `sb` refuse the keys retired so far. Fails when its current key is
/// one of them: a process must not seal new values under a retired key.
pub async fn apply_retired(pool: &Pool, sb: &SecretBox) -> Result<(), RetireError> {
    let mut conn = pool.get().await.map_err(|e| RetireError::Unavailable(e.to_string()))?;
    let retired = list_retired(&mut conn).await?;
    if let Some(r) = retired.iter().find(|r| r.key_id == sb.key_id) {
        return Err(RetireError::CurrentRetired(format!(
            "the first key of BMM_SECRET_KEY ({}) was retired at {} by {} in favour of {}; put that key first",
            r.key_id, r.retired_at, r.rotation, r.successor
        )));
    }
    sb.retire(retired.into_iter().map(|r| r.key_id));
    Ok(())
}

/// Re-read the retired keys every `every`, so a rotation finishing elsewhere
/// takes effect here within that time.
pub fn spawn_refresh(pool: Pool, sb: SecretBox, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = apply_retired(&pool, &sb).await {
                tracing::error!(error = %e, "reading the retired master keys failed");
            }
        }
    })
}

#[cfg(test)]
mod tests;

//! What happened to a running server — the reconciler's restarts and
//! redeploys, its status changes, refused egress — and the server's truthful
//! status (`LIVE`, `DEGRADED` while being restored, `DOWN` with the reason).
//! Every event is announced with NOTIFY on [`SERVER_EVENTS_CHANNEL`] when its
//! insert commits.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::models::ServerEvent;
use crate::schema::{server_events, servers};

/// The NOTIFY channel server events are announced on; payload `{"server_id":…,"id":…}`.
pub const SERVER_EVENTS_CHANNEL: &str = "bmm_server_events";

/// What happened, as stored in `server_events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerEventKind {
    /// The status went from one of LIVE/DEGRADED/DOWN to another.
    StatusChanged,
    /// A stopped container of the live version was started again.
    Restarted,
    /// The live version was deployed again from its stored bundle.
    Redeployed,
    /// The live version is reached somewhere else now (the gateway follows).
    EndpointChanged,
    /// A workload or image with the platform's labels that no desired state owns was removed.
    OrphanRemoved,
    /// A reconcile step failed; the next pass tries again.
    ReconcileFailed,
    /// The server tried to reach an address its egress policy refuses.
    EgressRefused,
}

impl ServerEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerEventKind::StatusChanged => "STATUS_CHANGED",
            ServerEventKind::Restarted => "RESTARTED",
            ServerEventKind::Redeployed => "REDEPLOYED",
            ServerEventKind::EndpointChanged => "ENDPOINT_CHANGED",
            ServerEventKind::OrphanRemoved => "ORPHAN_REMOVED",
            ServerEventKind::ReconcileFailed => "RECONCILE_FAILED",
            ServerEventKind::EgressRefused => "EGRESS_REFUSED",
        }
    }

    pub fn parse(s: &str) -> Option<ServerEventKind> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// The status of a server that has a live version, as `servers.status` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    /// Routed and answering.
    Live,
    /// Its live version is not answering and is being restored.
    Degraded,
    /// Its live version is not answering and could not be restored (see the reason).
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Live => "LIVE",
            Health::Degraded => "DEGRADED",
            Health::Down => "DOWN",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// A new event for [`append`].
#[derive(Debug, Clone)]
pub struct NewServerEvent<'a> {
    pub server_id: Uuid,
    pub kind: ServerEventKind,
    pub message: &'a str,
    pub data: Option<serde_json::Value>,
}

/// Append an event to its server's log (the org is the server's) and NOTIFY
/// listeners. `NotFound` when the server does not exist.
pub async fn append(conn: &mut AsyncPgConnection, ev: NewServerEvent<'_>) -> QueryResult<i64> {
    let NewServerEvent { server_id, kind, message, data } = ev;
    let message = message.to_owned();
    conn.transaction::<i64, diesel::result::Error, _>(|conn| {
        async move { insert(conn, server_id, kind, &message, data).await }.scope_boxed()
    })
    .await
}

async fn insert(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    kind: ServerEventKind,
    message: &str,
    data: Option<serde_json::Value>,
) -> QueryResult<i64> {
    let org_id: Uuid = servers::table.find(server_id).select(servers::org_id).get_result(conn).await?;
    let id: i64 = diesel::insert_into(server_events::table)
        .values((
            server_events::org_id.eq(org_id),
            server_events::server_id.eq(server_id),
            server_events::kind.eq(kind.as_str()),
            server_events::message.eq(message),
            server_events::data.eq(data),
        ))
        .returning(server_events::id)
        .get_result(conn)
        .await?;
    let payload = serde_json::json!({ "server_id": server_id, "id": id }).to_string();
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<diesel::sql_types::Text, _>(SERVER_EVENTS_CHANNEL)
        .bind::<diesel::sql_types::Text, _>(payload)
        .execute(conn)
        .await?;
    Ok(id)
}

/// Set the status of a server that has a live version, with the reason for
/// DEGRADED / DOWN, and record the change as a `STATUS_CHANGED` event — in
/// one transaction, so the status and its history never disagree.
///
/// Only a server that is LIVE, DEGRADED or DOWN changes: a server being
/// built for the first time, failed, stopped or deleted is not the
/// reconciler's to describe. Returns the previous status when it changed,
/// `None` when nothing changed (same status and reason, or not applicable).
pub async fn set_health(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    health: Health,
    reason: Option<&str>,
) -> QueryResult<Option<Health>> {
    let reason = if health == Health::Live { None } else { reason.map(str::to_owned) };
    conn.transaction::<Option<Health>, diesel::result::Error, _>(|conn| {
        async move {
            let row: Option<(String, Option<String>)> = servers::table
                .find(server_id)
                .filter(servers::deleted_at.is_null())
                .select((servers::status, servers::status_reason))
                .for_update()
                .get_result(conn)
                .await
                .optional()?;
            let Some((status, old_reason)) = row else { return Ok(None) };
            let Some(before) = Health::parse(&status) else { return Ok(None) };
            if before == health && old_reason == reason {
                return Ok(None);
            }
            diesel::update(servers::table.find(server_id))
                .set((
                    servers::status.eq(health.as_str()),
                    servers::status_reason.eq(&reason),
                    servers::status_changed_at.eq(diesel::dsl::now),
                    servers::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            let message = match &reason {
                Some(r) => format!("{} → {}: {r}", before.as_str(), health.as_str()),
                None => format!("{} → {}", before.as_str(), health.as_str()),
            };
            let data = serde_json::json!({ "from": before.as_str(), "to": health.as_str(), "reason": reason });
            insert(conn, server_id, ServerEventKind::StatusChanged, &message, Some(data)).await?;
            Ok(Some(before))
        }
        .scope_boxed()
    })
    .await
}

/// A server's events after `after` (exclusive, by id), oldest first, at most
/// `limit`. `org_id` scopes the read: another org's server yields nothing.
pub async fn list_after(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    server_id: Uuid,
    after: i64,
    limit: i64,
) -> QueryResult<Vec<ServerEvent>> {
    server_events::table
        .filter(server_events::org_id.eq(org_id))
        .filter(server_events::server_id.eq(server_id))
        .filter(server_events::id.gt(after))
        .order(server_events::id.asc())
        .limit(limit)
        .select(ServerEvent::as_select())
        .load(conn)
        .await
}

/// A server's newest `limit` events, newest first (org-scoped).
pub async fn latest(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    server_id: Uuid,
    limit: i64,
) -> QueryResult<Vec<ServerEvent>> {
    server_events::table
        .filter(server_events::org_id.eq(org_id))
        .filter(server_events::server_id.eq(server_id))
        .order(server_events::id.desc())
        .limit(limit)
        .select(ServerEvent::as_select())
        .load(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_health_round_trip_through_their_names() {
        for k in [
            ServerEventKind::StatusChanged,
            ServerEventKind::Restarted,
            ServerEventKind::Redeployed,
            ServerEventKind::EndpointChanged,
            ServerEventKind::OrphanRemoved,
            ServerEventKind::ReconcileFailed,
            ServerEventKind::EgressRefused,
        ] {
            assert_eq!(ServerEventKind::parse(k.as_str()), Some(k));
        }
        for h in [Health::Live, Health::Degraded, Health::Down] {
            assert_eq!(Health::parse(h.as_str()), Some(h));
        }
        assert_eq!(Health::parse("BUILDING"), None);
        assert_eq!(ServerEventKind::parse("nonsense"), None);
    }
}

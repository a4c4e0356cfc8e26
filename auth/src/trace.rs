//! The connection trace: what each MCP client did while connecting to a
//! server (discovery, registration, authorize, token, first MCP call), with
//! the cause of any failure in plain words. Shown on the server page.

use bmm_db::schema::oauth_connection_events as ev;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

/// The steps a client goes through, in order.
pub const STEPS: [&str; 5] = ["discovery", "registration", "authorize", "token", "mcp"];

/// Details are cut to this many characters (a cause, not a dump).
const MAX_DETAIL: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = ev)]
pub struct ConnectionEvent {
    pub id: i64,
    pub org_id: Option<Uuid>,
    pub server_id: Option<Uuid>,
    pub client_id: Option<String>,
    pub client_name: Option<String>,
    pub step: String,
    pub ok: bool,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// Record one step. Never fails the caller: a write error is logged.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    conn: &mut AsyncPgConnection,
    org_id: Option<Uuid>,
    server_id: Option<Uuid>,
    client_id: Option<&str>,
    client_name: Option<&str>,
    step: &str,
    ok: bool,
    detail: &str,
) {
    let detail: String = detail.chars().take(MAX_DETAIL).collect();
    let client_name: Option<String> = client_name.map(|n| n.chars().take(200).collect());
    let client_id: Option<String> = client_id.map(|n| n.chars().take(500).collect());
    let res = diesel::insert_into(ev::table)
        .values((
            ev::org_id.eq(org_id),
            ev::server_id.eq(server_id),
            ev::client_id.eq(client_id),
            ev::client_name.eq(client_name),
            ev::step.eq(step),
            ev::ok.eq(ok),
            ev::detail.eq(&detail),
        ))
        .execute(conn)
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, step, "connection trace write failed");
    }
}

/// The newest events of the org, optionally of one server, newest first.
pub async fn list(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    server_id: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ConnectionEvent>> {
    let mut q = ev::table.filter(ev::org_id.eq(org_id)).into_boxed();
    if let Some(s) = server_id {
        q = q.filter(ev::server_id.eq(s));
    }
    q.order((ev::at.desc(), ev::id.desc()))
        .limit(limit.clamp(1, 500))
        .select(ConnectionEvent::as_select())
        .load(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ensure_user_and_org;
    use bmm_db::testing::TestDb;

    #[tokio::test]
    async fn events_are_recorded_listed_per_org_and_never_fail_the_caller() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut conn = pool.get().await.unwrap();
        let (_, org) = ensure_user_and_org(&mut conn, "t@example.com").await.unwrap();
        let (_, other) = ensure_user_and_org(&mut conn, "u@example.com").await.unwrap();
        record(&mut conn, Some(org.id), None, Some("c1"), Some("Cursor"), "registration", true, "registered").await;
        let long = "x".repeat(2000);
        record(&mut conn, Some(org.id), None, Some("c1"), Some("Cursor"), "token", false, &long).await;
        record(&mut conn, Some(other.id), None, None, None, "token", false, "other org").await;
        // An org that does not exist violates the foreign key: logged, not raised.
        record(&mut conn, Some(Uuid::new_v4()), None, None, None, "token", false, "lost").await;
        let events = list(&mut conn, org.id, None, 10).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].step, "token");
        assert!(!events[0].ok);
        assert_eq!(events[0].detail.len(), MAX_DETAIL);
        assert_eq!(events[1].client_name.as_deref(), Some("Cursor"));
        assert!(list(&mut conn, org.id, Some(Uuid::new_v4()), 10).await.unwrap().is_empty());
    }
}

//! The build-event log: dense per-build `seq`, announced with NOTIFY on
//! [`crate::BUILD_EVENTS_CHANNEL`] when the insert commits.

use diesel::prelude::*;
use diesel::sql_types::{Integer, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::models::BuildEvent;
use crate::schema::build_events;

/// What happened, as stored in `build_events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
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

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StepStarted => "STEP_STARTED",
            EventKind::Log => "LOG",
            EventKind::Warning => "WARNING",
            EventKind::StepSucceeded => "STEP_SUCCEEDED",
            EventKind::StepFailed => "STEP_FAILED",
            EventKind::StepRetrying => "STEP_RETRYING",
            EventKind::BuildSucceeded => "BUILD_SUCCEEDED",
            EventKind::BuildFailed => "BUILD_FAILED",
            EventKind::BuildCancelled => "BUILD_CANCELLED",
        }
    }

    /// Whether this event ends the build's stream.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::BuildSucceeded | EventKind::BuildFailed | EventKind::BuildCancelled)
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// A new event for [`append`].
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub build_id: Uuid,
    pub step: &'a str,
    pub kind: EventKind,
    pub message: &'a str,
    pub data: Option<serde_json::Value>,
}

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = Integer)]
    seq: i32,
}

/// Append an event with the next `seq` of its build and NOTIFY listeners.
/// The build row is locked for the insert, so concurrent writers (retried
/// activities on two workers) never get the same or a skipped `seq`.
pub async fn append(conn: &mut AsyncPgConnection, ev: NewEvent<'_>) -> QueryResult<i32> {
    let NewEvent { build_id, step, kind, message, data } = ev;
    let (step, message) = (step.to_owned(), message.to_owned());
    conn.transaction::<i32, diesel::result::Error, _>(|conn| {
        Box::pin(async move {
            // Lock first, in a statement of its own: under READ COMMITTED the
            // insert below then takes a fresh snapshot that sees every seq
            // committed by the writer we waited for.
            let locked = crate::schema::builds::table
                .filter(crate::schema::builds::id.eq(build_id))
                .select(crate::schema::builds::id)
                .for_update()
                .first::<Uuid>(conn)
                .await?;
            let inserted: Inserted = diesel::sql_query(
                "INSERT INTO build_events (org_id, build_id, seq, step, kind, message, data) \
                 SELECT b.org_id, b.id, COALESCE((SELECT MAX(seq) FROM build_events WHERE build_id = b.id), 0) + 1, $2, $3, $4, $5 \
                 FROM builds b WHERE b.id = $1 RETURNING seq",
            )
            .bind::<SqlUuid, _>(locked)
            .bind::<Text, _>(&step)
            .bind::<Text, _>(kind.as_str())
            .bind::<Text, _>(&message)
            .bind::<Nullable<Jsonb>, _>(data)
            .get_result(conn)
            .await?;
            let payload = serde_json::json!({ "build_id": build_id, "seq": inserted.seq }).to_string();
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(crate::BUILD_EVENTS_CHANNEL)
                .bind::<Text, _>(payload)
                .execute(conn)
                .await?;
            Ok(inserted.seq)
        })
    })
    .await
}

/// Events of a build after `after` (exclusive), oldest first, at most `limit`.
/// `org_id` scopes the read: another org's build yields nothing.
pub async fn list_after(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    build_id: Uuid,
    after: i32,
    limit: i64,
) -> QueryResult<Vec<BuildEvent>> {
    build_events::table
        .filter(build_events::org_id.eq(org_id))
        .filter(build_events::build_id.eq(build_id))
        .filter(build_events::seq.gt(after))
        .order(build_events::seq.asc())
        .limit(limit)
        .select(BuildEvent::as_select())
        .load(conn)
        .await
}

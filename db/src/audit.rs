//! The audit log. Writing never fails the caller: an audit failure is logged
//! and the request goes on.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::AuditEntry;
use crate::schema::audit_log;

/// One audit entry to write.
#[derive(Debug, Clone)]
pub struct Audit<'a> {
    pub org_id: Uuid,
    pub user_id: Option<Uuid>,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<String>,
    pub metadata: serde_json::Value,
    pub ip: Option<String>,
}

pub async fn record(conn: &mut AsyncPgConnection, a: Audit<'_>) {
    let res = diesel::insert_into(audit_log::table)
        .values((
            audit_log::org_id.eq(a.org_id),
            audit_log::user_id.eq(a.user_id),
            audit_log::action.eq(a.action),
            audit_log::resource_type.eq(a.resource_type),
            audit_log::resource_id.eq(&a.resource_id),
            audit_log::metadata.eq(&a.metadata),
            audit_log::ip.eq(&a.ip),
        ))
        .execute(conn)
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, action = a.action, "audit log write failed");
    }
}

/// The org's entries, newest first, optionally filtered by action and paged by id.
pub async fn list(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    action: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<AuditEntry>> {
    let mut q = audit_log::table.filter(audit_log::org_id.eq(org_id)).into_boxed();
    if let Some(a) = action {
        q = q.filter(audit_log::action.eq(a.to_owned()));
    }
    if let Some(b) = before_id {
        q = q.filter(audit_log::id.lt(b));
    }
    q.order(audit_log::id.desc()).limit(limit).select(AuditEntry::as_select()).load(conn).await
}

//! The org's audit log.

use async_graphql::{Context, ID, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use crate::context::{principal, state};
use crate::error::ApiError;

#[derive(SimpleObject)]
pub struct AuditEntry {
    /// Also the page cursor: pass it as `after` to get older entries.
    pub id: ID,
    pub at: DateTime<Utc>,
    /// e.g. `server.create`, `api_key.revoke`, `server.secret.set`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub user_id: Option<ID>,
    /// What changed; never secret values.
    pub metadata: Json<serde_json::Value>,
    pub ip: Option<String>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The org's audit entries, newest first. `after` is the `id` of the last
    /// entry of the previous page; `action` filters by exact action name.
    #[graphql(complexity = "limit.unwrap_or(50).clamp(1, 200) as usize * child_complexity")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        limit: Option<i32>,
        action: Option<String>,
        after: Option<ID>,
    ) -> Result<Vec<AuditEntry>> {
        let p = principal(ctx)?;
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::bad_input("limit", "must be between 1 and 200").into());
        }
        let before = match &after {
            Some(a) => {
                Some(a.parse::<i64>().map_err(|_| ApiError::bad_input("after", "not a cursor from a previous page"))?)
            }
            None => None,
        };
        let action = action.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows = bmm_db::audit::list(&mut conn, p.org_id, action.as_deref(), before, limit as i64)
            .await
            .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: ID(r.id.to_string()),
                at: r.at,
                action: r.action,
                resource_type: r.resource_type,
                resource_id: r.resource_id,
                user_id: r.user_id.map(|u| ID(u.to_string())),
                metadata: Json(r.metadata),
                ip: r.ip,
            })
            .collect())
    }
}

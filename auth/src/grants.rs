//! Connected apps: the OAuth grants a user gave (one refresh-token family
//! each: client, server, scopes, last use), and their revocation.

use bmm_db::schema::{oauth_clients, oauth_refresh_tokens as rt, users};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::AuthError;

/// One grant: a refresh-token family that still has a live token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The refresh-token family; revoking it ends the grant.
    pub id: Uuid,
    pub client_id: String,
    /// The name the client registered (chosen by whoever registered it).
    pub client_name: Option<String>,
    /// Every client registers itself (dynamic registration or a metadata
    /// document): none is vetted by the platform.
    pub verified: bool,
    pub user_id: Uuid,
    pub email: String,
    /// The server's MCP URL (the token audience).
    pub resource: String,
    pub scope: String,
    pub granted_at: DateTime<Utc>,
    /// When the app last used the grant (its last token exchange or refresh).
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct GrantRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    family_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    client_id: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    resource: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    scope: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    granted_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    last_used_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    expires_at: DateTime<Utc>,
}

/// The org's live grants (of one user when `user` is given), most recently used first.
pub async fn list_grants(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    user: Option<Uuid>,
) -> Result<Vec<Grant>, AuthError> {
    // The family's newest token carries the current scope; a family is live
    // while any of its tokens is neither revoked, used nor expired.
    let rows: Vec<GrantRow> = diesel::sql_query(
        "SELECT DISTINCT ON (family_id) family_id, client_id, user_id, resource, scope, \
                min(created_at) OVER w AS granted_at, max(created_at) OVER w AS last_used_at, \
                max(expires_at) OVER w AS expires_at \
         FROM oauth_refresh_tokens \
         WHERE org_id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND family_id IN ( \
             SELECT family_id FROM oauth_refresh_tokens \
             WHERE org_id = $1 AND revoked_at IS NULL AND used_at IS NULL AND expires_at > now()) \
         WINDOW w AS (PARTITION BY family_id) \
         ORDER BY family_id, created_at DESC",
    )
    .bind::<diesel::sql_types::Uuid, _>(org_id)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>, _>(user)
    .load(conn)
    .await?;
    let client_ids: Vec<&str> = rows.iter().map(|r| r.client_id.as_str()).collect();
    let names: Vec<(String, Option<String>)> = oauth_clients::table
        .filter(oauth_clients::client_id.eq_any(&client_ids))
        .select((oauth_clients::client_id, oauth_clients::client_name))
        .load(conn)
        .await?;
    let user_ids: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
    let emails: Vec<(Uuid, String)> =
        users::table.filter(users::id.eq_any(&user_ids)).select((users::id, users::email)).load(conn).await?;
    let mut out: Vec<Grant> = rows
        .into_iter()
        .map(|r| Grant {
            id: r.family_id,
            client_name: names.iter().find(|(id, _)| *id == r.client_id).and_then(|(_, n)| n.clone()),
            verified: false,
            email: emails.iter().find(|(id, _)| *id == r.user_id).map(|(_, e)| e.clone()).unwrap_or_default(),
            client_id: r.client_id,
            user_id: r.user_id,
            resource: r.resource,
            scope: r.scope,
            granted_at: r.granted_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
        })
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.last_used_at));
    Ok(out)
}

/// Revoke every token of the org's grant `family_id`; false when there is
/// no such live grant in the org. Access tokens already issued expire on
/// their own (minutes).
pub async fn revoke_grant(conn: &mut AsyncPgConnection, org_id: Uuid, family_id: Uuid) -> Result<bool, AuthError> {
    let n = diesel::update(
        rt::table.filter(rt::org_id.eq(org_id)).filter(rt::family_id.eq(family_id)).filter(rt::revoked_at.is_null()),
    )
    .set(rt::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

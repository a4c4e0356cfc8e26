//! Connected apps: the OAuth grants of the org (client, server, scopes,
//! last use) and their revocation, which ends the grant's refresh family.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use bmm_auth::grants::Grant;
use bmm_db::schema::servers;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::context::{audit, parse_id, principal, require_admin, state};
use crate::error::ApiError;

/// An app a user allowed to use one of the org's servers.
#[derive(SimpleObject)]
pub struct ConnectedApp {
    /// The grant (its refresh-token family).
    pub id: ID,
    pub client_id: String,
    /// The name the app registered; anyone can register any name.
    pub client_name: Option<String>,
    /// False for every self-registered or metadata-document client.
    pub verified: bool,
    pub user_id: ID,
    pub email: String,
    /// The server's MCP URL.
    pub resource: String,
    pub server_id: Option<ID>,
    pub server_name: Option<String>,
    pub scopes: Vec<String>,
    pub granted_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

async fn to_api(ctx: &Context<'_>, org_id: uuid::Uuid, grants: Vec<Grant>) -> Result<Vec<ConnectedApp>> {
    let cfg = &state(ctx).cfg;
    let slugs: Vec<String> =
        grants.iter().filter_map(|g| bmm_auth::oauth::resource_slug(cfg, &g.resource).ok()).collect();
    let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
    let found: Vec<(uuid::Uuid, String, String)> = servers::table
        .filter(servers::org_id.eq(org_id))
        .filter(servers::slug.eq_any(&slugs))
        .filter(servers::deleted_at.is_null())
        .select((servers::id, servers::slug, servers::name))
        .load(&mut conn)
        .await
        .map_err(ApiError::from)?;
    Ok(grants
        .into_iter()
        .map(|g| {
            let slug = bmm_auth::oauth::resource_slug(cfg, &g.resource).ok();
            let server = found.iter().find(|(_, s, _)| Some(s) == slug.as_ref());
            ConnectedApp {
                id: ID(g.id.to_string()),
                client_id: g.client_id,
                client_name: g.client_name,
                verified: g.verified,
                user_id: ID(g.user_id.to_string()),
                email: g.email,
                resource: g.resource,
                server_id: server.map(|(id, _, _)| ID(id.to_string())),
                server_name: server.map(|(_, _, n)| n.clone()),
                scopes: g.scope.split_whitespace().map(str::to_owned).collect(),
                granted_at: g.granted_at,
                last_used_at: g.last_used_at,
                expires_at: g.expires_at,
            }
        })
        .collect())
}

#[derive(Default)]
pub struct ConnectedAppsQuery;

#[Object]
impl ConnectedAppsQuery {
    /// Apps connected to the org's servers, most recently used first.
    /// Owners and admins see everyone's; members their own.
    async fn connected_apps(&self, ctx: &Context<'_>) -> Result<Vec<ConnectedApp>> {
        let p = principal(ctx)?;
        let only = require_admin(p).is_err().then_some(p.user_id);
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let grants = bmm_auth::grants::list_grants(&mut conn, p.org_id, only).await.map_err(ApiError::from)?;
        drop(conn);
        to_api(ctx, p.org_id, grants).await
    }
}

#[derive(Default)]
pub struct ConnectedAppsMutation;

#[Object]
impl ConnectedAppsMutation {
    /// Disconnect an app: its refresh tokens stop working at once (access
    /// tokens it holds expire within their lifetime). Members may revoke
    /// their own grants; owners and admins any.
    async fn revoke_connected_app(&self, ctx: &Context<'_>, id: ID) -> Result<ConnectedApp> {
        let p = principal(ctx)?;
        let family = parse_id("id", &id)?;
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let grants = bmm_auth::grants::list_grants(&mut conn, p.org_id, None).await.map_err(ApiError::from)?;
        let grant = grants.into_iter().find(|g| g.id == family).ok_or(ApiError::NotFound("connected app"))?;
        if grant.user_id != p.user_id {
            require_admin(p)?;
        }
        bmm_auth::grants::revoke_grant(&mut conn, p.org_id, family).await.map_err(ApiError::from)?;
        drop(conn);
        audit(
            ctx,
            "connected_app.revoke",
            "oauth_grant",
            Some(family.to_string()),
            json!({ "clientId": grant.client_id, "resource": grant.resource }),
        )
        .await;
        Ok(to_api(ctx, p.org_id, vec![grant]).await?.remove(0))
    }
}

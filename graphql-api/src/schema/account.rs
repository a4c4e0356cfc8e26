//! The caller, their org and the org's API keys.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use bmm_auth::identity::ApiKeyInfo;
use bmm_auth::principal::Via;
use bmm_db::models::Org as OrgRow;
use bmm_db::schema::{memberships, orgs, users};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::context::{audit, parse_id, principal, require_admin, state};
use crate::error::{ApiError, ApiResult};

/// How the caller authenticated.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Session,
    ApiKey,
}

#[derive(SimpleObject)]
pub struct Me {
    /// The user's id.
    pub id: ID,
    pub email: String,
    /// `owner`, `admin` or `member` in the current org.
    pub role: String,
    pub org_id: ID,
    pub authenticated_with: AuthMethod,
}

#[derive(SimpleObject)]
pub struct Member {
    pub user_id: ID,
    pub email: String,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

pub struct Org(OrgRow);

#[Object]
impl Org {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn plan(&self) -> &str {
        &self.0.plan
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<Member>> {
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let rows: Vec<(uuid::Uuid, String, String, DateTime<Utc>)> = memberships::table
            .inner_join(users::table)
            .filter(memberships::org_id.eq(self.0.id))
            .order(memberships::created_at.asc())
            .select((users::id, users::email, memberships::role, memberships::created_at))
            .load(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(|(id, email, role, at)| Member { user_id: ID(id.to_string()), email, role, joined_at: at })
            .collect())
    }
}

/// An API key as lists show it: never the key itself.
#[derive(SimpleObject)]
pub struct ApiKey {
    pub id: ID,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub user_id: ID,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyInfo> for ApiKey {
    fn from(k: ApiKeyInfo) -> Self {
        ApiKey {
            id: ID(k.id.to_string()),
            name: k.name,
            prefix: k.prefix,
            user_id: ID(k.user_id.to_string()),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new key: the plaintext is shown here once and never again.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// `bmm_…`; store it now, it cannot be shown again.
    pub key: String,
    pub api_key: ApiKey,
}

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let p = principal(ctx)?;
        Ok(Me {
            id: ID(p.user_id.to_string()),
            email: p.email.clone(),
            role: p.role.clone(),
            org_id: ID(p.org_id.to_string()),
            authenticated_with: match p.via {
                Via::Session(_) => AuthMethod::Session,
                Via::ApiKey(_) => AuthMethod::ApiKey,
            },
        })
    }

    /// The caller's org.
    async fn org(&self, ctx: &Context<'_>) -> Result<Org> {
        let p = principal(ctx)?;
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let row = orgs::table
            .filter(orgs::id.eq(p.org_id))
            .select(OrgRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("org"))?;
        Ok(Org(row))
    }

    /// The org's API keys, newest first (revoked ones show as revoked).
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKey>> {
        let p = principal(ctx)?;
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let keys = bmm_auth::identity::list_api_keys(&mut conn, p.org_id).await.map_err(ApiError::from)?;
        Ok(keys.into_iter().map(ApiKey::from).collect())
    }
}

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Make an API key for the caller. The plaintext is returned once.
    async fn create_api_key(&self, ctx: &Context<'_>, name: String) -> Result<CreatedApiKey> {
        let p = principal(ctx)?;
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err(ApiError::bad_input("name", "give the API key a name").into());
        }
        if trimmed.chars().count() > 100 {
            return Err(ApiError::bad_input("name", "API key names are at most 100 characters").into());
        }
        let info = create_key(ctx, p.org_id, p.user_id, trimmed).await?;
        audit(
            ctx,
            "api_key.create",
            "api_key",
            Some(info.id.to_string()),
            json!({ "name": info.name, "prefix": info.prefix }),
        )
        .await;
        Ok(CreatedApiKey { key: info.key, api_key: info.info.into() })
    }

    /// Revoke one of the org's keys. Members may revoke their own keys; owners and admins any.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey> {
        let p = principal(ctx)?;
        let key_id = parse_id("id", &id)?;
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let keys = bmm_auth::identity::list_api_keys(&mut conn, p.org_id).await.map_err(ApiError::from)?;
        let key = keys.into_iter().find(|k| k.id == key_id).ok_or(ApiError::NotFound("API key"))?;
        if key.user_id != p.user_id {
            require_admin(p)?;
        }
        if key.revoked_at.is_some() {
            return Err(ApiError::bad_input("id", "this API key is already revoked").into());
        }
        bmm_auth::identity::revoke_api_key(&mut conn, p.org_id, key_id).await.map_err(ApiError::from)?;
        drop(conn);
        audit(
            ctx,
            "api_key.revoke",
            "api_key",
            Some(key_id.to_string()),
            json!({ "name": key.name, "prefix": key.prefix }),
        )
        .await;
        let mut conn = state(ctx).pool.get().await.map_err(ApiError::from)?;
        let keys = bmm_auth::identity::list_api_keys(&mut conn, p.org_id).await.map_err(ApiError::from)?;
        Ok(keys.into_iter().find(|k| k.id == key_id).ok_or(ApiError::NotFound("API key"))?.into())
    }
}

struct NewKey {
    key: String,
    info: ApiKeyInfo,
}

impl std::ops::Deref for NewKey {
    type Target = ApiKeyInfo;
    fn deref(&self) -> &ApiKeyInfo {
        &self.info
    }
}

async fn create_key(ctx: &Context<'_>, org_id: uuid::Uuid, user_id: uuid::Uuid, name: &str) -> ApiResult<NewKey> {
    let mut conn = state(ctx).pool.get().await?;
    let (key, id) = bmm_auth::identity::create_api_key(&mut conn, org_id, user_id, name).await?;
    let info = bmm_auth::identity::list_api_keys(&mut conn, org_id)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::internal("new API key not found after insert"))?;
    Ok(NewKey { key, info })
}

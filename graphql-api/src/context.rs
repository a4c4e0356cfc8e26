//! Who is calling and from where, as request data for resolvers.

use async_graphql::Context;
use bmm_auth::principal::{Principal, Via};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::ratelimit::BucketKey;
use crate::state::AppState;

/// Facts about the request that are not the caller's identity.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The client's address (the TCP peer).
    pub ip: Option<String>,
}

/// The signed-in caller, if any, as request data.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

impl Caller {
    /// The rate-limit bucket of this caller.
    pub fn bucket(&self, meta: Option<&RequestMeta>) -> BucketKey {
        match &self.0 {
            Some(p) => match p.via {
                Via::ApiKey(id) => BucketKey::ApiKey(id),
                Via::Session(id) => BucketKey::Session(id),
            },
            None => BucketKey::Ip(meta.and_then(|m| m.ip.clone()).unwrap_or_else(|| "unknown".into())),
        }
    }
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// The authenticated caller, or UNAUTHENTICATED.
pub fn principal<'a>(ctx: &Context<'a>) -> ApiResult<&'a Principal> {
    ctx.data_opt::<Caller>().and_then(|c| c.0.as_ref()).ok_or_else(|| {
        ApiError::Unauthenticated(
            "not signed in: send `Authorization: Bearer bmm_…` or sign in to the dashboard".into(),
        )
    })
}

/// Owners and admins manage the org's servers and keys; members use them.
pub fn require_admin(p: &Principal) -> ApiResult<()> {
    if p.role == "owner" || p.role == "admin" {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("this needs the owner or admin role; you are a {}", p.role)))
    }
}

pub fn client_ip(ctx: &Context<'_>) -> Option<String> {
    ctx.data_opt::<RequestMeta>().and_then(|m| m.ip.clone())
}

/// Parse an `ID!` argument as a UUID, naming the field when it is not one.
pub fn parse_id(field: &str, id: &async_graphql::ID) -> ApiResult<Uuid> {
    id.parse::<Uuid>().map_err(|_| ApiError::bad_input(field, format!("{:?} is not a valid id", id.as_str())))
}

/// Authenticate from request headers (bearer key first, then the session cookie).
pub async fn authenticate_headers(state: &AppState, headers: &http::HeaderMap) -> ApiResult<Option<Principal>> {
    let mut conn = state.pool.get().await?;
    Ok(bmm_auth::principal::from_headers(&mut conn, headers).await?)
}

/// Authenticate from a WebSocket `connection_init` payload:
/// `{"Authorization": "Bearer bmm_…"}` or `{"authorization": …}` (also inside `headers`).
pub async fn authenticate_init_payload(state: &AppState, payload: &serde_json::Value) -> ApiResult<Option<Principal>> {
    let find = |v: &serde_json::Value| -> Option<String> {
        let obj = v.as_object()?;
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.as_str().map(str::to_owned))
    };
    let value = find(payload).or_else(|| payload.get("headers").and_then(find));
    let Some(value) = value else { return Ok(None) };
    let mut headers = http::HeaderMap::new();
    let header = http::HeaderValue::from_str(&value)
        .map_err(|_| ApiError::Unauthenticated("not signed in: unreadable Authorization value".into()))?;
    headers.insert(http::header::AUTHORIZATION, header);
    authenticate_headers(state, &headers).await
}

/// Write an audit entry. Never fails the request: a failure is logged.
pub async fn audit(
    ctx: &Context<'_>,
    action: &str,
    resource_type: &str,
    resource_id: Option<String>,
    metadata: serde_json::Value,
) {
    let Ok(p) = principal(ctx) else { return };
    let st = state(ctx);
    match st.pool.get().await {
        Ok(mut conn) => {
            bmm_db::audit::record(
                &mut conn,
                bmm_db::audit::Audit {
                    org_id: p.org_id,
                    user_id: Some(p.user_id),
                    action,
                    resource_type,
                    resource_id,
                    metadata,
                    ip: client_ip(ctx),
                },
            )
            .await
        }
        Err(e) => tracing::warn!(error = %e, action, "audit log write skipped: no database connection"),
    }
}

//! The OAuth 2.1 authorization server: metadata (RFC 8414), dynamic client
//! registration (RFC 7591), client ID metadata documents, authorize with
//! PKCE S256, token (authorization_code, refresh_token with rotation),
//! revocation (RFC 7009) and the JWKS.

mod authorize;
pub mod cimd;
pub mod clients;
mod token;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bmm_db::schema::servers;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};
use uuid::Uuid;

use crate::error::AuthError;
use crate::trace;
use crate::web::AuthState;

/// Scopes the platform grants: `mcp` to use a server, `offline_access` for refresh tokens.
pub const SCOPES: [&str; 2] = ["mcp", "offline_access"];

/// An OAuth error answered as RFC 6749 JSON.
#[derive(Debug)]
pub enum OAuthError {
    Bad { status: StatusCode, code: &'static str, description: String },
    Internal(AuthError),
}

impl OAuthError {
    pub fn bad(code: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError::Bad { status: StatusCode::BAD_REQUEST, code, description: description.into() }
    }
    pub fn client(description: impl Into<String>) -> OAuthError {
        OAuthError::Bad { status: StatusCode::UNAUTHORIZED, code: "invalid_client", description: description.into() }
    }
    pub fn grant(description: impl Into<String>) -> OAuthError {
        OAuthError::bad("invalid_grant", description)
    }
    /// The plain-words cause, for the connection trace.
    pub fn cause(&self) -> String {
        match self {
            OAuthError::Bad { code, description, .. } => format!("{code}: {description}"),
            OAuthError::Internal(_) => "server error".into(),
        }
    }
}

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        OAuthError::Internal(e)
    }
}

impl From<diesel::result::Error> for OAuthError {
    fn from(e: diesel::result::Error) -> Self {
        OAuthError::Internal(AuthError::Db(e))
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            OAuthError::Bad { status, code, description } => {
                if status == StatusCode::UNAUTHORIZED {
                    // RFC 6749 §5.2: a 401 invalid_client names the scheme the client may use.
                    let mut resp = (status, axum::Json(json!({ "error": code, "error_description": description })))
                        .into_response();
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"bmm-oauth\""));
                    no_store(resp.headers_mut());
                    return resp;
                }
                (status, json!({ "error": code, "error_description": description }))
            }
            OAuthError::Internal(e) => {
                tracing::error!(error = ?e, "oauth request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "server_error", "error_description": "internal error; try again" }),
                )
            }
        };
        let mut resp = (status, axum::Json(body)).into_response();
        no_store(resp.headers_mut());
        resp
    }
}

pub(crate) fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// CORS for browser-based clients: any origin, no cookies (these endpoints
/// authenticate clients by their credentials, never by the session).
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("mcp-protocol-version"),
        ])
        .expose_headers([header::WWW_AUTHENTICATE])
        .max_age(std::time::Duration::from_secs(3600))
}

pub(crate) fn routes(state: AuthState) -> Router {
    let api = Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        // Some clients insert the MCP URL's path (RFC 8414 §3.1 style); answer the same document.
        .route("/.well-known/oauth-authorization-server/{*path}", get(metadata))
        .route("/oauth/register", post(register))
        .route("/oauth/token", post(token::token))
        .route("/oauth/revoke", post(token::revoke))
        .route("/oauth/jwks", get(jwks))
        .layer(cors());
    Router::new()
        .route("/oauth/authorize", get(authorize::authorize_get).post(authorize::authorize_post))
        .merge(api)
        .with_state(state)
}

/// RFC 8414 authorization server metadata.
pub fn metadata_document(cfg: &bmm_core::Config) -> serde_json::Value {
    let iss = cfg.issuer();
    json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth/authorize"),
        "token_endpoint": format!("{iss}/oauth/token"),
        "registration_endpoint": format!("{iss}/oauth/register"),
        "revocation_endpoint": format!("{iss}/oauth/revoke"),
        "jwks_uri": format!("{iss}/oauth/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": clients::AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": clients::AUTH_METHODS,
        "scopes_supported": SCOPES,
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
    })
}

async fn metadata(State(st): State<AuthState>) -> Response {
    let mut resp = axum::Json(metadata_document(&st.cfg)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp
}

async fn jwks(State(st): State<AuthState>) -> Response {
    match st.keys.jwks().await {
        Ok(v) => {
            let mut resp = axum::Json(v).into_response();
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
            resp
        }
        Err(e) => OAuthError::Internal(e).into_response(),
    }
}

async fn register(State(st): State<AuthState>, body: axum::body::Bytes) -> Response {
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return OAuthError::Internal(e).into_response(),
    };
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    let name = parsed.as_ref().ok().and_then(|v| v.get("client_name")).and_then(|v| v.as_str()).map(str::to_owned);
    let result = match parsed {
        Ok(v) if v.is_object() => clients::register(&mut conn, &v).await,
        _ => Err(OAuthError::bad("invalid_client_metadata", "the registration body must be a JSON object")),
    };
    match result {
        Ok((client, resp)) => {
            trace::record(
                &mut conn,
                None,
                None,
                Some(&client.client_id),
                name.as_deref(),
                "registration",
                true,
                "registered",
            )
            .await;
            let mut r = (StatusCode::CREATED, axum::Json(resp)).into_response();
            no_store(r.headers_mut());
            r
        }
        Err(e) => {
            trace::record(&mut conn, None, None, None, name.as_deref(), "registration", false, &e.cause()).await;
            e.into_response()
        }
    }
}

/// A server a `resource` URL names.
#[derive(Debug, Clone)]
pub struct ResourceServer {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub slug: String,
}

/// The slug of `{issuer}/s/{slug}/mcp`, or a plain-words reason it is not one.
pub fn resource_slug(cfg: &bmm_core::Config, resource: &str) -> Result<String, String> {
    let prefix = format!("{}/s/", cfg.issuer());
    let slug = resource
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("/mcp"))
        .filter(|s| bmm_core::slug::is_slug(s))
        .ok_or_else(|| format!("resource {resource} is not a server URL of this platform ({prefix}NAME/mcp)"))?;
    Ok(slug.to_owned())
}

/// The live (not deleted) server at `resource`, whatever its org.
pub async fn find_resource(
    conn: &mut AsyncPgConnection,
    cfg: &bmm_core::Config,
    resource: &str,
) -> Result<Result<ResourceServer, String>, AuthError> {
    let slug = match resource_slug(cfg, resource) {
        Ok(s) => s,
        Err(m) => return Ok(Err(m)),
    };
    let row: Option<(Uuid, Uuid, String, String)> = servers::table
        .filter(servers::slug.eq(&slug))
        .filter(servers::deleted_at.is_null())
        .filter(servers::status.ne("DELETED"))
        .select((servers::id, servers::org_id, servers::name, servers::slug))
        .first(conn)
        .await
        .optional()?;
    Ok(match row {
        Some((id, org_id, name, slug)) => Ok(ResourceServer { id, org_id, name, slug }),
        None => Err(format!("there is no server at {resource}")),
    })
}

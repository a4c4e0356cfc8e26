//! `/oauth/token` and `/oauth/revoke`.
//!
//! Codes are single use: a second use fails and revokes the refresh tokens
//! the first use issued. Refresh tokens rotate: each use issues a new one in
//! the same family, and reuse of a used one revokes the whole family.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bmm_core::crypto::{constant_time_eq, hash_token, new_token, pkce_s256};
use bmm_db::schema::{memberships, oauth_codes, oauth_refresh_tokens as rt};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::clients::{Client, authenticate_client, presented_credentials};
use super::{OAuthError, find_resource, no_store};
use crate::tokens::{AccessGrant, mint_access_token};
use crate::trace;
use crate::web::AuthState;

/// Refresh tokens last this long from their issue (each rotation starts a new period).
pub const REFRESH_TTL: Duration = Duration::days(30);

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = oauth_codes)]
struct CodeRow {
    code_hash: Vec<u8>,
    client_id: String,
    user_id: Uuid,
    org_id: Uuid,
    redirect_uri: String,
    code_challenge: String,
    resource: String,
    scope: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = rt)]
struct RefreshRow {
    family_id: Uuid,
    client_id: String,
    user_id: Uuid,
    org_id: Uuid,
    resource: String,
    scope: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// A body that is not a form (wrong content type, repeated parameter) still
/// gets an RFC 6749 JSON error.
fn form_error(e: &axum::extract::rejection::FormRejection) -> OAuthError {
    OAuthError::bad(
        "invalid_request",
        format!("the body must be application/x-www-form-urlencoded with each parameter once ({})", e.body_text()),
    )
}

/// The refresh-token family a code starts, derived from the code so a
/// replayed code can find (and revoke) what its first use issued.
fn family_of_code(code_hash: &[u8]) -> Uuid {
    let d = Sha256::digest([b"bmm-refresh-family\0".as_slice(), code_hash].concat());
    uuid::Builder::from_random_bytes(d[..16].try_into().expect("16 bytes")).into_uuid()
}

fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

struct Issued {
    user_id: Uuid,
    org_id: Uuid,
    resource: String,
    scope: String,
    server_id: Uuid,
    /// The refresh token issued with this grant, inserted in the same
    /// transaction that used the code or rotated the old token.
    refresh: Option<String>,
}

/// The client a token or revoke request authenticates as: HTTP Basic or the
/// form's client_id/client_secret, checked against its registered method.
async fn request_client(
    conn: &mut AsyncPgConnection,
    headers: &HeaderMap,
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Result<Client, OAuthError> {
    let presented = presented_credentials(headers, client_id, client_secret)?;
    authenticate_client(conn, &presented).await
}

pub(super) async fn token(
    State(st): State<AuthState>,
    headers: HeaderMap,
    form: Result<axum::Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let f = match form {
        Ok(axum::Form(f)) => f,
        Err(e) => return form_error(&e).into_response(),
    };
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return OAuthError::Internal(e).into_response(),
    };
    let client = request_client(&mut conn, &headers, f.client_id.as_deref(), f.client_secret.as_deref()).await;
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            trace::record(&mut conn, None, None, f.client_id.as_deref(), None, "token", false, &e.cause()).await;
            return e.into_response();
        }
    };
    let result = match f.grant_type.as_deref() {
        Some("authorization_code") => code_grant(&mut conn, &st, &client, &f).await,
        Some("refresh_token") => refresh_grant(&mut conn, &st, &client, &f).await,
        Some(other) => Err(OAuthError::bad(
            "unsupported_grant_type",
            format!("grant_type {other} is not supported (use authorization_code or refresh_token)"),
        )),
        None => Err(OAuthError::bad("invalid_request", "grant_type is missing")),
    };
    let name = client.display_name().to_owned();
    let issued = match result {
        Ok(i) => i,
        Err(e) => {
            // Attribute the failure to the server when the request names one.
            let server = match f.resource.as_deref() {
                Some(r) => find_resource(&mut conn, &st.cfg, r).await.ok().and_then(Result::ok),
                None => None,
            };
            trace::record(
                &mut conn,
                server.as_ref().map(|s| s.org_id),
                server.as_ref().map(|s| s.id),
                Some(&client.client_id),
                Some(&name),
                "token",
                false,
                &e.cause(),
            )
            .await;
            return e.into_response();
        }
    };
    match respond(&mut conn, &st, &client, &issued, f.grant_type.as_deref() == Some("refresh_token")).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn respond(
    conn: &mut AsyncPgConnection,
    st: &AuthState,
    client: &Client,
    i: &Issued,
    refreshed: bool,
) -> Result<Response, OAuthError> {
    let grant = AccessGrant {
        user_id: i.user_id,
        org_id: i.org_id,
        audience: &i.resource,
        scope: &i.scope,
        client_id: &client.client_id,
        ttl: st.cfg.access_token_ttl,
    };
    let (jwt, claims) = mint_access_token(&st.keys, &grant).await?;
    let mut body = json!({
        "access_token": jwt,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "scope": i.scope,
    });
    if let Some(refresh) = &i.refresh {
        body["refresh_token"] = json!(refresh);
    }
    let what = if refreshed { "tokens refreshed" } else { "tokens issued" };
    trace::record(
        conn,
        Some(i.org_id),
        Some(i.server_id),
        Some(&client.client_id),
        Some(client.display_name()),
        "token",
        true,
        &format!("{what} for {}", i.resource),
    )
    .await;
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    no_store(resp.headers_mut());
    Ok(resp)
}

/// Issue the refresh token of a grant, when the client may refresh and
/// asked for `offline_access`. Called inside the transaction that burns the
/// code or rotates the old token, so a concurrent replay that revokes the
/// family also revokes this one (it cannot be inserted after the revoke).
#[allow(clippy::too_many_arguments)]
async fn issue_refresh(
    conn: &mut AsyncPgConnection,
    client: &Client,
    family: Uuid,
    user_id: Uuid,
    org_id: Uuid,
    resource: &str,
    scope: &str,
) -> Result<Option<String>, OAuthError> {
    if !(client.may_refresh() && scope.split(' ').any(|s| s == "offline_access")) {
        return Ok(None);
    }
    let refresh = new_token("");
    diesel::insert_into(rt::table)
        .values((
            rt::token_hash.eq(hash_token(&refresh)),
            rt::family_id.eq(family),
            rt::client_id.eq(&client.client_id),
            rt::user_id.eq(user_id),
            rt::org_id.eq(org_id),
            rt::resource.eq(resource),
            rt::scope.eq(scope),
            rt::expires_at.eq(Utc::now() + REFRESH_TTL),
        ))
        .execute(conn)
        .await?;
    Ok(Some(refresh))
}

/// The server must still exist in the org and the user must still belong to it.
async fn check_still_allowed(
    conn: &mut AsyncPgConnection,
    st: &AuthState,
    resource: &str,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Uuid, OAuthError> {
    let server = find_resource(conn, &st.cfg, resource).await?;
    let server = match server {
        Ok(s) if s.org_id == org_id => s,
        _ => return Err(OAuthError::bad("invalid_target", format!("there is no server at {resource} any more"))),
    };
    let member: bool = diesel::select(diesel::dsl::exists(
        memberships::table.filter(memberships::org_id.eq(org_id)).filter(memberships::user_id.eq(user_id)),
    ))
    .get_result(conn)
    .await
    .map_err(|e| OAuthError::Internal(e.into()))?;
    if !member {
        return Err(OAuthError::grant("the user no longer belongs to the server's organisation"));
    }
    Ok(server.id)
}

fn check_resource(requested: Option<&str>, granted: &str) -> Result<(), OAuthError> {
    match requested {
        Some(r) if !r.is_empty() && r != granted => Err(OAuthError::bad(
            "invalid_target",
            format!("resource {r} does not match the one authorized ({granted})"),
        )),
        _ => Ok(()),
    }
}

async fn code_grant(
    conn: &mut AsyncPgConnection,
    st: &AuthState,
    client: &Client,
    f: &TokenForm,
) -> Result<Issued, OAuthError> {
    let code = f
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| OAuthError::bad("invalid_request", "code is missing"))?;
    let code_hash = hash_token(code);
    // Every check that needs only the code, the client and the verifier
    // comes before the code is burnt: someone holding a leaked code but not
    // the client's verifier (or its credentials) cannot burn it and so
    // revoke the grant of the client it belongs to.
    let row: Option<CodeRow> = oauth_codes::table
        .filter(oauth_codes::code_hash.eq(&code_hash))
        .select(CodeRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(row) = row else { return Err(OAuthError::grant("authorization code is not valid")) };
    if row.client_id != client.client_id {
        return Err(OAuthError::grant("authorization code was issued to another client"));
    }
    match f.redirect_uri.as_deref() {
        Some(r) if r == row.redirect_uri => {}
        Some(r) => {
            return Err(OAuthError::grant(format!(
                "redirect_uri {r} differs from the one used to authorize ({})",
                row.redirect_uri
            )));
        }
        None => return Err(OAuthError::bad("invalid_request", "redirect_uri is missing")),
    }
    let verifier = f
        .code_verifier
        .as_deref()
        .ok_or_else(|| OAuthError::bad("invalid_request", "code_verifier is missing (PKCE)"))?;
    if !valid_verifier(verifier) {
        return Err(OAuthError::grant("code_verifier must be 43 to 128 unreserved characters"));
    }
    if !constant_time_eq(pkce_s256(verifier).as_bytes(), row.code_challenge.as_bytes()) {
        return Err(OAuthError::grant("code_verifier does not match the code_challenge"));
    }
    check_resource(f.resource.as_deref(), &row.resource)?;
    if row.expires_at <= Utc::now() {
        return Err(OAuthError::grant("authorization code has expired; authorize again"));
    }
    let family = family_of_code(&row.code_hash);
    let client_id = client.client_id.clone();
    // Burn the code (bound to its client) and issue the refresh token in one
    // transaction: of two racing uses exactly one proceeds, and a replay's
    // family revoke cannot miss a token inserted after it.
    conn.transaction::<_, OAuthError, _>(|conn| {
        async move {
            let burnt: Option<Vec<u8>> = diesel::update(
                oauth_codes::table
                    .filter(oauth_codes::code_hash.eq(&code_hash))
                    .filter(oauth_codes::client_id.eq(&client_id))
                    .filter(oauth_codes::used_at.is_null()),
            )
            .set(oauth_codes::used_at.eq(diesel::dsl::now))
            .returning(oauth_codes::code_hash)
            .get_result(conn)
            .await
            .optional()?;
            if burnt.is_none() {
                // A replay by the client itself (it holds the verifier): the
                // code may be stolen, so revoke what its first use issued.
                diesel::update(rt::table.filter(rt::family_id.eq(family)).filter(rt::revoked_at.is_null()))
                    .set(rt::revoked_at.eq(diesel::dsl::now))
                    .execute(conn)
                    .await?;
                return Ok(Err(OAuthError::grant(
                    "authorization code was already used; the tokens it issued were revoked",
                )));
            }
            let server_id = match check_still_allowed(conn, st, &row.resource, row.org_id, row.user_id).await {
                Ok(id) => id,
                Err(e) => return Ok(Err(e)),
            };
            let refresh =
                issue_refresh(conn, client, family, row.user_id, row.org_id, &row.resource, &row.scope).await?;
            Ok(Ok(Issued {
                user_id: row.user_id,
                org_id: row.org_id,
                resource: row.resource,
                scope: row.scope,
                server_id,
                refresh,
            }))
        }
        .scope_boxed()
    })
    .await?
}

async fn refresh_grant(
    conn: &mut AsyncPgConnection,
    st: &AuthState,
    client: &Client,
    f: &TokenForm,
) -> Result<Issued, OAuthError> {
    if !client.may_refresh() {
        return Err(OAuthError::bad("unauthorized_client", "this client did not register the refresh_token grant"));
    }
    let token = f
        .refresh_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::bad("invalid_request", "refresh_token is missing"))?;
    let hash = hash_token(token);
    let client_id = client.client_id.clone();
    let requested_scope = f.scope.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let requested_resource = f.resource.clone();
    // One transaction with the row locked: two racing uses of one token
    // cannot both rotate, and the new token is inserted before the commit,
    // so the loser's family revoke always covers the winner's new token.
    conn.transaction::<_, OAuthError, _>(|conn| {
        async move {
            let row: Option<RefreshRow> = rt::table
                .filter(rt::token_hash.eq(&hash))
                .for_update()
                .select(RefreshRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else {
                return Ok(Err(OAuthError::grant("refresh token is not valid")));
            };
            if row.client_id != client_id {
                return Ok(Err(OAuthError::grant("refresh token was issued to another client")));
            }
            if row.revoked_at.is_some() {
                return Ok(Err(OAuthError::grant("refresh token was revoked; authorize again")));
            }
            if row.used_at.is_some() {
                diesel::update(rt::table.filter(rt::family_id.eq(row.family_id)).filter(rt::revoked_at.is_null()))
                    .set(rt::revoked_at.eq(diesel::dsl::now))
                    .execute(conn)
                    .await?;
                return Ok(Err(OAuthError::grant(
                    "refresh token was already used; every token of this grant was revoked, authorize again",
                )));
            }
            if row.expires_at <= Utc::now() {
                return Ok(Err(OAuthError::grant("refresh token has expired; authorize again")));
            }
            // Refusals below roll back: the token stays usable.
            check_resource(requested_resource.as_deref(), &row.resource)?;
            // A refresh may narrow the scope, never widen it.
            let scope = match requested_scope {
                Some(req) => {
                    let granted: Vec<&str> = row.scope.split(' ').collect();
                    if let Some(extra) = req.split_whitespace().find(|s| !granted.contains(s)) {
                        return Err(OAuthError::bad("invalid_scope", format!("scope {extra} was not granted")));
                    }
                    req.split_whitespace().collect::<Vec<_>>().join(" ")
                }
                None => row.scope.clone(),
            };
            let server_id = check_still_allowed(conn, st, &row.resource, row.org_id, row.user_id).await?;
            diesel::update(rt::table.filter(rt::token_hash.eq(&hash)))
                .set(rt::used_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?;
            let refresh =
                issue_refresh(conn, client, row.family_id, row.user_id, row.org_id, &row.resource, &scope).await?;
            Ok(Ok(Issued {
                user_id: row.user_id,
                org_id: row.org_id,
                resource: row.resource,
                scope,
                server_id,
                refresh,
            }))
        }
        .scope_boxed()
    })
    .await?
}

#[derive(Debug, Default, Deserialize)]
pub struct RevokeForm {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 7009: revoking a refresh token revokes its family. Access tokens are
/// short-lived JWTs and simply expire. Unknown tokens answer 200 too.
pub(super) async fn revoke(
    State(st): State<AuthState>,
    headers: HeaderMap,
    form: Result<axum::Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let f = match form {
        Ok(axum::Form(f)) => f,
        Err(e) => return form_error(&e).into_response(),
    };
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return OAuthError::Internal(e).into_response(),
    };
    let client = request_client(&mut conn, &headers, f.client_id.as_deref(), f.client_secret.as_deref()).await;
    let client = match client {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(token) = f.token.as_deref().filter(|t| !t.is_empty()) else {
        return OAuthError::bad("invalid_request", "token is missing").into_response();
    };
    let family: Option<Uuid> = rt::table
        .filter(rt::token_hash.eq(hash_token(token)))
        .filter(rt::client_id.eq(&client.client_id))
        .select(rt::family_id)
        .first(&mut conn)
        .await
        .optional()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "revocation lookup failed");
            None
        });
    if let Some(family) = family {
        let res = diesel::update(rt::table.filter(rt::family_id.eq(family)).filter(rt::revoked_at.is_null()))
            .set(rt::revoked_at.eq(diesel::dsl::now))
            .execute(&mut conn)
            .await;
        if let Err(e) = res {
            return OAuthError::Internal(e.into()).into_response();
        }
    }
    let mut resp = StatusCode::OK.into_response();
    no_store(resp.headers_mut());
    resp
}

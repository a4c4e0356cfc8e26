//! Who is calling: a signed-in user (session cookie) or a program (API key).

use bmm_core::crypto::hash_token;
use bmm_db::schema::{api_keys, memberships, sessions, users};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::AuthError;
use crate::identity::{API_KEY_PREFIX, SESSION_COOKIE, touch_api_key};

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Via {
    /// A browser session (its id, for sign-out).
    Session(Uuid),
    /// An API key (its id).
    ApiKey(Uuid),
}

/// An authenticated caller, always acting within one org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    /// `owner`, `admin` or `member`: the user's role in `org_id`.
    pub role: String,
    pub via: Via,
}

type Time = chrono::DateTime<Utc>;
/// key id, user id, org id, revoked at, email, role
type KeyRow = (Uuid, Uuid, Uuid, Option<Time>, String, String);
/// session id, user id, org id, expires at, revoked at, email, role
type SessionRow = (Uuid, Uuid, Uuid, Time, Option<Time>, String, String);

/// Authenticate an API key (`bmm_…`). Unknown, malformed and revoked keys are
/// refused alike; a key whose user has left the org is refused too.
pub async fn authenticate_bearer(conn: &mut AsyncPgConnection, key: &str) -> Result<Principal, AuthError> {
    let key = key.trim();
    if !key.starts_with(API_KEY_PREFIX) || key.len() != API_KEY_PREFIX.len() + 43 {
        return Err(AuthError::Unauthenticated("that is not a BuildMyMCP API key (they start with bmm_)"));
    }
    let row: Option<KeyRow> = api_keys::table
        .inner_join(users::table.on(users::id.eq(api_keys::user_id)))
        .inner_join(
            memberships::table
                .on(memberships::org_id.eq(api_keys::org_id).and(memberships::user_id.eq(api_keys::user_id))),
        )
        .filter(api_keys::key_hash.eq(hash_token(key)))
        .select((
            api_keys::id,
            api_keys::user_id,
            api_keys::org_id,
            api_keys::revoked_at,
            users::email,
            memberships::role,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((key_id, user_id, org_id, revoked_at, email, role)) = row else {
        return Err(AuthError::Unauthenticated("unknown API key"));
    };
    if revoked_at.is_some() {
        return Err(AuthError::Unauthenticated("this API key was revoked"));
    }
    // A failed touch must not refuse an otherwise valid key.
    if let Err(e) = touch_api_key(conn, key_id).await {
        tracing::warn!(error = %e, %key_id, "could not record API key use");
    }
    Ok(Principal { user_id, org_id, email, role, via: Via::ApiKey(key_id) })
}

/// Authenticate a session cookie's token. Expired and revoked sessions are refused.
pub async fn authenticate_session(conn: &mut AsyncPgConnection, token: &str) -> Result<Principal, AuthError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Unauthenticated("no session"));
    }
    let row: Option<SessionRow> = sessions::table
        .inner_join(users::table)
        .inner_join(
            memberships::table
                .on(memberships::org_id.eq(sessions::org_id).and(memberships::user_id.eq(sessions::user_id))),
        )
        .filter(sessions::token_hash.eq(hash_token(token)))
        .select((
            sessions::id,
            sessions::user_id,
            sessions::org_id,
            sessions::expires_at,
            sessions::revoked_at,
            users::email,
            memberships::role,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((session_id, user_id, org_id, expires_at, revoked_at, email, role)) = row else {
        return Err(AuthError::Unauthenticated("unknown session"));
    };
    if revoked_at.is_some() {
        return Err(AuthError::Unauthenticated("signed out"));
    }
    if expires_at <= Utc::now() {
        return Err(AuthError::Unauthenticated("session expired; sign in again"));
    }
    Ok(Principal { user_id, org_id, email, role, via: Via::Session(session_id) })
}

/// Authenticate a request from its headers: `Authorization: Bearer bmm_…`
/// first, else the session cookie. `Ok(None)` when neither is present; an
/// invalid one present is an error (a bad key must not silently fall back).
pub async fn from_headers(
    conn: &mut AsyncPgConnection,
    headers: &http::HeaderMap,
) -> Result<Option<Principal>, AuthError> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Unauthenticated("unreadable Authorization header"))?;
        let Some((scheme, token)) = value.split_once(' ') else {
            return Err(AuthError::Unauthenticated("Authorization header must be `Bearer bmm_…`"));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Unauthenticated("Authorization header must be `Bearer bmm_…`"));
        }
        return authenticate_bearer(conn, token).await.map(Some);
    }
    match session_token_from_headers(headers) {
        Some(token) => authenticate_session(conn, &token).await.map(Some),
        None => Ok(None),
    }
}

/// The value of the `bmm_session` cookie, if the request carries one.
pub fn session_token_from_headers(headers: &http::HeaderMap) -> Option<String> {
    let jar = axum_extra::extract::cookie::CookieJar::from_headers(headers);
    jar.get(SESSION_COOKIE).map(|c| c.value().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{create_api_key, create_session, ensure_user_and_org, revoke_api_key, revoke_session};
    use bmm_db::testing::TestDb;

    #[tokio::test]
    async fn api_key_authenticates_until_revoked_and_records_use() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut conn = pool.get().await.unwrap();
        let (user, org) = ensure_user_and_org(&mut conn, "p@example.com").await.unwrap();
        let (key, id) = create_api_key(&mut conn, org.id, user.id, "ci").await.unwrap();
        let p = authenticate_bearer(&mut conn, &key).await.unwrap();
        assert_eq!(
            p,
            Principal {
                user_id: user.id,
                org_id: org.id,
                email: "p@example.com".into(),
                role: "owner".into(),
                via: Via::ApiKey(id)
            }
        );
        let used: Option<chrono::DateTime<Utc>> =
            api_keys::table.filter(api_keys::id.eq(id)).select(api_keys::last_used_at).first(&mut conn).await.unwrap();
        assert!(used.is_some());
        // Wrong shape, unknown, revoked: all refused.
        assert!(matches!(authenticate_bearer(&mut conn, "sk_abc").await, Err(AuthError::Unauthenticated(_))));
        let unknown = bmm_core::crypto::new_token("bmm_");
        assert!(matches!(authenticate_bearer(&mut conn, &unknown).await, Err(AuthError::Unauthenticated(_))));
        revoke_api_key(&mut conn, org.id, id).await.unwrap();
        match authenticate_bearer(&mut conn, &key).await {
            Err(AuthError::Unauthenticated(m)) => assert!(m.contains("revoked")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn session_authenticates_until_revoked_or_expired() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut conn = pool.get().await.unwrap();
        let (user, org) = ensure_user_and_org(&mut conn, "s@example.com").await.unwrap();
        let (token, s) = create_session(&mut conn, user.id, org.id, Some("127.0.0.1"), Some("test")).await.unwrap();
        assert_eq!(token.len(), 43);
        let p = authenticate_session(&mut conn, &token).await.unwrap();
        assert_eq!(p.via, Via::Session(s.id));
        assert_eq!(p.org_id, org.id);

        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, format!("other=1; bmm_session={token}").parse().unwrap());
        assert_eq!(from_headers(&mut conn, &headers).await.unwrap().unwrap().user_id, user.id);
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(from_headers(&mut conn, &headers).await.is_err());
        assert!(from_headers(&mut conn, &http::HeaderMap::new()).await.unwrap().is_none());

        revoke_session(&mut conn, s.id).await.unwrap();
        assert!(matches!(authenticate_session(&mut conn, &token).await, Err(AuthError::Unauthenticated(_))));

        let (token2, s2) = create_session(&mut conn, user.id, org.id, None, None).await.unwrap();
        diesel::update(sessions::table.filter(sessions::id.eq(s2.id)))
            .set(sessions::expires_at.eq(Utc::now() - chrono::Duration::seconds(1)))
            .execute(&mut conn)
            .await
            .unwrap();
        match authenticate_session(&mut conn, &token2).await {
            Err(AuthError::Unauthenticated(m)) => assert!(m.contains("expired")),
            other => panic!("{other:?}"),
        }
        assert!(authenticate_session(&mut conn, "").await.is_err());
    }
}

//! Users, orgs, memberships, API keys and sessions.
//!
//! Every secret (session token, API key) is shown once and stored only as its
//! SHA-256. Queries on org-owned rows take the caller's org.

use bmm_core::crypto::{hash_token, new_token};
use bmm_db::models::{Org, User};
use bmm_db::schema::{api_keys, memberships, orgs, sessions, users};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::AuthError;

/// Sessions last this long from sign-in.
pub const SESSION_TTL: Duration = Duration::days(30);
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "bmm_session";
/// API keys start with this, so leaked keys are recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "bmm_";
/// How many characters of a key are kept in clear to tell keys apart in lists.
const VISIBLE_PREFIX_LEN: usize = 12;
/// `last_used_at` is written at most this often per key, so a busy key does
/// not turn every request into a write.
const LAST_USED_GRANULARITY: Duration = Duration::seconds(60);

/// Normalise and validate an email address: trimmed, lower-cased, one `@`, a
/// plausible local part and a dotted domain. Errors say what is wrong.
pub fn normalize_email(raw: &str) -> Result<String, AuthError> {
    let email = raw.trim().to_lowercase();
    let bad = |why: &str| Err(AuthError::InvalidEmail(format!("{why}: {:?}", raw.trim())));
    if email.is_empty() {
        return Err(AuthError::InvalidEmail("enter an email address".into()));
    }
    if email.len() > 254 {
        return bad("email address is longer than 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("email address must not contain spaces");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("email address needs an @");
    };
    if domain.contains('@') {
        return bad("email address has more than one @");
    }
    if local.is_empty() || local.len() > 64 {
        return bad("the part before the @ must be 1 to 64 characters");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("the part before the @ has a misplaced dot");
    }
    let local_ok = local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !local_ok {
        return bad("the part before the @ has characters email addresses cannot contain");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("the domain after the @ needs a dot, like example.com");
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return bad("the domain after the @ is not a valid host name");
        }
    }
    Ok(email)
}

/// The user with this email and their org, both made on first sign-in. The
/// org is named after the email's local part and gets a unique slug.
pub async fn ensure_user_and_org(conn: &mut AsyncPgConnection, email: &str) -> Result<(User, Org), AuthError> {
    let email = normalize_email(email)?;
    conn.transaction::<_, AuthError, _>(|conn| {
        async move {
            diesel::insert_into(users::table)
                .values((users::id.eq(Uuid::now_v7()), users::email.eq(&email)))
                .on_conflict(users::email)
                .do_nothing()
                .execute(conn)
                .await?;
            // Locking the user row makes two simultaneous first sign-ins make one org, not two.
            let user: User =
                users::table.filter(users::email.eq(&email)).for_update().select(User::as_select()).first(conn).await?;
            let existing: Option<Org> = memberships::table
                .inner_join(orgs::table)
                .filter(memberships::user_id.eq(user.id))
                .order(memberships::created_at.asc())
                .select(Org::as_select())
                .first(conn)
                .await
                .optional()?;
            if let Some(org) = existing {
                return Ok((user, org));
            }
            let local = email.split('@').next().unwrap_or("team").to_owned();
            let org = create_org(conn, &local).await?;
            diesel::insert_into(memberships::table)
                .values((
                    memberships::org_id.eq(org.id),
                    memberships::user_id.eq(user.id),
                    memberships::role.eq("owner"),
                ))
                .execute(conn)
                .await?;
            Ok((user, org))
        }
        .scope_boxed()
    })
    .await
}

/// Insert an org with a slug no other org has: the slugified name, then the
/// name with `-2`, `-3`, … and finally a random suffix.
async fn create_org(conn: &mut AsyncPgConnection, name: &str) -> Result<Org, AuthError> {
    let base: String = bmm_core::slug::slugify(name).chars().take(40).collect();
    let base = base.trim_end_matches('-').to_owned();
    for attempt in 0..12u32 {
        let slug = match attempt {
            0 => base.clone(),
            1..=9 => format!("{base}-{}", attempt + 1),
            _ => format!("{base}-{}", &Uuid::new_v4().simple().to_string()[..6]),
        };
        let inserted: Option<Org> = diesel::insert_into(orgs::table)
            .values((orgs::id.eq(Uuid::now_v7()), orgs::name.eq(name), orgs::slug.eq(&slug)))
            .on_conflict(orgs::slug)
            .do_nothing()
            .returning(Org::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        if let Some(org) = inserted {
            return Ok(org);
        }
    }
    Err(AuthError::BadInput("could not find a free name for the organisation".into()))
}

/// An API key as lists show it: never the key itself.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Make an API key for `user` in `org`. Returns the plaintext (`bmm_…`, shown
/// once) and the key's id.
pub async fn create_api_key(
    conn: &mut AsyncPgConnection,
    org_id: Uuid,
    user_id: Uuid,
    name: &str,
) -> Result<(String, Uuid), AuthError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AuthError::BadInput("give the API key a name".into()));
    }
    if name.chars().count() > 100 {
        return Err(AuthError::BadInput("API key names are at most 100 characters".into()));
    }
    let is_member: bool = diesel::select(diesel::dsl::exists(
        memberships::table.filter(memberships::org_id.eq(org_id)).filter(memberships::user_id.eq(user_id)),
    ))
    .get_result(conn)
    .await?;
    if !is_member {
        return Err(AuthError::NotFound);
    }
    let key = new_token(API_KEY_PREFIX);
    let id = Uuid::now_v7();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(id),
            api_keys::org_id.eq(org_id),
            api_keys::user_id.eq(user_id),
            api_keys::name.eq(name),
            api_keys::prefix.eq(&key[..VISIBLE_PREFIX_LEN]),
            api_keys::key_hash.eq(hash_token(&key)),
        ))
        .execute(conn)
        .await?;
    Ok((key, id))
}

/// Revoke one of the org's keys. `NotFound` when the org has no such live key.
pub async fn revoke_api_key(conn: &mut AsyncPgConnection, org_id: Uuid, key_id: Uuid) -> Result<(), AuthError> {
    let n = diesel::update(
        api_keys::table
            .filter(api_keys::id.eq(key_id))
            .filter(api_keys::org_id.eq(org_id))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    if n == 0 { Err(AuthError::NotFound) } else { Ok(()) }
}

/// The org's keys, newest first, revoked ones included (they show as revoked).
pub async fn list_api_keys(conn: &mut AsyncPgConnection, org_id: Uuid) -> Result<Vec<ApiKeyInfo>, AuthError> {
    Ok(api_keys::table
        .filter(api_keys::org_id.eq(org_id))
        .order(api_keys::created_at.desc())
        .select(ApiKeyInfo::as_select())
        .load(conn)
        .await?)
}

/// Record that a key was used, at most once a minute.
pub(crate) async fn touch_api_key(conn: &mut AsyncPgConnection, key_id: Uuid) -> Result<(), AuthError> {
    let stale = Utc::now() - LAST_USED_GRANULARITY;
    diesel::update(
        api_keys::table
            .filter(api_keys::id.eq(key_id))
            .filter(api_keys::last_used_at.is_null().or(api_keys::last_used_at.lt(stale))),
    )
    .set(api_keys::last_used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(())
}

/// A session as stored (without its token hash).
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = sessions)]
pub struct SessionInfo {
    pub id: Uuid,
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Start a 30-day session. Returns the token for the cookie (shown once) and the row.
pub async fn create_session(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    org_id: Uuid,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> Result<(String, SessionInfo), AuthError> {
    let token = new_token("");
    // Long user agents are cut: they are for people reading the sessions list, not for matching.
    let user_agent: Option<String> = user_agent.map(|ua| ua.chars().take(300).collect());
    let row = diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(Uuid::now_v7()),
            sessions::token_hash.eq(hash_token(&token)),
            sessions::user_id.eq(user_id),
            sessions::org_id.eq(org_id),
            sessions::expires_at.eq(Utc::now() + SESSION_TTL),
            sessions::ip.eq(ip),
            sessions::user_agent.eq(user_agent),
        ))
        .returning(SessionInfo::as_returning())
        .get_result(conn)
        .await?;
    Ok((token, row))
}

/// Revoke a session (sign-out). Revoking an already revoked session is fine.
pub async fn revoke_session(conn: &mut AsyncPgConnection, session_id: Uuid) -> Result<(), AuthError> {
    diesel::update(sessions::table.filter(sessions::id.eq(session_id)).filter(sessions::revoked_at.is_null()))
        .set(sessions::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}

/// Revoke the session a cookie token belongs to, if any.
pub async fn revoke_session_token(conn: &mut AsyncPgConnection, token: &str) -> Result<(), AuthError> {
    diesel::update(
        sessions::table.filter(sessions::token_hash.eq(hash_token(token))).filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(())
}

/// The session cookie: HttpOnly, SameSite=Lax, Path=/, Secure when the
/// platform is served over https, lasting as long as the session.
pub fn session_cookie(cfg: &bmm_core::Config, token: String) -> axum_extra::extract::cookie::Cookie<'static> {
    use axum_extra::extract::cookie::{Cookie, SameSite};
    Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(cfg.public_url.scheme() == "https")
        .max_age(time_duration(SESSION_TTL))
        .build()
}

/// A cookie that clears the session cookie in the browser.
pub fn clear_session_cookie(cfg: &bmm_core::Config) -> axum_extra::extract::cookie::Cookie<'static> {
    let mut c = session_cookie(cfg, String::new());
    c.make_removal();
    c
}

fn time_duration(d: Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(d.num_seconds())
}

/// Delete what can no longer be used: expired sessions, magic links,
/// authorization codes and refresh tokens (a day after they expired, so
/// recent ones still explain a refusal). Returns how many rows went.
pub async fn sweep_expired(conn: &mut AsyncPgConnection) -> Result<usize, AuthError> {
    use bmm_db::schema::{magic_links, oauth_codes, oauth_refresh_tokens};
    let cutoff = Utc::now() - Duration::days(1);
    let mut n = diesel::delete(sessions::table.filter(sessions::expires_at.lt(cutoff))).execute(conn).await?;
    n += diesel::delete(magic_links::table.filter(magic_links::expires_at.lt(cutoff))).execute(conn).await?;
    n += diesel::delete(oauth_codes::table.filter(oauth_codes::expires_at.lt(cutoff))).execute(conn).await?;
    n += diesel::delete(oauth_refresh_tokens::table.filter(oauth_refresh_tokens::expires_at.lt(cutoff)))
        .execute(conn)
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bmm_db::testing::TestDb;

    #[test]
    fn emails_are_normalised_and_bad_ones_refused_with_a_reason() {
        assert_eq!(normalize_email("  Alice@Example.COM ").unwrap(), "alice@example.com");
        assert_eq!(normalize_email("a.b+tag@sub.example.org").unwrap(), "a.b+tag@sub.example.org");
        for (bad, why) in [
            ("", "enter an email"),
            ("alice", "needs an @"),
            ("a@b@c.com", "more than one @"),
            ("@example.com", "1 to 64"),
            ("alice@localhost", "needs a dot"),
            ("al ice@example.com", "spaces"),
            ("alice@exa_mple.com", "not a valid host"),
            ("alice@-example.com", "not a valid host"),
            ("alice@example..com", "not a valid host"),
            (".alice@example.com", "misplaced dot"),
            ("al\"ice@example.com", "cannot contain"),
        ] {
            match normalize_email(bad) {
                Err(AuthError::InvalidEmail(m)) => assert!(m.contains(why), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[tokio::test]
    async fn first_sign_in_makes_one_org_and_later_ones_reuse_it() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut conn = pool.get().await.unwrap();
        let (u1, o1) = ensure_user_and_org(&mut conn, "Alice@Example.com").await.unwrap();
        assert_eq!(u1.email, "alice@example.com");
        assert_eq!(o1.name, "alice");
        assert_eq!(o1.slug, "alice");
        let (u2, o2) = ensure_user_and_org(&mut conn, "alice@example.com").await.unwrap();
        assert_eq!((u1.id, o1.id), (u2.id, o2.id));
        // Another alice elsewhere gets a different slug.
        let (_, o3) = ensure_user_and_org(&mut conn, "alice@other.org").await.unwrap();
        assert_eq!(o3.slug, "alice-2");
        let role: String = memberships::table
            .filter(memberships::user_id.eq(u1.id))
            .select(memberships::role)
            .first(&mut conn)
            .await
            .unwrap();
        assert_eq!(role, "owner");
        assert!(matches!(ensure_user_and_org(&mut conn, "nope").await, Err(AuthError::InvalidEmail(_))));
    }

    #[tokio::test]
    async fn simultaneous_first_sign_ins_make_one_org() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = pool.get().await.unwrap();
                ensure_user_and_org(&mut conn, "race@example.com").await.unwrap().1.id
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.dedup();
        assert_eq!(ids.len(), 1);
        let mut conn = pool.get().await.unwrap();
        let n: i64 = orgs::table.count().get_result(&mut conn).await.unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn api_keys_are_hash_only_listed_without_secret_and_revocable() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut conn = pool.get().await.unwrap();
        let (user, org) = ensure_user_and_org(&mut conn, "k@example.com").await.unwrap();
        let (key, id) = create_api_key(&mut conn, org.id, user.id, " ci ").await.unwrap();
        assert!(key.starts_with("bmm_") && key.len() == 47);
        let stored: Vec<u8> =
            api_keys::table.filter(api_keys::id.eq(id)).select(api_keys::key_hash).first(&mut conn).await.unwrap();
        assert_eq!(stored, hash_token(&key));
        let list = list_api_keys(&mut conn, org.id).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "ci");
        assert_eq!(list[0].prefix, &key[..12]);
        assert!(matches!(create_api_key(&mut conn, org.id, user.id, "  ").await, Err(AuthError::BadInput(_))));
        // Another org cannot revoke it.
        let (_, other) = ensure_user_and_org(&mut conn, "o@example.com").await.unwrap();
        assert!(matches!(revoke_api_key(&mut conn, other.id, id).await, Err(AuthError::NotFound)));
        assert!(matches!(create_api_key(&mut conn, other.id, user.id, "x").await, Err(AuthError::NotFound)));
        revoke_api_key(&mut conn, org.id, id).await.unwrap();
        assert!(matches!(revoke_api_key(&mut conn, org.id, id).await, Err(AuthError::NotFound)));
        assert!(list_api_keys(&mut conn, org.id).await.unwrap()[0].revoked_at.is_some());
    }

    #[test]
    fn session_cookie_is_http_only_lax_and_secure_behind_https() {
        let mut cfg = bmm_core::Config::for_tests("postgres://bmm@127.0.0.1:55432/x");
        let c = session_cookie(&cfg, "t".into());
        assert_eq!(c.name(), "bmm_session");
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(c.same_site(), Some(axum_extra::extract::cookie::SameSite::Lax));
        assert_eq!(c.path(), Some("/"));
        assert_eq!(c.secure(), Some(false));
        cfg.public_url = url::Url::parse("https://bmm.example").unwrap();
        assert_eq!(session_cookie(&cfg, "t".into()).secure(), Some(true));
        assert_eq!(clear_session_cookie(&cfg).value(), "");
    }

    #[tokio::test]
    async fn sweep_removes_only_long_expired_rows() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut conn = pool.get().await.unwrap();
        let (user, org) = ensure_user_and_org(&mut conn, "sw@example.com").await.unwrap();
        let (live, _) = create_session(&mut conn, user.id, org.id, None, None).await.unwrap();
        let (_, old) = create_session(&mut conn, user.id, org.id, None, None).await.unwrap();
        diesel::update(sessions::table.filter(sessions::id.eq(old.id)))
            .set(sessions::expires_at.eq(Utc::now() - Duration::days(2)))
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(sweep_expired(&mut conn).await.unwrap(), 1);
        assert!(crate::principal::authenticate_session(&mut conn, &live).await.is_ok());
        assert_eq!(sweep_expired(&mut conn).await.unwrap(), 0);
    }
}

//! Magic-link sign-in: 32-byte single-use tokens, stored hashed, valid for 15
//! minutes, rate-limited per email and per IP. Asking for a link never tells
//! whether the email belongs to a user: the user and org are made when the
//! link is used.

use bmm_core::Config;
use bmm_core::crypto::{hash_token, new_token};
use bmm_db::models::{Org, User};
use bmm_db::schema::magic_links;
use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::AuthError;
use crate::identity::{ensure_user_and_org, normalize_email};

pub const MAGIC_LINK_TTL: Duration = Duration::minutes(15);
/// The window the rate limits count requests in.
pub const RATE_WINDOW: Duration = Duration::minutes(15);
/// Links one email address may be sent per window.
pub const MAX_PER_EMAIL: i64 = 5;
/// Links one IP address may ask for per window (across emails).
pub const MAX_PER_IP: i64 = 20;

/// `path` if it is a same-origin relative path (`/x`, not `//host` or
/// `/\host`, which browsers treat as another origin), else `None`.
pub fn safe_next(path: Option<&str>) -> Option<String> {
    let p = path?.trim();
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.chars().any(|c| c.is_control() || c == '\\')
        // Room for an /oauth/authorize URL carrying a metadata-document client_id and a long state.
        && p.len() <= 8192;
    ok.then(|| p.to_owned())
}

/// Make a sign-in link for `email` and return its URL. `redirect_to` is kept
/// only if it is a same-origin relative path. Counts as one request against
/// the email's and the IP's rate limits.
pub async fn create_magic_link(
    conn: &mut AsyncPgConnection,
    cfg: &Config,
    email: &str,
    redirect_to: Option<&str>,
    ip: Option<&str>,
) -> Result<String, AuthError> {
    create_bound_magic_link(conn, cfg, email, redirect_to, ip, None).await
}

/// The cookie that marks the browser a sign-in link was asked from.
pub const BROWSER_COOKIE: &str = "bmm_signin";

/// [`create_magic_link`] for a link asked for from a browser carrying the
/// [`BROWSER_COOKIE`] value `browser`: opening it in another browser is
/// said on the confirmation page.
pub async fn create_bound_magic_link(
    conn: &mut AsyncPgConnection,
    cfg: &Config,
    email: &str,
    redirect_to: Option<&str>,
    ip: Option<&str>,
    browser: Option<&str>,
) -> Result<String, AuthError> {
    let email = normalize_email(email)?;
    let since = Utc::now() - RATE_WINDOW;
    let by_email: i64 = magic_links::table
        .filter(magic_links::email.eq(&email))
        .filter(magic_links::created_at.gt(since))
        .count()
        .get_result(conn)
        .await?;
    if by_email >= MAX_PER_EMAIL {
        return Err(AuthError::RateLimited);
    }
    if let Some(ip) = ip {
        let by_ip: i64 = magic_links::table
            .filter(magic_links::ip.eq(ip))
            .filter(magic_links::created_at.gt(since))
            .count()
            .get_result(conn)
            .await?;
        if by_ip >= MAX_PER_IP {
            return Err(AuthError::RateLimited);
        }
    }
    let token = new_token("");
    diesel::insert_into(magic_links::table)
        .values((
            magic_links::id.eq(Uuid::now_v7()),
            magic_links::email.eq(&email),
            magic_links::token_hash.eq(hash_token(&token)),
            magic_links::redirect_to.eq(safe_next(redirect_to)),
            magic_links::expires_at.eq(Utc::now() + MAGIC_LINK_TTL),
            magic_links::ip.eq(ip),
            magic_links::browser_hash.eq(browser.map(hash_token)),
        ))
        .execute(conn)
        .await?;
    Ok(format!("{}/auth/verify?token={token}", cfg.issuer()))
}

/// Send the link: by SMTP when `cfg.smtp_url` is set, else one line on stdout
/// (`magic link for EMAIL: URL`) for development.
pub async fn send_magic_link(cfg: &Config, email: &str, url: &str) -> Result<(), AuthError> {
    let Some(smtp_url) = &cfg.smtp_url else {
        println!("magic link for {email}: {url}");
        return Ok(());
    };
    use lettre::message::header::ContentType;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let from = cfg.mail_from.parse().map_err(|e| AuthError::Mail(format!("BMM_MAIL_FROM: {e}")))?;
    let to = email.parse().map_err(|e| AuthError::Mail(format!("recipient: {e}")))?;
    let body = format!(
        "Sign in to BuildMyMCP by opening this link:\n\n{url}\n\nThe link works once and expires in 15 minutes.\nIf you did not ask for it, ignore this email.\n"
    );
    let msg = Message::builder()
        .from(from)
        .to(to)
        .subject("Your BuildMyMCP sign-in link")
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| AuthError::Mail(e.to_string()))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
        .map_err(|e| AuthError::Mail(format!("BMM_SMTP_URL: {e}")))?
        .timeout(Some(std::time::Duration::from_secs(15)))
        .build();
    transport.send(msg).await.map_err(|e| AuthError::Mail(e.to_string()))?;
    Ok(())
}

/// A link that can still be used, as the confirmation page shows it.
pub struct PendingLink {
    pub email: String,
    /// Whether the link was asked for from a browser other than `browser`
    /// (false when it was not asked for from a browser, e.g. the CLI).
    pub opened_elsewhere: bool,
}

/// Look a link up without using it (mail scanners and link previews GET
/// it; only the confirmation's POST signs in).
pub async fn peek_magic_link(
    conn: &mut AsyncPgConnection,
    token: &str,
    browser: Option<&str>,
) -> Result<PendingLink, AuthError> {
    let token = token.trim();
    if token.is_empty() || token.len() > 100 {
        return Err(AuthError::InvalidLink);
    }
    let row: Option<(String, Option<Vec<u8>>)> = magic_links::table
        .filter(magic_links::token_hash.eq(hash_token(token)))
        .filter(magic_links::used_at.is_null())
        .filter(magic_links::expires_at.gt(diesel::dsl::now))
        .select((magic_links::email, magic_links::browser_hash))
        .first(conn)
        .await
        .optional()?;
    let (email, bound) = row.ok_or(AuthError::InvalidLink)?;
    let opened_elsewhere = match bound {
        Some(h) => !browser.is_some_and(|b| bmm_core::crypto::constant_time_eq(&h, &hash_token(b))),
        None => false,
    };
    Ok(PendingLink { email, opened_elsewhere })
}

/// Use a link: marks it used (once, atomically), then returns the user and
/// org (made now on first sign-in) and where to go next.
pub async fn consume_magic_link(
    conn: &mut AsyncPgConnection,
    token: &str,
) -> Result<(User, Org, Option<String>), AuthError> {
    let token = token.trim();
    if token.is_empty() || token.len() > 100 {
        return Err(AuthError::InvalidLink);
    }
    let row: Option<(String, Option<String>)> = diesel::update(
        magic_links::table
            .filter(magic_links::token_hash.eq(hash_token(token)))
            .filter(magic_links::used_at.is_null())
            .filter(magic_links::expires_at.gt(diesel::dsl::now)),
    )
    .set(magic_links::used_at.eq(diesel::dsl::now))
    .returning((magic_links::email, magic_links::redirect_to))
    .get_result(conn)
    .await
    .optional()?;
    let (email, next) = row.ok_or(AuthError::InvalidLink)?;
    let (user, org) = ensure_user_and_org(conn, &email).await?;
    Ok((user, org, safe_next(next.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bmm_db::testing::TestDb;

    fn token_of(url: &str) -> String {
        url.split("token=").nth(1).unwrap().to_owned()
    }

    #[test]
    fn only_same_origin_relative_paths_are_kept() {
        assert_eq!(safe_next(Some("/servers/1?x=2")), Some("/servers/1?x=2".into()));
        for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", "evil", "", "/a\\b", "/a\nb"] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_next(None), None);
    }

    #[tokio::test]
    async fn link_signs_in_once_and_makes_the_org() {
        let db = TestDb::new().await;
        let cfg = Config::for_tests(&db.url);
        let mut conn = db.pool().get().await.unwrap();
        let url =
            create_magic_link(&mut conn, &cfg, "New@Example.com", Some("/servers"), Some("1.2.3.4")).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1:8080/auth/verify?token="));
        let token = token_of(&url);
        assert_eq!(token.len(), 43);
        // Only the hash is stored.
        let stored: Vec<u8> = magic_links::table.select(magic_links::token_hash).first(&mut conn).await.unwrap();
        assert_eq!(stored, hash_token(&token));
        let (user, org, next) = consume_magic_link(&mut conn, &token).await.unwrap();
        assert_eq!(user.email, "new@example.com");
        assert_eq!(org.slug, "new");
        assert_eq!(next.as_deref(), Some("/servers"));
        assert!(matches!(consume_magic_link(&mut conn, &token).await, Err(AuthError::InvalidLink)));
    }

    #[tokio::test]
    async fn expired_link_is_refused() {
        let db = TestDb::new().await;
        let cfg = Config::for_tests(&db.url);
        let mut conn = db.pool().get().await.unwrap();
        let url = create_magic_link(&mut conn, &cfg, "old@example.com", None, None).await.unwrap();
        diesel::update(magic_links::table)
            .set(magic_links::expires_at.eq(Utc::now() - Duration::seconds(1)))
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(matches!(consume_magic_link(&mut conn, &token_of(&url)).await, Err(AuthError::InvalidLink)));
        assert!(matches!(consume_magic_link(&mut conn, "garbage").await, Err(AuthError::InvalidLink)));
    }

    #[tokio::test]
    async fn per_email_rate_limit() {
        let db = TestDb::new().await;
        let cfg = Config::for_tests(&db.url);
        let mut conn = db.pool().get().await.unwrap();
        for i in 0..MAX_PER_EMAIL {
            let ip = format!("10.0.0.{i}");
            create_magic_link(&mut conn, &cfg, "r@example.com", None, Some(&ip)).await.unwrap();
        }
        let over = create_magic_link(&mut conn, &cfg, "R@example.com", None, Some("10.9.9.9")).await;
        assert!(matches!(over, Err(AuthError::RateLimited)));
        // Other addresses are not affected.
        create_magic_link(&mut conn, &cfg, "s@example.com", None, Some("10.9.9.9")).await.unwrap();
    }

    #[tokio::test]
    async fn per_ip_rate_limit() {
        let db = TestDb::new().await;
        let cfg = Config::for_tests(&db.url);
        let mut conn = db.pool().get().await.unwrap();
        for i in 0..MAX_PER_IP {
            create_magic_link(&mut conn, &cfg, &format!("u{i}@example.com"), None, Some("10.1.1.1")).await.unwrap();
        }
        let over = create_magic_link(&mut conn, &cfg, "another@example.com", None, Some("10.1.1.1")).await;
        assert!(matches!(over, Err(AuthError::RateLimited)));
        create_magic_link(&mut conn, &cfg, "another@example.com", None, Some("10.1.1.2")).await.unwrap();
    }

    #[tokio::test]
    async fn bad_email_gets_a_clear_error() {
        let db = TestDb::new().await;
        let cfg = Config::for_tests(&db.url);
        let mut conn = db.pool().get().await.unwrap();
        match create_magic_link(&mut conn, &cfg, "not-an-email", None, None).await {
            Err(AuthError::InvalidEmail(m)) => assert!(m.contains("@")),
            other => panic!("{other:?}"),
        }
    }
}

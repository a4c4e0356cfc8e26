//! After a suspected leak of the master key: whoever read the database with
//! it can sign tokens with the platform's signing keys and use every refresh
//! token. These two calls take both back (see docs/operations.md, "After a
//! suspected leak").

use bmm_db::schema::{oauth_refresh_tokens, signing_keys};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::AuthError;

/// Stop signing with, and stop publishing, every signing key now. The next
/// token made anywhere gets a new key; every access token issued so far stops
/// verifying once processes re-read the key table (within a minute), and
/// clients refresh or sign in again. Returns how many keys were revoked.
pub async fn revoke_signing_keys(conn: &mut AsyncPgConnection) -> Result<usize, AuthError> {
    let now = Utc::now();
    let n = diesel::update(
        signing_keys::table.filter(signing_keys::expires_at.is_null().or(signing_keys::expires_at.gt(now))),
    )
    .set((signing_keys::retired_at.eq(now), signing_keys::expires_at.eq(now)))
    .execute(conn)
    .await?;
    Ok(n)
}

/// Revoke every refresh token family: clients must authorize again. Returns how many tokens were revoked.
pub async fn revoke_refresh_tokens(conn: &mut AsyncPgConnection) -> Result<usize, AuthError> {
    let n = diesel::update(oauth_refresh_tokens::table.filter(oauth_refresh_tokens::revoked_at.is_null()))
        .set(oauth_refresh_tokens::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyStore;
    use crate::keys::tests::{seed_test_key, test_config};
    use bmm_db::testing::TestDb;

    #[tokio::test]
    async fn revoked_signing_keys_leave_the_jwks_and_a_new_key_signs() {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(&db, dir.path(), 3600);
        let old = seed_test_key(&db.pool(), &cfg).await;
        let mut conn = db.pool().get().await.unwrap();
        assert_eq!(revoke_signing_keys(&mut conn).await.unwrap(), 1);
        assert_eq!(revoke_signing_keys(&mut conn).await.unwrap(), 0, "nothing left to revoke");
        let keys = KeyStore::without_jwks_file(db.pool(), cfg.clone());
        let new = keys.signing_key().await.unwrap().kid;
        assert_ne!(new, old);
        let jwks = keys.jwks().await.unwrap();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, vec![new.as_str()], "the revoked key is no longer published");
    }
}

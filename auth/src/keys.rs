//! RS256 signing keys: created on first use, rotated after
//! `cfg.signing_key_rotation`, published in the JWKS until the last token they
//! signed has expired.
//!
//! Private keys are sealed with the platform key (context = kid). The kid is
//! the RFC 7638 JWK thumbprint. Rotation happens under a transaction-scoped
//! advisory lock, so two API processes starting at once make one key, not two.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use bmm_core::Config;
use bmm_core::crypto::{Sealed, b64url};
use bmm_db::Pool;
use bmm_db::schema::signing_keys;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::error::AuthError;

/// Advisory lock id serialising key rotation across processes ("bmmkeys").
const ROTATION_LOCK: i64 = 0x0062_6d6d_6b65_7973;
/// Extra time a retired key stays published, for clock skew between processes.
const PUBLISH_MARGIN: Duration = Duration::seconds(60);
/// A process re-reads the key table at least this often.
const MAX_CACHE_AGE: StdDuration = StdDuration::from_secs(60);
/// An unknown kid triggers a re-read at most this often (random kids must not hammer the database).
const MIN_REFRESH_INTERVAL: StdDuration = StdDuration::from_secs(1);
const RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
struct KeyRow {
    kid: String,
    private_nonce: Vec<u8>,
    private_sealed: Vec<u8>,
    public_jwk: Value,
    created_at: DateTime<Utc>,
    // Selected so a row is the whole key; the rotation query filters on them in SQL.
    #[allow(dead_code)]
    retired_at: Option<DateTime<Utc>>,
    #[allow(dead_code)]
    expires_at: Option<DateTime<Utc>>,
}

/// The key that signs now, and until when this process may use it.
#[derive(Clone)]
pub(crate) struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    /// After this instant another process may have rotated; ask the database again.
    pub use_until: DateTime<Utc>,
}

#[derive(Default)]
struct Cache {
    signing: Option<SigningKey>,
    public: HashMap<String, DecodingKey>,
    jwks: Option<Value>,
    loaded_at: Option<Instant>,
    /// The kids in the JWKS file this process last wrote.
    written_kids: Option<Vec<String>>,
}

/// The platform's signing keys. Cheap to clone; clones share one cache.
#[derive(Clone)]
pub struct KeyStore {
    pool: Pool,
    cfg: Arc<Config>,
    jwks_dir: Option<PathBuf>,
    cache: Arc<RwLock<Cache>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("jwks_dir", &self.jwks_dir).finish_non_exhaustive()
    }
}

impl KeyStore {
    /// A key store that keeps `{cfg.data_dir}/jwks/jwks.json` up to date.
    pub fn new(pool: Pool, cfg: Arc<Config>) -> KeyStore {
        let dir = cfg.data_dir.join("jwks");
        KeyStore { pool, cfg, jwks_dir: Some(dir), cache: Arc::default() }
    }

    /// A key store that writes no JWKS file (processes that only mint or verify).
    pub fn without_jwks_file(pool: Pool, cfg: Arc<Config>) -> KeyStore {
        KeyStore { pool, cfg, jwks_dir: None, cache: Arc::default() }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Make sure a signing key exists and the JWKS file is written; call at start.
    pub async fn init(&self) -> Result<(), AuthError> {
        self.signing_key().await?;
        self.refresh().await?;
        // Written even if unchanged since this process started: the file may be missing.
        if let Some(dir) = &self.jwks_dir {
            self.write_jwks_file(dir).await?;
        }
        Ok(())
    }

    /// The key to sign with now, rotating if its time is up.
    pub(crate) async fn signing_key(&self) -> Result<SigningKey, AuthError> {
        if let Some(k) = &self.cache.read().await.signing
            && k.use_until > Utc::now()
        {
            return Ok(k.clone());
        }
        let mut conn = self.pool.get().await.map_err(|e| AuthError::Pool(e.to_string()))?;
        let (row, created) = current_or_new_key(&mut conn, &self.cfg).await?;
        let key = self.signing_from_row(&row)?;
        self.cache.write().await.signing = Some(key.clone());
        if created {
            tracing::info!(kid = %row.kid, "new signing key");
            // Publishes the new key (and rewrites the JWKS file).
            self.refresh().await?;
        }
        Ok(key)
    }

    fn signing_from_row(&self, row: &KeyRow) -> Result<SigningKey, AuthError> {
        let sealed = Sealed { nonce: row.private_nonce.clone(), ciphertext: row.private_sealed.clone() };
        let der = self
            .cfg
            .secret_box
            .open(&sealed, row.kid.as_bytes())
            .map_err(|e| AuthError::Keys(format!("signing key {}: {e}", row.kid)))?;
        // Parse once here so a damaged key fails now, not at the first signature.
        rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .map_err(|e| AuthError::Keys(format!("signing key {}: {e}", row.kid)))?;
        let rotation = Duration::from_std(self.cfg.signing_key_rotation).unwrap_or(Duration::days(7));
        let use_until = (row.created_at + rotation).min(Utc::now() + Duration::from_std(MAX_CACHE_AGE).unwrap());
        Ok(SigningKey { kid: row.kid.clone(), encoding: EncodingKey::from_rsa_der(&der), use_until })
    }

    /// Re-read the published keys from the database.
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let mut conn = self.pool.get().await.map_err(|e| AuthError::Pool(e.to_string()))?;
        let rows = published_keys(&mut conn).await?;
        let mut public = HashMap::new();
        let mut jwks_keys = Vec::new();
        for row in &rows {
            let n = row.public_jwk.get("n").and_then(Value::as_str).unwrap_or_default();
            let e = row.public_jwk.get("e").and_then(Value::as_str).unwrap_or_default();
            match DecodingKey::from_rsa_components(n, e) {
                Ok(k) => {
                    public.insert(row.kid.clone(), k);
                    jwks_keys.push(row.public_jwk.clone());
                }
                Err(err) => tracing::error!(kid = %row.kid, error = %err, "unusable public key skipped"),
            }
        }
        let kids: Vec<String> = rows.iter().map(|r| r.kid.clone()).collect();
        let jwks = json!({ "keys": jwks_keys });
        let mut cache = self.cache.write().await;
        cache.public = public;
        cache.jwks = Some(jwks.clone());
        cache.loaded_at = Some(Instant::now());
        // Keep the file the containers read in step with the table, whoever rotated.
        if let Some(dir) = &self.jwks_dir
            && cache.written_kids.as_ref() != Some(&kids)
        {
            match write_jwks_value(dir, &jwks).await {
                Ok(()) => cache.written_kids = Some(kids),
                Err(e) => tracing::error!(error = %e, "could not write the JWKS file"),
            }
        }
        Ok(())
    }

    /// Keep keys current in the background: rotate when due and re-read the
    /// table (rewriting the JWKS file when the key set changed) every `every`.
    /// Each run also deletes long-expired sessions, links, codes and refresh tokens.
    pub fn spawn_maintenance(&self, every: StdDuration) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = keys.signing_key().await {
                    tracing::error!(error = ?e, "signing key maintenance failed");
                }
                if let Err(e) = keys.refresh().await {
                    tracing::error!(error = ?e, "signing key refresh failed");
                }
                match keys.pool.get().await {
                    Ok(mut conn) => match crate::identity::sweep_expired(&mut conn).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "expired auth rows deleted"),
                        Err(e) => tracing::warn!(error = ?e, "sweeping expired auth rows failed"),
                    },
                    Err(e) => tracing::warn!(error = %e, "no database connection for the auth sweep"),
                }
            }
        })
    }

    /// The JWKS: every public key whose tokens may still be valid, newest first.
    pub async fn jwks(&self) -> Result<Value, AuthError> {
        self.refresh_if_stale().await?;
        Ok(self.cache.read().await.jwks.clone().unwrap_or_else(|| json!({ "keys": [] })))
    }

    async fn refresh_if_stale(&self) -> Result<(), AuthError> {
        let stale = self.cache.read().await.loaded_at.is_none_or(|t| t.elapsed() > MAX_CACHE_AGE);
        if stale { self.refresh().await } else { Ok(()) }
    }

    /// The public key for `kid`, re-reading the table once if it is unknown
    /// (another process may just have rotated).
    pub(crate) async fn decoding_key(&self, kid: &str) -> Result<Option<DecodingKey>, AuthError> {
        self.refresh_if_stale().await?;
        let recently = {
            let cache = self.cache.read().await;
            if let Some(k) = cache.public.get(kid) {
                return Ok(Some(k.clone()));
            }
            cache.loaded_at.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL)
        };
        if recently {
            return Ok(None);
        }
        self.refresh().await?;
        Ok(self.cache.read().await.public.get(kid).cloned())
    }

    /// Write `dir/jwks.json` atomically (temp file in the same folder, then
    /// rename), readable by the containers that bind-mount `dir`.
    pub async fn write_jwks_file(&self, dir: &Path) -> Result<(), AuthError> {
        let jwks = self.jwks().await?;
        write_jwks_value(dir, &jwks).await
    }
}

async fn write_jwks_value(dir: &Path, jwks: &Value) -> Result<(), AuthError> {
    let body = serde_json::to_vec_pretty(jwks).expect("JSON value serialises");
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || write_atomically(&dir, "jwks.json", &body))
        .await
        .map_err(|e| AuthError::Keys(e.to_string()))?
        .map_err(|e| AuthError::Keys(format!("writing the JWKS file: {e}")))
}

fn write_atomically(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Public keys only; the containers run as another user and must read it.
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

async fn published_keys(conn: &mut AsyncPgConnection) -> Result<Vec<KeyRow>, AuthError> {
    Ok(signing_keys::table
        .filter(signing_keys::expires_at.is_null().or(signing_keys::expires_at.gt(Utc::now())))
        .order(signing_keys::created_at.desc())
        .select(KeyRow::as_select())
        .load(conn)
        .await?)
}

/// The current signing key, or a new one if there is none or its time is up.
/// Returns whether a key was made.
async fn current_or_new_key(conn: &mut AsyncPgConnection, cfg: &Config) -> Result<(KeyRow, bool), AuthError> {
    let rotation = Duration::from_std(cfg.signing_key_rotation).unwrap_or(Duration::days(7));
    let token_ttl = Duration::from_std(cfg.access_token_ttl).unwrap_or(Duration::hours(1));
    let secret_box = cfg.secret_box.clone();
    conn.transaction::<_, AuthError, _>(|conn| {
        async move {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<diesel::sql_types::BigInt, _>(ROTATION_LOCK)
                .execute(conn)
                .await?;
            let current: Option<KeyRow> = signing_keys::table
                .filter(signing_keys::retired_at.is_null())
                .order(signing_keys::created_at.desc())
                .select(KeyRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let now = Utc::now();
            if let Some(k) = current
                && k.created_at + rotation > now
            {
                return Ok((k, false));
            }
            // RSA key generation is CPU-heavy; keep it off the async workers.
            let (kid, der, jwk) =
                tokio::task::spawn_blocking(generate_key).await.map_err(|e| AuthError::Keys(e.to_string()))??;
            let sealed = secret_box.seal(&der, kid.as_bytes());
            // Old keys stop signing now and stay published until their last token has expired.
            diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
                .set((signing_keys::retired_at.eq(now), signing_keys::expires_at.eq(now + token_ttl + PUBLISH_MARGIN)))
                .execute(conn)
                .await?;
            // Keys nobody can need any more are dropped.
            diesel::delete(signing_keys::table.filter(signing_keys::expires_at.lt(now - Duration::days(1))))
                .execute(conn)
                .await?;
            let row: KeyRow = diesel::insert_into(signing_keys::table)
                .values((
                    signing_keys::kid.eq(&kid),
                    signing_keys::private_nonce.eq(&sealed.nonce),
                    signing_keys::private_sealed.eq(&sealed.ciphertext),
                    signing_keys::public_jwk.eq(&jwk),
                    signing_keys::created_at.eq(now),
                ))
                .returning(KeyRow::as_returning())
                .get_result(conn)
                .await?;
            Ok((row, true))
        }
        .scope_boxed()
    })
    .await
}

/// A new RSA-2048 key: (kid, PKCS#1 DER private key, public JWK).
fn generate_key() -> Result<(String, Vec<u8>, Value), AuthError> {
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
        .map_err(|e| AuthError::Keys(format!("RSA key generation: {e}")))?;
    key_material(&private)
}

fn key_material(private: &rsa::RsaPrivateKey) -> Result<(String, Vec<u8>, Value), AuthError> {
    let n = b64url(&private.n().to_bytes_be());
    let e = b64url(&private.e().to_bytes_be());
    let kid = jwk_thumbprint(&n, &e);
    let der = private.to_pkcs1_der().map_err(|e| AuthError::Keys(format!("RSA key encoding: {e}")))?;
    let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e });
    Ok((kid, der.as_bytes().to_vec(), jwk))
}

/// RFC 7638 thumbprint of an RSA public key: SHA-256 over the required
/// members in lexicographic order, without whitespace, base64url.
pub fn jwk_thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    b64url(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bmm_db::testing::TestDb;

    /// A config for key tests: a temp data dir and the given rotation period.
    pub(crate) fn test_config(db: &TestDb, data_dir: &Path, rotation_secs: u64) -> Arc<Config> {
        let mut cfg = Config::for_tests(&db.url);
        cfg.data_dir = data_dir.to_owned();
        cfg.signing_key_rotation = StdDuration::from_secs(rotation_secs);
        cfg.access_token_ttl = StdDuration::from_secs(300);
        Arc::new(cfg)
    }

    /// A fixed RSA key, so tests that are not about key generation do not
    /// spend seconds on it (debug builds are slow at RSA).
    const TEST_KEY_DER_B64: &str = "MIIEpAIBAAKCAQEAkdLn/NxyOWPPgGQY22+tILOWq2ihHvyquDNWFhFEgmhbv/yTpc7gAkJWHaL2OUGnZZkDGzO2E8imV9Y5GiaNzbOQThaOgZ284WIOk4D+Jo+p7NRH3JddO72qTpM5o6HGPNLH1zhXiX3TQ7G/8ug1xAmDncLsverKdvhK5+qCPGOxftz64cAxLA6cnTILEu8+95cR1fbz9rI33aKDzYOBO6D65hxiaMyTTNAK0WLtONmvrhhu2oV0/Bx/vLHV7Xq3roWvjuB+Ya4ifEI6AKbr7dlq9ry758a8WebfL+v7oXJzIHy5XJkFaxZQhxflp8OUvozOx+2RCaRTUNYXS0u+hwIDAQABAoIBAAyx8Utkv7b6VwLE9BsKfmaF6/yRN9G0SoKNyZVTPIUj47TznsEFISBhOREMcmYqrpGcQBZ6qoPPaJfmCQObTqYVV19M/GwRWPPALyetR7MAt9jr5DOyo8XDLdP4YkC6IUGDUi2M9KX+I8nVbDIQADpIX8J4yVaBXc38sLy/AEaUf5cN3gjaM1gitU2ykXo0/QetXwcB4CxJAhvpTgZp2srjN4fMkIzYuZU28CjymAFAtggIv/bAdI9OWizrvu5YDvjTmg9asMusR47BGlBvwWVmLKmN8cCLT+qw+tWYb5fMS287j99tmJZix7FvcEFRdjuZ9t1aWgA4gvPQ294KjsECgYEAzY+MHEhYp/9fQjbwCBXGUZufRU25IfMvcjsNLHc2Zt/iu9h5bcRBRKWz4bL/PBvA0mgyBd4r6IINO6WIIPxIpCGtid50rQDBmIwcaE3QRYZN3olKZchCw9/XI7pFOv4GYo59phzFPPiu5ZsboUIOmN+YOz3xSFAhFrzSGBwNJUcCgYEAtZrxEfyfJGI71zTuHwrHdguRMmPm5qstl84WdFuIqESinFXN1a/n9wEBCv6LIkH4QRh1I3BRO+ceHlIrTmmaHQXOzBC4oHo/yGqnwbN2qQt4hXZqZz27XPXzCZK239tPvfFdlkRnwp1fObxZ4LWWIlfeUqTra36wWDmobvUqPMECgYBKXI92+8T2oS84qN8UTaw8gWuQiplaarrTPAF8AHQxqvQ+uATVbJWf28HC+BnVCMUsWH0gGksQBVv8I9mm9RziIzzADzVuEEP4h1cPdHbPb9Jjmo7LWzKr4SHWzt+Ug6iTprBVkzrW36+FaCMKpvbY3qoXZEUQv8v4ib4G8r7eqQKBgQCDdTUsIAHTBIjsr5PvRI4+FQF1yHtMXn0SdkwqzleN9qD/Kd1l4X+4fTGUE84Dbl2WQW4JyTQEeLiEmlZe3HKCr8GSVkhPYi7plMr6nD44/+SuN5muQjFuiVr0gw992/NNO3rTW5EAf4p+8Kje0JNtKM32ZQtFNN/R/Wq/Zxi8AQKBgQCdvEI/4kPqC4uW4v5EelxUT/kSbZV2zqrAmNGlG0H22mA3cSIk2UbfsdpJnabMJLqqfDWLdfk60kqaQ/QYoBuJ4Aat+DEZZNQPyzLveKkGOlMKQKufq75imSxy5H5fdmkikidOfUU+wgIlz4vBnYb0G8vNOpWU0kdIeaSCELBXTQ==";

    /// Store the fixed test key as the current signing key; returns its kid.
    pub(crate) async fn seed_test_key(pool: &Pool, cfg: &Config) -> String {
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD.decode(TEST_KEY_DER_B64).unwrap();
        let private = rsa::RsaPrivateKey::from_pkcs1_der(&der).unwrap();
        let (kid, der, jwk) = key_material(&private).unwrap();
        let sealed = cfg.secret_box.seal(&der, kid.as_bytes());
        let mut conn = pool.get().await.unwrap();
        diesel::insert_into(signing_keys::table)
            .values((
                signing_keys::kid.eq(&kid),
                signing_keys::private_nonce.eq(&sealed.nonce),
                signing_keys::private_sealed.eq(&sealed.ciphertext),
                signing_keys::public_jwk.eq(&jwk),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        kid
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(jwk_thumbprint(n, "AQAB"), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[tokio::test]
    async fn first_use_makes_one_key_even_when_processes_race_and_writes_the_jwks_file() {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(&db, dir.path(), 3600);
        let a = KeyStore::new(db.pool(), cfg.clone());
        let b = KeyStore::new(db.pool(), cfg.clone());
        let (ka, kb) = tokio::join!(a.signing_key(), b.signing_key());
        assert_eq!(ka.unwrap().kid, kb.unwrap().kid);
        a.init().await.unwrap();
        let file: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("jwks").join("jwks.json")).unwrap()).unwrap();
        let keys = file["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["alg"], "RS256");
        assert_eq!(keys[0]["kid"], jwk_thumbprint(keys[0]["n"].as_str().unwrap(), "AQAB"));
        // No private material is published and no temp files are left behind.
        assert!(keys[0].get("d").is_none());
        assert_eq!(std::fs::read_dir(dir.path().join("jwks")).unwrap().count(), 1);
        // The private key is sealed, not stored in clear.
        let mut conn = db.pool().get().await.unwrap();
        let row: KeyRow = signing_keys::table.select(KeyRow::as_select()).first(&mut conn).await.unwrap();
        assert!(rsa::RsaPrivateKey::from_pkcs1_der(&row.private_sealed).is_err());
    }

    #[tokio::test]
    async fn rotation_signs_with_a_new_key_and_keeps_publishing_the_old_one() {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(&db, dir.path(), 3600);
        let keys = KeyStore::new(db.pool(), cfg.clone());
        let old = keys.signing_key().await.unwrap().kid;
        // Age the key past its rotation period.
        let mut conn = db.pool().get().await.unwrap();
        diesel::update(signing_keys::table)
            .set(signing_keys::created_at.eq(Utc::now() - Duration::hours(2)))
            .execute(&mut conn)
            .await
            .unwrap();
        keys.cache.write().await.signing = None;
        let new = keys.signing_key().await.unwrap().kid;
        assert_ne!(old, new);
        let jwks = keys.jwks().await.unwrap();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, vec![new.as_str(), old.as_str()]);
        let file: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("jwks").join("jwks.json")).unwrap()).unwrap();
        assert_eq!(file, jwks);
        let old_row: KeyRow = signing_keys::table
            .filter(signing_keys::kid.eq(&old))
            .select(KeyRow::as_select())
            .first(&mut conn)
            .await
            .unwrap();
        let until = old_row.expires_at.unwrap() - old_row.retired_at.unwrap();
        assert_eq!(until, Duration::seconds(300) + PUBLISH_MARGIN);
        // Once the old key's tokens have all expired it is no longer published.
        diesel::update(signing_keys::table.filter(signing_keys::kid.eq(&old)))
            .set(signing_keys::expires_at.eq(Utc::now() - Duration::seconds(1)))
            .execute(&mut conn)
            .await
            .unwrap();
        keys.refresh().await.unwrap();
        assert_eq!(keys.jwks().await.unwrap()["keys"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn another_process_rotating_is_picked_up_into_the_jwks_file() {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(&db, dir.path(), 3600);
        seed_test_key(&db.pool(), &cfg).await;
        let a = KeyStore::new(db.pool(), cfg.clone());
        a.init().await.unwrap();
        let read = || -> Value {
            serde_json::from_slice(&std::fs::read(dir.path().join("jwks").join("jwks.json")).unwrap()).unwrap()
        };
        assert_eq!(read()["keys"].as_array().unwrap().len(), 1);
        let mut conn = db.pool().get().await.unwrap();
        diesel::update(signing_keys::table)
            .set(signing_keys::created_at.eq(Utc::now() - Duration::hours(2)))
            .execute(&mut conn)
            .await
            .unwrap();
        let b = KeyStore::without_jwks_file(db.pool(), cfg.clone());
        let new = b.signing_key().await.unwrap().kid;
        a.refresh().await.unwrap();
        let file = read();
        assert_eq!(file["keys"].as_array().unwrap().len(), 2);
        assert_eq!(file["keys"][0]["kid"], new.as_str());
    }
}

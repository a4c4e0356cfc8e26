//! OAuth access tokens: RS256 JWTs the platform mints and every resource
//! server (the gateway, the generated servers) verifies.
//!
//! Verification accepts RS256 only, finds the key by `kid`, and checks `iss`
//! and `aud` exactly and `exp`/`nbf` against the clock. Each refusal says why
//! in plain words, for the connection trace.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AuthError;
use crate::keys::KeyStore;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
pub const CLOCK_LEEWAY_SECS: i64 = 5;

/// The claims of a platform access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The platform origin.
    pub iss: String,
    /// The server's MCP URL, exactly.
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The org id.
    pub org: Uuid,
    /// Space-separated scopes.
    pub scope: String,
    pub client_id: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

impl AccessClaims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// What a token is for.
#[derive(Debug, Clone)]
pub struct AccessGrant<'a> {
    pub user_id: Uuid,
    pub org_id: Uuid,
    /// The resource: `{issuer}/s/{slug}/mcp`.
    pub audience: &'a str,
    pub scope: &'a str,
    pub client_id: &'a str,
    /// Lifetime; capped at `cfg.access_token_ttl`, since retired keys are only
    /// published that long.
    pub ttl: Duration,
}

/// Sign an access token. Returns the JWT and its claims.
pub async fn mint_access_token(keys: &KeyStore, grant: &AccessGrant<'_>) -> Result<(String, AccessClaims), AuthError> {
    let key = keys.signing_key().await?;
    let ttl = grant.ttl.min(keys.config().access_token_ttl).as_secs().max(1) as i64;
    let now = Utc::now().timestamp();
    let claims = AccessClaims {
        iss: keys.config().issuer(),
        aud: grant.audience.to_owned(),
        sub: grant.user_id,
        org: grant.org_id,
        scope: grant.scope.to_owned(),
        client_id: grant.client_id.to_owned(),
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: Uuid::new_v4().to_string(),
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    let jwt = jsonwebtoken::encode(&header, &claims, &key.encoding)
        .map_err(|e| AuthError::Keys(format!("signing an access token: {e}")))?;
    Ok((jwt, claims))
}

/// Why a token was refused. The display is a plain sentence for the trace and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted (only RS256)")]
    Algorithm(String),
    #[error("token header has no kid, so its signing key cannot be found")]
    MissingKid,
    #[error("token was signed by an unknown key (kid {0}); it may be from another platform or its key has expired")]
    UnknownKid(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token issuer {got} does not match this platform ({expected})")]
    Issuer { got: String, expected: String },
    #[error("token audience {got} does not match this server ({expected})")]
    Audience { got: String, expected: String },
    #[error("token expired {0} seconds ago")]
    Expired(i64),
    #[error("token is not valid yet")]
    NotYetValid,
    /// The keys could not be read (database down); not the token's fault.
    #[error("signing keys are unavailable")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
}

/// Verify an access token for the server whose MCP URL is `expected_audience`.
pub async fn verify_access_token(
    keys: &KeyStore,
    token: &str,
    expected_audience: &str,
) -> Result<AccessClaims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("not a JWT (three dot-separated parts)".into()));
    };
    // Read the header ourselves: jsonwebtoken refuses `none` without saying so.
    let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
    let header: RawHeader =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed("header is not JSON".into()))?;
    match header.alg.as_deref() {
        Some("RS256") => {}
        Some(other) => return Err(TokenError::Algorithm(other.to_owned())),
        None => return Err(TokenError::Algorithm("(missing)".into())),
    }
    let kid = header.kid.ok_or(TokenError::MissingKid)?;
    let key = keys
        .decoding_key(&kid)
        .await
        .map_err(|e| TokenError::Unavailable(e.to_string()))?
        .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?;

    // The signature is checked by the library; the claims are checked below so
    // each refusal can name what was wrong.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::Algorithm("mismatching the key".into())
            }
            _ => TokenError::Malformed(e.to_string()),
        }
    })?;
    let claims: AccessClaims = serde_json::from_value(data.claims)
        .map_err(|e| TokenError::Malformed(format!("claims are incomplete or mistyped: {e}")))?;

    let expected_issuer = keys.config().issuer();
    if claims.iss != expected_issuer {
        return Err(TokenError::Issuer { got: claims.iss, expected: expected_issuer });
    }
    if claims.aud != expected_audience {
        return Err(TokenError::Audience { got: claims.aud, expected: expected_audience.to_owned() });
    }
    let now = Utc::now().timestamp();
    if claims.exp + CLOCK_LEEWAY_SECS <= now {
        return Err(TokenError::Expired(now - claims.exp));
    }
    if claims.nbf - CLOCK_LEEWAY_SECS > now {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::{seed_test_key, test_config};
    use bmm_db::testing::TestDb;
    use jsonwebtoken::EncodingKey;

    const AUD: &str = "http://127.0.0.1:8080/s/weather/mcp";

    async fn setup() -> (TestDb, tempfile::TempDir, KeyStore) {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(&db, dir.path(), 3600);
        seed_test_key(&db.pool(), &cfg).await;
        let keys = KeyStore::new(db.pool(), cfg);
        (db, dir, keys)
    }

    fn grant() -> AccessGrant<'static> {
        AccessGrant {
            user_id: Uuid::new_v4(),
            org_id: Uuid::new_v4(),
            audience: AUD,
            scope: "mcp offline_access",
            client_id: "client-1",
            ttl: Duration::from_secs(60),
        }
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// Sign arbitrary claims with the store's current key.
    async fn sign_claims(keys: &KeyStore, claims: &serde_json::Value) -> String {
        let key = keys.signing_key().await.unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid);
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    #[tokio::test]
    async fn minted_token_verifies_with_all_claims() {
        let (_db, _dir, keys) = setup().await;
        let g = grant();
        let (jwt, claims) = mint_access_token(&keys, &g).await.unwrap();
        let got = verify_access_token(&keys, &jwt, AUD).await.unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.iss, "http://127.0.0.1:8080");
        assert_eq!(got.sub, g.user_id);
        assert_eq!(got.org, g.org_id);
        assert!(got.has_scope("mcp") && !got.has_scope("admin"));
        assert_eq!(got.exp - got.iat, 60);
        // A second store (another process) verifies too, loading keys from the database.
        let other = KeyStore::without_jwks_file(keys_pool(&keys), Arc::new(keys.config().clone()));
        assert!(verify_access_token(&other, &jwt, AUD).await.is_ok());
    }

    fn keys_pool(keys: &KeyStore) -> bmm_db::Pool {
        bmm_db::connect(&keys.config().database_url, 2).unwrap()
    }
    use std::sync::Arc;

    #[tokio::test]
    async fn ttl_is_capped_at_the_configured_lifetime() {
        let (_db, _dir, keys) = setup().await;
        let mut g = grant();
        g.ttl = Duration::from_secs(86_400);
        let (_, claims) = mint_access_token(&keys, &g).await.unwrap();
        assert_eq!(claims.exp - claims.iat, 300);
    }

    #[tokio::test]
    async fn refuses_alg_none() {
        let (_db, _dir, keys) = setup().await;
        let (jwt, _) = mint_access_token(&keys, &grant()).await.unwrap();
        let payload = jwt.split('.').nth(1).unwrap();
        let kid = keys.signing_key().await.unwrap().kid;
        let forged = format!("{}.{payload}.", b64(&serde_json::json!({"alg": "none", "kid": kid})));
        assert_eq!(verify_access_token(&keys, &forged, AUD).await, Err(TokenError::Algorithm("none".into())));
    }

    #[tokio::test]
    async fn refuses_hs256_signed_with_the_public_key() {
        let (_db, _dir, keys) = setup().await;
        let (jwt, claims) = mint_access_token(&keys, &grant()).await.unwrap();
        let _ = jwt;
        let jwks = keys.jwks().await.unwrap();
        let public = serde_json::to_vec(&jwks["keys"][0]).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
        let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&public)).unwrap();
        let err = verify_access_token(&keys, &forged, AUD).await.unwrap_err();
        assert_eq!(err, TokenError::Algorithm("HS256".into()));
        assert_eq!(err.to_string(), "token algorithm HS256 is not accepted (only RS256)");
    }

    #[tokio::test]
    async fn refuses_wrong_audience_with_a_plain_cause() {
        let (_db, _dir, keys) = setup().await;
        let (jwt, _) = mint_access_token(&keys, &grant()).await.unwrap();
        let err = verify_access_token(&keys, &jwt, "http://127.0.0.1:8080/s/other/mcp").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "token audience http://127.0.0.1:8080/s/weather/mcp does not match this server (http://127.0.0.1:8080/s/other/mcp)"
        );
        // A path prefix is not a match either.
        let err = verify_access_token(&keys, &jwt, "http://127.0.0.1:8080/s/weather").await.unwrap_err();
        assert!(matches!(err, TokenError::Audience { .. }));
    }

    #[tokio::test]
    async fn refuses_expired_tokens() {
        let (_db, _dir, keys) = setup().await;
        let now = Utc::now().timestamp();
        let (_, mut c) = mint_access_token(&keys, &grant()).await.unwrap();
        c.iat = now - 600;
        c.nbf = now - 600;
        c.exp = now - 60;
        let jwt = sign_claims(&keys, &serde_json::to_value(&c).unwrap()).await;
        let err = verify_access_token(&keys, &jwt, AUD).await.unwrap_err();
        assert!(matches!(err, TokenError::Expired(s) if s >= 60), "{err}");
    }

    #[tokio::test]
    async fn refuses_not_yet_valid_tokens() {
        let (_db, _dir, keys) = setup().await;
        let (_, mut c) = mint_access_token(&keys, &grant()).await.unwrap();
        c.nbf += 600;
        let jwt = sign_claims(&keys, &serde_json::to_value(&c).unwrap()).await;
        assert_eq!(verify_access_token(&keys, &jwt, AUD).await, Err(TokenError::NotYetValid));
    }

    #[tokio::test]
    async fn refuses_wrong_issuer() {
        let (_db, _dir, keys) = setup().await;
        let (_, mut c) = mint_access_token(&keys, &grant()).await.unwrap();
        c.iss = "https://evil.example".into();
        let jwt = sign_claims(&keys, &serde_json::to_value(&c).unwrap()).await;
        let err = verify_access_token(&keys, &jwt, AUD).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "token issuer https://evil.example does not match this platform (http://127.0.0.1:8080)"
        );
    }

    #[tokio::test]
    async fn refuses_tampered_signature_and_payload() {
        let (_db, _dir, keys) = setup().await;
        let (jwt, mut c) = mint_access_token(&keys, &grant()).await.unwrap();
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut sig = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
        sig[10] ^= 0x01;
        parts[2] = URL_SAFE_NO_PAD.encode(sig);
        assert_eq!(verify_access_token(&keys, &parts.join("."), AUD).await, Err(TokenError::BadSignature));
        // Same signature, payload changed to another org.
        c.org = Uuid::new_v4();
        let parts2: Vec<&str> = jwt.split('.').collect();
        let forged = format!("{}.{}.{}", parts2[0], b64(&serde_json::to_value(&c).unwrap()), parts2[2]);
        assert_eq!(verify_access_token(&keys, &forged, AUD).await, Err(TokenError::BadSignature));
    }

    #[tokio::test]
    async fn refuses_unknown_kid_and_missing_kid_and_garbage() {
        let (_db, _dir, keys) = setup().await;
        let (jwt, _) = mint_access_token(&keys, &grant()).await.unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let other_kid = format!("{}.{}.{}", b64(&serde_json::json!({"alg":"RS256","kid":"nope"})), parts[1], parts[2]);
        assert_eq!(verify_access_token(&keys, &other_kid, AUD).await, Err(TokenError::UnknownKid("nope".into())));
        let no_kid = format!("{}.{}.{}", b64(&serde_json::json!({"alg":"RS256"})), parts[1], parts[2]);
        assert_eq!(verify_access_token(&keys, &no_kid, AUD).await, Err(TokenError::MissingKid));
        assert!(matches!(verify_access_token(&keys, "abc", AUD).await, Err(TokenError::Malformed(_))));
        assert!(matches!(verify_access_token(&keys, "a.b.c", AUD).await, Err(TokenError::Malformed(_))));
        // A token signed by a key that is not ours (same kid claimed) fails on the signature.
        // A small key keeps the test quick; the signature fails whatever its size.
        let stranger = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let enc = EncodingKey::from_rsa_der(stranger.to_pkcs1_der().unwrap().as_bytes());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(keys.signing_key().await.unwrap().kid);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let foreign = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
        assert_eq!(verify_access_token(&keys, &foreign, AUD).await, Err(TokenError::BadSignature));
    }

    #[tokio::test]
    async fn tokens_signed_before_rotation_still_verify() {
        let (db, _dir, keys) = setup().await;
        let (old_jwt, _) = mint_access_token(&keys, &grant()).await.unwrap();
        let mut conn = db.pool().get().await.unwrap();
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        diesel::update(bmm_db::schema::signing_keys::table)
            .set(bmm_db::schema::signing_keys::created_at.eq(Utc::now() - chrono::Duration::hours(2)))
            .execute(&mut conn)
            .await
            .unwrap();
        // A fresh process sees the aged key and rotates.
        let fresh = KeyStore::without_jwks_file(db.pool(), Arc::new(keys.config().clone()));
        let (new_jwt, _) = mint_access_token(&fresh, &grant()).await.unwrap();
        let kid = |j: &str| jsonwebtoken::decode_header(j).unwrap().kid.unwrap();
        assert_ne!(kid(&old_jwt), kid(&new_jwt));
        // The first store learns of the new key on the unknown kid and still accepts the old one.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(verify_access_token(&keys, &new_jwt, AUD).await.is_ok());
        assert!(verify_access_token(&keys, &old_jwt, AUD).await.is_ok());
    }
}

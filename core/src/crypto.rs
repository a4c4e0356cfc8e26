//! Secrets at rest and bearer tokens.
//!
//! [`SecretBox`] seals with AES-256-GCM under the platform key; each sealed
//! value carries its own random nonce. Tokens (sessions, magic links, API keys,
//! OAuth codes and refresh tokens) are 32 CSPRNG bytes, shown once, and stored
//! only as their SHA-256.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("must be 32 bytes as 64 hex characters")]
    BadKey,
    #[error("sealed value is damaged or was sealed under another key")]
    Open,
}

/// Authenticated encryption under the platform key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
    /// First bytes of the key's hash, to tell keys apart in logs without revealing them.
    pub key_id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBox({})", self.key_id)
    }
}

/// A sealed value: nonce and ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl SecretBox {
    pub fn from_bytes(key: &[u8; 32]) -> SecretBox {
        let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
        let key_id = hex::encode(&Sha256::digest(key)[..4]);
        SecretBox { cipher, key_id }
    }

    pub fn from_hex(s: &str) -> Result<SecretBox, CryptoError> {
        let bytes = hex::decode(s.trim()).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(SecretBox::from_bytes(&key))
    }

    /// The fixed key dev mode falls back to when none is configured. The
    /// scripts always configure one; this keeps `bmm dev` usable by hand.
    pub fn dev_key() -> SecretBox {
        SecretBox::from_bytes(&Sha256::digest(b"bmm insecure development key").into())
    }

    /// Seal `plaintext`, bound to `context` (for example the row it belongs
    /// to), so a sealed value moved to another row does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context })
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        Sealed { nonce: nonce.to_vec(), ciphertext }
    }

    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.nonce.len() != 12 {
            return Err(CryptoError::Open);
        }
        self.cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: context })
            .map_err(|_| CryptoError::Open)
    }
}

/// A new bearer token: `prefix` followed by 32 random bytes, base64url.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored for a token: its SHA-256.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time comparison of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// base64url without padding, as JOSE and PKCE use it.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of a verifier.
pub fn pkce_s256(verifier: &str) -> String {
    b64url(&Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_key_and_context() {
        let b = SecretBox::from_hex(&"11".repeat(32)).unwrap();
        let s = b.seal(b"hunter2", b"secret:1");
        assert_ne!(s.ciphertext, b"hunter2");
        assert_eq!(b.open(&s, b"secret:1").unwrap(), b"hunter2");
        assert_eq!(b.open(&s, b"secret:2"), Err(CryptoError::Open));
        let other = SecretBox::from_hex(&"22".repeat(32)).unwrap();
        assert_eq!(other.open(&s, b"secret:1"), Err(CryptoError::Open));
        let mut tampered = s.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(b.open(&tampered, b"secret:1"), Err(CryptoError::Open));
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(b.seal(b"x", b"c").nonce, b.seal(b"x", b"c").nonce);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(SecretBox::from_hex("abc").unwrap_err(), CryptoError::BadKey);
        assert_eq!(SecretBox::from_hex(&"zz".repeat(32)).unwrap_err(), CryptoError::BadKey);
    }

    #[test]
    fn tokens_are_unique_and_hashed() {
        let a = new_token("bmm_");
        let b = new_token("bmm_");
        assert!(a.starts_with("bmm_") && a.len() == 4 + 43);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a).len(), 32);
        assert!(constant_time_eq(&hash_token(&a), &hash_token(&a)));
        assert!(!constant_time_eq(&hash_token(&a), &hash_token(&b)));
    }

    #[test]
    fn pkce_matches_rfc7636_example() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}

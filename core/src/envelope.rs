//! Envelope encryption under a keyring of master keys.
//!
//! Every sealed value gets a data key of its own (32 random bytes) that
//! encrypts it with AES-256-GCM, bound to a context (the row it belongs to).
//! The data key is stored wrapped by a master key, next to that key's id, so
//! rotating the master key means re-wrapping 32 bytes per value, and a value
//! always says which key it needs.
//!
//! A sealed value is two byte strings, stored in two columns as before:
//! `nonce` holds the envelope header and `ciphertext` the encrypted value.
//!
//! | format | `nonce` | `ciphertext` |
//! |---|---|---|
//! | legacy (before key ids) | 12-byte nonce | value under the master key itself |
//! | v1 | `01` · key id (4) · wrap nonce (12) · wrapped data key (48) · data nonce (12) = 77 bytes | value under the data key |
//!
//! A legacy value carries no key id; it opens under whichever configured key
//! authenticates it, and the rotation re-seals it as v1. The header's first
//! five bytes (version and key id) are authenticated as part of the wrap, so a
//! changed key id is refused, never silently tried against another key.
//!
//! The keyring is the configured list (the first key seals) minus the keys a
//! finished rotation retired: a value under a retired key is refused even if
//! the key is still configured.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Format byte of a v1 envelope.
const V1: u8 = 1;
const NONCE_LEN: usize = 12;
const KEY_ID_LEN: usize = 4;
const WRAPPED_LEN: usize = 32 + 16;
/// Length of a v1 header: version, key id, wrap nonce, wrapped data key, data nonce.
pub const V1_HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN + WRAPPED_LEN + NONCE_LEN;
/// Domain separation of the wrap's associated data.
const WRAP_AAD: &[u8] = b"bmm data key";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("must be 32 bytes as 64 hex characters")]
    BadKey,
    #[error("sealed value is damaged or was sealed under another key")]
    Open,
    #[error("sealed under master key {0}, which is not configured (configured: {1}); add it to BMM_SECRET_KEY")]
    UnknownKey(String, String),
    #[error("sealed under master key {0}, which a finished rotation retired")]
    RetiredKey(String),
    #[error("sealed value has an unknown format (version {0}, header of {1} bytes)")]
    Format(u8, usize),
}

/// A sealed value: the envelope header (or a legacy nonce) and the ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Which format a sealed value is in, and under which master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrapped {
    /// Sealed before key ids: the key is found by trying.
    Legacy,
    /// Wrapped by the master key with this id (8 hex characters).
    Key(String),
}

impl Sealed {
    pub fn wrapped(&self) -> Result<Wrapped, CryptoError> {
        match (self.nonce.first(), self.nonce.len()) {
            (_, NONCE_LEN) => Ok(Wrapped::Legacy),
            (Some(&V1), V1_HEADER_LEN) => Ok(Wrapped::Key(hex::encode(&self.nonce[1..1 + KEY_ID_LEN]))),
            (v, len) => Err(CryptoError::Format(v.copied().unwrap_or(0), len)),
        }
    }
}

#[derive(Clone)]
struct MasterKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn new(key: &[u8; 32]) -> MasterKey {
        let id = Sha256::digest(key)[..KEY_ID_LEN].try_into().expect("4 bytes");
        MasterKey { id, cipher: Aes256Gcm::new_from_slice(key).expect("32-byte key") }
    }

    fn hex_id(&self) -> String {
        hex::encode(self.id)
    }
}

struct Keyring {
    /// The first seals; all open.
    keys: Vec<MasterKey>,
    /// Ids a finished rotation retired (shared by every clone, updated at run time).
    retired: RwLock<BTreeSet<String>>,
}

/// Authenticated encryption under the platform's master keys. Cheap to
/// clone; clones share the retired set.
#[derive(Clone)]
pub struct SecretBox {
    ring: Arc<Keyring>,
    /// Id of the key that seals: the first bytes of its hash, to tell keys
    /// apart in logs and in sealed values without revealing them.
    pub key_id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBox({})", self.key_ids().join(","))
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn parse_hex_key(s: &str) -> Result<[u8; 32], CryptoError> {
    let bytes = hex::decode(s.trim()).map_err(|_| CryptoError::BadKey)?;
    bytes.try_into().map_err(|_| CryptoError::BadKey)
}

impl SecretBox {
    pub fn from_bytes(key: &[u8; 32]) -> SecretBox {
        SecretBox::from_keys(&[*key])
    }

    /// A keyring: `keys[0]` seals, every key opens. Duplicates are dropped.
    pub fn from_keys(keys: &[[u8; 32]]) -> SecretBox {
        assert!(!keys.is_empty(), "a keyring needs a key");
        let mut ring: Vec<MasterKey> = Vec::new();
        for k in keys {
            let k = MasterKey::new(k);
            if !ring.iter().any(|r| r.id == k.id) {
                ring.push(k);
            }
        }
        let key_id = ring[0].hex_id();
        SecretBox { ring: Arc::new(Keyring { keys: ring, retired: RwLock::default() }), key_id }
    }

    pub fn from_hex(s: &str) -> Result<SecretBox, CryptoError> {
        Ok(SecretBox::from_bytes(&parse_hex_key(s)?))
    }

    /// Keys as 64 hex characters each, the first current.
    pub fn from_hex_list(keys: &[&str]) -> Result<SecretBox, CryptoError> {
        if keys.is_empty() {
            return Err(CryptoError::BadKey);
        }
        let keys = keys.iter().map(|k| parse_hex_key(k)).collect::<Result<Vec<_>, _>>()?;
        Ok(SecretBox::from_keys(&keys))
    }

    /// The fixed key dev mode falls back to when none is configured. The
    /// scripts always configure one; this keeps `bmm dev` usable by hand.
    pub fn dev_key() -> SecretBox {
        SecretBox::from_bytes(&Sha256::digest(b"bmm insecure development key").into())
    }

    /// Ids of the configured keys, the current one first.
    pub fn key_ids(&self) -> Vec<String> {
        self.ring.keys.iter().map(MasterKey::hex_id).collect()
    }

    /// Refuse values under these keys from now on (a rotation away from them finished).
    pub fn retire(&self, ids: impl IntoIterator<Item = String>) {
        self.ring.retired.write().expect("retired set").extend(ids);
    }

    pub fn is_retired(&self, id: &str) -> bool {
        self.ring.retired.read().expect("retired set").contains(id)
    }

    fn usable(&self) -> impl Iterator<Item = &MasterKey> {
        let retired = self.ring.retired.read().expect("retired set").clone();
        self.ring.keys.iter().filter(move |k| !retired.contains(&k.hex_id()))
    }

    fn key(&self, id: &str) -> Result<&MasterKey, CryptoError> {
        if self.is_retired(id) {
            return Err(CryptoError::RetiredKey(id.to_owned()));
        }
        self.ring
            .keys
            .iter()
            .find(|k| k.hex_id() == id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_owned(), self.key_ids().join(", ")))
    }

    /// Seal `plaintext`, bound to `context` (for example the row it belongs
    /// to), so a sealed value moved to another row does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let data_key: [u8; 32] = random();
        let data_nonce: [u8; NONCE_LEN] = random();
        let ciphertext = Aes256Gcm::new_from_slice(&data_key)
            .expect("32-byte key")
            .encrypt(Nonce::from_slice(&data_nonce), Payload { msg: plaintext, aad: context })
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        let header = wrap(&self.ring.keys[0], &data_key, &data_nonce);
        Sealed { nonce: header, ciphertext }
    }

    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match sealed.wrapped()? {
            Wrapped::Legacy => {
                let nonce = Nonce::from_slice(&sealed.nonce);
                let payload = || Payload { msg: &sealed.ciphertext, aad: context };
                // No key id: the tag tells which configured key sealed it.
                self.usable().find_map(|k| k.cipher.decrypt(nonce, payload()).ok()).ok_or(CryptoError::Open)
            }
            Wrapped::Key(id) => {
                let (data_key, data_nonce) = unwrap(self.key(&id)?, &sealed.nonce)?;
                Aes256Gcm::new_from_slice(&data_key)
                    .expect("32-byte key")
                    .decrypt(Nonce::from_slice(&data_nonce), Payload { msg: &sealed.ciphertext, aad: context })
                    .map_err(|_| CryptoError::Open)
            }
        }
    }

    /// Seal the way the platform did before key ids (no envelope, no key id),
    /// under the current key. Only for tests of the upgrade path: nothing
    /// in the platform writes this format any more.
    #[doc(hidden)]
    pub fn seal_legacy(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let nonce: [u8; NONCE_LEN] = random();
        let ciphertext = self.ring.keys[0]
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context })
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        Sealed { nonce: nonce.to_vec(), ciphertext }
    }

    /// Whether `sealed` is already in the current format under the current key.
    pub fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.wrapped() == Ok(Wrapped::Key(self.key_id.clone()))
    }

    /// The same value under the current key. A v1 value keeps its data key
    /// and ciphertext (only the 32-byte key is re-wrapped); a legacy value is
    /// sealed afresh. The value is opened first either way, so a damaged one
    /// is reported instead of carried over. Returns `None` when it already is current.
    pub fn reseal(&self, sealed: &Sealed, context: &[u8]) -> Result<Option<Sealed>, CryptoError> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        let plain = self.open(sealed, context)?;
        match sealed.wrapped()? {
            Wrapped::Legacy => Ok(Some(self.seal(&plain, context))),
            Wrapped::Key(id) => {
                let (data_key, data_nonce) = unwrap(self.key(&id)?, &sealed.nonce)?;
                let header = wrap(&self.ring.keys[0], &data_key, &data_nonce);
                Ok(Some(Sealed { nonce: header, ciphertext: sealed.ciphertext.clone() }))
            }
        }
    }
}

fn wrap_aad(prefix: &[u8]) -> Vec<u8> {
    [WRAP_AAD, prefix].concat()
}

fn wrap(master: &MasterKey, data_key: &[u8], data_nonce: &[u8]) -> Vec<u8> {
    let wrap_nonce: [u8; NONCE_LEN] = random();
    let mut header = Vec::with_capacity(V1_HEADER_LEN);
    header.push(V1);
    header.extend_from_slice(&master.id);
    let wrapped = master
        .cipher
        .encrypt(Nonce::from_slice(&wrap_nonce), Payload { msg: data_key, aad: &wrap_aad(&header) })
        .expect("AES-GCM encryption does not fail for in-memory buffers");
    header.extend_from_slice(&wrap_nonce);
    header.extend_from_slice(&wrapped);
    header.extend_from_slice(data_nonce);
    debug_assert_eq!(header.len(), V1_HEADER_LEN);
    header
}

fn unwrap(master: &MasterKey, header: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let (prefix, rest) = header.split_at(1 + KEY_ID_LEN);
    let (wrap_nonce, rest) = rest.split_at(NONCE_LEN);
    let (wrapped, data_nonce) = rest.split_at(WRAPPED_LEN);
    let data_key = master
        .cipher
        .decrypt(Nonce::from_slice(wrap_nonce), Payload { msg: wrapped, aad: &wrap_aad(prefix) })
        .map_err(|_| CryptoError::Open)?;
    Ok((data_key, data_nonce.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    /// A value sealed the way the platform did before key ids (written out
    /// here rather than through `seal_legacy`, so the test pins the old format).
    fn legacy_seal(key: &[u8; 32], plaintext: &[u8], context: &[u8]) -> Sealed {
        let nonce: [u8; 12] = random();
        let ciphertext = Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context })
            .unwrap();
        Sealed { nonce: nonce.to_vec(), ciphertext }
    }

    #[test]
    fn seal_legacy_writes_the_old_format() {
        let b = SecretBox::from_bytes(&key(3));
        let s = b.seal_legacy(b"v", b"c");
        assert_eq!(s.wrapped(), Ok(Wrapped::Legacy));
        let old = Aes256Gcm::new_from_slice(&key(3)).unwrap();
        let plain = old.decrypt(Nonce::from_slice(&s.nonce), Payload { msg: &s.ciphertext, aad: b"c" }).unwrap();
        assert_eq!(plain, b"v");
    }

    #[test]
    fn sealed_values_open_only_with_key_and_context() {
        let b = SecretBox::from_hex(&"11".repeat(32)).unwrap();
        let s = b.seal(b"hunter2", b"secret:1");
        assert_eq!(s.nonce.len(), V1_HEADER_LEN);
        assert_eq!(s.wrapped(), Ok(Wrapped::Key(b.key_id.clone())));
        assert_ne!(s.ciphertext, b"hunter2");
        assert_eq!(b.open(&s, b"secret:1").unwrap(), b"hunter2");
        assert_eq!(b.open(&s, b"secret:2"), Err(CryptoError::Open));
        // Two seals of the same value differ (fresh data key and nonces).
        let again = b.seal(b"hunter2", b"secret:1");
        assert_ne!(again.nonce, s.nonce);
        assert_ne!(again.ciphertext, s.ciphertext);
    }

    #[test]
    fn another_key_names_the_key_the_value_needs() {
        let a = SecretBox::from_bytes(&key(1));
        let b = SecretBox::from_bytes(&key(2));
        let s = a.seal(b"x", b"c");
        let e = b.open(&s, b"c").unwrap_err();
        assert_eq!(e, CryptoError::UnknownKey(a.key_id.clone(), b.key_id.clone()));
        assert!(e.to_string().contains(&a.key_id), "{e}");
    }

    #[test]
    fn tampered_values_are_refused() {
        let b = SecretBox::from_keys(&[key(1), key(2)]);
        let s = b.seal(b"hunter2", b"ctx");
        // Any flipped bit of the ciphertext or of the header's wrap fails.
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 1;
            assert_eq!(b.open(&t, b"ctx"), Err(CryptoError::Open), "ciphertext byte {i}");
        }
        for i in 1 + KEY_ID_LEN..V1_HEADER_LEN {
            let mut t = s.clone();
            t.nonce[i] ^= 0x80;
            assert_eq!(b.open(&t, b"ctx"), Err(CryptoError::Open), "header byte {i}");
        }
        // The key id is authenticated: pointing it at the other configured key fails.
        let mut t = s.clone();
        t.nonce[1..5].copy_from_slice(&hex::decode(&b.key_ids()[1]).unwrap());
        assert_eq!(b.open(&t, b"ctx"), Err(CryptoError::Open));
        // A changed id that names no configured key says which one it asked for.
        let mut t = s.clone();
        t.nonce[1] ^= 1;
        assert!(matches!(b.open(&t, b"ctx"), Err(CryptoError::UnknownKey(..))));
        // Unknown version or length.
        let mut t = s.clone();
        t.nonce[0] = 9;
        assert_eq!(b.open(&t, b"ctx"), Err(CryptoError::Format(9, V1_HEADER_LEN)));
        let t = Sealed { nonce: s.nonce[..40].to_vec(), ciphertext: s.ciphertext.clone() };
        assert_eq!(b.open(&t, b"ctx"), Err(CryptoError::Format(1, 40)));
        let t = Sealed { nonce: vec![], ciphertext: vec![] };
        assert_eq!(b.open(&t, b"ctx"), Err(CryptoError::Format(0, 0)));
    }

    #[test]
    fn legacy_values_open_under_any_configured_key_and_reseal_as_v1() {
        let old = key(7);
        let legacy = legacy_seal(&old, b"from before", b"secret:s:K");
        assert_eq!(legacy.wrapped(), Ok(Wrapped::Legacy));
        // The old single-key box still opens it, and so does a keyring with a new key first.
        assert_eq!(SecretBox::from_bytes(&old).open(&legacy, b"secret:s:K").unwrap(), b"from before");
        let ring = SecretBox::from_keys(&[key(8), old]);
        assert_eq!(ring.open(&legacy, b"secret:s:K").unwrap(), b"from before");
        assert_eq!(ring.open(&legacy, b"secret:s:L"), Err(CryptoError::Open));
        let mut tampered = legacy.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(ring.open(&tampered, b"secret:s:K"), Err(CryptoError::Open));
        // Without the old key it does not open.
        assert_eq!(SecretBox::from_bytes(&key(8)).open(&legacy, b"secret:s:K"), Err(CryptoError::Open));

        let resealed = ring.reseal(&legacy, b"secret:s:K").unwrap().expect("re-sealed");
        assert!(ring.is_current(&resealed));
        assert_eq!(SecretBox::from_bytes(&key(8)).open(&resealed, b"secret:s:K").unwrap(), b"from before");
        assert_eq!(ring.reseal(&resealed, b"secret:s:K"), Ok(None));
    }

    #[test]
    fn rotation_rewraps_the_data_key_and_retirement_refuses_the_old_key() {
        let before = SecretBox::from_bytes(&key(1));
        let s = before.seal(b"v", b"c");
        let ring = SecretBox::from_keys(&[key(2), key(1)]);
        let old_id = before.key_id.clone();
        assert_eq!(ring.key_ids(), vec![ring.key_id.clone(), old_id.clone()]);
        assert!(!ring.is_current(&s));
        let r = ring.reseal(&s, b"c").unwrap().unwrap();
        // Only the wrap changed: same encrypted value.
        assert_eq!(r.ciphertext, s.ciphertext);
        assert_eq!(r.wrapped(), Ok(Wrapped::Key(ring.key_id.clone())));
        assert_eq!(SecretBox::from_bytes(&key(2)).open(&r, b"c").unwrap(), b"v");
        // A damaged value is reported, not carried over.
        let mut bad = s.clone();
        bad.ciphertext[0] ^= 1;
        assert_eq!(ring.reseal(&bad, b"c"), Err(CryptoError::Open));

        let clone = ring.clone();
        ring.retire([old_id.clone()]);
        assert_eq!(clone.open(&s, b"c"), Err(CryptoError::RetiredKey(old_id.clone())));
        assert!(clone.open(&s, b"c").unwrap_err().to_string().contains(&old_id));
        assert_eq!(clone.open(&r, b"c").unwrap(), b"v");
        // Legacy values under a retired key no longer open either.
        let legacy = legacy_seal(&key(1), b"v", b"c");
        assert_eq!(clone.open(&legacy, b"c"), Err(CryptoError::Open));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(SecretBox::from_hex("abc").unwrap_err(), CryptoError::BadKey);
        assert_eq!(SecretBox::from_hex(&"zz".repeat(32)).unwrap_err(), CryptoError::BadKey);
        assert_eq!(SecretBox::from_hex_list(&[]).unwrap_err(), CryptoError::BadKey);
        let b = SecretBox::from_hex_list(&[&"ab".repeat(32), &"ab".repeat(32)]).unwrap();
        assert_eq!(b.key_ids().len(), 1, "duplicates collapse");
    }

    #[test]
    fn key_ids_are_stable() {
        // Existing logs name keys by this id: the first 4 bytes of SHA-256(key).
        let b = SecretBox::from_bytes(&key(0x11));
        assert_eq!(b.key_id, hex::encode(&Sha256::digest([0x11u8; 32])[..4]));
        assert!(!format!("{b:?}").contains(&"11".repeat(8)));
    }
}

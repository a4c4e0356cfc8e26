//! Against real PostgreSQL: the generated key-id column reads the envelope,
//! batches move every value to the current key, retiring waits for zero.

use bmm_core::crypto::{Sealed, SecretBox};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::*;
use crate::schema::{orgs, secrets, servers, signing_keys};
use crate::testing::TestDb;

fn key(b: u8) -> [u8; 32] {
    [b; 32]
}

async fn server(conn: &mut AsyncPgConnection) -> (Uuid, Uuid) {
    let (org, server) = (Uuid::new_v4(), Uuid::new_v4());
    diesel::insert_into(orgs::table)
        .values((orgs::id.eq(org), orgs::name.eq("o"), orgs::slug.eq(format!("o-{}", org.simple()))))
        .execute(conn)
        .await
        .unwrap();
    diesel::insert_into(servers::table)
        .values((
            servers::id.eq(server),
            servers::org_id.eq(org),
            servers::slug.eq(format!("s{}", &server.simple().to_string()[..10])),
            servers::name.eq("s"),
        ))
        .execute(conn)
        .await
        .unwrap();
    (org, server)
}

async fn put(conn: &mut AsyncPgConnection, org: Uuid, server: Uuid, k: &str, sealed: &Sealed) {
    diesel::insert_into(secrets::table)
        .values((
            secrets::id.eq(Uuid::now_v7()),
            secrets::org_id.eq(org),
            secrets::server_id.eq(server),
            secrets::key.eq(k),
            secrets::nonce.eq(&sealed.nonce),
            secrets::ciphertext.eq(&sealed.ciphertext),
        ))
        .execute(conn)
        .await
        .unwrap();
}

async fn put_signing_key(conn: &mut AsyncPgConnection, kid: &str, sealed: &Sealed) {
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(kid),
            signing_keys::private_nonce.eq(&sealed.nonce),
            signing_keys::private_sealed.eq(&sealed.ciphertext),
            signing_keys::public_jwk.eq(serde_json::json!({})),
        ))
        .execute(conn)
        .await
        .unwrap();
}

async fn open_all(conn: &mut AsyncPgConnection, sb: &SecretBox) -> Vec<String> {
    let rows: Vec<(Uuid, String, Vec<u8>, Vec<u8>)> = secrets::table
        .select((secrets::server_id, secrets::key, secrets::nonce, secrets::ciphertext))
        .order(secrets::key.asc())
        .load(conn)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(server, k, nonce, ciphertext)| {
            let plain = sb.open(&Sealed { nonce, ciphertext }, format!("secret:{server}:{k}").as_bytes()).unwrap();
            String::from_utf8(plain).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn batches_move_every_value_to_the_current_key_and_then_the_old_one_retires() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = pool.get().await.unwrap();
    let old = SecretBox::from_bytes(&key(1));
    let (org, srv) = server(&mut conn).await;
    // Seven values under the old key: some from before key ids, some v1.
    for i in 0..7 {
        let ctx = format!("secret:{srv}:K{i}");
        let sealed = if i % 2 == 0 {
            old.seal_legacy(format!("v{i}").as_bytes(), ctx.as_bytes())
        } else {
            old.seal(format!("v{i}").as_bytes(), ctx.as_bytes())
        };
        put(&mut conn, org, srv, &format!("K{i}"), &sealed).await;
    }
    put_signing_key(&mut conn, "kid-1", &old.seal_legacy(b"der", b"kid-1")).await;
    let c = counts(&mut conn).await.unwrap();
    assert_eq!(
        c,
        vec![
            KeyCount { table: "secrets".into(), key_id: Some(old.key_id.clone()), values: 3 },
            KeyCount { table: "secrets".into(), key_id: None, values: 4 },
            KeyCount { table: "signing_keys".into(), key_id: None, values: 1 },
        ]
    );

    let ring = SecretBox::from_keys(&[key(2), key(1)]);
    assert_eq!(remaining(&mut conn, &ring.key_id).await.unwrap(), 8);
    // Not before every value moved.
    let e = retire_old_keys(&mut conn, &ring, "rot-1").await.unwrap_err();
    assert!(matches!(e, RetireError::NotDone(8, _)), "{e}");
    let mut total = 0;
    let mut batches = 0;
    loop {
        let b = rewrap_batch(&mut conn, &ring, 3).await.unwrap();
        assert!(b.unreadable.is_empty(), "{:?}", b.unreadable);
        total += b.rewrapped;
        batches += 1;
        if remaining(&mut conn, &ring.key_id).await.unwrap() == 0 {
            break;
        }
        assert!(batches < 10, "no progress");
    }
    assert_eq!(total, 8);
    assert_eq!(batches, 3, "3 + 3 + 1 secrets, the signing key in the first");
    assert_eq!(rewrap_batch(&mut conn, &ring, 3).await.unwrap(), Batch::default());
    assert_eq!(
        counts(&mut conn).await.unwrap(),
        vec![
            KeyCount { table: "secrets".into(), key_id: Some(ring.key_id.clone()), values: 7 },
            KeyCount { table: "signing_keys".into(), key_id: Some(ring.key_id.clone()), values: 1 },
        ]
    );
    // The new key alone opens everything.
    let new_only = SecretBox::from_bytes(&key(2));
    assert_eq!(open_all(&mut conn, &new_only).await, (0..7).map(|i| format!("v{i}")).collect::<Vec<_>>());

    // Another process still configured with both keys.
    let other = SecretBox::from_keys(&[key(2), key(1)]);
    let stale_value = old.seal(b"stale", b"c");
    assert_eq!(other.open(&stale_value, b"c").unwrap(), b"stale");
    assert_eq!(retire_old_keys(&mut conn, &ring, "rot-1").await.unwrap(), vec![old.key_id.clone()]);
    assert!(ring.is_retired(&old.key_id));
    apply_retired(&pool, &other).await.unwrap();
    assert_eq!(other.open(&stale_value, b"c"), Err(bmm_core::crypto::CryptoError::RetiredKey(old.key_id.clone())));
    // Retiring again is a no-op; a process whose first key was retired refuses to run.
    assert_eq!(retire_old_keys(&mut conn, &ring, "rot-1").await.unwrap(), Vec::<String>::new());
    let e = apply_retired(&pool, &SecretBox::from_keys(&[key(1), key(2)])).await.unwrap_err();
    assert!(e.to_string().contains(&format!("first key of BMM_SECRET_KEY ({})", old.key_id)), "{e}");
    let r = list_retired(&mut conn).await.unwrap();
    assert_eq!(
        (r[0].key_id.as_str(), r[0].successor.as_str(), r[0].rotation.as_str()),
        (old.key_id.as_str(), ring.key_id.as_str(), "rot-1")
    );
    // Rotating back onto a retired key is refused.
    let e = retire_old_keys(&mut conn, &SecretBox::from_keys(&[key(1), key(2)]), "rot-2").await.unwrap_err();
    assert!(matches!(e, RetireError::CurrentRetired(_)), "{e}");
}

#[tokio::test]
async fn values_no_configured_key_opens_are_named_and_left_alone() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = pool.get().await.unwrap();
    let (org, srv) = server(&mut conn).await;
    let stranger = SecretBox::from_bytes(&key(9));
    let ring = SecretBox::from_keys(&[key(2), key(1)]);
    put(&mut conn, org, srv, "LOST", &stranger.seal(b"x", format!("secret:{srv}:LOST").as_bytes())).await;
    put(&mut conn, org, srv, "OK", &SecretBox::from_bytes(&key(1)).seal(b"y", format!("secret:{srv}:OK").as_bytes()))
        .await;
    let b = rewrap_batch(&mut conn, &ring, 10).await.unwrap();
    assert_eq!(b.rewrapped, 1);
    assert_eq!(b.unreadable.len(), 1);
    assert!(
        b.unreadable[0]
            .starts_with(&format!("secret LOST of server {srv}: sealed under master key {}", stranger.key_id)),
        "{:?}",
        b.unreadable
    );
    assert_eq!(remaining(&mut conn, &ring.key_id).await.unwrap(), 1);
    assert!(matches!(retire_old_keys(&mut conn, &ring, "r").await, Err(RetireError::NotDone(1, _))));
}

//! The content-addressed blob store (`blobs` table): rendered sources and
//! bundles, keyed by the `sha256:<hex>` of their bytes and shared by every
//! worker. Workflow history carries only the digests.

use bmm_db::schema::blobs;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::{StepError, kind};

/// Media type of a rendered source tree: a JSON object of relative path → file contents.
pub const SOURCE_TREE: &str = "application/vnd.bmm.source-tree+json";
/// Media type of a bundled server: one ES module.
pub const BUNDLE: &str = "text/javascript";

/// Store `data` and return its digest. Storing the same bytes twice is a no-op.
pub async fn put(conn: &mut AsyncPgConnection, media_type: &str, data: &[u8]) -> Result<String, StepError> {
    let digest = bmm_core::digest::sha256(data);
    diesel::insert_into(blobs::table)
        .values((blobs::digest.eq(&digest), blobs::media_type.eq(media_type), blobs::data.eq(data)))
        .on_conflict(blobs::digest)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(digest)
}

/// The bytes stored under `digest`, checked against it.
pub async fn get(conn: &mut AsyncPgConnection, digest: &str) -> Result<Vec<u8>, StepError> {
    if !bmm_core::digest::is_digest(digest) {
        return Err(StepError::rejected(kind::MISSING, format!("{digest:?} is not a content digest")));
    }
    let data: Option<Vec<u8>> =
        blobs::table.filter(blobs::digest.eq(digest)).select(blobs::data).first(conn).await.optional()?;
    let data = data.ok_or_else(|| StepError::rejected(kind::MISSING, format!("blob {digest} is not stored")))?;
    // A damaged row must not be deployed: the digest is the promise.
    if bmm_core::digest::sha256(&data) != digest {
        return Err(StepError::rejected(kind::MISSING, format!("blob {digest} is damaged (digest mismatch)")));
    }
    Ok(data)
}

/// Whether `digest` is stored.
pub async fn exists(conn: &mut AsyncPgConnection, digest: &str) -> Result<bool, StepError> {
    let n: i64 = blobs::table.filter(blobs::digest.eq(digest)).count().get_result(conn).await?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bmm_db::testing::TestDb;

    #[tokio::test]
    async fn blobs_round_trip_by_digest_and_refuse_damage() {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut conn = pool.get().await.unwrap();
        let d = put(&mut conn, BUNDLE, b"export {}").await.unwrap();
        assert_eq!(d, bmm_core::digest::sha256(b"export {}"));
        assert_eq!(put(&mut conn, BUNDLE, b"export {}").await.unwrap(), d, "idempotent");
        assert_eq!(get(&mut conn, &d).await.unwrap(), b"export {}");
        assert!(exists(&mut conn, &d).await.unwrap());

        let missing = bmm_core::digest::sha256(b"nothing");
        assert_eq!(get(&mut conn, &missing).await.unwrap_err().kind(), kind::MISSING);
        assert_eq!(get(&mut conn, "md5:abc").await.unwrap_err().kind(), kind::MISSING);

        diesel::update(blobs::table.filter(blobs::digest.eq(&d)))
            .set(blobs::data.eq(b"tampered".to_vec()))
            .execute(&mut conn)
            .await
            .unwrap();
        let err = get(&mut conn, &d).await.unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}

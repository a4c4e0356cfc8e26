//! Migrations embedded in the binary, applied by `bmm migrate` and at API start.

use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::DbError;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

type Wrapper = AsyncConnectionWrapper<AsyncPgConnection>;

async fn with_harness<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut Wrapper) -> Result<T, String> + Send + 'static,
) -> Result<T, DbError> {
    use diesel::Connection;
    let url = url.to_owned();
    // The harness is synchronous; it runs on a blocking thread with its own connection.
    tokio::task::spawn_blocking(move || {
        let mut conn = Wrapper::establish(&url).map_err(|e| DbError::Unavailable(e.to_string()))?;
        f(&mut conn).map_err(DbError::Migration)
    })
    .await
    .map_err(|e| DbError::Migration(e.to_string()))?
}

/// Apply every pending migration; returns the versions applied.
pub async fn run_pending(url: &str) -> Result<Vec<String>, DbError> {
    with_harness(url, |c| {
        c.run_pending_migrations(MIGRATIONS)
            .map(|v| v.into_iter().map(|m| m.to_string()).collect())
            .map_err(|e| e.to_string())
    })
    .await
}

/// Revert every applied migration (tests and `bmm migrate --down-all`).
pub async fn revert_all(url: &str) -> Result<Vec<String>, DbError> {
    with_harness(url, |c| {
        c.revert_all_migrations(MIGRATIONS)
            .map(|v| v.into_iter().map(|m| m.to_string()).collect())
            .map_err(|e| e.to_string())
    })
    .await
}

/// Versions not yet applied.
pub async fn pending(url: &str) -> Result<Vec<String>, DbError> {
    with_harness(url, |c| {
        c.pending_migrations(MIGRATIONS)
            .map(|v| v.into_iter().map(|m| m.name().to_string()).collect())
            .map_err(|e| e.to_string())
    })
    .await
}

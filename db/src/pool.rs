//! The connection pool (diesel-async over deadpool).

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::{self, Object};

pub type Pool = deadpool::Pool<AsyncPgConnection>;
pub type Conn = Object<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<deadpool::PoolError> for DbError {
    fn from(e: deadpool::PoolError) -> Self {
        DbError::Unavailable(e.to_string())
    }
}

/// A pool of `size` connections to `url`. Connections are made lazily; call
/// [`check`] to fail fast at start.
pub fn connect(url: &str, size: usize) -> Result<Pool, DbError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    deadpool::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .runtime(::deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Take a connection and run `SELECT 1`.
pub async fn check(pool: &Pool) -> Result<(), DbError> {
    use diesel_async::RunQueryDsl;
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

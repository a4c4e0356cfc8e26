//! One isolated database per test, created from a migrated template, dropped
//! when the guard drops. Tests run in parallel against real PostgreSQL.
//!
//! The server is `BMM_TEST_DATABASE_URL` (any database on it; default
//! `postgres://bmm@127.0.0.1:55432/postgres`, the cluster `scripts/stack.sh` starts).

use tokio_postgres::NoTls;

use crate::{Pool, connect};

pub const MIGRATIONS_DIGEST: &str = env!("BMM_MIGRATIONS_DIGEST");

pub fn admin_url() -> String {
    std::env::var("BMM_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://bmm@127.0.0.1:55432/postgres".to_owned())
}

fn url_with_db(admin: &str, db: &str) -> String {
    let mut u = url::Url::parse(admin).expect("BMM_TEST_DATABASE_URL is a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("test PostgreSQL at {url} is not reachable ({e}); run scripts/stack.sh services"));
    tokio::spawn(conn);
    client
}

/// The migrated template, made once per migrations digest (under an advisory
/// lock, since test processes race for it).
pub async fn template() -> String {
    let admin = admin_url();
    let name = format!("bmm_tpl_{MIGRATIONS_DIGEST}");
    let client = admin_client(&admin).await;
    client.execute("SELECT pg_advisory_lock(727274)", &[]).await.expect("lock");
    let row = client
        .query_opt("SELECT datistemplate FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("query pg_database");
    let ready = matches!(row, Some(r) if r.get::<_, bool>(0));
    if !ready {
        client
            .execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"), &[])
            .await
            .expect("drop stale template");
        client.execute(&format!("CREATE DATABASE \"{name}\""), &[]).await.expect("create template");
        crate::migrate::run_pending(&url_with_db(&admin, &name)).await.expect("migrate template");
        client.execute(&format!("ALTER DATABASE \"{name}\" WITH IS_TEMPLATE true"), &[]).await.expect("mark template");
    }
    client.execute("SELECT pg_advisory_unlock(727274)", &[]).await.expect("unlock");
    name
}

impl TestDb {
    /// A fresh, migrated database of its own.
    pub async fn new() -> TestDb {
        let tpl = template().await;
        let admin = admin_url();
        let name = format!("bmm_test_{}", uuid::Uuid::new_v4().simple());
        let client = admin_client(&admin).await;
        client
            .execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{tpl}\""), &[])
            .await
            .expect("create test database");
        TestDb { url: url_with_db(&admin, &name), name, admin }
    }

    /// An empty database with no migrations applied (for migration tests).
    pub async fn empty() -> TestDb {
        let admin = admin_url();
        let name = format!("bmm_test_{}", uuid::Uuid::new_v4().simple());
        admin_client(&admin).await.execute(&format!("CREATE DATABASE \"{name}\""), &[]).await.expect("create");
        TestDb { url: url_with_db(&admin, &name), name, admin }
    }

    pub fn pool(&self) -> Pool {
        connect(&self.url, 8).expect("pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: do the work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"), &[]).await;
                }
            });
        })
        .join();
    }
}

/// Run a test body on a runtime whose threads have room: signing with the
/// unoptimised RSA code of a debug build can overflow the default 2 MiB stack.
pub fn run_with_big_stack(test: impl std::future::Future<Output = ()> + Send + 'static) {
    const STACK: usize = 32 * 1024 * 1024;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(test)
        })
        .expect("test thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

//! The route table: slug → the server and its LIVE deployment's address, held
//! in memory, loaded from PostgreSQL, refreshed on `NOTIFY bmm_routes` (one
//! LISTEN connection per process, reconnecting) and on a miss.
//!
//! `cut_over` is the one place a deployment becomes LIVE.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bmm_db::models::Deployment;
use bmm_db::schema::{deployments, servers};
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use tokio::sync::{Mutex, RwLock, watch};
use uuid::Uuid;

/// The NOTIFY channel a cut-over announces on; payload: the server id.
pub const ROUTES_CHANNEL: &str = "bmm_routes";
/// How long an unknown slug is answered from memory before the database is asked again.
const MISS_MEMORY: Duration = Duration::from_secs(1);
/// How long a known server without a LIVE deployment is answered from memory.
const NOT_LIVE_RECHECK: Duration = Duration::from_millis(250);
/// Slugs whose last database check is remembered, at most.
const CHECKED_CAPACITY: usize = 10_000;

/// Where a LIVE deployment is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub deployment_id: Uuid,
    pub host: String,
    pub port: u16,
}

/// One server as the gateway knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRoute {
    pub server_id: Uuid,
    pub org_id: Uuid,
    pub slug: String,
    /// None while the server has no LIVE deployment (building, failed, stopped).
    pub live: Option<Upstream>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route table unavailable: {0}")]
    Unavailable(String),
}

struct Inner {
    pool: bmm_db::Pool,
    routes: RwLock<HashMap<String, ServerRoute>>,
    /// Serialises reloads.
    reload: Mutex<()>,
    /// When each slug was last read from the database on a miss.
    checked: Mutex<HashMap<String, Instant>>,
    listening: watch::Sender<bool>,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct RouteTable {
    inner: Arc<Inner>,
}

impl RouteTable {
    /// An empty table; call [`RouteTable::reload`] or [`RouteTable::listen`] to fill it.
    pub fn new(pool: bmm_db::Pool) -> RouteTable {
        let (listening, _) = watch::channel(false);
        RouteTable {
            inner: Arc::new(Inner {
                pool,
                routes: RwLock::new(HashMap::new()),
                reload: Mutex::new(()),
                checked: Mutex::new(HashMap::new()),
                listening,
            }),
        }
    }

    /// The route of `slug` from memory.
    pub async fn get(&self, slug: &str) -> Option<ServerRoute> {
        self.inner.routes.read().await.get(slug).cloned()
    }

    /// The route of `slug`. A LIVE route comes from memory (a cut-over always
    /// notifies, and a dead container answers 502 and triggers a reload). A
    /// slug the table does not know (created since the last reload) or knows as
    /// not live (a cut-over whose notification is still on its way) is read
    /// from the database, at most every [`MISS_MEMORY`] / [`NOT_LIVE_RECHECK`]
    /// per slug, so junk requests do not each cost a query.
    pub async fn lookup(&self, slug: &str) -> Result<Option<ServerRoute>, RouteError> {
        match self.get(slug).await {
            Some(r) if r.live.is_some() => return Ok(Some(r)),
            Some(r) => {
                if self.checked_within(slug, NOT_LIVE_RECHECK).await {
                    return Ok(Some(r));
                }
            }
            None => {
                if self.checked_within(slug, MISS_MEMORY).await {
                    return Ok(None);
                }
            }
        }
        let mut conn = self.inner.pool.get().await.map_err(|e| RouteError::Unavailable(e.to_string()))?;
        let fresh = load_routes(&mut conn, Some(slug)).await?.remove(slug);
        drop(conn);
        let mut routes = self.inner.routes.write().await;
        let mut checked = self.inner.checked.lock().await;
        match &fresh {
            Some(r) => {
                routes.insert(slug.to_owned(), r.clone());
            }
            None => {
                routes.remove(slug);
            }
        }
        if checked.len() >= CHECKED_CAPACITY {
            checked.retain(|_, t| t.elapsed() < MISS_MEMORY);
            if checked.len() >= CHECKED_CAPACITY {
                checked.clear();
            }
        }
        checked.insert(slug.to_owned(), Instant::now());
        Ok(fresh)
    }

    async fn checked_within(&self, slug: &str, within: Duration) -> bool {
        self.inner.checked.lock().await.get(slug).is_some_and(|t| t.elapsed() < within)
    }

    /// Load every non-deleted server and its LIVE deployment.
    pub async fn reload(&self) -> Result<usize, RouteError> {
        let _serial = self.inner.reload.lock().await;
        let mut conn = self.inner.pool.get().await.map_err(|e| RouteError::Unavailable(e.to_string()))?;
        let table = load_routes(&mut conn, None).await?;
        let n = table.len();
        *self.inner.routes.write().await = table;
        self.inner.checked.lock().await.clear();
        Ok(n)
    }

    /// Whether the LISTEN connection is up (for readiness).
    pub fn is_listening(&self) -> bool {
        *self.inner.listening.borrow()
    }

    /// Wait until the LISTEN connection is up, at most `timeout`.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.listening.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok())
    }

    /// Keep the table fresh: LISTEN on [`ROUTES_CHANNEL`] over a connection of
    /// its own, reload on every notification and after every (re)connect.
    /// Runs until the task is aborted.
    pub fn listen(&self, database_url: &str) -> tokio::task::JoinHandle<()> {
        let table = self.clone();
        let url = database_url.to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                match table.listen_once(&url).await {
                    Ok(()) => backoff = Duration::from_millis(250),
                    Err(e) => tracing::warn!(error = %e, "route listener lost its connection; reconnecting"),
                }
                table.inner.listening.send_replace(false);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        })
    }

    async fn listen_once(&self, url: &str) -> Result<(), tokio_postgres::Error> {
        let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(Some(n.payload().to_owned())).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(None);
                        return Err(e);
                    }
                }
            }
            let _ = tx.send(None);
            Ok(())
        });
        let result = async {
            client.batch_execute(&format!("LISTEN {ROUTES_CHANNEL}")).await?;
            // Notifications sent while we were away are lost: reload everything.
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "route reload after LISTEN failed");
            }
            self.inner.listening.send_replace(true);
            tracing::debug!("route listener is up");
            while let Some(Some(payload)) = rx.recv().await {
                // Coalesce a burst of notifications into one reload.
                while let Ok(Some(_)) = rx.try_recv() {}
                tracing::debug!(server = %payload, "routes changed");
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "route reload failed");
                }
            }
            Ok::<(), tokio_postgres::Error>(())
        }
        .await;
        driver.abort();
        match driver.await {
            Ok(Err(e)) => Err(e),
            _ => result,
        }
    }
}

/// server id, org id, slug, LIVE deployment id, host, port.
type RouteRow = (Uuid, Uuid, String, Option<Uuid>, Option<String>, Option<i32>);

/// Servers (one `slug`, or all) with their LIVE deployment, by slug.
async fn load_routes(
    conn: &mut AsyncPgConnection,
    slug: Option<&str>,
) -> Result<HashMap<String, ServerRoute>, RouteError> {
    let mut query = servers::table
        .left_join(deployments::table.on(deployments::server_id.eq(servers::id).and(deployments::status.eq("LIVE"))))
        .filter(servers::deleted_at.is_null())
        .order(deployments::live_at.asc().nulls_first())
        .select((
            servers::id,
            servers::org_id,
            servers::slug,
            deployments::id.nullable(),
            deployments::host.nullable(),
            deployments::port.nullable(),
        ))
        .into_boxed();
    if let Some(slug) = slug {
        query = query.filter(servers::slug.eq(slug.to_owned()));
    }
    let rows: Vec<RouteRow> = query.load(conn).await.map_err(|e| RouteError::Unavailable(e.to_string()))?;
    let mut table = HashMap::with_capacity(rows.len());
    // Ordered by live_at, so a later LIVE row (should two ever exist) wins.
    for (server_id, org_id, slug, dep, host, port) in rows {
        let live = match (dep, host, port.and_then(|p| u16::try_from(p).ok())) {
            (Some(deployment_id), Some(host), Some(port)) => Some(Upstream { deployment_id, host, port }),
            (Some(deployment_id), _, _) => {
                tracing::warn!(%deployment_id, slug, "LIVE deployment has no host/port; not routed");
                None
            }
            _ => None,
        };
        let entry = table.entry(slug.clone()).or_insert(ServerRoute { server_id, org_id, slug, live: None });
        if live.is_some() {
            entry.live = live;
        }
    }
    Ok(table)
}

/// Make `new_deployment_id` the LIVE deployment of `server_id`, in one
/// transaction: the previous LIVE one becomes DRAINING, the server points at
/// the new version and is LIVE, and every gateway is told (NOTIFY, delivered
/// on commit). Returns the previous LIVE deployment (now DRAINING), if any.
///
/// Idempotent: cutting over to the deployment that is already LIVE changes
/// nothing and returns `None`. `NotFound` when the deployment is not this server's.
pub async fn cut_over(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    new_deployment_id: Uuid,
) -> QueryResult<Option<Deployment>> {
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        async move {
            // Serialise concurrent cut-overs of one server.
            let _locked: Uuid =
                servers::table.find(server_id).select(servers::id).for_update().get_result(conn).await?;
            let new: Deployment = deployments::table
                .find(new_deployment_id)
                .filter(deployments::server_id.eq(server_id))
                .select(Deployment::as_select())
                .get_result(conn)
                .await?;
            if new.status == "LIVE" {
                return Ok(None);
            }
            let previous: Vec<Deployment> = diesel::update(
                deployments::table
                    .filter(deployments::server_id.eq(server_id))
                    .filter(deployments::status.eq("LIVE"))
                    .filter(deployments::id.ne(new_deployment_id)),
            )
            .set(deployments::status.eq("DRAINING"))
            .returning(Deployment::as_returning())
            .get_results(conn)
            .await?;
            diesel::update(deployments::table.find(new_deployment_id))
                .set((deployments::status.eq("LIVE"), deployments::live_at.eq(diesel::dsl::now)))
                .execute(conn)
                .await?;
            diesel::update(servers::table.find(server_id))
                .set((
                    servers::current_version_id.eq(new.version_id),
                    servers::status.eq("LIVE"),
                    // A new live version starts healthy: whatever kept the old one down is history.
                    servers::status_reason.eq(None::<String>),
                    servers::status_changed_at.eq(diesel::dsl::now),
                    servers::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            notify_routes(conn, server_id).await?;
            Ok(previous.into_iter().max_by_key(|d| d.live_at))
        }
        .scope_boxed()
    })
    .await
}

/// Tell every gateway that `server_id`'s route changed (delivered on commit).
pub async fn notify_routes(conn: &mut AsyncPgConnection, server_id: Uuid) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<diesel::sql_types::Text, _>(ROUTES_CHANNEL)
        .bind::<diesel::sql_types::Text, _>(server_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

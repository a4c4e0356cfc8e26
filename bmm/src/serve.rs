//! The long-running processes: `bmm api`, `bmm worker`, and `bmm dev` (both
//! in one process). Each stops gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bmm_core::Config;
use tokio::sync::watch;

/// Resolve the folders other processes (Docker's bind mounts) must find.
fn absolute_paths(cfg: Arc<Config>) -> anyhow::Result<Arc<Config>> {
    let mut c = (*cfg).clone();
    std::fs::create_dir_all(&c.data_dir).with_context(|| format!("creating BMM_DATA_DIR {}", c.data_dir.display()))?;
    c.data_dir = std::fs::canonicalize(&c.data_dir)?;
    if c.toolchain_dir.is_relative() {
        c.toolchain_dir = std::env::current_dir()?.join(&c.toolchain_dir);
    }
    Ok(Arc::new(c))
}

/// Resolves on SIGTERM or SIGINT; every clone sees it.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Temporal may still be starting (the scripts start it right before us).
async fn connect_temporal(cfg: &Config) -> anyhow::Result<bmm_workflows::client::TemporalClient> {
    let mut last = None;
    for _ in 0..30 {
        match bmm_workflows::client::connect(cfg).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last.expect("at least one attempt")).context("connecting to Temporal (scripts/stack.sh temporal)")
}

async fn start_api(cfg: Arc<Config>, pool: bmm_db::Pool, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let applied = bmm_db::migrate::run_pending(&cfg.database_url).await.context("applying migrations")?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    let _retired = watch_retired_keys(&cfg, &pool).await?;
    let temporal = connect_temporal(&cfg).await?;
    let state = bmm_graphql_api::AppState::new(cfg.clone(), pool, Some(temporal));
    state.keys.init().await.context("publishing the signing keys")?;
    let _maintenance = state.keys.spawn_maintenance(Duration::from_secs(60));
    let app = bmm_graphql_api::app(state);
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, public_url = %cfg.public_url, "API listening");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(wait(stop))
        .await
        .context("serving HTTP")
}

async fn start_worker(cfg: Arc<Config>, pool: bmm_db::Pool, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let _retired = watch_retired_keys(&cfg, &pool).await?;
    // The worker mints smoke-test tokens and publishes the JWKS the containers read.
    let keys = bmm_auth::KeyStore::new(pool.clone(), cfg.clone());
    keys.init().await.context("publishing the signing keys")?;
    bmm_workflows::worker::run_worker(cfg, pool, wait(stop)).await.context("build worker")
}

fn pool(cfg: &Config) -> anyhow::Result<bmm_db::Pool> {
    bmm_db::connect(&cfg.database_url, cfg.database_pool_size).context("PostgreSQL pool")
}

/// Refuse the master keys a finished rotation retired, now and as other
/// rotations finish (a process whose first key was retired does not start).
async fn watch_retired_keys(cfg: &Config, pool: &bmm_db::Pool) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use bmm_db::master_keys::RetireError;
    match bmm_db::master_keys::apply_retired(pool, &cfg.secret_box).await {
        Ok(()) => {}
        Err(e @ RetireError::CurrentRetired(_)) => return Err(e).context("BMM_SECRET_KEY"),
        // The database may not be migrated yet (the API migrates); the refresh below retries.
        Err(e) => tracing::warn!(error = %e, "the retired master keys could not be read yet"),
    }
    Ok(bmm_db::master_keys::spawn_refresh(pool.clone(), cfg.secret_box.clone(), Duration::from_secs(30)))
}

pub async fn api(cfg: Arc<Config>) -> anyhow::Result<()> {
    let cfg = absolute_paths(cfg)?;
    let _telemetry = crate::telemetry::init(&cfg, "bmm-api")?;
    start_api(cfg.clone(), pool(&cfg)?, shutdown_signal()).await
}

pub async fn worker(cfg: Arc<Config>) -> anyhow::Result<()> {
    let cfg = absolute_paths(cfg)?;
    let _telemetry = crate::telemetry::init(&cfg, "bmm-worker")?;
    start_worker(cfg.clone(), pool(&cfg)?, shutdown_signal()).await
}

pub async fn dev(cfg: Arc<Config>) -> anyhow::Result<()> {
    let cfg = absolute_paths(cfg)?;
    let _telemetry = crate::telemetry::init(&cfg, "bmm")?;
    let stop = shutdown_signal();
    let pool = pool(&cfg)?;
    // Migrate before the worker touches the database.
    bmm_db::migrate::run_pending(&cfg.database_url).await.context("applying migrations")?;
    // The SDK's worker future is not Send, so both run in this task; each
    // spawns its own tasks for the real work.
    let worker = start_worker(cfg.clone(), pool.clone(), stop.clone());
    let api = start_api(cfg, pool, stop.clone());
    // Whichever fails first ends the process; a clean stop waits for both.
    tokio::pin!(api, worker);
    tokio::select! {
        r = &mut api => {
            r?;
            worker.await
        }
        r = &mut worker => {
            r?;
            api.await
        }
    }
}

//! A standalone build worker (`bmm worker` runs the same thing): reads the
//! configuration from the environment, runs until SIGINT/SIGTERM.

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    let cfg = match bmm_core::Config::from_env() {
        Ok(cfg) => Arc::new(cfg),
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The master key is read; nothing this worker starts may inherit it.
    for var in bmm_core::master_key::SECRET_ENV {
        // SAFETY: still single-threaded (the runtime is built below), so
        // nothing reads the environment while it changes.
        unsafe { std::env::remove_var(var) };
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime").block_on(run(cfg))
}

async fn run(cfg: Arc<bmm_core::Config>) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,temporalio_sdk_core=warn".into()),
        )
        .init();
    let pool = match bmm_db::connect(&cfg.database_url, cfg.database_pool_size) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("database: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // A finished rotation's retired keys are refused here too.
    if let Err(e) = bmm_db::master_keys::apply_retired(&pool, &cfg.secret_box).await {
        eprintln!("BMM_SECRET_KEY: {e}");
        return std::process::ExitCode::from(2);
    }
    let _retired =
        bmm_db::master_keys::spawn_refresh(pool.clone(), cfg.secret_box.clone(), std::time::Duration::from_secs(5));
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match bmm_workflows::worker::run_worker(cfg, pool, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

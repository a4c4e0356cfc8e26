//! The build worker: polls the build task queue and runs [`BuildWorkflow`]
//! and the activities of `bmm-activities` until asked to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bmm_activities::BuildActivities;
use bmm_core::Config;
use temporalio_client::{Client, Connection, ConnectionOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::{BuildWorkflow, ReconcileWorkflow};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("Temporal at {address} is unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error("the worker could not start: {0}")]
    Start(String),
    #[error("the worker stopped: {0}")]
    Run(String),
}

/// Stack size of the worker's threads. The SDK's workflow machinery and the
/// build steps (compiler output, failure conversion) nest deep enough in
/// debug builds to overflow tokio's default 2 MiB.
const WORKER_STACK: usize = 8 * 1024 * 1024;

/// Run the worker on `cfg.temporal_task_queue` until `shutdown` resolves;
/// in-flight activities then get a grace period to finish.
///
/// The worker runs on a runtime of its own (threads with large stacks), so
/// the returned future is `Send` and may be spawned like any other task.
pub async fn run_worker(
    cfg: Arc<Config>,
    pool: bmm_db::Pool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    run_worker_with(BuildActivities::new(cfg.clone(), pool), shutdown).await
}

/// [`run_worker`] with activities of the caller's making (tests pick the generator).
pub async fn run_worker_with(
    activities: BuildActivities,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bmm-build-worker".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_multi_thread()
                .thread_name("bmm-build")
                .thread_stack_size(WORKER_STACK)
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run_here(activities, async {
                    let _ = stop_rx.await;
                })),
                Err(e) => Err(WorkerError::Start(format!("no runtime for the worker: {e}"))),
            };
            let _ = done_tx.send(result);
        })
        .map_err(|e| WorkerError::Start(format!("no thread for the worker: {e}")))?;
    let mut done = done_rx;
    tokio::select! {
        result = &mut done => result.unwrap_or_else(|_| Err(WorkerError::Run("the worker thread panicked".into()))),
        () = shutdown => {
            let _ = stop_tx.send(());
            done.await.unwrap_or_else(|_| Err(WorkerError::Run("the worker thread panicked".into())))
        }
    }
}

/// The SDK worker on the current runtime (its future is not `Send`).
async fn run_here(
    activities: BuildActivities,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let cfg = activities.cfg.clone();
    let keys = bmm_activities::KeyActivities::new(cfg.clone(), activities.pool.clone());
    let runtime = Runtime::from_current_tokio(Default::default()).map_err(|e| WorkerError::Start(e.to_string()))?;
    let unreachable = |message: String| WorkerError::Unreachable { address: cfg.temporal_address.to_string(), message };
    let conn_opts =
        ConnectionOptions::new(cfg.temporal_address.clone()).identity(crate::client::identity("worker")).build();
    let connection = Connection::connect(conn_opts).await.map_err(|e| unreachable(e.to_string()))?;
    let client =
        Client::new(connection, crate::client::client_options(&cfg)).map_err(|e| unreachable(e.to_string()))?;

    // Durable and single however many workers start: the first starts it, the rest find it.
    match crate::client::ensure_reconciler(&client, &cfg).await {
        Ok(run) => tracing::info!(workflow = %crate::client::reconciler_id(&cfg), run, "reconciler running"),
        Err(e) => tracing::warn!(error = %e, "could not start the reconciler; servers are not restored"),
    }
    let options = WorkerOptions::new(cfg.temporal_task_queue.clone())
        .register_workflow::<BuildWorkflow>()
        .map_err(|e| WorkerError::Start(e.to_string()))?
        .register_workflow::<ReconcileWorkflow>()
        .map_err(|e| WorkerError::Start(e.to_string()))?
        .register_activities(activities)
        .register_workflow::<crate::MasterKeyRotationWorkflow>()
        .map_err(|e| WorkerError::Start(e.to_string()))?
        .register_activities(keys)
        // After a worker dies, its sticky queue holds the next workflow task
        // until this expires; keep it short so another worker takes over fast.
        .sticky_queue_schedule_to_start_timeout(Duration::from_secs(3))
        .graceful_shutdown_period(Duration::from_secs(20))
        .build();
    let mut worker = Worker::new(&runtime, client, options).map_err(|e| WorkerError::Start(e.to_string()))?;
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("build worker shutting down");
        stop();
    });
    tracing::info!(task_queue = %cfg.temporal_task_queue, "build worker running");
    worker.run().await.map_err(|e| WorkerError::Run(e.to_string()))
}

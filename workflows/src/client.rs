//! Starting, cancelling and querying builds, for the API and the CLI.

use bmm_activities::BuildInput;
use bmm_core::Config;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowCancelOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowStartOptions,
};
use temporalio_common::MemoValues;
use temporalio_common::search_attributes::{SearchAttributeKey, SearchAttributes};
use uuid::Uuid;

use crate::{BuildWorkflow, ReconcileLoop, ReconcileWorkflow, workflow_id};

/// Search attributes every build carries (registered by scripts/stack.sh).
pub const BMM_ORG: SearchAttributeKey<String> = SearchAttributeKey::keyword("BmmOrg");
pub const BMM_SERVER: SearchAttributeKey<String> = SearchAttributeKey::keyword("BmmServer");
pub const BMM_BUILD: SearchAttributeKey<String> = SearchAttributeKey::keyword("BmmBuild");
pub const BMM_VERSION: SearchAttributeKey<i64> = SearchAttributeKey::int("BmmVersion");

pub use temporalio_client::Client as TemporalClient;

#[derive(Debug, thiserror::Error)]
pub enum BuildClientError {
    #[error("Temporal at {address} is unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error("build {0} has no workflow")]
    NotFound(Uuid),
    #[error("Temporal refused the request: {0}")]
    Temporal(String),
}

/// A client of the configured Temporal namespace.
pub async fn connect(cfg: &Config) -> Result<Client, BuildClientError> {
    let unreachable =
        |message: String| BuildClientError::Unreachable { address: cfg.temporal_address.to_string(), message };
    let conn_opts = ConnectionOptions::new(cfg.temporal_address.clone()).identity(identity("api")).build();
    let connection = Connection::connect(conn_opts).await.map_err(|e| unreachable(e.to_string()))?;
    Client::new(connection, client_options(cfg)).map_err(|e| unreachable(e.to_string()))
}

/// Options of every client of ours, the API's and the worker's: the
/// OpenTelemetry plugin carries the caller's trace (the GraphQL request) into
/// the workflow and on to each activity, through Temporal headers. It uses the
/// global tracer provider, which is a no-op unless BMM_OTLP_ENDPOINT is set.
pub(crate) fn client_options(cfg: &Config) -> ClientOptions {
    ClientOptions::new(cfg.temporal_namespace.clone())
        .plugin(temporalio_sdk::opentelemetry::OpenTelemetryPlugin::builder().build())
        .build()
}

/// `<role>@<host>:<pid>`, so the Web UI says who did what.
pub(crate) fn identity(role: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("bmm-{role}@{host}:{}", std::process::id())
}

/// The one reconciler of a task queue (and so of a platform).
pub fn reconciler_id(cfg: &Config) -> String {
    format!("reconciler-{}", cfg.temporal_task_queue)
}

/// Start the reconciler unless it runs already (every worker calls this at
/// start: the first one starts it, the others find it). Returns its run id.
pub async fn ensure_reconciler(client: &Client, cfg: &Config) -> Result<String, BuildClientError> {
    let id = reconciler_id(cfg);
    let input = ReconcileLoop {
        interval_ms: u64::try_from(cfg.reconcile_interval.as_millis()).unwrap_or(u64::MAX),
        orphan_grace_secs: cfg.orphan_grace.as_secs(),
    };
    let options = WorkflowStartOptions::new(cfg.temporal_task_queue.clone(), id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        // A reconciler that was terminated (or failed) may be started again.
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary("reconciler: desired servers against what runs".to_owned())
        .build();
    match client.start_workflow(ReconcileWorkflow::run, input, options).await {
        Ok(handle) => Ok(handle.run_id().unwrap_or_default().to_owned()),
        Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { run_id, .. }) => {
            Ok(run_id.unwrap_or_default())
        }
        Err(e) => Err(BuildClientError::Temporal(e.to_string())),
    }
}

/// Start the build's workflow and return its run id. Starting a build that
/// was already started (a retried API call) returns the existing run; a
/// finished build is never run again.
pub async fn start_build(client: &Client, cfg: &Config, input: BuildInput) -> Result<String, BuildClientError> {
    let id = input.workflow_id();
    let attrs = SearchAttributes::new([
        BMM_ORG.value_set(input.org_id.to_string()),
        BMM_SERVER.value_set(input.server_id.to_string()),
        BMM_BUILD.value_set(input.build_id.to_string()),
        BMM_VERSION.value_set(i64::from(input.version)),
    ]);
    let mut memo = MemoValues::new();
    memo.insert("slug", input.slug.clone());
    memo.insert("version", input.version);
    memo.insert("url", cfg.server_url(&input.slug));
    let options = WorkflowStartOptions::new(cfg.temporal_task_queue.clone(), id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .search_attributes(attrs)
        .memo(memo)
        .static_summary(format!("build {} v{}", input.slug, input.version))
        .build();
    match client.start_workflow(BuildWorkflow::run, input, options).await {
        Ok(handle) => Ok(handle.run_id().unwrap_or_default().to_owned()),
        Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { run_id: Some(run_id), .. }) => Ok(run_id),
        Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { run_id: None, .. }) => {
            let handle = client.get_workflow_handle::<BuildWorkflow>(id);
            let d = handle.describe(Default::default()).await.map_err(|e| BuildClientError::Temporal(e.to_string()))?;
            Ok(d.run_id().to_owned())
        }
        Err(e) => Err(BuildClientError::Temporal(e.to_string())),
    }
}

/// Ask the build to stop; it removes what it deployed and ends CANCELLED.
/// Cancelling a build that already ended is not an error.
pub async fn cancel_build(client: &Client, _cfg: &Config, build_id: Uuid) -> Result<(), BuildClientError> {
    let handle = client.get_workflow_handle::<BuildWorkflow>(workflow_id(build_id));
    match handle.cancel(WorkflowCancelOptions::builder().reason("cancelled by the user").build()).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            if text.contains("not found") || text.contains("NotFound") {
                Err(BuildClientError::NotFound(build_id))
            } else if text.contains("already completed") || text.contains("AlreadyCompleted") {
                Ok(())
            } else {
                Err(BuildClientError::Temporal(text))
            }
        }
    }
}

/// The build's current step, as the workflow reports it.
pub async fn current_step(client: &Client, _cfg: &Config, build_id: Uuid) -> Result<String, BuildClientError> {
    let handle = client.get_workflow_handle::<BuildWorkflow>(workflow_id(build_id));
    handle.query(BuildWorkflow::current_step, (), WorkflowQueryOptions::default()).await.map_err(|e| match e {
        temporalio_client::errors::WorkflowQueryError::NotFound(_) => BuildClientError::NotFound(build_id),
        other => BuildClientError::Temporal(other.to_string()),
    })
}

//! One reconcile pass, level-triggered (see docs/operations.md, "Reconciliation"):
//! read what runs (the runtime's list), then what should (each server's LIVE
//! deployment and the deployments in-flight builds own), and make one
//! idempotent step toward it: a live version that does not answer is restarted
//! or redeployed from its stored bundle (blobs are content-addressed), a moved
//! endpoint is routed to, and workloads and images with this platform's labels
//! that nothing owns are removed. What it did is written as server events, and
//! each server's status says the truth (`LIVE`, `DEGRADED`, `DOWN`).
//!
//! Running twice or concurrently does no harm: every runtime call is
//! idempotent, and status changes are recorded only when they change.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bmm_db::schema::{builds, deployments, server_versions, servers};
use bmm_db::server_events::{self, Health, NewServerEvent, ServerEventKind};
use bmm_runtime::{ListFilter, Runtime, RuntimeError, Workload};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::build::BuildActivities;
use crate::error::StepError;
use crate::model::BuildInput;

/// How long `/healthz` of a live server may take to answer a pass.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one pass is told (it goes into workflow history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileInput {
    /// Workloads and images younger than this are never taken for orphans.
    pub orphan_grace_secs: u64,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Live versions answering at the end of the pass.
    pub live: usize,
    /// Live versions started again or redeployed.
    pub restored: usize,
    /// Live versions that could not be restored this pass.
    pub down: usize,
    pub endpoints_changed: usize,
    pub orphans_removed: usize,
    pub images_removed: usize,
    /// The runtime could not be reached.
    pub runtime_unavailable: bool,
}

/// A LIVE deployment as the database has it: the desired state of one server.
#[derive(Debug, Clone)]
struct Desired {
    deployment_id: Uuid,
    container_name: String,
    host: Option<String>,
    port: Option<i32>,
    bundle_digest: Option<String>,
    build: BuildInput,
}

type DesiredRow = (Uuid, String, Option<String>, Option<i32>, Uuid, Uuid, Uuid, Uuid, i32, String, Option<String>);

pub async fn run(acts: &BuildActivities, input: &ReconcileInput) -> Result<ReconcileReport, StepError> {
    let runtime = bmm_runtime::connect(&acts.cfg).map_err(crate::steps::deploy::runtime_error)?;
    // Actual first, desired second: a container in this list had its
    // deployments row written before it was created, so the read below sees it.
    let actual = runtime.list(&ListFilter::default()).await;
    let mut conn = acts.pool.get().await.map_err(bmm_db::DbError::from)?;
    let desired = load_desired(&mut conn).await?;
    let owned = load_owned(&mut conn).await?;
    drop(conn);

    let mut report = ReconcileReport::default();
    let actual = match actual {
        Ok(list) => Some(list),
        Err(RuntimeError::Unavailable(m)) => {
            report.runtime_unavailable = true;
            tracing::warn!(error = %m, "reconcile: the runtime is unreachable; probing live servers directly");
            None
        }
        Err(e) => return Err(crate::steps::deploy::runtime_error(e)),
    };
    let by_name: HashMap<&str, &Workload> = actual.iter().flatten().map(|w| (w.name.as_str(), w)).collect();

    // Every server at once: a redeploy waits for health, and one slow server must not hold up the rest.
    let outcomes = futures::future::join_all(desired.iter().map(|d| {
        reconcile_server(acts, runtime.as_ref(), d, by_name.get(d.container_name.as_str()).copied(), actual.is_some())
    }))
    .await;
    for o in outcomes {
        match o {
            Ok(Outcome { live, restored, endpoint_changed }) => {
                report.live += usize::from(live);
                report.down += usize::from(!live);
                report.restored += usize::from(restored);
                report.endpoints_changed += usize::from(endpoint_changed);
            }
            Err(e) => {
                report.down += 1;
                tracing::warn!(error = %e, "reconcile: a server's pass failed");
            }
        }
    }

    if let Some(actual) = &actual {
        let grace = Duration::from_secs(input.orphan_grace_secs);
        let cutoff = chrono::Utc::now().timestamp() - i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let desired_names: HashSet<&str> = desired.iter().map(|d| d.container_name.as_str()).collect();
        for w in actual {
            if desired_names.contains(w.name.as_str()) || owned.contains(&w.name) || w.created > cutoff {
                continue;
            }
            match runtime.remove(&w.name).await {
                Ok(()) => {
                    report.orphans_removed += 1;
                    tracing::info!(container = %w.name, "reconcile: removed an orphan");
                    if let Some(server_id) = w.server_id {
                        let message = format!("removed {}, which no deployment owns", w.name);
                        let data = serde_json::json!({ "container": w.name, "build": w.build_id, "state": w.state });
                        record(acts, server_id, ServerEventKind::OrphanRemoved, &message, Some(data)).await;
                    }
                }
                Err(e) => tracing::warn!(container = %w.name, error = %e, "reconcile: could not remove an orphan"),
            }
        }
        match runtime.prune_images(grace).await {
            Ok(removed) => {
                report.images_removed = removed.len();
                for id in removed {
                    tracing::info!(image = %id, "reconcile: removed an image no workload uses");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconcile: could not prune images"),
        }
    }
    if report.restored + report.down + report.orphans_removed + report.images_removed + report.endpoints_changed > 0 {
        tracing::info!(?report, "reconcile pass");
    }
    Ok(report)
}

struct Outcome {
    live: bool,
    restored: bool,
    endpoint_changed: bool,
}

async fn reconcile_server(
    acts: &BuildActivities,
    runtime: &dyn Runtime,
    d: &Desired,
    actual: Option<&Workload>,
    runtime_up: bool,
) -> Result<Outcome, StepError> {
    let server_id = d.build.server_id;
    let recorded = match (&d.host, d.port.and_then(|p| u16::try_from(p).ok())) {
        (Some(h), Some(p)) => Some(bmm_runtime::Endpoint { host: h.clone(), port: p }),
        _ => None,
    };
    if !runtime_up {
        // Docker is down, but what it started may still answer: say what is true.
        let answering = match &recorded {
            Some(e) => healthy(e).await,
            None => false,
        };
        let (health, reason) = if answering {
            (Health::Live, None)
        } else {
            (Health::Down, Some("not answering, and Docker is unreachable; restoring it once Docker is back"))
        };
        set_health(acts, server_id, health, reason).await?;
        return Ok(Outcome { live: answering, restored: false, endpoint_changed: false });
    }

    let endpoint = actual.filter(|w| w.running).and_then(|w| w.endpoint.clone());
    if let Some(e) = &endpoint
        && healthy(e).await
    {
        let changed = recorded.as_ref() != Some(e);
        if changed {
            route_to(acts, d, actual.map(|w| w.id.as_str()), e, recorded.as_ref()).await?;
        }
        set_health(acts, server_id, Health::Live, None).await?;
        return Ok(Outcome { live: true, restored: false, endpoint_changed: changed });
    }

    let reason = match actual {
        None => "its container is gone; redeploying it from the stored bundle".to_owned(),
        Some(w) if !w.running => format!("its container is {}; starting it again", w.state),
        Some(_) => "its container runs but does not answer /healthz; waiting for it".to_owned(),
    };
    set_health(acts, server_id, Health::Degraded, Some(&reason)).await?;
    let Some(bundle_digest) = &d.bundle_digest else {
        let why = "its version has no stored bundle to redeploy from; build it again";
        set_health(acts, server_id, Health::Down, Some(why)).await?;
        return Ok(Outcome { live: false, restored: false, endpoint_changed: false });
    };
    let deployed = async {
        let mut conn = acts.pool.get().await.map_err(bmm_db::DbError::from)?;
        let (spec, _) = crate::steps::deploy::deploy_spec(acts, &mut conn, &d.build, bundle_digest).await?;
        drop(conn);
        runtime.deploy(&spec).await.map_err(crate::steps::deploy::runtime_error)
    }
    .await;
    match deployed {
        Ok(dep) => {
            let e = dep.endpoint();
            let changed = recorded.as_ref() != Some(&e);
            route_to(acts, d, Some(&dep.id), &e, recorded.as_ref()).await?;
            let (kind, what) = if dep.adopted {
                (ServerEventKind::Restarted, "started its container again")
            } else {
                (ServerEventKind::Redeployed, "redeployed it from its stored bundle")
            };
            let message = format!("{what}: {} on {}:{}", dep.name, e.host, e.port);
            let data = serde_json::json!({
                "container": dep.name, "host": e.host, "port": e.port, "timingsMs": dep.timings,
            });
            record(acts, server_id, kind, &message, Some(data)).await;
            set_health(acts, server_id, Health::Live, None).await?;
            Ok(Outcome { live: true, restored: true, endpoint_changed: changed })
        }
        Err(e) => {
            let message = format!("could not restore {}: {}", d.container_name, e);
            record(acts, server_id, ServerEventKind::ReconcileFailed, &message, None).await;
            set_health(acts, server_id, Health::Down, Some(&message)).await?;
            Ok(Outcome { live: false, restored: false, endpoint_changed: false })
        }
    }
}

/// Point the LIVE deployment at where its workload is reached now, and tell
/// every gateway (NOTIFY `bmm_routes`, delivered on commit).
async fn route_to(
    acts: &BuildActivities,
    d: &Desired,
    container_id: Option<&str>,
    e: &bmm_runtime::Endpoint,
    recorded: Option<&bmm_runtime::Endpoint>,
) -> Result<(), StepError> {
    if recorded == Some(e) {
        return Ok(());
    }
    let mut conn = acts.pool.get().await.map_err(bmm_db::DbError::from)?;
    let updated = diesel::update(
        deployments::table.filter(deployments::id.eq(d.deployment_id)).filter(deployments::status.eq("LIVE")),
    )
    .set((
        deployments::host.eq(Some(&e.host)),
        deployments::port.eq(Some(i32::from(e.port))),
        deployments::container_id.eq(container_id),
    ))
    .execute(&mut conn)
    .await?;
    if updated == 0 {
        // Cut over meanwhile: the new LIVE deployment is the next pass's business.
        return Ok(());
    }
    bmm_gateway::notify_routes(&mut conn, d.build.server_id).await?;
    drop(conn);
    let message = match recorded {
        Some(old) => {
            format!("now reached on {}:{} (was {}:{}); the gateway follows", e.host, e.port, old.host, old.port)
        }
        None => format!("now reached on {}:{}", e.host, e.port),
    };
    let data = serde_json::json!({ "host": e.host, "port": e.port });
    record(acts, d.build.server_id, ServerEventKind::EndpointChanged, &message, Some(data)).await;
    Ok(())
}

async fn set_health(
    acts: &BuildActivities,
    server_id: Uuid,
    health: Health,
    reason: Option<&str>,
) -> Result<(), StepError> {
    let mut conn = acts.pool.get().await.map_err(bmm_db::DbError::from)?;
    if let Some(before) = server_events::set_health(&mut conn, server_id, health, reason).await? {
        tracing::info!(server = %server_id, from = before.as_str(), to = health.as_str(), reason, "server status changed");
    }
    Ok(())
}

/// Best effort: a lost event must not fail the pass that did the work.
async fn record(
    acts: &BuildActivities,
    server_id: Uuid,
    kind: ServerEventKind,
    message: &str,
    data: Option<serde_json::Value>,
) {
    let written = async {
        let mut conn = acts.pool.get().await.map_err(|e| e.to_string())?;
        server_events::append(&mut conn, NewServerEvent { server_id, kind, message, data })
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = written {
        tracing::warn!(server = %server_id, kind = kind.as_str(), error = %e, "could not record a server event");
    }
}

async fn healthy(e: &bmm_runtime::Endpoint) -> bool {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder().no_proxy().timeout(PROBE_TIMEOUT).build().unwrap_or_else(|_| reqwest::Client::new())
    });
    let url = format!("http://{}:{}/healthz", e.host, e.port);
    client.get(url).send().await.is_ok_and(|r| r.status().is_success())
}

/// Each non-deleted server's LIVE deployment, with what a redeploy needs.
async fn load_desired(conn: &mut AsyncPgConnection) -> Result<Vec<Desired>, StepError> {
    let rows: Vec<DesiredRow> = deployments::table
        .inner_join(servers::table.on(servers::id.eq(deployments::server_id)))
        .inner_join(server_versions::table.on(server_versions::id.eq(deployments::version_id)))
        .filter(deployments::status.eq("LIVE"))
        .filter(servers::deleted_at.is_null())
        .select((
            deployments::id,
            deployments::container_name,
            deployments::host,
            deployments::port,
            deployments::build_id,
            deployments::org_id,
            deployments::server_id,
            deployments::version_id,
            server_versions::version,
            servers::slug,
            server_versions::bundle_digest,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                deployment_id,
                container_name,
                host,
                port,
                build_id,
                org_id,
                server_id,
                version_id,
                version,
                slug,
                bundle,
            )| {
                Desired {
                    deployment_id,
                    container_name,
                    host,
                    port,
                    bundle_digest: bundle,
                    build: BuildInput { build_id, org_id, server_id, version_id, version, slug, preview_id: None },
                }
            },
        )
        .collect())
}

/// Workload names something still owns besides a LIVE deployment: a version
/// draining after a cut-over, and whatever a build still running deployed.
async fn load_owned(conn: &mut AsyncPgConnection) -> Result<HashSet<String>, StepError> {
    let draining: Vec<String> = deployments::table
        .filter(deployments::status.eq("DRAINING"))
        .select(deployments::container_name)
        .load(conn)
        .await?;
    let building: Vec<String> = deployments::table
        .inner_join(builds::table.on(builds::id.eq(deployments::build_id)))
        .filter(builds::status.eq_any(["QUEUED", "RUNNING"]))
        .select(deployments::container_name)
        .load(conn)
        .await?;
    Ok(draining.into_iter().chain(building).collect())
}

//! Where generated servers run: one narrow interface ([`Runtime`]) — deploy a
//! version, adopt what exists, stop, remove, logs, list what runs, and the
//! endpoint the gateway routes to — and its backends (`docker`: one engine;
//! `swarm`: Docker Swarm services, selected by `BMM_RUNTIME`).
//!
//! This crate talks to the container engine and nothing else: it knows no
//! database, no workflow and no HTTP routing. Callers (the build's activities,
//! the API, the reconciler) decide *what* should run; a backend only makes it so.

pub mod docker;
mod model;
pub mod swarm;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bmm_core::config::RuntimeBackend;
use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

pub use model::*;

/// The seam between the platform and where servers run. Every call is
/// idempotent: a deploy that finds its build's workload adopts it, removing
/// what is gone is fine, so a retried or concurrent caller does no harm.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> RuntimeBackend;
    /// Fails with `Unavailable` when the engine does not answer.
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// Deploy one version (a build's bundle): make or adopt its workload and
    /// wait until it answers `/healthz`.
    async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, RuntimeError>;
    /// The platform's workload called `name` as it is now, if it exists.
    async fn adopt(&self, name: &str) -> Result<Option<Workload>, RuntimeError>;
    /// Stop a workload (SIGTERM, then SIGKILL after `grace`); a missing one is fine.
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Remove a workload, running or not; a missing one is fine.
    async fn remove(&self, name: &str) -> Result<(), RuntimeError>;
    /// Remove every workload of a build (and its images no one uses); returns how many.
    async fn remove_build(&self, build_id: Uuid) -> Result<usize, RuntimeError>;
    /// The last `tail` log lines of a workload, then (with `follow`) new ones as they come.
    fn logs(&self, name: &str, tail: usize, follow: bool) -> BoxStream<'static, Result<LogLine, RuntimeError>>;
    /// Every workload this platform manages (running or not; label
    /// `bmm.platform` = `cfg.platform_id`), narrowed by `filter`, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Workload>, RuntimeError>;
    /// Remove the platform's images no workload uses (older than `grace`); returns their ids.
    async fn prune_images(&self, grace: Duration) -> Result<Vec<String>, RuntimeError>;
    /// Where the gateway reaches the workload `name`; `None` while it does not run.
    async fn endpoint(&self, name: &str) -> Result<Option<Endpoint>, RuntimeError> {
        Ok(self.adopt(name).await?.and_then(|w| w.endpoint))
    }
}

/// The backend the configuration names. The engine is contacted on first use,
/// so this succeeds while it is down.
pub fn connect(cfg: &bmm_core::Config) -> Result<Arc<dyn Runtime>, RuntimeError> {
    match cfg.runtime {
        RuntimeBackend::Docker => Ok(Arc::new(docker::Docker::connect(cfg)?)),
        RuntimeBackend::Swarm => Ok(Arc::new(swarm::Swarm::connect(cfg)?)),
    }
}

#[async_trait]
impl Runtime for docker::Docker {
    fn backend(&self) -> RuntimeBackend {
        RuntimeBackend::Docker
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        docker::Docker::ping(self).await
    }
    async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, RuntimeError> {
        docker::Docker::deploy(self, spec).await
    }
    async fn adopt(&self, name: &str) -> Result<Option<Workload>, RuntimeError> {
        docker::Docker::adopt(self, name).await
    }
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        docker::Docker::stop(self, name, grace).await
    }
    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        docker::Docker::remove(self, name).await
    }
    async fn remove_build(&self, build_id: Uuid) -> Result<usize, RuntimeError> {
        docker::Docker::remove_build(self, build_id).await
    }
    fn logs(&self, name: &str, tail: usize, follow: bool) -> BoxStream<'static, Result<LogLine, RuntimeError>> {
        docker::Docker::logs(self, name, tail, follow).boxed()
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Workload>, RuntimeError> {
        docker::Docker::list(self, filter).await
    }
    async fn prune_images(&self, grace: Duration) -> Result<Vec<String>, RuntimeError> {
        docker::Docker::prune_images(self, grace).await
    }
}

#[async_trait]
impl Runtime for swarm::Swarm {
    fn backend(&self) -> RuntimeBackend {
        RuntimeBackend::Swarm
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        swarm::Swarm::ping(self).await
    }
    async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, RuntimeError> {
        swarm::Swarm::deploy(self, spec).await
    }
    async fn adopt(&self, name: &str) -> Result<Option<Workload>, RuntimeError> {
        swarm::Swarm::adopt(self, name).await
    }
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        swarm::Swarm::stop(self, name, grace).await
    }
    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        swarm::Swarm::remove(self, name).await
    }
    async fn remove_build(&self, build_id: Uuid) -> Result<usize, RuntimeError> {
        swarm::Swarm::remove_build(self, build_id).await
    }
    fn logs(&self, name: &str, tail: usize, follow: bool) -> BoxStream<'static, Result<LogLine, RuntimeError>> {
        swarm::Swarm::logs(self, name, tail, follow)
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Workload>, RuntimeError> {
        swarm::Swarm::list(self, filter).await
    }
    async fn prune_images(&self, grace: Duration) -> Result<Vec<String>, RuntimeError> {
        swarm::Swarm::prune_images(self, grace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_backend_is_chosen() {
        let mut cfg = bmm_core::Config::for_tests("postgres://bmm@127.0.0.1:55432/unused");
        assert_eq!(connect(&cfg).expect("docker").backend(), RuntimeBackend::Docker);
        cfg.runtime = RuntimeBackend::Swarm;
        assert_eq!(connect(&cfg).expect("swarm").backend(), RuntimeBackend::Swarm);
    }
}

//! The `docker` backend: one Docker engine through bollard (see
//! docs/ARCHITECTURE.md): the image of a server version (runtime image +
//! bundle), its hardened container, removal, logs.
//!
//! Every call is idempotent where a retried activity needs it: a deploy that
//! finds its container adopts it. Environment values (credentials) go to Docker
//! only; they never appear in an error, an event or a log line.

mod tar;
/// Helpers for tests that deploy real containers (here and in other crates).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    HostConfigLogConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RemoveImageOptions, StartContainerOptions, StopContainerOptions, UploadToContainerOptions,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::Mutex;
use uuid::Uuid;

// The backend's own name for the runtime's error: its variants are the runtime's.
pub(crate) use crate::RuntimeError as DockerError;
pub use crate::model::{
    DeploySpec, DeployTimings, Deployed, Endpoint, ListFilter, LogLine, LogStream, Workload, container_name,
};

/// The port a generated server listens on inside its container.
pub const CONTAINER_PORT: u16 = 8080;
/// Where the platform's JWKS folder is mounted inside the container.
pub const JWKS_MOUNT: &str = "/etc/bmm/jwks";
/// The server's folder inside the container, and where the bundle is in it
/// (in its image, or mounted there).
pub(crate) const APP_DIR: &str = "/app";
pub const BUNDLE_PATH: &str = "/app/server.mjs";
/// The unprivileged user every server runs as.
pub(crate) const RUN_AS: &str = "10001:10001";
/// The label every container and image this platform makes carries.
pub const MANAGED_LABEL: &str = "bmm.managed";
/// The label naming the platform instance (`cfg.platform_id`) that made a
/// container or image: what a platform lists, and so may remove, is its own.
pub const PLATFORM_LABEL: &str = "bmm.platform";
/// Repository of the per-bundle images.
pub const IMAGE_REPOSITORY: &str = "bmm-server";
/// The label of the short-lived containers an image is committed from. A
/// commit keeps its container's labels, so the image (and every server
/// container made from it) would carry it too: the commit blanks it.
const HELPER_LABEL: &str = "bmm.image-helper";
/// A helper container older than this was left by a crashed deploy.
const HELPER_STALE: Duration = Duration::from_secs(600);

/// How long a request may wait for Docker's response headers (a stop waits for its grace period).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a new container gets to answer `/healthz`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a starting container's `/healthz` is probed.
const HEALTH_PROBE_EVERY: Duration = Duration::from_millis(15);
/// Every this many probes, Docker is asked whether the container exited.
const INSPECT_EVERY: u32 = 8;
/// Log lines quoted when a container fails at start.
const FAILURE_LOG_LINES: usize = 30;
const PIDS_LIMIT: i64 = 256;
const TMP_SIZE: &str = "64m";
/// Variables the platform sets itself; a spec credential may not override them.
const RESERVED_ENV: &[&str] = &["PORT", "BMM_JWKS_FILE", "NODE_OPTIONS", "NODE_ENV", "HOME", "PATH"];

pub(crate) fn ms_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A handle on the Docker daemon. The connection is made (and the API version
/// negotiated) on first use, so a worker starts while Docker is down and its
/// deploys retry until Docker is back.
#[derive(Clone)]
pub struct Docker {
    host: String,
    runtime_image: String,
    container_host: String,
    platform: String,
    memory_bytes: i64,
    nano_cpus: i64,
    /// Mount mode: the folder bundles are placed in (on the engine's host too).
    bundles: Option<PathBuf>,
    client: Arc<Mutex<Option<bollard::Docker>>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").field("host", &self.host).field("runtime_image", &self.runtime_image).finish()
    }
}

impl Docker {
    /// Check the settings; the daemon is contacted on first use.
    pub fn connect(cfg: &bmm_core::Config) -> Result<Docker, DockerError> {
        let host = cfg.docker_host.trim().to_owned();
        if !(host.starts_with("unix://") || host.starts_with("tcp://") || host.starts_with("http://")) {
            return Err(DockerError::BadRequest(format!(
                "BMM_DOCKER_HOST must start with unix:// or tcp:// (got {host:?})"
            )));
        }
        if cfg.container_memory_mib < 32 {
            return Err(DockerError::BadRequest(format!(
                "container memory limit {} MiB is below the 32 MiB node needs",
                cfg.container_memory_mib
            )));
        }
        if !(cfg.container_cpus > 0.0 && cfg.container_cpus.is_finite()) {
            return Err(DockerError::BadRequest(format!("container CPU limit {} is not positive", cfg.container_cpus)));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| DockerError::BadRequest(format!("HTTP client: {e}")))?;
        let bundles = match cfg.bundle_delivery {
            bmm_core::config::BundleDelivery::Image => None,
            bmm_core::config::BundleDelivery::Mount => {
                // A relative data folder is the process's own (dev defaults): Docker needs it whole.
                let dir = std::path::absolute(cfg.data_dir.join("bundles")).map_err(|e| {
                    DockerError::BadRequest(format!(
                        "the data folder {} has no absolute path: {e}",
                        cfg.data_dir.display()
                    ))
                })?;
                if dir.to_string_lossy().contains(':') {
                    return Err(DockerError::BadRequest(format!(
                        "bundles are mounted from {}, which must not contain ':' (set BMM_DATA_DIR)",
                        dir.display()
                    )));
                }
                Some(dir)
            }
        };
        Ok(Docker {
            host,
            bundles,
            runtime_image: cfg.runtime_image.clone(),
            container_host: cfg.container_host.clone(),
            platform: cfg.platform_id.clone(),
            memory_bytes: cfg.container_memory_mib * 1024 * 1024,
            nano_cpus: (cfg.container_cpus * 1e9) as i64,
            client: Arc::new(Mutex::new(None)),
            http,
        })
    }

    pub(crate) fn container_host(&self) -> &str {
        &self.container_host
    }

    pub(crate) fn runtime_image(&self) -> &str {
        &self.runtime_image
    }

    pub(crate) fn nano_cpus(&self) -> i64 {
        self.nano_cpus
    }

    pub(crate) fn memory_bytes(&self) -> i64 {
        self.memory_bytes
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Mount mode: the bundle placed where the engine mounts it from.
    pub(crate) fn place_bundle_if_mounted(&self, spec: &DeploySpec) -> Result<Option<PathBuf>, DockerError> {
        self.bundles.as_deref().map(|dir| place_bundle(dir, spec)).transpose()
    }

    /// The connected client, made and negotiated once.
    pub(crate) async fn client(&self) -> Result<bollard::Docker, DockerError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let timeout = REQUEST_TIMEOUT.as_secs();
        // Start at the newest Engine API bollard knows; negotiation comes down
        // to the daemon's when it is older (Docker 20.10 speaks 1.41).
        let raw = if self.host.starts_with("unix://") {
            bollard::Docker::connect_with_unix(&self.host, timeout, bollard::API_DEFAULT_VERSION)
        } else {
            bollard::Docker::connect_with_http(&self.host, timeout, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| unavailable(&self.host, e))?;
        let negotiated = raw.negotiate_version().await.map_err(|e| unavailable(&self.host, e))?;
        *guard = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// Fails with `Unavailable` when the daemon does not answer.
    pub async fn ping(&self) -> Result<(), DockerError> {
        let c = self.client().await?;
        c.ping().await.map_err(|e| self.map_err(e, "ping"))?;
        Ok(())
    }

    /// Build (or reuse) the image of the bundle, then create (or adopt) and start
    /// the hardened container and wait until it answers `/healthz`.
    pub async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, DockerError> {
        validate(spec)?;
        let c = self.client().await?;
        let mut timings = DeployTimings::default();
        let t = Instant::now();
        let mount = match &self.bundles {
            Some(dir) => Some(place_bundle(dir, spec)?),
            None => None,
        };
        let (mut image_tag, mut image_id) = self.ensure_image(&c, spec, mount.is_some()).await?;
        timings.image_ms = ms_since(t);
        let t = Instant::now();
        let name = container_name(&spec.slug, spec.version, spec.build_id);

        let mut adopted = false;
        let mut existing = self.inspect(&c, &name).await?;
        if let Some(found) = &existing {
            let labels = found.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
            if labels.get("bmm.build").map(String::as_str) != Some(spec.build_id.to_string().as_str()) {
                return Err(DockerError::BadRequest(format!(
                    "a container named {name} exists but belongs to another build; remove it first"
                )));
            }
            // The bundle decides, not the image id: two concurrent builds of one tag may
            // produce different ids for the same content.
            if labels.get("bmm.bundle") != Some(&spec.bundle_digest) {
                tracing::info!(container = %name, "existing container runs another bundle; recreating it");
                self.remove(&name).await?;
                existing = None;
            } else {
                adopted = true;
            }
        }
        if existing.is_none() {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match c
                    .create_container(
                        Some(create_options(&name)),
                        self.container_body(spec, &image_tag, mount.as_deref()),
                    )
                    .await
                {
                    Ok(_) => break,
                    // Another attempt of this deploy created it meanwhile: adopt it.
                    Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => {
                        adopted = true;
                        break;
                    }
                    // The image went away (a concurrent cleanup of another build): build it again, once.
                    Err(BollardError::DockerResponseServerError { status_code: 404, .. }) if attempts == 1 => {
                        (image_tag, image_id) = self.ensure_image(&c, spec, mount.is_some()).await?;
                    }
                    Err(e) => return Err(self.map_err(e, "create the container")),
                }
            }
        }

        let info = self
            .inspect(&c, &name)
            .await?
            .ok_or_else(|| DockerError::Failed(format!("container {name} disappeared right after it was created")))?;
        if let Some(actual) = info.image.clone() {
            image_id = actual;
        }
        timings.create_ms = ms_since(t);
        let t = Instant::now();
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !running && let Err(e) = c.start_container(&name, None::<StartContainerOptions>).await {
            let err = self.map_err(e, "start the container");
            if let DockerError::Failed(msg) = err {
                let logs = self.tail_text(&name, FAILURE_LOG_LINES).await;
                let _ = self.remove(&name).await;
                self.remove_unused_image(&c, &image_id).await;
                return Err(DockerError::Failed(with_logs(format!("the container did not start: {msg}"), &logs)));
            }
            return Err(err);
        }
        timings.start_ms = ms_since(t);
        let t = Instant::now();
        let deployed = match self.wait_healthy(&c, &name).await {
            Ok(d) => d,
            Err(DockerError::Failed(msg)) => {
                // A container that fails at start is removed, so a retry starts clean.
                let _ = self.remove(&name).await;
                self.remove_unused_image(&c, &image_id).await;
                return Err(DockerError::Failed(msg));
            }
            Err(e) => return Err(e),
        };
        timings.health_ms = ms_since(t);
        tracing::info!(container = %name, port = deployed.1, adopted, image = %image_tag, ?timings, "container is healthy");
        Ok(Deployed {
            id: deployed.0,
            name,
            image_id,
            image_tag,
            host: self.container_host.clone(),
            port: deployed.1,
            adopted,
            timings,
        })
    }

    /// Remove every container of a build (by label), running or not; returns how many.
    pub async fn remove_build(&self, build_id: Uuid) -> Result<usize, DockerError> {
        let c = self.client().await?;
        let filters = HashMap::from([("label".to_owned(), vec![format!("bmm.build={build_id}")])]);
        let list = c
            .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
            .await
            .map_err(|e| self.map_err(e, "list containers"))?;
        let mut removed = 0;
        let mut images = std::collections::BTreeSet::new();
        for summary in list {
            if let Some(id) = summary.id {
                self.remove(&id).await?;
                removed += 1;
            }
            images.extend(summary.image_id);
        }
        for image in images {
            self.remove_unused_image(&c, &image).await;
        }
        Ok(removed)
    }

    /// Delete one of our per-bundle images if no container uses it any more
    /// (Docker refuses while one does). Best effort: images are a cache.
    async fn remove_unused_image(&self, c: &bollard::Docker, image_id: &str) {
        let managed = match c.inspect_image(image_id).await {
            Ok(img) => img
                .config
                .and_then(|cfg| cfg.labels)
                .is_some_and(|l| l.get(MANAGED_LABEL).map(String::as_str) == Some("true")),
            Err(_) => false,
        };
        // Never the runtime image or anything else we did not build.
        if !managed {
            return;
        }
        let opts = RemoveImageOptions { force: false, noprune: false };
        match c.remove_image(image_id, Some(opts), None).await {
            Ok(_) => tracing::debug!(image = image_id, "removed an unused server image"),
            Err(BollardError::DockerResponseServerError { status_code: 404 | 409, .. }) => {}
            Err(e) => tracing::warn!(image = image_id, error = %e, "could not remove a server image"),
        }
    }

    /// Stop a container with SIGTERM, then SIGKILL after `grace`. A missing or
    /// already stopped container is fine.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let c = self.client().await?;
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX).min(600);
        match c.stop_container(name, Some(StopContainerOptions { t: Some(t), signal: None })).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError { status_code: 304 | 404, .. }) => Ok(()),
            Err(e) => Err(self.map_err(e, "stop the container")),
        }
    }

    /// Remove a container (killing it if it runs). A missing container is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let c = self.client().await?;
        let opts = RemoveContainerOptions { force: true, v: true, link: false };
        match c.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            // Removal already under way (a concurrent remove): done as far as we are concerned.
            Err(BollardError::DockerResponseServerError { status_code: 409, message })
                if message.contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(self.map_err(e, "remove the container")),
        }
    }

    /// The last `tail` lines of a container's output, then (with `follow`) new ones as they come.
    pub fn logs(
        &self,
        name: &str,
        tail: usize,
        follow: bool,
    ) -> impl Stream<Item = Result<LogLine, DockerError>> + use<> {
        let this = self.clone();
        let name = name.to_owned();
        futures::stream::once(async move {
            let c = this.client().await?;
            let opts = LogsOptions {
                follow,
                stdout: true,
                stderr: true,
                timestamps: true,
                tail: tail.to_string(),
                ..Default::default()
            };
            let host = this.host.clone();
            let stream =
                c.logs(&name, Some(opts)).map_err(move |e| map_bollard(&host, e, "read the logs")).map(|item| {
                    item.map(|out| {
                        let (stream, bytes) = match out {
                            bollard::container::LogOutput::StdErr { message } => (LogStream::Stderr, message),
                            bollard::container::LogOutput::StdOut { message }
                            | bollard::container::LogOutput::Console { message }
                            | bollard::container::LogOutput::StdIn { message } => (LogStream::Stdout, message),
                        };
                        parse_log_line(stream, &String::from_utf8_lossy(&bytes))
                    })
                });
            Ok::<_, DockerError>(stream)
        })
        .try_flatten()
    }

    /// Every container (running or not) the platform manages, narrowed by
    /// `filter`, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Workload>, DockerError> {
        let c = self.client().await?;
        let mut labels = vec![format!("{MANAGED_LABEL}=true"), format!("{PLATFORM_LABEL}={}", self.platform)];
        labels.extend(filter.server_id.map(|id| format!("bmm.server={id}")));
        labels.extend(filter.build_id.map(|id| format!("bmm.build={id}")));
        let filters = HashMap::from([("label".to_owned(), labels)]);
        let mut list = c
            .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
            .await
            .map_err(|e| self.map_err(e, "list containers"))?;
        list.sort_by_key(|s| std::cmp::Reverse(s.created.unwrap_or(0)));
        Ok(list
            .into_iter()
            .map(|s| {
                let labels = s.labels.unwrap_or_default();
                let state = s.state.map(|st| st.to_string()).unwrap_or_default();
                let running = state == "running";
                let port = s.ports.unwrap_or_default().into_iter().find_map(|p| {
                    let loopback = p.ip.as_deref().is_none_or(|ip| ip == "127.0.0.1" || ip.is_empty());
                    (p.private_port == CONTAINER_PORT && loopback).then_some(p.public_port).flatten()
                });
                Workload {
                    id: s.id.unwrap_or_default(),
                    name: s
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    server_id: labels.get("bmm.server").and_then(|b| b.parse().ok()),
                    build_id: labels.get("bmm.build").and_then(|b| b.parse().ok()),
                    version: labels.get("bmm.version").and_then(|v| v.parse().ok()),
                    bundle_digest: labels.get("bmm.bundle").cloned(),
                    endpoint: port.filter(|_| running).map(|port| Endpoint { host: self.container_host.clone(), port }),
                    state,
                    running,
                    image_id: s.image_id.unwrap_or_default(),
                    created: s.created.unwrap_or(0),
                }
            })
            .collect())
    }

    /// The container of `name` as it is now, if it exists and is the platform's.
    pub async fn adopt(&self, name: &str) -> Result<Option<Workload>, DockerError> {
        let c = self.client().await?;
        let Some(info) = self.inspect(&c, name).await? else {
            return Ok(None);
        };
        let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        if labels.get(MANAGED_LABEL).map(String::as_str) != Some("true") {
            return Ok(None);
        }
        let state = info.state.clone().unwrap_or_default();
        let running = state.running == Some(true);
        Ok(Some(Workload {
            id: info.id.clone().unwrap_or_default(),
            name: info.name.clone().unwrap_or_default().trim_start_matches('/').to_owned(),
            server_id: labels.get("bmm.server").and_then(|b| b.parse().ok()),
            build_id: labels.get("bmm.build").and_then(|b| b.parse().ok()),
            version: labels.get("bmm.version").and_then(|v| v.parse().ok()),
            bundle_digest: labels.get("bmm.bundle").cloned(),
            endpoint: published_port(&info)
                .filter(|_| running)
                .map(|port| Endpoint { host: self.container_host.clone(), port }),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running,
            image_id: info.image.clone().unwrap_or_default(),
            created: info
                .created
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or(0, |t| t.timestamp()),
        }))
    }

    /// Remove this platform's per-bundle images that no container uses and
    /// that are older than `grace` (a deploy commits its image a moment
    /// before it creates the container); returns the removed ids. Docker
    /// itself refuses to remove an image a container (of anyone) uses.
    pub async fn prune_images(&self, grace: Duration) -> Result<Vec<String>, DockerError> {
        let c = self.client().await?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{MANAGED_LABEL}=true"), format!("{PLATFORM_LABEL}={}", self.platform)],
        )]);
        let images = c
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.map_err(e, "list images"))?;
        let used: std::collections::HashSet<String> = c
            .list_containers(Some(ListContainersOptions { all: true, ..Default::default() }))
            .await
            .map_err(|e| self.map_err(e, "list containers"))?
            .into_iter()
            .filter_map(|s| s.image_id)
            .collect();
        let cutoff = Utc::now().timestamp() - i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let mut removed = Vec::new();
        for image in images {
            if used.contains(&image.id) || image.created > cutoff || image.id == self.runtime_image {
                continue;
            }
            let opts = RemoveImageOptions { force: false, noprune: false };
            match c.remove_image(&image.id, Some(opts), None).await {
                Ok(_) => removed.push(image.id),
                Err(BollardError::DockerResponseServerError { status_code: 404 | 409, .. }) => {}
                Err(e) => return Err(self.map_err(e, "remove an unused image")),
            }
        }
        Ok(removed)
    }

    /// The tag of a bundle's image: the runtime image id and the bundle digest
    /// decide it, so the same bundle on the same base reuses one image.
    fn image_tag(runtime_image_id: &str, bundle_digest: &str) -> String {
        let key = bmm_core::digest::sha256(format!("{runtime_image_id}\n{bundle_digest}").as_bytes());
        format!("{IMAGE_REPOSITORY}:{}", &key["sha256:".len().."sha256:".len() + 24])
    }

    /// The image the container runs: the runtime image itself when the
    /// bundle is mounted, else the bundle's own image (made once).
    pub(crate) async fn ensure_image(
        &self,
        c: &bollard::Docker,
        spec: &DeploySpec,
        mounted: bool,
    ) -> Result<(String, String), DockerError> {
        let runtime = match c.inspect_image(&self.runtime_image).await {
            Ok(i) => i,
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {
                return Err(DockerError::Failed(format!(
                    "the runtime image {} is missing on the Docker host; build it with `scripts/stack.sh services`",
                    self.runtime_image
                )));
            }
            Err(e) => return Err(self.map_err(e, "inspect the runtime image")),
        };
        let runtime_id = runtime.id.unwrap_or_default();
        if mounted {
            return Ok((self.runtime_image.clone(), runtime_id));
        }
        let tag = Self::image_tag(&runtime_id, &spec.bundle_digest);
        match c.inspect_image(&tag).await {
            Ok(img) => return Ok((tag, img.id.unwrap_or_default())),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(self.map_err(e, "inspect the server image")),
        }

        // No image build: a helper container of the runtime image (never
        // started) receives the bundle, and is committed as the image. One
        // layer, no build context, no intermediate containers.
        let helper =
            format!("bmm-image-{}-{}", &tag[IMAGE_REPOSITORY.len() + 1..], &Uuid::new_v4().simple().to_string()[..8]);
        self.sweep_helpers(c).await;
        let labels = HashMap::from([
            (MANAGED_LABEL.to_owned(), "true".to_owned()),
            (PLATFORM_LABEL.to_owned(), self.platform.clone()),
            ("bmm.bundle".to_owned(), spec.bundle_digest.clone()),
            (HELPER_LABEL.to_owned(), String::new()),
        ]);
        // The commit takes command, user and folder from here.
        let body = ContainerCreateBody {
            image: Some(self.runtime_image.clone()),
            cmd: Some(vec![BUNDLE_PATH.to_owned()]),
            user: Some(RUN_AS.to_owned()),
            working_dir: Some(APP_DIR.to_owned()),
            labels: Some(HashMap::from([(HELPER_LABEL.to_owned(), "true".to_owned())])),
            network_disabled: Some(true),
            ..Default::default()
        };
        c.create_container(Some(create_options(&helper)), body)
            .await
            .map_err(|e| self.map_err(e, "create the image's helper container"))?;
        let committed = self.commit_bundle(c, &helper, &tag, labels, &spec.bundle).await;
        if let Err(e) = self.remove(&helper).await {
            tracing::warn!(container = %helper, error = %e, "could not remove the image's helper container");
        }
        let image_id = committed?;
        tracing::info!(tag = %tag, "made the server image");
        Ok((tag, image_id))
    }

    /// The bundle into the helper container at [`BUNDLE_PATH`], then the
    /// helper committed as `tag` with our labels; returns the image id.
    async fn commit_bundle(
        &self,
        c: &bollard::Docker,
        helper: &str,
        tag: &str,
        labels: HashMap<String, String>,
        bundle: &[u8],
    ) -> Result<String, DockerError> {
        let archive = tar::archive(&[("server.mjs", 0o644, bundle)]).map_err(DockerError::BadRequest)?;
        let opts = UploadToContainerOptions { path: APP_DIR.to_owned(), ..Default::default() };
        c.upload_to_container(helper, Some(opts), bollard::body_full(archive.into()))
            .await
            .map_err(|e| self.map_err(e, "copy the bundle into the image"))?;
        let (repo, tag_part) = tag.split_once(':').unwrap_or((tag, "latest"));
        let opts = CommitContainerOptions {
            container: Some(helper.to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(tag_part.to_owned()),
            comment: Some("BuildMyMCP server: runtime image + bundle".to_owned()),
            pause: false,
            ..Default::default()
        };
        let config = ContainerConfig { labels: Some(labels), ..Default::default() };
        c.commit_container(opts, config).await.map_err(|e| self.map_err(e, "commit the server image"))?;
        let img = c.inspect_image(tag).await.map_err(|e| match e {
            BollardError::DockerResponseServerError { status_code: 404, .. } => {
                DockerError::Failed(format!("the server image {tag} was not created"))
            }
            e => self.map_err(e, "inspect the new image"),
        })?;
        Ok(img.id.unwrap_or_default())
    }

    /// Remove helper containers a crashed deploy left behind (older than a
    /// few minutes, so a concurrent deploy's helper is left alone; never
    /// started, so never a server). Best effort.
    async fn sweep_helpers(&self, c: &bollard::Docker) {
        let filters = HashMap::from([
            ("label".to_owned(), vec![format!("{HELPER_LABEL}=true")]),
            ("status".to_owned(), vec!["created".to_owned()]),
        ]);
        let Ok(list) = c
            .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
            .await
        else {
            return;
        };
        let stale = Utc::now().timestamp() - HELPER_STALE.as_secs() as i64;
        for summary in list {
            if let (Some(id), Some(created)) = (summary.id, summary.created)
                && created < stale
            {
                let _ = self.remove(&id).await;
            }
        }
    }

    fn container_body(
        &self,
        spec: &DeploySpec,
        image_tag: &str,
        bundle: Option<&std::path::Path>,
    ) -> ContainerCreateBody {
        let port_key = format!("{CONTAINER_PORT}/tcp");
        let labels = HashMap::from([
            ("bmm.org".to_owned(), spec.org_id.to_string()),
            ("bmm.server".to_owned(), spec.server_id.to_string()),
            ("bmm.version".to_owned(), spec.version.to_string()),
            ("bmm.build".to_owned(), spec.build_id.to_string()),
            ("bmm.slug".to_owned(), spec.slug.clone()),
            ("bmm.bundle".to_owned(), spec.bundle_digest.clone()),
            (MANAGED_LABEL.to_owned(), "true".to_owned()),
            (PLATFORM_LABEL.to_owned(), self.platform.clone()),
        ]);
        let mut env = vec![
            format!("PORT={CONTAINER_PORT}"),
            format!("BMM_JWKS_FILE={JWKS_MOUNT}/jwks.json"),
            "NODE_ENV=production".to_owned(),
        ];
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let host_config = HostConfig {
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), format!("rw,noexec,nosuid,nodev,size={TMP_SIZE}"))])),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            privileged: Some(false),
            memory: Some(self.memory_bytes),
            // No swap beyond the memory limit.
            memory_swap: Some(self.memory_bytes),
            nano_cpus: Some(self.nano_cpus),
            pids_limit: Some(PIDS_LIMIT),
            binds: Some(
                std::iter::once(format!("{}:{JWKS_MOUNT}:ro", spec.jwks_dir.display()))
                    .chain(bundle.map(|b| format!("{}:{BUNDLE_PATH}:ro", b.display())))
                    .collect(),
            ),
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding { host_ip: Some("127.0.0.1".to_owned()), host_port: Some(String::new()) }]),
            )])),
            // Back after a crash, a daemon restart or a reboot, until the platform stops it;
            // a server that fails at start is caught by the deploy's health wait.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(image_tag.to_owned()),
            cmd: Some(vec![BUNDLE_PATH.to_owned()]),
            user: Some(RUN_AS.to_owned()),
            working_dir: Some(APP_DIR.to_owned()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(HashMap::from([(port_key, HashMap::new())])),
            stop_signal: Some("SIGTERM".to_owned()),
            stop_timeout: Some(30),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    async fn inspect(&self, c: &bollard::Docker, name: &str) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match c.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(i) => Ok(Some(i)),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.map_err(e, "inspect the container")),
        }
    }

    /// Poll the container until `/healthz` answers 200; fail early when it exits.
    async fn wait_healthy(&self, c: &bollard::Docker, name: &str) -> Result<(String, u16), DockerError> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let mut last_probe = String::from("no answer yet");
        // Restarts before this wait (an adopted container's history) do not count.
        let mut baseline: Option<i64> = None;
        // Node answers within a few hundred ms: probe /healthz often (a refused
        // loopback connect is cheap), and ask Docker whether the container
        // exited less often.
        let mut probes = 0u32;
        let mut known: Option<(String, u16)> = None;
        loop {
            if known.is_none() || probes.is_multiple_of(INSPECT_EVERY) {
                let info = self
                    .inspect(c, name)
                    .await?
                    .ok_or_else(|| DockerError::Failed(format!("container {name} was removed while starting")))?;
                let state = info.state.clone().unwrap_or_default();
                let restarts = info.restart_count.unwrap_or(0);
                let restarted = restarts > *baseline.get_or_insert(restarts);
                let exited =
                    matches!(state.status, Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD))
                        || state.restarting == Some(true)
                        || restarted;
                if exited {
                    let logs = self.tail_text(name, FAILURE_LOG_LINES).await;
                    let code = state.exit_code.unwrap_or_default();
                    let oom = if state.oom_killed == Some(true) { " (out of memory)" } else { "" };
                    return Err(DockerError::Failed(with_logs(
                        format!("the server exited at start with code {code}{oom}"),
                        &logs,
                    )));
                }
                known = match (published_port(&info), state.running) {
                    (Some(port), Some(true)) => Some((info.id.unwrap_or_default(), port)),
                    _ => None,
                };
            }
            if let Some((id, port)) = &known {
                let url = format!("http://{}:{port}/healthz", self.container_host);
                match self.http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => return Ok((id.clone(), *port)),
                    Ok(r) => last_probe = format!("/healthz answered {}", r.status()),
                    Err(e) => last_probe = format!("/healthz not reachable ({})", plain_reqwest(&e)),
                }
            }
            if Instant::now() >= deadline {
                let logs = self.tail_text(name, FAILURE_LOG_LINES).await;
                return Err(DockerError::Failed(with_logs(
                    format!("the server did not become healthy within {}s: {last_probe}", HEALTH_TIMEOUT.as_secs()),
                    &logs,
                )));
            }
            probes += 1;
            tokio::time::sleep(HEALTH_PROBE_EVERY).await;
        }
    }

    /// The last lines of a container's output, for failure messages (best effort).
    pub(crate) async fn tail_text(&self, name: &str, n: usize) -> Vec<String> {
        let lines: Vec<Result<LogLine, DockerError>> = self.logs(name, n, false).collect().await;
        lines.into_iter().filter_map(Result::ok).map(|l| l.line).collect()
    }

    pub(crate) fn map_err(&self, e: BollardError, doing: &str) -> DockerError {
        map_bollard(&self.host, e, doing)
    }
}

/// Mount mode: the bundle as `<dir>/<hex>.mjs`, readable by the container's
/// user, written once (atomically) and shared by every container of it.
pub(crate) fn place_bundle(dir: &std::path::Path, spec: &DeploySpec) -> Result<PathBuf, DockerError> {
    use std::os::unix::fs::PermissionsExt;
    let hex = spec.bundle_digest.trim_start_matches("sha256:");
    let path = dir.join(format!("{hex}.mjs"));
    let io = |what: &str, e: std::io::Error| DockerError::Failed(format!("could not {what} {}: {e}", path.display()));
    if std::fs::read(&path).is_ok_and(|b| bmm_core::digest::sha256(&b) == spec.bundle_digest) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("open up the folder of", e))?;
    let tmp = dir.join(format!(".{hex}.{}.tmp", Uuid::new_v4().simple()));
    let written = std::fs::write(&tmp, &spec.bundle)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", e));
    }
    Ok(path)
}

fn create_options(name: &str) -> CreateContainerOptions {
    CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() }
}

fn published_port(info: &ContainerInspectResponse) -> Option<u16> {
    let ports = info.network_settings.as_ref()?.ports.as_ref()?;
    let bindings = ports.get(&format!("{CONTAINER_PORT}/tcp"))?.as_ref()?;
    bindings
        .iter()
        .filter(|b| b.host_ip.as_deref().is_none_or(|ip| ip == "127.0.0.1" || ip.is_empty()))
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

pub(crate) fn validate(spec: &DeploySpec) -> Result<(), DockerError> {
    let bad = |m: String| Err(DockerError::BadRequest(m));
    if !bmm_core::slug::is_slug(&spec.slug) {
        return bad(format!("slug {:?} is not a valid slug", spec.slug));
    }
    if spec.version < 1 {
        return bad(format!("version {} is not positive", spec.version));
    }
    if spec.bundle.is_empty() {
        return bad("the bundle is empty".to_owned());
    }
    if !bmm_core::digest::is_digest(&spec.bundle_digest) {
        return bad(format!("bundle digest {:?} is not sha256:<hex>", spec.bundle_digest));
    }
    if bmm_core::digest::sha256(&spec.bundle) != spec.bundle_digest {
        return bad(format!("the bundle does not match its digest {}", spec.bundle_digest));
    }
    if !spec.jwks_dir.is_absolute() {
        return bad(format!("the JWKS folder {} is not an absolute path", spec.jwks_dir.display()));
    }
    if !spec.jwks_dir.is_dir() {
        return bad(format!("the JWKS folder {} does not exist", spec.jwks_dir.display()));
    }
    // The server runs as user 10001: the folder and file must be readable by others.
    let jwks_file = spec.jwks_dir.join("jwks.json");
    let Ok(file_meta) = std::fs::metadata(&jwks_file) else {
        return bad(format!("the JWKS folder {} has no jwks.json", spec.jwks_dir.display()));
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = std::fs::metadata(&spec.jwks_dir).map(|m| m.permissions().mode()).unwrap_or(0);
        if dir_mode & 0o005 != 0o005 || file_meta.permissions().mode() & 0o004 == 0 {
            return bad(format!(
                "the JWKS folder {} or its jwks.json is not readable by the container's user (needs o+rx on the folder, o+r on the file)",
                spec.jwks_dir.display()
            ));
        }
    }
    if spec.jwks_dir.to_string_lossy().contains(':') {
        return bad(format!("the JWKS folder {} contains ':'", spec.jwks_dir.display()));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &spec.env {
        let valid = !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !k.as_bytes()[0].is_ascii_digit();
        if !valid {
            return bad(format!("environment variable name {k:?} is not valid"));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return bad(format!("environment variable {k} is set by the platform"));
        }
        if !seen.insert(k.as_str()) {
            return bad(format!("environment variable {k} is given twice"));
        }
    }
    Ok(())
}

/// Docker log lines carry an RFC 3339 timestamp when asked for one.
fn parse_log_line(stream: LogStream, raw: &str) -> LogLine {
    let raw = raw.trim_end_matches(['\n', '\r']);
    if let Some((ts, rest)) = raw.split_once(' ')
        && let Ok(at) = DateTime::parse_from_rfc3339(ts)
    {
        return LogLine { stream, line: rest.to_owned(), at: at.with_timezone(&Utc) };
    }
    LogLine { stream, line: raw.to_owned(), at: Utc::now() }
}

pub(crate) fn with_logs(message: String, logs: &[String]) -> String {
    if logs.is_empty() {
        return message;
    }
    format!("{message}; last log lines:\n{}", logs.join("\n"))
}

pub(crate) fn plain_reqwest(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused"
    } else {
        "request failed"
    }
}

fn unavailable(host: &str, e: BollardError) -> DockerError {
    DockerError::Unavailable(format!("cannot reach the Docker daemon at {host}: {}", plain_bollard(&e)))
}

fn plain_bollard(e: &BollardError) -> String {
    match e {
        BollardError::SocketNotFoundError(path) => format!("no socket at {path}"),
        BollardError::RequestTimeoutError => "the request timed out".to_owned(),
        BollardError::DockerResponseServerError { status_code, message } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

fn map_bollard(host: &str, e: BollardError, doing: &str) -> DockerError {
    match e {
        BollardError::DockerResponseServerError { status_code, ref message } => {
            let message = message.trim();
            if (400..500).contains(&status_code) && status_code != 409 {
                DockerError::BadRequest(format!("Docker refused to {doing}: {message}"))
            } else if message.contains("port is already allocated") || message.contains("address already in use") {
                DockerError::Failed(format!("could not {doing}: the host port is already in use ({message})"))
            } else {
                DockerError::Failed(format!("could not {doing}: {message}"))
            }
        }
        BollardError::SocketNotFoundError(_)
        | BollardError::RequestTimeoutError
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::HttpClientError { .. }
        | BollardError::IOError { .. } => unavailable(host, e),
        other => DockerError::Failed(format!("could not {doing}: {other}")),
    }
}

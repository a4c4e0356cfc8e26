//! The `swarm` backend (`BMM_RUNTIME=swarm`): every server version is a Docker
//! Swarm service of one replica, so the swarm places it on a node, restarts
//! its task wherever it died, and moves it off a node that is lost.
//!
//! Isolation, as the `docker` backend keeps it and as far as Swarm allows
//! (docs/operations.md, "Docker Swarm"): each service sits alone on an
//! *internal* overlay network of its own (no route out, no other server on
//! it), publishes no port, runs read-only as uid 10001 without capabilities
//! and with memory, CPU and pid limits. The gateway, a host process, reaches
//! it through the service's *edge*: a small hardened container on the
//! manager's engine, published on the host's loopback only and joined to
//! that one network, that relays each connection to the service's name. A task that restarts keeps the name, so the route holds.

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, EndpointSpec, EndpointSpecModeEnum, HostConfig, HostConfigLogConfig, Limit,
    LocalNodeState, Mount, MountTmpfsOptions, MountTypeEnum, NetworkAttachmentConfig, NetworkConnectRequest,
    NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges,
    TaskSpecLogDriver, TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, InspectServiceOptions, ListServicesOptions, ListTasksOptions,
    StartContainerOptions, UpdateServiceOptions,
};
use chrono::DateTime;
use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::docker::{self, BUNDLE_PATH, CONTAINER_PORT, JWKS_MOUNT, MANAGED_LABEL};
use crate::{DeploySpec, DeployTimings, Deployed, Endpoint, ListFilter, LogLine, RuntimeError, Workload};

/// The edge's program (run as `node -e`).
const EDGE_JS: &str = include_str!("swarm/edge.js");
/// The bridge network every edge publishes from (inter-container traffic off).
pub const EDGE_NETWORK: &str = "bmm-edge";
/// An edge's label, valued with its service's name (never [`MANAGED_LABEL`]:
/// no `docker` backend sweep may take an edge for a server).
const EDGE_LABEL: &str = "bmm.edge";
/// The label holding the digest of the edge's program and image, so an edge
/// of an older program is replaced.
const EDGE_VERSION_LABEL: &str = "bmm.edge-version";
const EDGE_MEMORY_BYTES: i64 = 64 * 1024 * 1024;
/// The label of the platform's overlay networks and services in swarm mode.
const SWARM_LABEL: &str = "bmm.swarm";
/// A swarm service name is one DNS label.
const MAX_SERVICE_NAME: usize = 63;
/// How long a new service gets to be scheduled, started and answer `/healthz`
/// (longer than a container's: the swarm schedules first).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
const HEALTH_PROBE_EVERY: Duration = Duration::from_millis(100);
/// Every this many probes, the service's tasks are read for failures.
const TASKS_EVERY: u32 = 5;
const PIDS_LIMIT: i64 = 256;
const TMP_SIZE_BYTES: i64 = 64 * 1024 * 1024;
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Restarts are the swarm's, unbounded, a second apart: a task that dies is
/// replaced wherever the scheduler puts it (the reconciler watches the rest).
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long `remove` waits for a service's tasks to leave its network.
const NETWORK_FREE_TIMEOUT: Duration = Duration::from_secs(20);
const FAILURE_LOG_LINES: usize = 30;
/// The Engine API from which swarm services honour `no-new-privileges`.
const NO_NEW_PRIVILEGES_API: (u32, u32) = (1, 46);

/// A handle on a swarm manager. Built on the `docker` backend, which it uses
/// for what is the same on one engine: the bundle's image or mounted file,
/// logs of a task's container, the connection.
#[derive(Clone, Debug)]
pub struct Swarm {
    docker: docker::Docker,
}

/// The edge container of a service.
pub fn edge_name(service: &str) -> String {
    format!("bmm-edge-{}", service.trim_start_matches("bmm-"))
}

/// The service name of a workload name: the same when it fits one DNS label,
/// else the slug is cut so the `-v<version>-<build>` tail stays (edge.js does
/// the same, so the gateway can keep sending the workload name).
pub fn service_name(name: &str) -> String {
    if name.len() <= MAX_SERVICE_NAME {
        return name.to_owned();
    }
    // `-v<digits>-<12 hex>`, found from the end.
    let tail_start = name.rfind("-v").filter(|&i| {
        let rest = &name[i + 2..];
        rest.split_once('-').is_some_and(|(v, hex)| {
            !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
                && hex.len() == 12
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    });
    let Some(i) = tail_start else {
        return name[..MAX_SERVICE_NAME].trim_end_matches('-').to_owned();
    };
    let tail = &name[i..];
    let head = name[..MAX_SERVICE_NAME.saturating_sub(tail.len())].trim_end_matches('-');
    format!("{head}{tail}")
}

impl Swarm {
    /// Check the settings; the engine is contacted on first use.
    pub fn connect(cfg: &bmm_core::Config) -> Result<Swarm, RuntimeError> {
        Ok(Swarm { docker: docker::Docker::connect(cfg)? })
    }

    async fn client(&self) -> Result<bollard::Docker, RuntimeError> {
        self.docker.client().await
    }

    fn map_err(&self, e: BollardError, doing: &str) -> RuntimeError {
        self.docker.map_err(e, doing)
    }

    /// The engine answers and is a manager of an active swarm.
    pub async fn ping(&self) -> Result<(), RuntimeError> {
        let c = self.client().await?;
        self.require_manager(&c).await
    }

    async fn require_manager(&self, c: &bollard::Docker) -> Result<(), RuntimeError> {
        let info = c.info().await.map_err(|e| self.map_err(e, "read the engine's state"))?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.local_node_state != Some(LocalNodeState::ACTIVE) {
            return Err(RuntimeError::Failed(
                "BMM_RUNTIME=swarm, but this Docker engine is not part of a swarm: run `scripts/stack.sh swarm` \
                 (a one-node swarm) or join it to yours (docs/operations.md)"
                    .to_owned(),
            ));
        }
        if swarm.control_available != Some(true) {
            return Err(RuntimeError::Failed(
                "BMM_RUNTIME=swarm needs a manager node: this engine is a swarm worker (point BMM_DOCKER_HOST at a manager)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Make (or adopt) the version's service and wait until it answers
    /// `/healthz` through the edge, as the gateway will reach it.
    pub async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, RuntimeError> {
        docker::validate(spec)?;
        let c = self.client().await?;
        self.require_manager(&c).await?;
        let mut timings = DeployTimings::default();
        let t = Instant::now();
        let mount = self.docker.place_bundle_if_mounted(spec)?;
        let (image_tag, image_id) = self.docker.ensure_image(&c, spec, mount.is_some()).await?;
        timings.image_ms = docker::ms_since(t);

        let t = Instant::now();
        let name = crate::container_name(&spec.slug, spec.version, spec.build_id);
        let service = service_name(&name);
        let mut adopted = false;
        if let Some(found) = self.inspect_service(&c, &service).await? {
            let labels = service_labels(&found);
            if labels.get("bmm.build").map(String::as_str) != Some(spec.build_id.to_string().as_str()) {
                return Err(RuntimeError::BadRequest(format!(
                    "a service named {service} exists but belongs to another build; remove it first"
                )));
            }
            if labels.get("bmm.bundle") != Some(&spec.bundle_digest) {
                tracing::info!(service = %service, "existing service runs another bundle; recreating it");
                self.remove(&name).await?;
            } else {
                adopted = true;
                // A stopped version that is deployed again runs again.
                if replicas(&found) == Some(0) {
                    self.scale(&c, &service, 1, None).await?;
                }
            }
        }
        self.ensure_network(&c, &service, spec).await?;
        if !adopted {
            let body = self.service_spec(spec, &service, &image_tag, mount.as_deref(), &c).await;
            match c.create_service(body, None).await {
                Ok(_) => {}
                // Another attempt of this deploy created it meanwhile.
                Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => adopted = true,
                Err(e) => return Err(self.map_err(e, "create the service")),
            }
        }
        timings.create_ms = docker::ms_since(t);
        let t = Instant::now();
        let port = match self.ensure_edge(&c, &service, spec).await {
            Ok(port) => port,
            Err(RuntimeError::Failed(msg)) => {
                let _ = self.remove(&name).await;
                return Err(RuntimeError::Failed(msg));
            }
            Err(e) => return Err(e),
        };
        timings.start_ms = docker::ms_since(t);

        let t = Instant::now();
        let waited = self.wait_healthy(&c, &service, port).await;
        timings.health_ms = docker::ms_since(t);
        let id = match waited {
            Ok(id) => id,
            Err(RuntimeError::Failed(msg)) => {
                // A version that fails at start is removed, so a retry starts clean.
                let _ = self.remove(&name).await;
                return Err(RuntimeError::Failed(msg));
            }
            Err(e) => return Err(e),
        };
        tracing::info!(service = %service, adopted, image = %image_tag, ?timings, "service is healthy");
        Ok(Deployed {
            id,
            name,
            image_id,
            image_tag,
            host: self.docker.container_host().to_owned(),
            port,
            adopted,
            timings,
        })
    }

    async fn service_spec(
        &self,
        spec: &DeploySpec,
        service: &str,
        image_tag: &str,
        bundle: Option<&std::path::Path>,
        c: &bollard::Docker,
    ) -> ServiceSpec {
        let labels = HashMap::from([
            ("bmm.org".to_owned(), spec.org_id.to_string()),
            ("bmm.server".to_owned(), spec.server_id.to_string()),
            ("bmm.version".to_owned(), spec.version.to_string()),
            ("bmm.build".to_owned(), spec.build_id.to_string()),
            ("bmm.slug".to_owned(), spec.slug.clone()),
            ("bmm.bundle".to_owned(), spec.bundle_digest.clone()),
            ("bmm.name".to_owned(), crate::container_name(&spec.slug, spec.version, spec.build_id)),
            (MANAGED_LABEL.to_owned(), "true".to_owned()),
            (SWARM_LABEL.to_owned(), "true".to_owned()),
        ]);
        let mut env = vec![
            format!("PORT={CONTAINER_PORT}"),
            format!("BMM_JWKS_FILE={JWKS_MOUNT}/jwks.json"),
            "NODE_ENV=production".to_owned(),
        ];
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let bind = |source: &std::path::Path, target: &str| Mount {
            target: Some(target.to_owned()),
            source: Some(source.display().to_string()),
            typ: Some(MountTypeEnum::BIND),
            read_only: Some(true),
            ..Default::default()
        };
        let mut mounts = vec![bind(&spec.jwks_dir, JWKS_MOUNT)];
        mounts.extend(bundle.map(|b| bind(b, BUNDLE_PATH)));
        mounts.push(Mount {
            target: Some("/tmp".to_owned()),
            typ: Some(MountTypeEnum::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(TMP_SIZE_BYTES),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        });
        // Older engines drop the field without a word; docs/operations.md says
        // how to get it there anyway (the daemon-wide setting).
        let privileges = self
            .engine_at_least(c, NO_NEW_PRIVILEGES_API)
            .await
            .then(|| TaskSpecContainerSpecPrivileges { no_new_privileges: Some(true), ..Default::default() });
        ServiceSpec {
            name: Some(service.to_owned()),
            labels: Some(labels),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image_tag.to_owned()),
                    args: Some(vec![BUNDLE_PATH.to_owned()]),
                    user: Some(docker::RUN_AS.to_owned()),
                    dir: Some(docker::APP_DIR.to_owned()),
                    env: Some(env),
                    // Not the service's labels: a task container must never look
                    // like a `docker` backend container to a sweep.
                    labels: Some(HashMap::from([("bmm.service".to_owned(), service.to_owned())])),
                    read_only: Some(true),
                    mounts: Some(mounts),
                    capability_drop: Some(vec!["ALL".to_owned()]),
                    privileges,
                    stop_signal: Some("SIGTERM".to_owned()),
                    stop_grace_period: Some(nanos(STOP_GRACE)),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: Some(self.docker.nano_cpus()),
                        memory_bytes: Some(self.docker.memory_bytes()),
                        pids: Some(PIDS_LIMIT),
                    }),
                    reservations: None,
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(nanos(RESTART_DELAY)),
                    max_attempts: Some(0),
                    window: Some(0),
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(service.to_owned()),
                    ..Default::default()
                }]),
                log_driver: Some(TaskSpecLogDriver {
                    name: Some("json-file".to_owned()),
                    options: Some(HashMap::from([
                        ("max-size".to_owned(), "10m".to_owned()),
                        ("max-file".to_owned(), "3".to_owned()),
                    ])),
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            // DNS round robin, no virtual IP: the name resolves to the task
            // itself, which needs no IPVS on the node, and nothing is published.
            endpoint_spec: Some(EndpointSpec { mode: Some(EndpointSpecModeEnum::DNSRR), ports: None }),
            ..Default::default()
        }
    }

    async fn engine_at_least(&self, c: &bollard::Docker, want: (u32, u32)) -> bool {
        let Ok(v) = c.version().await else { return false };
        let parsed = v.api_version.as_deref().and_then(|s| {
            let (major, minor) = s.split_once('.')?;
            Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
        });
        parsed.is_some_and(|got| got >= want)
    }

    /// The service's own internal overlay network (attachable, so the edge
    /// container can join it).
    async fn ensure_network(&self, c: &bollard::Docker, service: &str, spec: &DeploySpec) -> Result<(), RuntimeError> {
        if self.network_exists(c, service).await? {
            return Ok(());
        }
        let req = NetworkCreateRequest {
            name: service.to_owned(),
            driver: Some("overlay".to_owned()),
            internal: Some(true),
            attachable: Some(true),
            labels: Some(HashMap::from([
                (MANAGED_LABEL.to_owned(), "true".to_owned()),
                (SWARM_LABEL.to_owned(), "true".to_owned()),
                ("bmm.server".to_owned(), spec.server_id.to_string()),
                ("bmm.build".to_owned(), spec.build_id.to_string()),
            ])),
            ..Default::default()
        };
        match c.create_network(req).await {
            Ok(_) => Ok(()),
            Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(self.map_err(e, "create the service's network")),
        }
    }

    async fn network_exists(&self, c: &bollard::Docker, name: &str) -> Result<bool, RuntimeError> {
        match c.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(e) => Err(self.map_err(e, "inspect a network")),
        }
    }

    /// The service's edge, running the current program, joined to the
    /// service's network and published on loopback; returns its host port.
    async fn ensure_edge(&self, c: &bollard::Docker, service: &str, spec: &DeploySpec) -> Result<u16, RuntimeError> {
        let name = edge_name(service);
        let version = bmm_core::digest::sha256(format!("{EDGE_JS}\n{}", self.docker.runtime_image()).as_bytes());
        if let Some(info) = self.inspect_container(c, &name).await? {
            let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
            if labels.get(EDGE_VERSION_LABEL) == Some(&version) {
                return self.start_edge(c, &name).await;
            }
            tracing::info!(edge = %name, "the edge runs another program; replacing it");
            self.docker.remove(&name).await?;
        }
        if !self.network_exists(c, EDGE_NETWORK).await? {
            let req = NetworkCreateRequest {
                name: EDGE_NETWORK.to_owned(),
                driver: Some("bridge".to_owned()),
                // Edges have nothing to say to each other.
                options: Some(HashMap::from([("com.docker.network.bridge.enable_icc".to_owned(), "false".to_owned())])),
                labels: Some(HashMap::from([(EDGE_LABEL.to_owned(), String::new())])),
                ..Default::default()
            };
            match c.create_network(req).await {
                Ok(_) | Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => {}
                Err(e) => return Err(self.map_err(e, "create the edges' network")),
            }
        }
        let port_key = format!("{CONTAINER_PORT}/tcp");
        let body = ContainerCreateBody {
            image: Some(self.docker.runtime_image().to_owned()),
            cmd: Some(vec!["-e".to_owned(), EDGE_JS.to_owned()]),
            user: Some(docker::RUN_AS.to_owned()),
            // Whose edge it is, so one that outlived its service is still
            // reported (and removed or redeployed) by `list`.
            labels: Some(HashMap::from([
                (EDGE_LABEL.to_owned(), service.to_owned()),
                (EDGE_VERSION_LABEL.to_owned(), version),
                ("bmm.name".to_owned(), crate::container_name(&spec.slug, spec.version, spec.build_id)),
                ("bmm.server".to_owned(), spec.server_id.to_string()),
                ("bmm.build".to_owned(), spec.build_id.to_string()),
                ("bmm.version".to_owned(), spec.version.to_string()),
                ("bmm.bundle".to_owned(), spec.bundle_digest.clone()),
            ])),
            exposed_ports: Some(HashMap::from([(port_key.clone(), HashMap::new())])),
            env: Some(vec![format!("BMM_SERVICE={service}"), "NODE_ENV=production".to_owned()]),
            host_config: Some(HostConfig {
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                memory: Some(EDGE_MEMORY_BYTES),
                memory_swap: Some(EDGE_MEMORY_BYTES),
                nano_cpus: Some(self.docker.nano_cpus()),
                pids_limit: Some(PIDS_LIMIT),
                network_mode: Some(EDGE_NETWORK.to_owned()),
                // The host's loopback only: nothing off this host reaches an edge.
                port_bindings: Some(HashMap::from([(
                    port_key,
                    Some(vec![PortBinding { host_ip: Some("127.0.0.1".to_owned()), host_port: Some(String::new()) }]),
                )])),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".to_owned()),
                    config: Some(HashMap::from([
                        ("max-size".to_owned(), "1m".to_owned()),
                        ("max-file".to_owned(), "2".to_owned()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        match c.create_container(Some(opts), body).await {
            // A concurrent deploy made it meanwhile.
            Ok(_) | Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(e) => return Err(self.map_err(e, "create the edge")),
        }
        self.start_edge(c, &name).await
    }

    /// Join the service's network (when not yet), start, and read the published port.
    async fn start_edge(&self, c: &bollard::Docker, name: &str) -> Result<u16, RuntimeError> {
        let service = edge_service(name);
        let info = self
            .inspect_container(c, name)
            .await?
            .ok_or_else(|| RuntimeError::Failed(format!("the edge {name} disappeared right after it was created")))?;
        let joined =
            info.network_settings.as_ref().and_then(|n| n.networks.as_ref()).is_some_and(|n| n.contains_key(&service));
        if !joined {
            let req = NetworkConnectRequest {
                container: Some(name.to_owned()),
                endpoint_config: Some(EndpointSettings::default()),
            };
            match c.connect_network(&service, req).await {
                Ok(()) => {}
                // Joined meanwhile by a concurrent deploy.
                Err(BollardError::DockerResponseServerError { status_code: 403 | 409, message })
                    if message.contains("already exists") => {}
                Err(e) => return Err(self.map_err(e, "join the edge to the service's network")),
            }
        }
        if info.state.as_ref().and_then(|s| s.running) != Some(true) {
            match c.start_container(name, None::<StartContainerOptions>).await {
                Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 304, .. }) => {}
                Err(e) => return Err(self.map_err(e, "start the edge")),
            }
        }
        // The port is allocated at start.
        let info = self.inspect_container(c, name).await?;
        info.as_ref()
            .and_then(edge_port)
            .ok_or_else(|| RuntimeError::Failed(format!("the edge {name} has no published port")))
    }

    async fn inspect_container(
        &self,
        c: &bollard::Docker,
        name: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, RuntimeError> {
        match c.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(info) => Ok(Some(info)),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.map_err(e, "inspect the edge")),
        }
    }

    /// The edge's published port while it runs.
    async fn edge_endpoint(&self, c: &bollard::Docker, service: &str) -> Result<Option<Endpoint>, RuntimeError> {
        let info = self.inspect_container(c, &edge_name(service)).await?;
        let running = info.as_ref().and_then(|i| i.state.as_ref()).and_then(|s| s.running) == Some(true);
        Ok(info
            .as_ref()
            .filter(|_| running)
            .and_then(edge_port)
            .map(|port| Endpoint { host: self.docker.container_host().to_owned(), port }))
    }

    async fn inspect_service(&self, c: &bollard::Docker, service: &str) -> Result<Option<Service>, RuntimeError> {
        match c.inspect_service(service, None::<InspectServiceOptions>).await {
            Ok(s) => Ok(Some(s)),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.map_err(e, "inspect the service")),
        }
    }

    async fn tasks(&self, c: &bollard::Docker, service: &str) -> Result<Vec<Task>, RuntimeError> {
        let Some(id) = self.inspect_service(c, service).await?.and_then(|s| s.id) else { return Ok(Vec::new()) };
        let filters = HashMap::from([("service".to_owned(), vec![id.clone()])]);
        let mut tasks = c
            .list_tasks(Some(ListTasksOptions { filters: Some(filters) }))
            .await
            .map_err(|e| self.map_err(e, "list the service's tasks"))?;
        // The filter may match more than one service (a name or id prefix): keep this one's.
        tasks.retain(|t| t.service_id.as_deref() == Some(id.as_str()));
        tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(tasks)
    }

    /// Probe `/healthz` through the edge until it answers; fail early when a
    /// task of the service failed since the wait began.
    async fn wait_healthy(&self, c: &bollard::Docker, service: &str, port: u16) -> Result<String, RuntimeError> {
        let started = chrono::Utc::now() - chrono::Duration::seconds(1);
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let url = format!("http://{}:{port}/healthz", self.docker.container_host());
        let mut last_probe: String;
        let mut probes = 0u32;
        loop {
            if probes.is_multiple_of(TASKS_EVERY) {
                let tasks = self.tasks(c, service).await?;
                let failed = tasks.iter().find(|t| {
                    let created = t.created_at.as_deref().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
                    let state = t.status.as_ref().and_then(|s| s.state);
                    matches!(state, Some(TaskState::FAILED | TaskState::REJECTED))
                        && created.is_some_and(|at| at >= started)
                });
                if let Some(task) = failed {
                    let status = task.status.clone().unwrap_or_default();
                    let code = status.container_status.as_ref().and_then(|s| s.exit_code);
                    let why = status.err.or(status.message).unwrap_or_default();
                    let logs = match status.container_status.and_then(|s| s.container_id) {
                        Some(id) => self.docker.tail_text(&id, FAILURE_LOG_LINES).await,
                        None => Vec::new(),
                    };
                    let head = match code {
                        Some(code) => format!("the server exited at start with code {code} ({why})"),
                        None => format!("the swarm could not start the server: {why}"),
                    };
                    return Err(RuntimeError::Failed(docker::with_logs(head, &logs)));
                }
            }
            let probe = self.docker.http().get(&url).send().await;
            match probe {
                Ok(r) if r.status().is_success() => {
                    let id = self.inspect_service(c, service).await?.and_then(|s| s.id).unwrap_or_default();
                    return Ok(id);
                }
                Ok(r) => last_probe = format!("/healthz answered {} through the edge", r.status()),
                Err(e) => {
                    last_probe = format!("/healthz not reachable through the edge ({})", docker::plain_reqwest(&e))
                }
            }
            if Instant::now() >= deadline {
                let logs = self.task_logs_text(c, service).await;
                return Err(RuntimeError::Failed(docker::with_logs(
                    format!("the server did not become healthy within {}s: {last_probe}", HEALTH_TIMEOUT.as_secs()),
                    &logs,
                )));
            }
            probes += 1;
            tokio::time::sleep(HEALTH_PROBE_EVERY).await;
        }
    }

    async fn task_logs_text(&self, c: &bollard::Docker, service: &str) -> Vec<String> {
        match self.task_container(c, service).await {
            Ok(Some(id)) => self.docker.tail_text(&id, FAILURE_LOG_LINES).await,
            _ => Vec::new(),
        }
    }

    /// The newest task's container, if it has one.
    async fn task_container(&self, c: &bollard::Docker, service: &str) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .tasks(c, service)
            .await?
            .into_iter()
            .find_map(|t| t.status.and_then(|s| s.container_status).and_then(|s| s.container_id)))
    }

    async fn scale(
        &self,
        c: &bollard::Docker,
        service: &str,
        to: i64,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        // The swarm refuses an update made from a stale spec version: read, change, retry once.
        for attempt in 0..2 {
            let Some(found) = self.inspect_service(c, service).await? else { return Ok(()) };
            let mut spec = found.spec.clone().unwrap_or_default();
            spec.mode = Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(to) }),
                ..Default::default()
            });
            if let Some(grace) = grace
                && let Some(cs) = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut())
            {
                cs.stop_grace_period = Some(nanos(grace));
            }
            let version = found.version.and_then(|v| v.index).unwrap_or(0);
            let opts =
                UpdateServiceOptions { version: i32::try_from(version).unwrap_or(i32::MAX), ..Default::default() };
            match c.update_service(service, spec, opts, None).await {
                Ok(_) => return Ok(()),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => return Ok(()),
                Err(BollardError::DockerResponseServerError { message, .. })
                    if attempt == 0 && message.contains("out of sequence") => {}
                Err(e) => return Err(self.map_err(e, "update the service")),
            }
        }
        Ok(())
    }

    /// Scale the service to no task (SIGTERM, SIGKILL after `grace`). A missing service is fine.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let c = self.client().await?;
        self.scale(&c, &service_name(name), 0, Some(grace.min(Duration::from_secs(600)))).await
    }

    /// Remove the service and its network. A missing one is fine.
    pub async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let c = self.client().await?;
        let service = service_name(name);
        // Only the platform's: a foreign service of that name is left alone.
        if let Some(found) = self.inspect_service(&c, &service).await? {
            if service_labels(&found).get(MANAGED_LABEL).map(String::as_str) != Some("true") {
                return Err(RuntimeError::BadRequest(format!("the service {service} is not the platform's")));
            }
            match c.delete_service(&service).await {
                Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => return Err(self.map_err(e, "remove the service")),
            }
        }
        self.docker.remove(&edge_name(&service)).await?;
        self.remove_network(&c, &service).await
    }

    /// The network goes once the service's tasks have left it (they take a
    /// moment to stop). Only the platform's.
    async fn remove_network(&self, c: &bollard::Docker, network: &str) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + NETWORK_FREE_TIMEOUT;
        loop {
            match c.inspect_network(network, None::<bollard::query_parameters::InspectNetworkOptions>).await {
                Ok(n) if n.labels.as_ref().and_then(|l| l.get(SWARM_LABEL)).map(String::as_str) == Some("true") => {}
                Ok(_) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => return Ok(()),
                Err(e) => return Err(self.map_err(e, "inspect the service's network")),
            }
            match c.remove_network(network).await {
                Ok(()) => {
                    // The manager forgot it; the node's copy goes a moment later.
                    while Instant::now() < deadline
                        && c.inspect_network(network, None::<bollard::query_parameters::InspectNetworkOptions>)
                            .await
                            .is_ok()
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    return Ok(());
                }
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => return Ok(()),
                // "has active endpoints" (local copy), "is in use by task …" (the manager).
                Err(BollardError::DockerResponseServerError { message, .. })
                    if Instant::now() < deadline
                        && (message.contains("active endpoints") || message.contains("in use")) =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(self.map_err(e, "remove the service's network")),
            }
        }
    }

    /// Remove every service of a build; returns how many.
    pub async fn remove_build(&self, build_id: Uuid) -> Result<usize, RuntimeError> {
        let list = self.list(&ListFilter { build_id: Some(build_id), ..Default::default() }).await?;
        for w in &list {
            self.remove(&w.name).await?;
        }
        Ok(list.len())
    }

    /// The output of the service's newest task, read from its container on
    /// this engine (a task on another node: see docs/operations.md).
    pub fn logs(&self, name: &str, tail: usize, follow: bool) -> BoxStream<'static, Result<LogLine, RuntimeError>> {
        let this = self.clone();
        let service = service_name(name);
        futures::stream::once(async move {
            let c = this.client().await?;
            match this.task_container(&c, &service).await? {
                Some(id) => Ok(this.docker.logs(&id, tail, follow).boxed()),
                None => Err(RuntimeError::Failed(format!("{service} has no task with a container yet"))),
            }
        })
        .map(|r| match r {
            Ok(s) => s,
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    /// The platform's per-bundle images on this node that nothing uses (see
    /// [`docker::Docker::prune_images`]); services run the images the docker backend makes.
    pub async fn prune_images(&self, grace: Duration) -> Result<Vec<String>, RuntimeError> {
        self.docker.prune_images(grace).await
    }

    /// Every service the platform manages, narrowed by `filter`, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Workload>, RuntimeError> {
        let c = self.client().await?;
        let mut labels = vec![format!("{MANAGED_LABEL}=true"), format!("{SWARM_LABEL}=true")];
        labels.extend(filter.server_id.map(|id| format!("bmm.server={id}")));
        labels.extend(filter.build_id.map(|id| format!("bmm.build={id}")));
        let filters = HashMap::from([("label".to_owned(), labels)]);
        let services = c
            .list_services(Some(ListServicesOptions { filters: Some(filters), status: Some(false) }))
            .await
            .map_err(|e| self.map_err(e, "list services"))?;
        let mut out = Vec::with_capacity(services.len());
        for s in &services {
            out.push(self.workload(&c, s).await?);
        }
        out.extend(self.stranded_edges(&c, filter, &services).await?);
        out.sort_by_key(|w| std::cmp::Reverse(w.created));
        Ok(out)
    }

    /// Edges whose service is gone (removed by hand, or a crash between the
    /// two removals), as workloads in state `missing`: the reconciler
    /// redeploys a wanted one (the edge is reused) and removes the rest.
    async fn stranded_edges(
        &self,
        c: &bollard::Docker,
        filter: &ListFilter,
        services: &[Service],
    ) -> Result<Vec<Workload>, RuntimeError> {
        let mut labels = vec![EDGE_VERSION_LABEL.to_owned()];
        labels.extend(filter.server_id.map(|id| format!("bmm.server={id}")));
        labels.extend(filter.build_id.map(|id| format!("bmm.build={id}")));
        let filters = HashMap::from([("label".to_owned(), labels)]);
        let edges = c
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.map_err(e, "list the edges"))?;
        let live: std::collections::HashSet<String> =
            services.iter().filter_map(|s| s.spec.as_ref().and_then(|sp| sp.name.clone())).collect();
        Ok(edges
            .into_iter()
            .filter_map(|e| {
                let labels = e.labels.unwrap_or_default();
                let service = labels.get(EDGE_LABEL)?;
                let name = labels.get("bmm.name")?;
                if live.contains(service) {
                    return None;
                }
                Some(Workload {
                    id: e.id.unwrap_or_default(),
                    name: name.clone(),
                    server_id: labels.get("bmm.server").and_then(|b| b.parse().ok()),
                    build_id: labels.get("bmm.build").and_then(|b| b.parse().ok()),
                    version: labels.get("bmm.version").and_then(|v| v.parse().ok()),
                    bundle_digest: labels.get("bmm.bundle").cloned(),
                    state: "missing".to_owned(),
                    running: false,
                    image_id: String::new(),
                    endpoint: None,
                    created: e.created.unwrap_or(0),
                })
            })
            .collect())
    }

    /// The service of `name` as it is now, if it exists and is the platform's.
    pub async fn adopt(&self, name: &str) -> Result<Option<Workload>, RuntimeError> {
        let c = self.client().await?;
        let Some(found) = self.inspect_service(&c, &service_name(name)).await? else { return Ok(None) };
        if service_labels(&found).get(MANAGED_LABEL).map(String::as_str) != Some("true") {
            return Ok(None);
        }
        Ok(Some(self.workload(&c, &found).await?))
    }

    /// A service as the runtime's vocabulary says it: `running` when a task
    /// runs; `stopped` when scaled to none; else the newest task's state.
    async fn workload(&self, c: &bollard::Docker, s: &Service) -> Result<Workload, RuntimeError> {
        let labels = service_labels(s);
        let service = s.spec.as_ref().and_then(|sp| sp.name.clone()).unwrap_or_default();
        let tasks = self.tasks(c, &service).await?;
        let running = tasks.iter().any(|t| {
            t.desired_state == Some(TaskState::RUNNING)
                && t.status.as_ref().and_then(|st| st.state) == Some(TaskState::RUNNING)
        });
        let state = if running {
            "running".to_owned()
        } else if replicas(s) == Some(0) {
            "stopped".to_owned()
        } else {
            tasks
                .first()
                .and_then(|t| t.status.as_ref().and_then(|st| st.state))
                .map_or_else(|| "pending".to_owned(), |st| st.to_string())
        };
        let image = s
            .spec
            .as_ref()
            .and_then(|sp| sp.task_template.as_ref())
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|cs| cs.image.clone())
            .unwrap_or_default();
        Ok(Workload {
            id: s.id.clone().unwrap_or_default(),
            name: labels.get("bmm.name").cloned().unwrap_or_else(|| service.clone()),
            server_id: labels.get("bmm.server").and_then(|b| b.parse().ok()),
            build_id: labels.get("bmm.build").and_then(|b| b.parse().ok()),
            version: labels.get("bmm.version").and_then(|v| v.parse().ok()),
            bundle_digest: labels.get("bmm.bundle").cloned(),
            endpoint: if running { self.edge_endpoint(c, &service).await? } else { None },
            state,
            running,
            image_id: image,
            created: s
                .created_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or(0, |t| t.timestamp()),
        })
    }
}

/// The service an edge container relays to.
fn edge_service(edge: &str) -> String {
    format!("bmm-{}", edge.trim_start_matches("bmm-edge-"))
}

fn edge_port(info: &bollard::models::ContainerInspectResponse) -> Option<u16> {
    let ports = info.network_settings.as_ref()?.ports.as_ref()?;
    let bindings = ports.get(&format!("{CONTAINER_PORT}/tcp"))?.as_ref()?;
    bindings.iter().find_map(|b| b.host_port.as_deref()?.parse().ok())
}

fn service_labels(s: &Service) -> HashMap<String, String> {
    s.spec.as_ref().and_then(|sp| sp.labels.clone()).unwrap_or_default()
}

fn replicas(s: &Service) -> Option<i64> {
    s.spec.as_ref()?.mode.as_ref()?.replicated.as_ref()?.replicas
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

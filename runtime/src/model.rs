//! The runtime's vocabulary, shared by every backend: what a deploy needs,
//! what it made, what runs, where it is reached, and what went wrong.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be reached; retrying later may succeed.
    #[error("Docker is unavailable: {0}")]
    Unavailable(String),
    /// This deploy failed (the image did not build, the container did not start, …).
    #[error("{0}")]
    Failed(String),
    /// The request itself is wrong; retrying will not help.
    #[error("bad deploy request: {0}")]
    BadRequest(String),
}

impl RuntimeError {
    /// Whether a caller should retry: only when the engine itself was unreachable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }
}

/// What one deploy needs. `Debug` leaves the environment values out.
#[derive(Clone)]
pub struct DeploySpec {
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub build_id: Uuid,
    pub version: i32,
    pub slug: String,
    /// The bundled server (one ESM file), run as `node /app/server.mjs`.
    pub bundle: Vec<u8>,
    /// `sha256:<hex>` of `bundle`.
    pub bundle_digest: String,
    /// Credentials and platform settings (`BMM_SERVER_URL`, `BMM_ISSUER`, …); never logged.
    pub env: Vec<(String, String)>,
    /// Host folder holding `jwks.json`, mounted read-only at [`crate::docker::JWKS_MOUNT`].
    pub jwks_dir: PathBuf,
}

impl std::fmt::Debug for DeploySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploySpec")
            .field("org_id", &self.org_id)
            .field("server_id", &self.server_id)
            .field("build_id", &self.build_id)
            .field("version", &self.version)
            .field("slug", &self.slug)
            .field("bundle_len", &self.bundle.len())
            .field("bundle_digest", &self.bundle_digest)
            .field("env_keys", &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .field("jwks_dir", &self.jwks_dir)
            .finish()
    }
}

/// A running, healthy workload (a container, a service's task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub id: String,
    pub name: String,
    /// Image id (`sha256:…`) it runs.
    pub image_id: String,
    /// Image tag (`bmm-server:…`, or the runtime image when the bundle is mounted).
    pub image_tag: String,
    /// Where the gateway reaches it.
    pub host: String,
    pub port: u16,
    /// Whether a workload this build made before was found and reused.
    pub adopted: bool,
    /// Where the deploy's time went.
    pub timings: DeployTimings,
}

impl Deployed {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: self.host.clone(), port: self.port }
    }
}

/// Milliseconds of each part of a deploy (0 for a part that had nothing to do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployTimings {
    /// Find or make the image of the bundle.
    pub image_ms: u64,
    /// Create (or adopt) the workload.
    pub create_ms: u64,
    pub start_ms: u64,
    /// Started → `/healthz` answered.
    pub health_ms: u64,
}

/// Where the gateway sends a server's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub line: String,
    pub at: DateTime<Utc>,
}

/// Which workloads [`crate::Runtime::list`] reports: every one the platform
/// manages, narrowed by the fields that are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub server_id: Option<Uuid>,
    pub build_id: Option<Uuid>,
}

impl ListFilter {
    pub fn server(server_id: Uuid) -> ListFilter {
        ListFilter { server_id: Some(server_id), ..Default::default() }
    }
}

/// One workload as the runtime reports it (running or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub id: String,
    pub name: String,
    pub server_id: Option<Uuid>,
    pub build_id: Option<Uuid>,
    pub version: Option<i32>,
    /// `sha256:<hex>` of the bundle it runs.
    pub bundle_digest: Option<String>,
    /// The engine's word for its state: `running`, `exited`, `restarting`, …
    pub state: String,
    pub running: bool,
    pub image_id: String,
    /// Where it is reached while it runs.
    pub endpoint: Option<Endpoint>,
    /// When it was created (seconds since the epoch).
    pub created: i64,
}

/// The workload name of a build: `bmm-<slug>-v<version>-<last 12 hex of the build id>`.
pub fn container_name(slug: &str, version: i32, build_id: Uuid) -> String {
    // The tail, not the head: build ids are UUIDv7, whose first characters are
    // a timestamp shared by builds made in the same minute; the last twelve
    // are random.
    let simple = build_id.simple().to_string();
    let short = &simple[simple.len() - 12..];
    format!("bmm-{slug}-v{version}-{short}")
}

//! Shared harness of the build tests: a database of their own, seeded rows,
//! a unique task queue, workers in-process or as a separate process, and
//! helpers to read events, histories and containers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bmm_activities::BuildInput;
use bmm_core::Config;
use bmm_db::models::{Build, BuildEvent};
use bmm_db::testing::TestDb;
use bmm_workflows::BuildWorkflow;
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use temporalio_client::{Client, WorkflowGetResultOptions};
use tokio::sync::oneshot;
use uuid::Uuid;

pub struct Env {
    pub db: TestDb,
    pub pool: bmm_db::Pool,
    pub cfg: Arc<Config>,
    pub data_dir: tempfile::TempDir,
    /// Extra environment for worker processes (overrides).
    pub env: BTreeMap<String, String>,
}

pub fn toolchain_dir() -> String {
    std::env::var("BMM_TOOLCHAIN_DIR").unwrap_or_else(|_| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        root.join(".bmm/toolchain").to_string_lossy().into_owned()
    })
}

pub fn temporal_address() -> String {
    std::env::var("BMM_TEMPORAL_ADDRESS").unwrap_or_else(|_| "http://127.0.0.1:7233".into())
}

impl Env {
    pub async fn new(name: &str) -> Env {
        Env::with_temporal(name, &temporal_address()).await
    }

    pub async fn with_temporal(name: &str, temporal: &str) -> Env {
        let db = TestDb::new().await;
        let pool = db.pool();
        let data_dir = tempfile::tempdir().expect("data dir");
        let mut env = BTreeMap::new();
        env.insert("BMM_DATABASE_URL".into(), db.url.clone());
        env.insert("BMM_DATABASE_POOL_SIZE".into(), "8".into());
        env.insert("BMM_TEMPORAL_ADDRESS".into(), temporal.to_owned());
        env.insert("BMM_TEMPORAL_TASK_QUEUE".into(), format!("test-{name}-{}", Uuid::new_v4().simple()));
        env.insert("BMM_TOOLCHAIN_DIR".into(), toolchain_dir());
        env.insert("BMM_DATA_DIR".into(), data_dir.path().to_string_lossy().into_owned());
        env.insert("BMM_GENERATOR".into(), "offline".into());
        env.insert("BMM_SECRET_KEY".into(), "42".repeat(32));
        env.insert("BMM_DEV".into(), "true".into());
        if let Ok(image) = std::env::var("BMM_RUNTIME_IMAGE") {
            env.insert("BMM_RUNTIME_IMAGE".into(), image);
        }
        let cfg = Arc::new(config_from(&env));
        Env { db, pool, cfg, data_dir, env }
    }

    /// Change a setting for workers started from now on.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.insert(key.into(), value.into());
        self.cfg = Arc::new(config_from(&self.env));
    }

    pub async fn client(&self) -> Client {
        bmm_workflows::client::connect(&self.cfg).await.expect("temporal client")
    }

    /// A worker in this process; dropping the guard stops it.
    pub fn worker(&self) -> InProcessWorker {
        self.worker_with(None)
    }

    /// A worker in this process whose activities use `generator`.
    pub fn worker_with(&self, generator: Option<Arc<dyn bmm_generator::Generator>>) -> InProcessWorker {
        let cfg = self.cfg.clone();
        let pool = self.pool.clone();
        let activities = match generator {
            Some(g) => bmm_activities::BuildActivities::with_generator(cfg, pool, g),
            None => bmm_activities::BuildActivities::new(cfg, pool),
        };
        self.worker_from(activities)
    }

    /// A worker in this process running `activities` (tests set their pauses).
    pub fn worker_from(&self, activities: bmm_activities::BuildActivities) -> InProcessWorker {
        let (tx, rx) = oneshot::channel::<()>();
        // run_worker's future is Send: it spawns like any task, on the test's
        // runtime (tokio's default stacks; the worker brings its own).
        let task = tokio::spawn(bmm_workflows::worker::run_worker_with(activities, async {
            let _ = rx.await;
        }));
        InProcessWorker { stop: Some(tx), task: Some(task) }
    }

    /// A worker as a separate process (so a test can `kill -9` it).
    pub fn worker_process(&self) -> WorkerProcess {
        self.worker_process_with(&[])
    }

    /// [`Env::worker_process`] with some settings of its own.
    pub fn worker_process_with(&self, overrides: &[(&str, &str)]) -> WorkerProcess {
        let mut worker = self.worker_command();
        worker.envs(overrides.iter().copied()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
        WorkerProcess { child: worker.spawn().expect("spawn bmm-build-worker") }
    }

    /// [`Env::worker_process`] with its stdout and stderr in `log`.
    pub fn worker_process_logged(&self, log: &std::path::Path) -> WorkerProcess {
        let mut worker = self.worker_command();
        let file = std::fs::File::create(log).expect("worker log");
        worker.stdout(file.try_clone().expect("log")).stderr(file);
        WorkerProcess { child: worker.spawn().expect("spawn bmm-build-worker") }
    }

    fn worker_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bmm-build-worker"));
        cmd.env_clear();
        for key in ["PATH", "HOME", "RUST_LOG"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(&self.env).stdin(Stdio::null());
        cmd
    }

    /// An access token of the org for the server `slug` (its audience), as the
    /// authorization server would mint it.
    pub async fn token(&self, org_id: Uuid, slug: &str) -> String {
        let keys = bmm_auth::keys::KeyStore::without_jwks_file(self.pool.clone(), self.cfg.clone());
        let audience = self.cfg.server_url(slug);
        let grant = bmm_auth::tokens::AccessGrant {
            user_id: Uuid::new_v4(),
            org_id,
            audience: &audience,
            scope: "mcp",
            client_id: "test",
            ttl: Duration::from_secs(300),
        };
        bmm_auth::tokens::mint_access_token(&keys, &grant).await.expect("token").0
    }

    /// Seed org, server, preview, version and build rows as the API would.
    pub async fn seed(&self, seed: Seed) -> BuildInput {
        use diesel_async::RunQueryDsl;
        let mut conn = self.pool.get().await.unwrap();
        let org_id = Uuid::new_v4();
        let server_id = seed.server_id.unwrap_or_else(Uuid::new_v4);
        let slug = seed.slug.clone().unwrap_or_else(|| format!("t{}", &Uuid::new_v4().simple().to_string()[..10]));
        if seed.server_id.is_none() {
            diesel::sql_query("INSERT INTO orgs (id, name, slug) VALUES ($1, 'Test org', $2)")
                .bind::<SqlUuid, _>(org_id)
                .bind::<Text, _>(format!("org-{}", org_id.simple()))
                .execute(&mut conn)
                .await
                .unwrap();
            diesel::sql_query("INSERT INTO servers (id, org_id, slug, name) VALUES ($1, $2, $3, 'Test server')")
                .bind::<SqlUuid, _>(server_id)
                .bind::<SqlUuid, _>(org_id)
                .bind::<Text, _>(&slug)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let org_id = if seed.server_id.is_some() { seed.org_id.expect("org of the server") } else { org_id };
        // The preview's spec: the seed's, else what `previewServer` would have
        // shown for the description (the offline generator).
        let spec = match seed.spec.clone() {
            Some(spec) => spec,
            None => {
                let generator = bmm_generator::from_config(&bmm_core::config::GeneratorConfig::Offline);
                let req =
                    bmm_generator::GenerateRequest { description: seed.description.clone(), ..Default::default() };
                serde_json::to_value(generator.generate(&req).await.expect("offline preview").spec).unwrap()
            }
        };
        let preview_id = Uuid::new_v4();
        let expires = if seed.preview_expired {
            chrono::Utc::now() - chrono::Duration::minutes(5)
        } else {
            chrono::Utc::now() + chrono::Duration::minutes(30)
        };
        diesel::sql_query(
            "INSERT INTO previews (id, org_id, server_id, description, spec, generator, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'offline', $6)",
        )
        .bind::<SqlUuid, _>(preview_id)
        .bind::<SqlUuid, _>(org_id)
        .bind::<SqlUuid, _>(server_id)
        .bind::<Text, _>(&seed.description)
        .bind::<Jsonb, _>(&spec)
        .bind::<Timestamptz, _>(expires)
        .execute(&mut conn)
        .await
        .unwrap();
        let version_id = Uuid::new_v4();
        let version: i32 = diesel::sql_query(
            "INSERT INTO server_versions (id, org_id, server_id, version, spec, generator) \
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(version), 0) + 1 FROM server_versions WHERE server_id = $3), $4, 'offline') \
             RETURNING version",
        )
        .bind::<SqlUuid, _>(version_id)
        .bind::<SqlUuid, _>(org_id)
        .bind::<SqlUuid, _>(server_id)
        .bind::<Nullable<Jsonb>, _>(if seed.preview_expired { None } else { Some(&spec) })
        .get_result::<VersionRow>(&mut conn)
        .await
        .unwrap()
        .version;
        let build_id = Uuid::new_v4();
        diesel::sql_query(
            "INSERT INTO builds (id, org_id, server_id, version_id, workflow_id, preview_id) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind::<SqlUuid, _>(build_id)
        .bind::<SqlUuid, _>(org_id)
        .bind::<SqlUuid, _>(server_id)
        .bind::<SqlUuid, _>(version_id)
        .bind::<Text, _>(bmm_workflows::workflow_id(build_id))
        .bind::<SqlUuid, _>(preview_id)
        .execute(&mut conn)
        .await
        .unwrap();
        BuildInput { build_id, org_id, server_id, version_id, version, slug, preview_id: Some(preview_id) }
    }

    pub async fn start(&self, client: &Client, input: &BuildInput) -> String {
        bmm_workflows::client::start_build(client, &self.cfg, input.clone()).await.expect("start build")
    }

    /// Wait for the workflow to close; Ok(url) when it succeeded, Err(message) otherwise.
    pub async fn outcome(&self, client: &Client, input: &BuildInput, within: Duration) -> Result<String, String> {
        let handle = client.get_workflow_handle::<BuildWorkflow>(input.workflow_id());
        let res = tokio::time::timeout(within, handle.get_result(WorkflowGetResultOptions::default()))
            .await
            .unwrap_or_else(|_| panic!("build did not finish within {within:?}"));
        res.map(|live| live.url).map_err(|e| format!("{e:?}"))
    }

    pub async fn events(&self, build_id: Uuid) -> Vec<BuildEvent> {
        let mut conn = self.pool.get().await.unwrap();
        let org: Uuid = {
            use bmm_db::schema::builds;
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            builds::table.filter(builds::id.eq(build_id)).select(builds::org_id).first(&mut conn).await.unwrap()
        };
        bmm_db::events::list_after(&mut conn, org, build_id, 0, 10_000).await.unwrap()
    }

    pub async fn build(&self, build_id: Uuid) -> Build {
        use bmm_db::schema::builds;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut conn = self.pool.get().await.unwrap();
        builds::table.filter(builds::id.eq(build_id)).select(Build::as_select()).first(&mut conn).await.unwrap()
    }

    /// Wait until an event matching `pred` was written.
    pub async fn wait_event(&self, build_id: Uuid, within: Duration, pred: impl Fn(&BuildEvent) -> bool) -> BuildEvent {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.events(build_id).await.into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!("no matching event within {within:?}; events: {}", describe(&self.events(build_id).await));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(diesel::QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    version: i32,
}

fn config_from(env: &BTreeMap<String, String>) -> Config {
    let pairs: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Config::from_sources(&pairs, None).expect("test config")
}

#[derive(Default, Clone)]
pub struct Seed {
    pub description: String,
    /// The preview's spec (and the version's, unless `preview_expired`);
    /// by default the offline generator's for the description.
    pub spec: Option<serde_json::Value>,
    /// The preview's cache time passed and the version has no spec (as the
    /// API left versions before it stored the reviewed spec): the build
    /// takes the preview's.
    pub preview_expired: bool,
    /// Build a new version of an existing server (with its org).
    pub server_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub slug: Option<String>,
}

pub fn describe(events: &[BuildEvent]) -> String {
    events.iter().map(|e| format!("\n  #{} [{}] {}: {}", e.seq, e.step, e.kind, e.message)).collect()
}

pub struct InProcessWorker {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), bmm_workflows::worker::WorkerError>>>,
}

impl InProcessWorker {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    /// SIGKILL: no shutdown, no goodbye to Temporal.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Containers labelled with this build (running or not).
pub fn containers_of(build_id: Uuid) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label=bmm.build={build_id}"), "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
}

/// Removes a build's containers when dropped, even when the test panics.
pub struct ContainerGuard(pub Uuid);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        for name in containers_of(self.0) {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
    }
}

/// The workflow's history as JSON, through the `temporal` CLI.
pub fn history_json(address: &str, workflow_id: &str) -> serde_json::Value {
    let addr = address.trim_start_matches("http://");
    let out = Command::new("temporal")
        .args(["workflow", "show", "-w", workflow_id, "--address", addr, "-o", "json"])
        .output()
        .expect("temporal CLI");
    assert!(out.status.success(), "temporal workflow show failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("history JSON")
}

/// How many times each activity type completed, from the history.
pub fn completed_activities(history: &serde_json::Value) -> BTreeMap<String, usize> {
    let events = history["events"].as_array().cloned().unwrap_or_default();
    let mut scheduled: BTreeMap<String, String> = BTreeMap::new();
    let mut completed = BTreeMap::new();
    for e in &events {
        let id = e["eventId"].as_str().map(str::to_owned).unwrap_or_else(|| e["eventId"].to_string());
        if let Some(attrs) = e.get("activityTaskScheduledEventAttributes") {
            scheduled.insert(id, attrs["activityType"]["name"].as_str().unwrap_or_default().to_owned());
        }
        if let Some(attrs) = e.get("activityTaskCompletedEventAttributes") {
            let sid = attrs["scheduledEventId"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| attrs["scheduledEventId"].to_string());
            let name = scheduled.get(&sid).cloned().unwrap_or_default();
            *completed.entry(name).or_insert(0) += 1;
        }
    }
    completed
}

/// The spec of a server whose one tool's handler is `typescript`.
pub fn code_spec(typescript: &str) -> serde_json::Value {
    serde_json::json!({
        "specVersion": "bmm.tool-spec/v1",
        "name": "Test",
        "description": "A test server.",
        "tools": [{
            "name": "shout",
            "description": "Upper-cases the text.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            "handler": {"kind": "code", "typescript": typescript}
        }]
    })
}

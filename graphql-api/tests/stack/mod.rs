//! The whole platform in this process, against the real stack: the API (with
//! its gateway) on 127.0.0.1:0, builds on the real Temporal dev server with an
//! in-process worker on a task queue of its own, containers on the real
//! Docker, and a database of its own. Specs come from an OpenAI-compatible
//! stand-in on loopback that answers a script of specs, one per call (the
//! only fake: the model API cannot be reached from here).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bmm_db::testing::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

/// An OpenAI chat-completions endpoint answering each call with the next
/// spec of its script (the last one repeats); counts the calls.
#[derive(Clone, Default)]
pub struct ModelStandIn {
    script: Arc<Mutex<VecDeque<Value>>>,
    calls: Arc<Mutex<usize>>,
}

impl ModelStandIn {
    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }

    /// Answer the following calls with these specs, in order.
    pub fn then(&self, specs: impl IntoIterator<Item = Value>) {
        self.script.lock().unwrap().extend(specs);
    }

    async fn start(&self) -> String {
        async fn answer(axum::extract::State(s): axum::extract::State<ModelStandIn>) -> axum::Json<Value> {
            *s.calls.lock().unwrap() += 1;
            let spec = {
                let mut q = s.script.lock().unwrap();
                if q.len() > 1 { q.pop_front().unwrap() } else { q.front().cloned().expect("a scripted spec") }
            };
            axum::Json(json!({
                "id": "chatcmpl-1", "object": "chat.completion", "model": "stand-in",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": spec.to_string()}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
            }))
        }
        let app =
            axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1")
    }
}

pub struct Stack {
    pub db: TestDb,
    pub cfg: Arc<bmm_core::Config>,
    pub state: bmm_graphql_api::AppState,
    /// The API's origin: also the public URL (the gateway serves `/s/{slug}/mcp` here).
    pub public: String,
    pub model: ModelStandIn,
    /// An API key of the test's user, and its org.
    pub key: String,
    pub org_id: Uuid,
    http: reqwest::Client,
    stop_worker: Option<tokio::sync::oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

fn toolchain_dir() -> String {
    std::env::var("BMM_TOOLCHAIN_DIR").unwrap_or_else(|_| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        root.join(".bmm/toolchain").to_string_lossy().into_owned()
    })
}

impl Stack {
    /// Everything started; the model stand-in answers `specs` in order.
    pub async fn start(name: &str, specs: Vec<Value>) -> Stack {
        let db = TestDb::new().await;
        let model = ModelStandIn::default();
        model.then(specs);
        let model_url = model.start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let public = format!("http://{addr}");
        let data = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("BMM_DATABASE_URL".into(), db.url.clone()),
            ("BMM_DATABASE_POOL_SIZE".into(), "12".into()),
            ("BMM_PUBLIC_URL".into(), public.clone()),
            ("BMM_LISTEN".into(), addr.to_string()),
            ("BMM_TEMPORAL_TASK_QUEUE".into(), format!("test-{name}-{}", Uuid::new_v4().simple())),
            ("BMM_TOOLCHAIN_DIR".into(), toolchain_dir()),
            ("BMM_DATA_DIR".into(), data.path().to_string_lossy().into_owned()),
            ("BMM_GENERATOR".into(), "openai".into()),
            ("BMM_OPENAI_BASE_URL".into(), model_url),
            ("BMM_OPENAI_MODEL".into(), "stand-in".into()),
            ("BMM_SECRET_KEY".into(), "42".repeat(32)),
        ];
        for key in ["BMM_TEMPORAL_ADDRESS", "BMM_RUNTIME_IMAGE", "BMM_DOCKER_HOST"] {
            if let Ok(v) = std::env::var(key) {
                env.push((key.into(), v));
            }
        }
        let cfg = Arc::new(bmm_core::Config::from_sources(&env, None).expect("test config"));
        let pool = db.pool();

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let activities = bmm_activities::BuildActivities::new(cfg.clone(), pool.clone());
        tokio::spawn(bmm_workflows::worker::run_worker_with(activities, async {
            let _ = rx.await;
        }));

        let temporal = bmm_workflows::client::connect(&cfg).await.expect("Temporal client");
        let state = bmm_graphql_api::AppState::new(cfg.clone(), pool, Some(temporal));
        let app = bmm_graphql_api::app(state.clone());
        tokio::spawn(
            async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await },
        );

        let mut conn = state.pool.get().await.unwrap();
        let (user, org) =
            bmm_auth::identity::ensure_user_and_org(&mut conn, &format!("{name}@example.test")).await.unwrap();
        let (key, _) = bmm_auth::identity::create_api_key(&mut conn, org.id, user.id, "test").await.unwrap();
        drop(conn);
        Stack {
            db,
            cfg,
            state,
            public,
            model,
            key,
            org_id: org.id,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop_worker: Some(tx),
            _data: data,
        }
    }

    /// An API key of a user in another org.
    pub async fn stranger(&self) -> String {
        let mut conn = self.state.pool.get().await.unwrap();
        let email = format!("stranger-{}@example.test", Uuid::new_v4().simple());
        let (user, org) = bmm_auth::identity::ensure_user_and_org(&mut conn, &email).await.unwrap();
        bmm_auth::identity::create_api_key(&mut conn, org.id, user.id, "test").await.unwrap().0
    }

    /// The whole GraphQL response.
    pub async fn raw(&self, query: &str, variables: Value) -> Value {
        self.raw_as(&self.key, query, variables).await
    }

    /// The whole GraphQL response, with another API key.
    pub async fn raw_as(&self, key: &str, query: &str, variables: Value) -> Value {
        self.http
            .post(format!("{}/graphql", self.public))
            .bearer_auth(key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `data`, failing on any error.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let v = self.raw(query, variables).await;
        assert!(v.get("errors").is_none_or(Value::is_null), "GraphQL errors: {v}");
        v["data"].clone()
    }

    /// Wait for a build to end; its final status, with its events when it did not succeed.
    pub async fn wait_build(&self, build_id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let v = self.gql("query($id: ID!) { build(id: $id) { status } }", json!({ "id": build_id })).await;
            let s = v["build"]["status"].as_str().unwrap_or_default().to_owned();
            if matches!(s.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "build {build_id} still {s} after 300 s: {}",
                self.events(build_id).await
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A build's events, one per line (for failure messages and checks).
    pub async fn events(&self, build_id: &str) -> String {
        let v = self
            .gql(
                "query($id: ID!) { build(id: $id) { events(after: 0, limit: 100) { step kind message } } }",
                json!({ "id": build_id }),
            )
            .await;
        v["build"]["events"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| format!("\n  [{}] {}: {}", e["step"].as_str().unwrap_or(""), e["kind"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A platform access token for the server's stable URL (what OAuth would hand a client).
    pub async fn token(&self, slug: &str) -> String {
        let keys = bmm_auth::keys::KeyStore::without_jwks_file(self.state.pool.clone(), self.cfg.clone());
        let audience = self.cfg.server_url(slug);
        let grant = bmm_auth::tokens::AccessGrant {
            user_id: Uuid::new_v4(),
            org_id: self.org_id,
            audience: &audience,
            scope: "mcp",
            client_id: "test",
            ttl: Duration::from_secs(600),
        };
        bmm_auth::tokens::mint_access_token(&keys, &grant).await.expect("token").0
    }

    /// `tools/call` through the gateway on the server's stable URL.
    pub async fn call(&self, slug: &str, tool: &str, args: Value) -> Result<Value, String> {
        let token = self.token(slug).await;
        bmm_activities::smoke::call_tool(&self.cfg.server_url(slug), &token, tool, args)
            .await
            .map_err(|e| e.to_string())
    }

    /// Preview with the stand-in's next spec and create a server; (server id, slug, build id).
    pub async fn create(&self, name: &str, credentials: Value) -> (String, String, String) {
        let p = self.gql("mutation { previewServer(input: {description: \"a test server\"}) { id } }", json!({})).await;
        let c = self
            .gql(
                "mutation($p: ID!, $n: String!, $c: [CredentialValue!]!) {
                   createServer(input: {previewId: $p, name: $n, credentials: $c}) { server { id slug } build { id } } }",
                json!({ "p": p["previewServer"]["id"], "n": name, "c": credentials }),
            )
            .await;
        let c = &c["createServer"];
        (
            c["server"]["id"].as_str().unwrap().to_owned(),
            c["server"]["slug"].as_str().unwrap().to_owned(),
            c["build"]["id"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_worker.take() {
            let _ = tx.send(());
        }
        // Everything this test's org deployed.
        for (name, _) in containers(&format!("bmm.org={}", self.org_id)) {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
    }
}

/// Containers (name, state) carrying a label filter, e.g. `bmm.server=<id>`.
pub fn containers(label: &str) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label={label}"), "--format", "{{.Names}} {{.State}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(n, s)| (n.to_owned(), s.to_owned())))
        .collect()
}

/// The spec of a server whose tools are `(name, TypeScript body)`.
pub fn code_spec(name: &str, tools: &[(&str, &str)]) -> Value {
    json!({
        "specVersion": "bmm.tool-spec/v1",
        "name": name,
        "description": "A test server.",
        "tools": tools.iter().map(|(tool, body)| json!({
            "name": tool,
            "description": "A test tool.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "handler": {"kind": "code", "typescript": body}
        })).collect::<Vec<_>>(),
        "credentials": [],
        "allowedHosts": []
    })
}

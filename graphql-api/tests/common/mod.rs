//! A real API server on 127.0.0.1:0 against a fresh PostgreSQL database, and
//! small HTTP and graphql-transport-ws clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bmm_db::testing::TestDb;
use bmm_graphql_api::ports::{BuildRequest, BuildRunner};
use bmm_graphql_api::{AppState, Limits};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

/// Records the builds the API asked to start or cancel (stands in for Temporal).
#[derive(Default)]
pub struct RecordingRunner {
    pub started: Mutex<Vec<BuildRequest>>,
    pub cancelled: Mutex<Vec<Uuid>>,
}

#[async_trait]
impl BuildRunner for RecordingRunner {
    async fn start(&self, req: BuildRequest) -> Result<Option<String>, String> {
        self.started.lock().unwrap().push(req);
        Ok(Some("run-1".into()))
    }
    async fn cancel(&self, build_id: Uuid) -> Result<(), String> {
        self.cancelled.lock().unwrap().push(build_id);
        Ok(())
    }
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

pub struct TestApp {
    pub db: TestDb,
    pub addr: SocketAddr,
    pub state: AppState,
    pub runner: Arc<RecordingRunner>,
    pub http: reqwest::Client,
}

pub fn generous_limits() -> Limits {
    Limits {
        authenticated: bmm_graphql_api::ratelimit::Rate { burst: 10_000, per_second: 10_000.0 },
        anonymous: bmm_graphql_api::ratelimit::Rate { burst: 10_000, per_second: 10_000.0 },
        ..Limits::default()
    }
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::with_limits(generous_limits()).await
    }

    pub async fn with_limits(limits: Limits) -> TestApp {
        Self::with_config(limits, |_| {}).await
    }

    /// With the test configuration changed by `change` (e.g. production mode).
    pub async fn with_config(limits: Limits, change: impl FnOnce(&mut bmm_core::Config)) -> TestApp {
        let db = TestDb::new().await;
        let pool = db.pool();
        let mut cfg = bmm_core::Config::for_tests(&db.url);
        change(&mut cfg);
        let cfg = Arc::new(cfg);
        let runner = Arc::new(RecordingRunner::default());
        let state = AppState::builder(cfg, pool).limits(limits).builds(runner.clone()).build();
        let app = bmm_graphql_api::app(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        // The listener connects in the background; wait until it is up so NOTIFYs are not missed by tests
        // that measure latency (correctness does not depend on it).
        for _ in 0..100 {
            if state.hub.stats().listening {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        TestApp { db, addr, state, runner, http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn conn(&self) -> bmm_db::Conn {
        self.state.pool.get().await.unwrap()
    }

    /// A user with an org and an API key: (key, user id, org id).
    pub async fn user(&self, email: &str) -> (String, Uuid, Uuid) {
        let mut conn = self.conn().await;
        let (user, org) = bmm_auth::identity::ensure_user_and_org(&mut conn, email).await.unwrap();
        let (key, _) = bmm_auth::identity::create_api_key(&mut conn, org.id, user.id, "test").await.unwrap();
        (key, user.id, org.id)
    }

    /// POST /graphql; returns the HTTP status and the JSON body.
    pub async fn gql(&self, key: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut req = self.http.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Insert a server, version 1 and a build directly; returns (server id, build id).
    pub async fn seed_build(&self, org_id: Uuid, slug: &str) -> (Uuid, Uuid) {
        use bmm_db::schema::{builds, server_versions, servers};
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut conn = self.conn().await;
        let (sid, vid, bid) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        diesel::insert_into(servers::table)
            .values((servers::id.eq(sid), servers::org_id.eq(org_id), servers::slug.eq(slug), servers::name.eq(slug)))
            .execute(&mut conn)
            .await
            .unwrap();
        diesel::insert_into(server_versions::table)
            .values((
                server_versions::id.eq(vid),
                server_versions::org_id.eq(org_id),
                server_versions::server_id.eq(sid),
                server_versions::version.eq(1),
                server_versions::spec.eq(Some(sample_spec())),
                server_versions::generator.eq("offline"),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        diesel::insert_into(builds::table)
            .values((
                builds::id.eq(bid),
                builds::org_id.eq(org_id),
                builds::server_id.eq(sid),
                builds::version_id.eq(vid),
                builds::workflow_id.eq(format!("build-{bid}")),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        (sid, bid)
    }

    pub async fn append(&self, build_id: Uuid, kind: bmm_db::events::EventKind, message: &str) -> i32 {
        let mut conn = self.conn().await;
        bmm_db::events::append(
            &mut conn,
            bmm_db::events::NewEvent { build_id, step: "check", kind, message, data: None },
        )
        .await
        .unwrap()
    }

    pub async fn ws(&self, init_payload: Value) -> Ws {
        Ws::connect(&format!("ws://{}/graphql", self.addr), init_payload).await
    }
}

pub fn sample_spec() -> Value {
    json!({
        "specVersion": "bmm.tool-spec/v1",
        "name": "Weather",
        "description": "Weather for a city",
        "tools": [{
            "name": "forecast",
            "description": "Forecast for a city",
            "inputSchema": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] },
            "annotations": { "readOnlyHint": true },
            "handler": { "kind": "http", "method": "GET", "url": "https://api.weather.test/forecast?q={city}" }
        }],
        "credentials": [
            { "key": "WEATHER_KEY", "label": "Weather API key", "required": true },
            { "key": "WEATHER_REGION", "label": "Region", "required": false }
        ],
        "allowedHosts": ["api.weather.test"]
    })
}

pub fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws client.
pub struct Ws {
    pub stream: WsStream,
}

impl Ws {
    pub async fn connect(url: &str, init_payload: Value) -> Ws {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (mut stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        stream
            .send(Message::Text(json!({ "type": "connection_init", "payload": init_payload }).to_string().into()))
            .await
            .unwrap();
        Ws { stream }
    }

    /// The next protocol message, or None when the socket closed (with the close reason as `{"closed": reason}`).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(30), self.stream.next())
                .await
                .expect("no WebSocket message within 30 s")?;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "ping" {
                        let _ = self.stream.send(Message::Text(json!({"type": "pong"}).to_string().into())).await;
                        continue;
                    }
                    return Some(v);
                }
                Ok(Message::Close(frame)) => {
                    return Some(json!({ "closed": frame.map(|f| f.reason.to_string()).unwrap_or_default() }));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub async fn expect_ack(&mut self) {
        let m = self.next().await.unwrap();
        assert_eq!(m["type"], "connection_ack", "{m}");
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.stream
            .send(Message::Text(
                json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
    }

    /// Collect `next` payloads of `id` until `complete` (or `max` of them).
    pub async fn collect(&mut self, id: &str, max: usize) -> (Vec<Value>, bool) {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(m) = self.next().await else { return (out, false) };
            if m["id"] != id {
                continue;
            }
            match m["type"].as_str() {
                Some("next") => out.push(m["payload"].clone()),
                Some("complete") => return (out, true),
                Some("error") => {
                    out.push(json!({ "errors": m["payload"] }));
                    return (out, true);
                }
                _ => {}
            }
        }
        (out, false)
    }
}

pub const BUILD_EVENTS: &str =
    "subscription($id: ID!, $after: Int) { buildEvents(buildId: $id, after: $after) { seq step kind message at } }";

pub fn seqs(payloads: &[Value]) -> Vec<i64> {
    payloads.iter().map(|p| p["data"]["buildEvents"]["seq"].as_i64().unwrap_or_else(|| panic!("{p}"))).collect()
}

//! Starting the platform through the e2e harness, reading builds and servers
//! over GraphQL, minting an access token, and cleaning up what a run made.

use std::sync::Arc;
use std::time::Duration;

use bmm_e2e::{Gql, Platform, PlatformOptions};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Start the platform and say which `bmm` binary runs it.
pub async fn start(opts: PlatformOptions) -> Platform {
    let bin = bmm_e2e::platform::bmm_bin();
    eprintln!("starting the platform with {}", bin.display());
    let p = Platform::start(opts).await;
    eprintln!("platform at {} (task queue {})", p.url(), p.task_queue);
    p
}

/// One step of a build as `build(id).steps` reports it.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub status: String,
    pub attempts: i64,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
}

impl Step {
    pub fn ms(&self) -> f64 {
        match (self.started, self.finished) {
            (Some(a), Some(b)) => ms_between(a, b),
            _ => f64::NAN,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub status: String,
    pub error: Option<String>,
    pub version_id: String,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
    /// The deploy step's own breakdown (`timingsMs` of its STEP_SUCCEEDED): image, create, start, health.
    pub deploy_timings: serde_json::Value,
}

pub fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| s.parse().ok())
}

pub async fn build_info(gql: &Gql, build_id: &str) -> BuildInfo {
    let v = gql
        .data(
            "query($id: ID!) { build(id: $id) { status error versionId createdAt startedAt finishedAt \
             steps { name status attempts startedAt finishedAt } } }",
            json!({ "id": build_id }),
        )
        .await;
    let b = &v["build"];
    let events = gql
        .data("query($id: ID!) { build(id: $id) { events(limit: 200) { step kind data } } }", json!({ "id": build_id }))
        .await;
    BuildInfo {
        status: b["status"].as_str().unwrap_or_default().to_owned(),
        error: b["error"].as_str().map(str::to_owned),
        version_id: b["versionId"].as_str().unwrap_or_default().to_owned(),
        created: time(&b["createdAt"]).unwrap_or_else(Utc::now),
        started: time(&b["startedAt"]),
        finished: time(&b["finishedAt"]),
        steps: b["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Step {
                name: s["name"].as_str().unwrap_or_default().to_owned(),
                status: s["status"].as_str().unwrap_or_default().to_owned(),
                attempts: s["attempts"].as_i64().unwrap_or(0),
                started: time(&s["startedAt"]),
                finished: time(&s["finishedAt"]),
            })
            .collect(),
        deploy_timings: events["build"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["step"] == "deploy" && e["kind"] == "STEP_SUCCEEDED")
            .map(|e| e["data"]["timingsMs"].clone())
            .next_back()
            .unwrap_or(serde_json::Value::Null),
    }
}

/// The live deployment of a server and what the benchmark needs about it.
#[derive(Debug, Clone)]
pub struct LiveServer {
    pub id: String,
    pub slug: String,
    /// The public MCP URL (through the gateway); the token audience.
    pub url: String,
    pub container: String,
    pub host: String,
    pub port: u16,
    pub tools: Vec<String>,
    /// `bundleDigest` of each version, newest first.
    pub bundle_digests: Vec<String>,
}

pub async fn live_server(gql: &Gql, server_id: &str) -> anyhow::Result<LiveServer> {
    let v = gql
        .data(
            "query($id: ID!) { server(id: $id) { id slug url status tools { name } \
             versions { version bundleDigest } deployments { containerName status host port } } }",
            json!({ "id": server_id }),
        )
        .await;
    let s = &v["server"];
    let live = s["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["status"] == "LIVE")
        .ok_or_else(|| anyhow::anyhow!("server {server_id} has no LIVE deployment: {s}"))?;
    Ok(LiveServer {
        id: server_id.to_owned(),
        slug: s["slug"].as_str().unwrap_or_default().to_owned(),
        url: s["url"].as_str().unwrap_or_default().to_owned(),
        container: live["containerName"].as_str().unwrap_or_default().to_owned(),
        host: live["host"].as_str().unwrap_or("127.0.0.1").to_owned(),
        port: live["port"].as_u64().unwrap_or(0) as u16,
        tools: s["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect(),
        bundle_digests: s["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["bundleDigest"].as_str().map(str::to_owned))
            .collect(),
    })
}

/// Preview a description and create a server from it, timing from the
/// `createServer` request (the preview is not part of the build).
pub struct Created {
    pub server_id: String,
    pub build_id: String,
    /// Just before `createServer` was sent.
    pub sent: DateTime<Utc>,
}

pub async fn preview(gql: &Gql, description: &str) -> anyhow::Result<String> {
    let v = gql
        .raw("mutation($d: String!) { previewServer(input: {description: $d}) { id } }", json!({ "d": description }))
        .await;
    v["data"]["previewServer"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("previewServer failed: {v}"))
}

pub async fn create_from_preview(gql: &Gql, preview_id: &str, name: &str) -> anyhow::Result<Created> {
    let sent = Utc::now();
    let v = gql
        .raw(
            "mutation($p: ID!, $n: String!) { createServer(input: {previewId: $p, name: $n, credentials: []}) \
             { server { id } build { id } } }",
            json!({ "p": preview_id, "n": name }),
        )
        .await;
    let c = &v["data"]["createServer"];
    match (c["server"]["id"].as_str(), c["build"]["id"].as_str()) {
        (Some(s), Some(b)) => Ok(Created { server_id: s.to_owned(), build_id: b.to_owned(), sent }),
        _ => anyhow::bail!("createServer failed: {v}"),
    }
}

/// Mint an access token for `audience` the way the token endpoint does: the
/// platform's own signing key from its database (the same `BMM_SECRET_KEY`
/// seals it, since the platform inherits this process's environment).
pub async fn mint_token(platform: &Platform, gql: &Gql, audience: &str) -> anyhow::Result<String> {
    let me = gql.data("{ me { id orgId } }", json!({})).await;
    let user_id: uuid::Uuid = me["me"]["id"].as_str().unwrap_or_default().parse()?;
    let org_id: uuid::Uuid = me["me"]["orgId"].as_str().unwrap_or_default().parse()?;
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("BMM_DATABASE_URL".into(), platform.db.url.clone()));
    env.push(("BMM_PUBLIC_URL".into(), platform.url().to_owned()));
    let cfg = bmm_core::Config::from_sources(&env, None).map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let keys = bmm_auth::keys::KeyStore::without_jwks_file(platform.db.pool(), Arc::new(cfg));
    let grant = bmm_auth::tokens::AccessGrant {
        user_id,
        org_id,
        audience,
        scope: "mcp",
        client_id: "bmm-bench",
        ttl: Duration::from_secs(900),
    };
    let (jwt, _) = bmm_auth::tokens::mint_access_token(&keys, &grant).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(jwt)
}

/// Remove the containers and images of the given servers.
pub async fn cleanup(server_ids: &[String]) {
    let (mut c, mut i) = (0, 0);
    for id in server_ids {
        let (cc, ii) = crate::docker::remove_labelled("bmm.server", id).await;
        c += cc;
        i += ii;
    }
    eprintln!("cleanup: removed {c} container(s) and {i} image(s)");
}

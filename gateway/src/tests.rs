//! The gateway against real PostgreSQL (TestDb) and in-process upstream
//! servers standing in for containers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bmm_db::testing::TestDb;
use futures::StreamExt;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use super::*;

/// Accepts "good" (scope mcp), "noscope"; "down" is a key outage; anything else is refused.
struct FakeVerifier {
    audiences: Mutex<Vec<String>>,
}

#[async_trait]
impl TokenVerifier for FakeVerifier {
    async fn verify(&self, token: &str, audience: &str) -> Result<VerifiedToken, Refusal> {
        self.audiences.lock().unwrap().push(audience.to_owned());
        let ok = |scopes: &[&str]| VerifiedToken {
            user_id: Uuid::from_u128(1),
            org_id: Uuid::from_u128(2),
            client_id: "test-client".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        match token {
            "good" => Ok(ok(&["mcp", "offline_access"])),
            "noscope" => Ok(ok(&["profile"])),
            "down" => Err(Refusal::Unavailable("database down".into())),
            _ => Err(Refusal::Invalid(format!(
                "token audience https://elsewhere/s/x/mcp does not match this server ({audience})"
            ))),
        }
    }
}

/// An upstream "container": POST /mcp echoes what it saw; GET /mcp streams
/// two SSE events with a pause the test controls between them.
struct Upstream {
    name: &'static str,
    release: Arc<Notify>,
    addr: SocketAddr,
}

async fn upstream(name: &'static str) -> Upstream {
    let release = Arc::new(Notify::new());
    let state = (name, release.clone());
    async fn echo(State((name, _)): State<(&'static str, Arc<Notify>)>, req: Request) -> Response {
        let seen = |h: &HeaderMap, n: &str| h.get(n).map(|v| v.to_str().unwrap_or("").to_owned());
        let headers = req.headers().clone();
        let query = req.uri().query().map(str::to_owned);
        let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
        let out = json!({
            "upstream": name,
            "query": query,
            "body": String::from_utf8_lossy(&body),
            "authorization": seen(&headers, "authorization"),
            "mcp-session-id": seen(&headers, "mcp-session-id"),
            "mcp-protocol-version": seen(&headers, "mcp-protocol-version"),
            "last-event-id": seen(&headers, "last-event-id"),
            "x-client-hop": seen(&headers, "x-client-hop"),
            "proxy-authorization": seen(&headers, "proxy-authorization"),
            "x-forwarded-for": seen(&headers, "x-forwarded-for"),
            "x-forwarded-proto": seen(&headers, "x-forwarded-proto"),
            "host": seen(&headers, "host"),
            "cookie": seen(&headers, "cookie"),
        });
        let mut resp = axum::Json(out).into_response();
        let h = resp.headers_mut();
        h.insert("mcp-session-id", "sess-from-upstream".parse().unwrap());
        h.insert("x-upstream", name.parse().unwrap());
        h.insert("connection", "x-upstream-hop".parse().unwrap());
        h.insert("x-upstream-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        // A hostile server trying to plant a cookie and weaken the policy.
        h.insert("set-cookie", "bmm_session=planted; Path=/".parse().unwrap());
        h.append("set-cookie", "other=1".parse().unwrap());
        h.insert("content-security-policy", "default-src *".parse().unwrap());
        h.insert("x-content-type-options", "sniff-please".parse().unwrap());
        resp
    }
    async fn stream(State((name, release)): State<(&'static str, Arc<Notify>)>) -> Response {
        let first = futures::stream::once(async move {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!(
                "event: message\ndata: {{\"from\":\"{name}\",\"n\":1}}\n\n"
            )))
        });
        let second = futures::stream::once(async move {
            release.notified().await;
            Ok(bytes::Bytes::from(format!("event: message\ndata: {{\"from\":\"{name}\",\"n\":2}}\n\n")))
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("x-upstream", name)
            .body(Body::from_stream(first.chain(second)))
            .unwrap()
    }
    let app = Router::new().route("/mcp", post(echo).get(stream)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { name, release, addr }
}

struct Fixture {
    db: TestDb,
    pool: bmm_db::Pool,
    cfg: Arc<bmm_core::Config>,
    org: Uuid,
    state: GatewayState,
    base: String,
    http: reqwest::Client,
    verifier: Arc<FakeVerifier>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let db = TestDb::new().await;
        let pool = db.pool();
        let cfg = Arc::new(bmm_core::Config::for_tests(&db.url));
        let org = Uuid::new_v4();
        exec(&db, &format!("INSERT INTO orgs (id, name, slug) VALUES ('{org}', 'Test', 'o-{}')", org.simple())).await;
        let verifier = Arc::new(FakeVerifier { audiences: Mutex::new(Vec::new()) });
        let state =
            GatewayState::new(cfg.clone(), pool.clone(), verifier.clone(), Arc::new(DbTrace::new(pool.clone())));
        let listener = state.spawn_route_listener();
        assert!(state.routes.wait_listening(Duration::from_secs(10)).await, "route listener did not come up");
        let app = router(state.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", tcp.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
        });
        let http = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Fixture { db, pool, cfg, org, state, base, http, verifier, listener }
    }

    /// A server (and, with a port, a deployment of it in `status`); returns (server, deployment).
    async fn server(&self, slug: &str, deployment: Option<(u16, &str)>) -> (Uuid, Option<Uuid>) {
        let server = Uuid::new_v4();
        let org = self.org;
        exec(
            &self.db,
            &format!("INSERT INTO servers (id, org_id, slug, name) VALUES ('{server}', '{org}', '{slug}', '{slug}')"),
        )
        .await;
        let dep = match deployment {
            Some((port, status)) => Some(self.deployment(server, port, status).await),
            None => None,
        };
        (server, dep)
    }

    async fn deployment(&self, server: Uuid, port: u16, status: &str) -> Uuid {
        let (version, build, dep) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let org = self.org;
        let live_at = if status == "LIVE" { "now()" } else { "NULL" };
        exec(
            &self.db,
            &format!(
                "INSERT INTO server_versions (id, org_id, server_id, version, generator)
                   VALUES ('{version}', '{org}', '{server}', (SELECT count(*) + 1 FROM server_versions WHERE server_id = '{server}'), 'offline');
                 INSERT INTO builds (id, org_id, server_id, version_id, workflow_id)
                   VALUES ('{build}', '{org}', '{server}', '{version}', 'build-{build}');
                 INSERT INTO deployments (id, org_id, server_id, version_id, build_id, container_name, host, port, status, live_at)
                   VALUES ('{dep}', '{org}', '{server}', '{version}', '{build}', 'c-{dep}', '127.0.0.1', {port}, '{status}', {live_at});"
            ),
        )
        .await;
        dep
    }

    fn url(&self, slug: &str) -> String {
        format!("{}/s/{slug}/mcp", self.base)
    }

    async fn post(&self, slug: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(self.url(slug)).header("content-type", "application/json").body("{}");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn trace_rows(&self, server: Uuid, want: usize) -> Vec<(bool, String, Option<String>)> {
        for _ in 0..100 {
            let rows = query(
                &self.db,
                &format!("SELECT ok, detail, client_id FROM oauth_connection_events WHERE server_id = '{server}' AND step = 'mcp' ORDER BY id"),
            )
            .await;
            let rows: Vec<(bool, String, Option<String>)> =
                rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
            if rows.len() >= want {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {want} trace rows for {server}");
    }
}

async fn client(db: &TestDb) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn exec(db: &TestDb, sql: &str) {
    client(db).await.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn query(db: &TestDb, sql: &str) -> Vec<tokio_postgres::Row> {
    client(db).await.query(sql, &[]).await.unwrap()
}

#[tokio::test]
async fn gateway_proxies_post_with_mcp_headers_and_without_hop_by_hop() {
    let f = Fixture::new().await;
    let up = upstream("A").await;
    f.server("alpha", Some((up.addr.port(), "LIVE"))).await;

    let resp = f
        .http
        .post(format!("{}?x=1", f.url("alpha")))
        .bearer_auth("good")
        .header("content-type", "application/json")
        .header("mcp-session-id", "sess-from-client")
        .header("mcp-protocol-version", "2025-06-18")
        .header("last-event-id", "41")
        .header("connection", "x-client-hop")
        .header("x-client-hop", "1")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("cookie", "bmm_session=the-dashboard-session")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-upstream"], "A");
    assert_eq!(h["mcp-session-id"], "sess-from-upstream");
    assert!(h.get("x-upstream-hop").is_none(), "a header named by Connection must not pass: {h:?}");
    assert!(h.get("keep-alive").is_none());
    // Tenant responses are untrusted content on the platform's origin.
    assert!(h.get("set-cookie").is_none(), "a server must not set cookies on the platform's origin: {h:?}");
    assert_eq!(h.get_all("content-security-policy").iter().collect::<Vec<_>>(), ["sandbox"]);
    assert_eq!(h.get_all("x-content-type-options").iter().collect::<Vec<_>>(), ["nosniff"]);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["cookie"], Value::Null, "the platform's cookies must not reach a server");
    assert_eq!(seen["body"], r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["authorization"], "Bearer good");
    assert_eq!(seen["mcp-session-id"], "sess-from-client");
    assert_eq!(seen["mcp-protocol-version"], "2025-06-18");
    assert_eq!(seen["last-event-id"], "41");
    assert_eq!(seen["x-client-hop"], Value::Null);
    assert_eq!(seen["proxy-authorization"], Value::Null);
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], f.cfg.public_url.scheme());
    // The client's Host is kept, so the server sees the public host.
    assert_eq!(seen["host"], f.base.trim_start_matches("http://"));

    // The token was checked for this server's URL exactly.
    assert_eq!(f.verifier.audiences.lock().unwrap().as_slice(), [f.cfg.server_url("alpha")]);

    // A trailing slash is served, never redirected.
    let resp = f.http.post(format!("{}/", f.url("alpha"))).bearer_auth("good").body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "A");

    // Metrics counted the requests by server and status.
    assert_eq!(f.state.metrics.requests.with_label_values(&["alpha", "200"]).get(), 2);
    assert_eq!(f.state.metrics.in_flight.with_label_values(&["alpha"]).get(), 0);
}

#[tokio::test]
async fn gateway_streams_sse_unbuffered_and_counts_in_flight() {
    let f = Fixture::new().await;
    let up = upstream("A").await;
    let (_, dep) = f.server("streamy", Some((up.addr.port(), "LIVE"))).await;
    let dep = dep.unwrap();

    let resp =
        f.http.get(f.url("streamy")).bearer_auth("good").header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(resp.headers()["content-security-policy"], "sandbox");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let mut body = resp.bytes_stream();
    // The first event arrives while the upstream still holds the second back.
    let first = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("first event was buffered");
    let first = String::from_utf8(first.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains(r#""n":1"#), "{first}");
    assert_eq!(f.state.in_flight.count(dep), 1, "an open stream is in flight");
    assert_eq!(f.state.metrics.in_flight.with_label_values(&["streamy"]).get(), 1);
    assert!(!f.state.in_flight.wait_drained(dep, Duration::from_millis(50)).await);

    up.release.notify_one();
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.next()).await.unwrap() {
        rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(rest.contains(r#""n":2"#), "{rest}");
    assert!(f.state.in_flight.wait_drained(dep, Duration::from_secs(5)).await);
    assert_eq!(f.state.in_flight.count(dep), 0);
    assert_eq!(f.state.metrics.in_flight.with_label_values(&["streamy"]).get(), 0);
}

#[tokio::test]
async fn gateway_errors_404_503_502() {
    let f = Fixture::new().await;
    f.server("building", None).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    f.server("gone", Some((closed, "LIVE"))).await;

    let resp = f.post("nobody", Some("good")).await;
    assert_eq!(resp.status(), 404);
    // The gateway's own answers on /s/ carry the same policy.
    assert_eq!(resp.headers()["content-security-policy"], "sandbox");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(f.post("Not_A_Slug", Some("good")).await.status(), 404);

    let resp = f.post("building", Some("good")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "10");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_live");

    // Live in the database but not yet announced (the NOTIFY still on its way):
    // a not-live answer is rechecked after a moment, not trusted forever.
    let up = upstream("A").await;
    let building = f.state.routes.get("building").await.unwrap().server_id;
    f.deployment(building, up.addr.port(), "LIVE").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = f.post("building", Some("good")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "A");

    let resp = f.post("gone", Some("good")).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert!(body["message"].as_str().unwrap().contains("not reachable"), "{body}");

    // Key outage: 503, not a refusal of the token.
    let resp = f.post("gone", Some("down")).await;
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn gateway_refuses_tokens_with_a_challenge_and_traces_it() {
    let f = Fixture::new().await;
    let up = upstream("A").await;
    let (server, _) = f.server("guarded", Some((up.addr.port(), "LIVE"))).await;
    let meta = format!("{}/.well-known/oauth-protected-resource/s/guarded/mcp", f.cfg.issuer());

    let resp = f.post("guarded", None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], format!("Bearer resource_metadata=\"{meta}\"").as_str());

    let resp = f.post("guarded", Some("forged")).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{meta}\", error=\"invalid_token\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains("error_description=\"token audience https://elsewhere/s/x/mcp does not match"),
        "{challenge}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");

    let resp = f.http.post(f.url("guarded")).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("not a Bearer token"));

    let resp = f.post("guarded", Some("noscope")).await;
    assert_eq!(resp.status(), 403);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"mcp\""), "{challenge}");

    // Two good calls: one "first call" trace row.
    assert_eq!(f.post("guarded", Some("good")).await.status(), 200);
    assert_eq!(f.post("guarded", Some("good")).await.status(), 200);

    let rows = f.trace_rows(server, 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows_after = f.trace_rows(server, 5).await;
    assert_eq!(rows.len(), rows_after.len(), "the first call is recorded once: {rows_after:?}");
    assert_eq!(rows_after.len(), 5, "{rows_after:?}");
    let refusals: Vec<_> = rows_after.iter().filter(|r| !r.0).collect();
    assert_eq!(refusals.len(), 4);
    assert!(refusals.iter().any(|r| r.1.contains("does not match this server")), "{refusals:?}");
    assert!(refusals.iter().any(|r| r.1.contains("without a bearer token")), "{refusals:?}");
    assert!(refusals.iter().any(|r| r.1.contains("lacks the mcp scope") && r.2.as_deref() == Some("test-client")));
    let firsts: Vec<_> = rows_after.iter().filter(|r| r.0).collect();
    assert_eq!(firsts.len(), 1);
    assert_eq!(firsts[0].2.as_deref(), Some("test-client"));
}

#[tokio::test]
async fn gateway_serves_protected_resource_metadata_and_cors() {
    let f = Fixture::new().await;
    f.server("meta", None).await;
    let resp = f
        .http
        .get(format!("{}/.well-known/oauth-protected-resource/s/meta/mcp", f.base))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "resource": f.cfg.server_url("meta"),
            "authorization_servers": [f.cfg.issuer()],
            "scopes_supported": ["mcp", "offline_access"],
            "bearer_methods_supported": ["header"],
        })
    );
    // An unknown slug answers the same way (no enumeration of servers).
    let resp = f.http.get(format!("{}/.well-known/oauth-protected-resource/s/nope/mcp", f.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let unknown: Value = resp.json().await.unwrap();
    assert_eq!(unknown["resource"], f.cfg.server_url("nope"));
    assert_eq!(unknown["authorization_servers"], body["authorization_servers"]);
    let known = f.http.post(f.url("meta")).body("{}").send().await.unwrap();
    let missing = f.http.post(f.url("nope")).body("{}").send().await.unwrap();
    assert_eq!((known.status().as_u16(), missing.status().as_u16()), (401, 401));

    // Preflight: answered without a token, allowing the MCP headers.
    let resp = f
        .http
        .request(reqwest::Method::OPTIONS, f.url("meta"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, mcp-session-id, mcp-protocol-version, last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for name in ["authorization", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id"] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));

    // A refused request still carries CORS headers, so browsers can read the challenge.
    let resp = f.http.post(f.url("meta")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let exposed = resp.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate") && exposed.contains("mcp-session-id"), "{exposed}");
}

#[tokio::test]
async fn gateway_cut_over_switches_routes_through_notify() {
    let f = Fixture::new().await;
    let (a, b) = (upstream("A").await, upstream("B").await);
    let (server, dep_a) = f.server("switch", Some((a.addr.port(), "LIVE"))).await;
    let dep_a = dep_a.unwrap();
    let dep_b = f.deployment(server, b.addr.port(), "READY").await;

    let resp = f.post("switch", Some("good")).await;
    assert_eq!(resp.headers()["x-upstream"], a.name);

    let mut conn = f.pool.get().await.unwrap();
    let previous = cut_over(&mut conn, server, dep_b).await.unwrap().expect("the previous LIVE deployment");
    assert_eq!(previous.id, dep_a);
    assert_eq!(previous.status, "DRAINING");

    // The running gateway learns of it through NOTIFY, without a miss.
    let mut switched = false;
    for _ in 0..100 {
        if f.state.routes.get("switch").await.and_then(|r| r.live).map(|u| u.deployment_id) == Some(dep_b) {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "the route did not switch");
    let resp = f.post("switch", Some("good")).await;
    assert_eq!(resp.headers()["x-upstream"], b.name);

    let rows = query(
        &f.db,
        &format!("SELECT status, live_at IS NOT NULL FROM deployments WHERE server_id = '{server}' ORDER BY status"),
    )
    .await;
    let states: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(states, vec![("DRAINING".to_owned(), true), ("LIVE".to_owned(), true)]);
    let row =
        &query(&f.db, &format!("SELECT status, current_version_id::text FROM servers WHERE id = '{server}'")).await[0];
    assert_eq!(row.get::<_, String>(0), "LIVE");
    let version_b: String =
        query(&f.db, &format!("SELECT version_id::text FROM deployments WHERE id = '{dep_b}'")).await[0].get(0);
    assert_eq!(row.get::<_, Option<String>>(1), Some(version_b));

    // Again to the same deployment: nothing changes.
    assert!(cut_over(&mut conn, server, dep_b).await.unwrap().is_none());
    // A deployment of another server is refused.
    let (other, _) = f.server("other", None).await;
    let foreign = f.deployment(other, 1, "READY").await;
    assert!(matches!(cut_over(&mut conn, server, foreign).await, Err(diesel::result::Error::NotFound)));
    // Two LIVE deployments of one server are impossible.
    let extra = f.deployment(server, 2, "READY").await;
    let dup = f.db.url.clone();
    let (c, conn2) = tokio_postgres::connect(&dup, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn2);
    assert!(c.execute(&format!("UPDATE deployments SET status = 'LIVE' WHERE id = '{extra}'"), &[]).await.is_err());
}

#[tokio::test]
async fn gateway_route_listener_reconnects_and_reloads() {
    let f = Fixture::new().await;
    let up = upstream("A").await;
    let listener_pids = |db: &TestDb| {
        let sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
        let db_url = db.url.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c.query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
        }
    };
    let before = listener_pids(&f.db).await;
    assert_eq!(before.len(), 1, "one LISTEN connection per process");
    // Kill the LISTEN connection from the server side.
    exec(&f.db, &format!("SELECT pg_terminate_backend({})", before[0])).await;
    // A route made while it was down is picked up on reconnect (or on the miss).
    let (server, _) = f.server("late", None).await;
    let dep = f.deployment(server, up.addr.port(), "READY").await;
    let mut conn = f.pool.get().await.unwrap();
    cut_over(&mut conn, server, dep).await.unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if f.state.routes.is_listening() && f.state.routes.get("late").await.and_then(|r| r.live).is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "listener did not reconnect and reload");
    let mut after = Vec::new();
    for _ in 0..50 {
        after = listener_pids(&f.db).await;
        if after.len() == 1 && after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after.len() == 1 && after != before, "no new LISTEN connection: {before:?} → {after:?}");
    assert_eq!(f.post("late", Some("good")).await.status(), 200);
}

#[test]
fn gateway_verifies_real_platform_tokens() {
    bmm_db::testing::run_with_big_stack(verifies_real_platform_tokens());
}

async fn verifies_real_platform_tokens() {
    // The production verifier: tokens minted by bmm-auth's key store.
    let f = Fixture::new().await;
    let keys_f = bmm_auth::KeyStore::without_jwks_file(f.pool.clone(), f.cfg.clone());
    let state = GatewayState::with_keys(f.cfg.clone(), f.pool.clone(), keys_f.clone());
    state.routes.reload().await.unwrap();
    let up = upstream("A").await;
    f.server("real", Some((up.addr.port(), "LIVE"))).await;
    let app = router(state);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", tcp.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>()).await });

    let mint = |audience: String| {
        let keys = keys_f.clone();
        async move {
            let grant = bmm_auth::tokens::AccessGrant {
                user_id: Uuid::new_v4(),
                org_id: Uuid::new_v4(),
                audience: &audience,
                scope: "mcp",
                client_id: "real-client",
                ttl: Duration::from_secs(60),
            };
            bmm_auth::tokens::mint_access_token(&keys, &grant).await.unwrap().0
        }
    };
    let good = mint(f.cfg.server_url("real")).await;
    let other = mint(f.cfg.server_url("another")).await;
    let url = format!("{base}/s/real/mcp");
    let resp = f.http.post(&url).bearer_auth(&good).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = f.http.post(&url).bearer_auth(&other).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("does not match this server"), "{challenge}");
}

//! The whole path of a request, with nothing stubbed: a spec rendered with the
//! runner template and bundled with the real toolchain, deployed as a hardened
//! container, cut over, and called through the gateway by the MCP smoke client
//! with a token minted by the platform's key store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bmm_activities::smoke::{call_tool, smoke_test};
use bmm_db::testing::TestDb;
use bmm_runtime::DeploySpec;
use bmm_runtime::docker::Docker;
use serde_json::json;
use uuid::Uuid;

/// Removes the build's containers when dropped, even when the test panics.
struct Cleanup(Docker, Uuid);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (docker, build) = (self.0.clone(), self.1);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(docker.remove_build(build))
        })
        .join();
    }
}

async fn exec(db: &TestDb, sql: &str) {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[test]
fn docker_smoke_real_bundle_through_the_gateway() {
    bmm_db::testing::run_with_big_stack(real_bundle_through_the_gateway());
}

async fn real_bundle_through_the_gateway() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let cfg = Arc::new(bmm_core::Config::for_tests(&db.url));

    // Keys and the JWKS file the container reads.
    let keys = bmm_auth::KeyStore::without_jwks_file(pool.clone(), cfg.clone());
    keys.init().await.expect("signing key");
    let jwks = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(jwks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    keys.write_jwks_file(jwks.path()).await.expect("jwks file");

    // The real generated server.
    let spec = bmm_spec::testing::echo_spec();
    let tree = tempfile::tempdir().unwrap();
    bmm_spec::write_tree(&bmm_spec::render(&spec), tree.path()).unwrap();
    let bundle =
        bmm_spec::Toolchain::from_env().bundle(tree.path()).await.expect("bundle (is the toolchain installed?)");

    let (org, server, version, build, dep) =
        (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let slug = format!("e2e-{}", &build.simple().to_string()[..8]);
    // Bundles are mounted from the data folder: this test's own.
    let data = tempfile::tempdir().unwrap();
    let mut docker_cfg = (*cfg).clone();
    docker_cfg.data_dir = data.path().to_owned();
    let docker = Docker::connect(&docker_cfg).unwrap();
    let _cleanup = Cleanup(docker.clone(), build);
    let deployed = docker
        .deploy(&DeploySpec {
            org_id: org,
            server_id: server,
            build_id: build,
            version: 1,
            slug: slug.clone(),
            bundle_digest: bmm_core::digest::sha256(&bundle),
            bundle,
            env: vec![("BMM_SERVER_URL".into(), cfg.server_url(&slug)), ("BMM_ISSUER".into(), cfg.issuer())],
            jwks_dir: jwks.path().to_owned(),
        })
        .await
        .expect("deploy");

    exec(
        &db,
        &format!(
            "INSERT INTO orgs (id, name, slug) VALUES ('{org}', 'E2E', 'o-{org}');
             INSERT INTO servers (id, org_id, slug, name) VALUES ('{server}', '{org}', '{slug}', 'Echo');
             INSERT INTO server_versions (id, org_id, server_id, version, generator) VALUES ('{version}', '{org}', '{server}', 1, 'offline');
             INSERT INTO builds (id, org_id, server_id, version_id, workflow_id) VALUES ('{build}', '{org}', '{server}', '{version}', 'build-{build}');
             INSERT INTO deployments (id, org_id, server_id, version_id, build_id, container_name, container_id, host, port, status)
               VALUES ('{dep}', '{org}', '{server}', '{version}', '{build}', '{}', '{}', '{}', {}, 'READY');",
            deployed.name, deployed.id, deployed.host, deployed.port
        ),
    )
    .await;

    // The gateway, listening for route changes, then the cut-over.
    let state = bmm_gateway::GatewayState::with_keys(cfg.clone(), pool.clone(), keys.clone());
    let listener = state.spawn_route_listener();
    assert!(state.routes.wait_listening(Duration::from_secs(10)).await);
    let mut conn = pool.get().await.unwrap();
    assert!(bmm_gateway::cut_over(&mut conn, server, dep).await.unwrap().is_none());
    // The notification reaches the route table.
    let mut live = false;
    for _ in 0..100 {
        if state.routes.get(&slug).await.and_then(|r| r.live).is_some() {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live, "the cut-over did not reach the route table");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/s/{slug}/mcp", tcp.local_addr().unwrap());
    let app = bmm_gateway::router(state.clone());
    tokio::spawn(async move { axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>()).await });

    let audience = cfg.server_url(&slug);
    let grant = bmm_auth::tokens::AccessGrant {
        user_id: Uuid::new_v4(),
        org_id: org,
        audience: &audience,
        scope: "mcp",
        client_id: "e2e-client",
        ttl: Duration::from_secs(120),
    };
    let (token, _) = bmm_auth::tokens::mint_access_token(&keys, &grant).await.unwrap();

    // Through the gateway: the container verifies the same token against its JWKS file.
    let report = smoke_test(&url, &token, &["echo".to_owned()], Duration::from_secs(20)).await.expect("smoke");
    assert_eq!(report.tools, vec!["echo".to_owned()]);
    assert_eq!(report.protocol_version, bmm_activities::smoke::PROTOCOL_VERSION);
    let out = call_tool(&url, &token, "echo", json!({ "text": "through the gateway" })).await.expect("tools/call");
    assert_eq!(out["content"][0]["text"], "through the gateway", "{out}");

    // The real server's answer comes back as untrusted content on the platform's origin.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("cookie", "bmm_session=the-dashboard-session")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-security-policy"], "sandbox");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.text().await.unwrap().contains("\"echo\""));

    // Directly against the container too (what the build's smoke step does).
    let direct = format!("http://127.0.0.1:{}/mcp", deployed.port);
    smoke_test(&direct, &token, &["echo".to_owned()], Duration::from_secs(20)).await.expect("direct smoke");

    // A token for another server is refused by the gateway before the container sees it.
    let other_aud = cfg.server_url("someone-else");
    let other = bmm_auth::tokens::AccessGrant { audience: &other_aud, ..grant.clone() };
    let (bad, _) = bmm_auth::tokens::mint_access_token(&keys, &other).await.unwrap();
    let err = smoke_test(&url, &bad, &["echo".to_owned()], Duration::from_secs(20)).await.unwrap_err();
    assert!(err.to_string().contains("does not match this server"), "{err}");

    listener.abort();
    assert_eq!(docker.remove_build(build).await.unwrap(), 1);
}

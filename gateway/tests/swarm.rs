//! The swarm backend end to end, on a private engine in swarm mode (the
//! shared one must not become a swarm): the real generated server deployed as
//! a service, cut over and called through the gateway with a platform token;
//! its task's container killed, the swarm starting another and the gateway
//! reaching it; its service removed by hand and made again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bmm_activities::smoke::{call_tool, smoke_test};
use bmm_db::testing::TestDb;
use bmm_runtime::swarm::testing::PrivateSwarm;
use bmm_runtime::swarm::{Swarm, service_name};
use bmm_runtime::{DeploySpec, ListFilter};
use serde_json::json;
use uuid::Uuid;

async fn exec(db: &TestDb, sql: &str) {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The id of the container of the service's task that runs now.
fn running_task(engine: &PrivateSwarm, service: &str) -> Option<String> {
    let out = engine
        .try_docker(&["ps", "-q", "--no-trunc", "--filter", &format!("label=com.docker.swarm.service.name={service}")])
        .ok()?;
    out.split_whitespace().next().map(str::to_owned)
}

/// Call the tool through the gateway until it answers (or `within` passes).
async fn call_until_it_answers(url: &str, token: &str, text: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        match call_tool(url, token, "echo", json!({ "text": text })).await {
            Ok(out) => return out,
            Err(e) => assert!(Instant::now() < deadline, "no answer through the gateway within {within:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn swarm_service_answers_through_the_gateway_after_its_task_dies_and_after_it_is_removed() {
    bmm_db::testing::run_with_big_stack(swarm_through_the_gateway());
}

async fn swarm_through_the_gateway() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let cfg = Arc::new(bmm_core::Config::for_tests(&db.url));
    let engine = PrivateSwarm::start(&cfg.docker_host, &cfg.runtime_image);

    let keys = bmm_auth::KeyStore::without_jwks_file(pool.clone(), cfg.clone());
    keys.init().await.expect("signing key");
    let jwks = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(jwks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    keys.write_jwks_file(jwks.path()).await.expect("jwks file");

    let spec = bmm_spec::testing::echo_spec();
    let tree = tempfile::tempdir().unwrap();
    bmm_spec::write_tree(&bmm_spec::render(&spec), tree.path()).unwrap();
    let bundle =
        bmm_spec::Toolchain::from_env().bundle(tree.path()).await.expect("bundle (is the toolchain installed?)");

    let (org, server, version, build, dep) =
        (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // A slug at the longest allowed: the service name is cut to one DNS label.
    let slug = format!("swarm-{}", "e".repeat(42 - 8)) + &build.simple().to_string()[..8];
    let mut swarm_cfg = (*cfg).clone();
    swarm_cfg.runtime = bmm_core::config::RuntimeBackend::Swarm;
    swarm_cfg.docker_host = engine.host.clone();
    swarm_cfg.data_dir = engine.data_dir().join("bmm");
    let runtime = bmm_runtime::connect(&swarm_cfg).expect("BMM_RUNTIME=swarm");
    assert_eq!(runtime.backend(), bmm_core::config::RuntimeBackend::Swarm);
    let deploy_spec = DeploySpec {
        org_id: org,
        server_id: server,
        build_id: build,
        version: 1,
        slug: slug.clone(),
        bundle_digest: bmm_core::digest::sha256(&bundle),
        bundle,
        env: vec![("BMM_SERVER_URL".into(), cfg.server_url(&slug)), ("BMM_ISSUER".into(), cfg.issuer())],
        jwks_dir: jwks.path().to_owned(),
    };
    let deployed = runtime.deploy(&deploy_spec).await.expect("deploy as a service");
    let service = service_name(&deployed.name);
    assert!(service.len() <= 63 && deployed.name.len() > 63, "{service} / {}", deployed.name);

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

    let state = bmm_gateway::GatewayState::with_keys(cfg.clone(), pool.clone(), keys.clone());
    let _listener = state.spawn_route_listener();
    assert!(state.routes.wait_listening(Duration::from_secs(10)).await);
    let mut conn = pool.get().await.unwrap();
    assert!(bmm_gateway::cut_over(&mut conn, server, dep).await.unwrap().is_none());
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.routes.get(&slug).await.and_then(|r| r.live).is_none() {
        assert!(Instant::now() < deadline, "the cut-over did not reach the route table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        ttl: Duration::from_secs(300),
    };
    let (token, _) = bmm_auth::tokens::mint_access_token(&keys, &grant).await.unwrap();

    // 1. The service answers through the gateway (and verifies the token itself).
    let report = smoke_test(&url, &token, &["echo".to_owned()], Duration::from_secs(30)).await.expect("smoke");
    assert_eq!(report.tools, vec!["echo".to_owned()]);
    let out = call_tool(&url, &token, "echo", json!({ "text": "via the swarm" })).await.expect("tools/call");
    assert_eq!(out["content"][0]["text"], "via the swarm", "{out}");

    // 2. Its task's container killed: the swarm starts another, the gateway reaches it.
    let first = running_task(&engine, &service).expect("a running task");
    engine.docker(&["kill", &first]);
    let out = call_until_it_answers(&url, &token, "after the kill", Duration::from_secs(60)).await;
    assert_eq!(out["content"][0]["text"], "after the kill", "{out}");
    let second = running_task(&engine, &service).expect("a new task");
    assert_ne!(first, second, "the answer came from a new task");
    let tasks = engine.docker(&["service", "ps", "-q", &service]);
    assert!(tasks.split_whitespace().count() >= 2, "the swarm made a second task: {tasks}");

    // 3. The service removed by hand: what the runtime reports shows it gone,
    //    and the same deploy (what reconciliation does for a missing
    //    workload) makes it again, reached at the endpoint the route holds.
    engine.docker(&["service", "rm", &service]);
    assert_eq!(runtime.adopt(&deployed.name).await.unwrap(), None);
    // What is left of it (its edge) is reported as a missing workload of its build.
    let left = runtime.list(&ListFilter::server(server)).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].name.as_str(), left[0].state.as_str()), (deployed.name.as_str(), "missing"));
    assert_eq!(left[0].build_id, Some(build));
    assert!(!left[0].running && left[0].endpoint.is_none());
    // Its task stops after the grace period; then nothing answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while call_tool(&url, &token, "echo", json!({ "text": "gone" })).await.is_ok() {
        assert!(Instant::now() < deadline, "the removed service still answers after 60s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(running_task(&engine, &service).is_none(), "no task runs");
    let again = runtime.deploy(&deploy_spec).await.expect("deploy the missing service again");
    assert!(!again.adopted);
    assert_eq!(again.endpoint(), deployed.endpoint(), "the edge outlived the service: the route holds");
    let out = call_until_it_answers(&url, &token, "recreated", Duration::from_secs(30)).await;
    assert_eq!(out["content"][0]["text"], "recreated", "{out}");
    let listed = runtime.list(&ListFilter::server(server)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].running && listed[0].endpoint == Some(deployed.endpoint()), "{listed:?}");

    // The backend's own type too (what the worker builds from BMM_RUNTIME).
    let direct = Swarm::connect(&swarm_cfg).unwrap();
    assert_eq!(direct.remove_build(build).await.unwrap(), 1);
}

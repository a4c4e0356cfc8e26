//! Whole builds against the real Temporal dev server, PostgreSQL, the node
//! toolchain and Docker: from a description to a live container answering
//! `tools/call`; a failure after deploy that leaves the previous version
//! serving; cancellation removing what was deployed.

mod support;

use std::time::Duration;

use bmm_auth::keys::KeyStore;
use bmm_db::models::Deployment;
use bmm_db::schema::{deployments, servers};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use support::{ContainerGuard, Env, Seed, containers_of, describe};
use uuid::Uuid;

async fn deployments_of(env: &Env, server_id: Uuid) -> Vec<Deployment> {
    let mut conn = env.pool.get().await.unwrap();
    deployments::table
        .filter(deployments::server_id.eq(server_id))
        .order(deployments::created_at.asc())
        .select(Deployment::as_select())
        .load(&mut conn)
        .await
        .unwrap()
}

fn mcp_url(d: &Deployment) -> String {
    format!("http://{}:{}/mcp", d.host.as_deref().unwrap(), d.port.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_becomes_a_live_server_and_a_failed_update_keeps_it_serving() {
    let mut env = Env::new("e2e").await;
    // The platform's gateway on the public URL: clients use {public}/s/{slug}/mcp.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    env.set("BMM_PUBLIC_URL", &public);
    let gateway = bmm_gateway::GatewayState::with_keys(
        env.cfg.clone(),
        env.pool.clone(),
        KeyStore::without_jwks_file(env.pool.clone(), env.cfg.clone()),
    );
    let _routes = gateway.spawn_route_listener();
    let app = bmm_gateway::router(gateway).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let _server = tokio::spawn(async move { axum::serve(listener, app).await });
    let worker = env.worker();
    let client = env.client().await;

    // v1: the preview expired before the build (and the version row has no spec).
    let v1 = env
        .seed(Seed {
            description: "A server that echoes text back and counts words.".into(),
            preview_expired: true,
            ..Default::default()
        })
        .await;
    let _g1 = ContainerGuard(v1.build_id);
    let run_id = env.start(&client, &v1).await;
    // Starting it again (a retried API call) is not an error: the same run.
    assert_eq!(env.start(&client, &v1).await, run_id);
    let step = bmm_workflows::client::current_step(&client, &env.cfg, v1.build_id).await.unwrap();
    assert!(
        ["queued", "generate", "check", "bundle", "deploy", "smoke", "cutover", "succeeded"].contains(&step.as_str()),
        "{step}"
    );
    let url = env.outcome(&client, &v1, Duration::from_secs(300)).await.unwrap_or_else(|e| {
        panic!("build failed: {e}");
    });
    assert_eq!(url, format!("{public}/s/{}/mcp", v1.slug));
    assert_eq!(bmm_workflows::client::current_step(&client, &env.cfg, v1.build_id).await.unwrap(), "succeeded");
    // A finished build is never run again.
    assert_eq!(env.start(&client, &v1).await, run_id);

    // The Web UI finds the build by its search attributes and explains it with the memo.
    let described = client
        .get_workflow_handle::<bmm_workflows::BuildWorkflow>(v1.workflow_id())
        .describe(Default::default())
        .await
        .unwrap();
    let attrs = described.search_attributes();
    use bmm_workflows::client::{BMM_BUILD, BMM_ORG, BMM_SERVER, BMM_VERSION};
    assert_eq!(attrs.get(&BMM_BUILD), Some(v1.build_id.to_string()));
    assert_eq!(attrs.get(&BMM_ORG), Some(v1.org_id.to_string()));
    assert_eq!(attrs.get(&BMM_SERVER), Some(v1.server_id.to_string()));
    assert_eq!(attrs.get(&BMM_VERSION), Some(1));
    let memo = described.memo();
    assert_eq!(memo.get::<String>("slug").unwrap(), Some(v1.slug.clone()));
    assert_eq!(memo.get::<i32>("version").unwrap(), Some(1));

    let events = env.events(v1.build_id).await;
    let text = describe(&events);
    // Past its cache time, the preview's spec is still the one built.
    assert!(
        events
            .iter()
            .any(|e| e.kind == "LOG" && e.message == "spec from the preview (generator: offline, past its cache time)"),
        "{text}"
    );
    assert!(!events.iter().any(|e| e.kind == "WARNING"), "{text}");
    for step in ["generate", "check", "bundle", "deploy", "smoke", "cutover"] {
        assert!(events.iter().any(|e| e.step == step && e.kind == "STEP_STARTED"), "{step} started: {text}");
        assert!(events.iter().any(|e| e.step == step && e.kind == "STEP_SUCCEEDED"), "{step} succeeded: {text}");
    }
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_SUCCEEDED", "{text}");
    assert!(last.message.contains(&url), "{}", last.message);
    let seqs: Vec<i32> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i32).collect::<Vec<_>>(), "dense seq");

    let build = env.build(v1.build_id).await;
    assert_eq!(build.status, "SUCCEEDED");
    assert_eq!(build.generator.as_deref(), Some("offline"));
    let deps = deployments_of(&env, v1.server_id).await;
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].status, "LIVE");
    assert_eq!(containers_of(v1.build_id).len(), 1);
    {
        let mut conn = env.pool.get().await.unwrap();
        let (status, current): (String, Option<Uuid>) = servers::table
            .filter(servers::id.eq(v1.server_id))
            .select((servers::status, servers::current_version_id))
            .first(&mut conn)
            .await
            .unwrap();
        assert_eq!((status.as_str(), current), ("LIVE", Some(v1.version_id)));
    }

    // The live container answers tools/call for a client holding a platform token.
    let bearer = env.token(v1.org_id, &v1.slug).await;
    let result = bmm_activities::smoke::call_tool(
        &mcp_url(&deps[0]),
        &bearer,
        "count_words",
        serde_json::json!({"text": "one two three"}),
    )
    .await
    .expect("tools/call");
    assert_ne!(result["isError"], serde_json::json!(true), "{result}");
    assert_eq!(result["structuredContent"]["words"], serde_json::json!(3), "{result}");
    // And through the gateway, on the server's stable URL.
    let result = bmm_activities::smoke::call_tool(&url, &bearer, "echo", serde_json::json!({"text": "via gateway"}))
        .await
        .expect("tools/call through the gateway");
    assert!(result.to_string().contains("via gateway"), "{result}");

    // v2 of the same server: its container comes up, but the smoke test finds
    // a tool the spec promises and the container lacks (a trigger adds it to
    // the spec the moment the deployment is READY). The build fails, removes
    // its container, and v1 keeps serving.
    let mut conn = env.pool.get().await.unwrap();
    diesel::sql_query(
        "CREATE FUNCTION add_ghost() RETURNS trigger AS $$ BEGIN \
           IF NEW.status = 'READY' AND NEW.version_id <> OLD.version_id IS NOT TRUE THEN \
             UPDATE server_versions SET spec = jsonb_set(spec, '{tools}', (spec->'tools') || \
               jsonb_build_array((spec->'tools'->0) || '{\"name\":\"ghost\"}'::jsonb)) WHERE id = NEW.version_id; \
           END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let v2 = env
        .seed(Seed {
            description: "echo".into(),
            preview_expired: true,
            server_id: Some(v1.server_id),
            org_id: Some(v1.org_id),
            slug: Some(v1.slug.clone()),
            ..Default::default()
        })
        .await;
    diesel::sql_query(format!(
        "CREATE TRIGGER ghost AFTER UPDATE ON deployments FOR EACH ROW WHEN (NEW.build_id = '{}') EXECUTE FUNCTION add_ghost()",
        v2.build_id
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let _g2 = ContainerGuard(v2.build_id);
    assert_eq!(v2.version, 2);
    env.start(&client, &v2).await;
    let err = env.outcome(&client, &v2, Duration::from_secs(300)).await.expect_err("v2 must fail");
    assert!(err.contains("smoke failed"), "{err}");
    let events = env.events(v2.build_id).await;
    let text = describe(&events);
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_FAILED", "{text}");
    assert!(last.message.starts_with("build failed at smoke: "), "{}", last.message);
    assert!(last.message.contains("missing ghost"), "{}", last.message);
    assert!(containers_of(v2.build_id).is_empty(), "v2's container was removed");
    assert_eq!(containers_of(v1.build_id).len(), 1, "v1's container is untouched");
    let deps = deployments_of(&env, v1.server_id).await;
    let statuses: Vec<(&str, Uuid)> = deps.iter().map(|d| (d.status.as_str(), d.build_id)).collect();
    assert_eq!(statuses, vec![("LIVE", v1.build_id), ("FAILED", v2.build_id)]);
    {
        let mut conn = env.pool.get().await.unwrap();
        let (status, current): (String, Option<Uuid>) = servers::table
            .filter(servers::id.eq(v1.server_id))
            .select((servers::status, servers::current_version_id))
            .first(&mut conn)
            .await
            .unwrap();
        assert_eq!((status.as_str(), current), ("LIVE", Some(v1.version_id)));
    }
    let result = bmm_activities::smoke::call_tool(
        &mcp_url(&deps[0]),
        &bearer,
        "echo",
        serde_json::json!({"text": "still here"}),
    )
    .await
    .expect("v1 still answers");
    assert!(result.to_string().contains("still here"), "{result}");
    let result = bmm_activities::smoke::call_tool(&url, &bearer, "count_words", serde_json::json!({"text": "a b"}))
        .await
        .expect("the stable URL still reaches v1");
    assert_eq!(result["structuredContent"]["words"], serde_json::json!(2), "{result}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_build_removes_what_it_deployed() {
    let env = Env::new("cancel").await;
    let worker = env.worker();
    let client = env.client().await;
    let input =
        env.seed(Seed { description: "uppercase text".into(), preview_expired: true, ..Default::default() }).await;
    let _g = ContainerGuard(input.build_id);
    env.start(&client, &input).await;
    // Cancel once the container exists.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while containers_of(input.build_id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no container appeared: {}",
            describe(&env.events(input.build_id).await)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bmm_workflows::client::cancel_build(&client, &env.cfg, input.build_id).await.expect("cancel");
    let err = env.outcome(&client, &input, Duration::from_secs(120)).await.expect_err("cancelled");
    assert!(err.to_lowercase().contains("cancel"), "{err}");
    let events = env.events(input.build_id).await;
    let text = describe(&events);
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_CANCELLED", "{text}");
    assert_eq!(last.message, "build cancelled: cancelled by the user");
    assert!(events.iter().any(|e| e.message.contains("removed 1 container(s)")), "{text}");
    assert!(containers_of(input.build_id).is_empty(), "the container is gone");
    let build = env.build(input.build_id).await;
    assert_eq!(build.status, "CANCELLED");
    assert!(build.finished_at.is_some());
    assert_eq!(bmm_workflows::client::current_step(&client, &env.cfg, input.build_id).await.unwrap(), "cancelled");
    // Cancelling again after the end is harmless.
    bmm_workflows::client::cancel_build(&client, &env.cfg, input.build_id).await.expect("second cancel");
    worker.stop().await;
}

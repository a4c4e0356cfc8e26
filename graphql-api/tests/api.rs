//! Queries and mutations through the real HTTP server: auth codes, org
//! scoping, guard rails, audit, creating servers from previews.

mod common;

use bmm_graphql_api::Limits;
use bmm_graphql_api::ratelimit::Rate;
use common::*;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use uuid::Uuid;

const ME: &str = "{ me { id email role orgId authenticatedWith } }";

#[tokio::test]
async fn no_token_revoked_key_and_other_orgs_ids_get_the_right_codes() {
    let app = TestApp::start().await;
    let (key_a, _, _) = app.user("a@example.com").await;
    let (key_b, _, org_b) = app.user("b@example.com").await;
    let (server_b, build_b) = app.seed_build(org_b, "org-b-server").await;

    let (status, body) = app.gql(None, ME, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(code(&body), Some("UNAUTHENTICATED"), "{body}");

    let (_, body) = app.gql(Some(&key_a), ME, json!({})).await;
    assert_eq!(body["data"]["me"]["email"], "a@example.com");
    assert_eq!(body["data"]["me"]["authenticatedWith"], "API_KEY");

    // Another org's server and build: NOT_FOUND, exactly like ids that do not exist.
    for (q, id) in [
        ("query($id: ID!) { server(id: $id) { id name } }", server_b),
        ("query($id: ID!) { build(id: $id) { id status } }", build_b),
        ("query($id: ID!) { server(id: $id) { id } }", Uuid::now_v7()),
    ] {
        let (_, body) = app.gql(Some(&key_a), q, json!({ "id": id })).await;
        assert_eq!(code(&body), Some("NOT_FOUND"), "{q}: {body}");
        assert!(body["data"].is_null() || body["data"].as_object().is_some_and(|o| o.values().all(Value::is_null)));
    }
    let (_, body) =
        app.gql(Some(&key_a), "mutation($id: ID!) { deleteServer(id: $id) { id } }", json!({ "id": server_b })).await;
    assert_eq!(code(&body), Some("NOT_FOUND"), "{body}");
    let (_, body) = app
        .gql(
            Some(&key_a),
            "mutation($id: ID!) { setServerSecret(serverId: $id, key: \"X\", value: \"y\") { key } }",
            json!({ "id": server_b }),
        )
        .await;
    assert_eq!(code(&body), Some("NOT_FOUND"), "{body}");
    // B still sees its own.
    let (_, body) =
        app.gql(Some(&key_b), "query($id: ID!) { server(id: $id) { name } }", json!({ "id": server_b })).await;
    assert_eq!(body["data"]["server"]["name"], "org-b-server", "{body}");

    // A revoked key is refused outright.
    let (_, body) = app.gql(Some(&key_a), "{ apiKeys { id } }", json!({})).await;
    let key_id = body["data"]["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let (_, body) = app
        .gql(Some(&key_a), "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }", json!({ "id": key_id }))
        .await;
    assert!(body["data"]["revokeApiKey"]["revokedAt"].is_string(), "{body}");
    let (status, body) = app.gql(Some(&key_a), ME, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(code(&body), Some("UNAUTHENTICATED"));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("revoked"), "{body}");
}

#[tokio::test]
async fn session_cookie_authenticates() {
    let app = TestApp::start().await;
    let (_, user, org) = app.user("cookie@example.com").await;
    let mut conn = app.conn().await;
    let (token, _) = bmm_auth::identity::create_session(&mut conn, user, org, None, None).await.unwrap();
    let body: Value = app
        .http
        .post(app.url("/graphql"))
        .header("cookie", format!("bmm_session={token}"))
        .json(&json!({ "query": ME }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["me"]["authenticatedWith"], "SESSION", "{body}");
}

#[tokio::test]
async fn depth_complexity_and_size_limits_refuse_with_bad_user_input() {
    let limits = Limits { max_body_bytes: 64 * 1024, ..generous_limits() };
    let app = TestApp::with_limits(limits).await;
    let (key, _, _) = app.user("limits@example.com").await;

    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }";
    let (_, body) = app.gql(Some(&key), deep, json!({})).await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{body}");

    let wide = "{ auditLog(limit: 200) { id at action resourceType resourceId userId metadata ip } }";
    let (_, body) = app.gql(Some(&key), wide, json!({})).await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("complex"), "{body}");

    let big = "x".repeat(70 * 1024);
    let (status, body) = app.gql(Some(&key), ME, json!({ "pad": big })).await;
    assert_eq!(status, 413);
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");

    let (_, body) = app.gql(Some(&key), "{ me { nope } }", json!({})).await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    let resp = app.http.post(app.url("/graphql")).body("{}").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let resp = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn rate_limit_per_key_answers_rate_limited_with_retry_after() {
    let limits = Limits {
        authenticated: Rate { burst: 3, per_second: 0.2 },
        anonymous: Rate { burst: 2, per_second: 0.2 },
        ..Limits::default()
    };
    let app = TestApp::with_limits(limits).await;
    let (key, _, _) = app.user("rl@example.com").await;
    let (other, _, _) = app.user("rl2@example.com").await;
    for _ in 0..3 {
        let (status, body) = app.gql(Some(&key), ME, json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let resp = app.http.post(app.url("/graphql")).bearer_auth(&key).json(&json!({ "query": ME })).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), Some("RATE_LIMITED"), "{body}");
    // Another key has its own bucket.
    let (status, _) = app.gql(Some(&other), ME, json!({})).await;
    assert_eq!(status, 200);
    // Anonymous callers are limited per IP.
    for _ in 0..2 {
        app.gql(None, ME, json!({})).await;
    }
    let (status, body) = app.gql(None, ME, json!({})).await;
    assert_eq!((status, code(&body)), (429, Some("RATE_LIMITED")));
}

async fn insert_preview(app: &TestApp, org: Uuid, user: Uuid, expires_in_secs: i64) -> Uuid {
    use bmm_db::schema::previews;
    let id = Uuid::now_v7();
    let mut conn = app.conn().await;
    diesel::insert_into(previews::table)
        .values((
            previews::id.eq(id),
            previews::org_id.eq(org),
            previews::user_id.eq(Some(user)),
            previews::description.eq("weather"),
            previews::spec.eq(sample_spec()),
            previews::generator.eq("offline"),
            previews::expires_at.eq(chrono::Utc::now() + chrono::Duration::seconds(expires_in_secs)),
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    id
}

const CREATE: &str = "mutation($input: CreateServerInput!) { createServer(input: $input) {
    server { id slug name url status tools { name inputSchema annotations { readOnlyHint } } secrets { key } versions { version } }
    build { id status workflowId temporalUrl steps { name status } } } }";

#[tokio::test]
async fn create_server_from_a_preview_enforces_credentials_seals_secrets_and_starts_the_build() {
    let app = TestApp::start().await;
    let (key, user, org) = app.user("create@example.com").await;
    let preview = insert_preview(&app, org, user, 300).await;

    let bad = [
        (json!({ "previewId": preview, "name": "  ", "credentials": [] }), "input.name"),
        (json!({ "previewId": "nope", "name": "W", "credentials": [] }), "input.previewId"),
        (json!({ "previewId": preview, "name": "W", "credentials": [] }), "input.credentials"),
        (
            json!({ "previewId": preview, "name": "W", "credentials": [{ "key": "OTHER", "value": "x" }] }),
            "input.credentials[0].key",
        ),
        (
            json!({ "previewId": preview, "name": "W", "credentials": [{ "key": "WEATHER_KEY", "value": "" }] }),
            "input.credentials[0].value",
        ),
    ];
    for (input, field) in bad {
        let (_, body) = app.gql(Some(&key), CREATE, json!({ "input": input })).await;
        assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    assert!(app.runner.started.lock().unwrap().is_empty());

    let input = json!({ "previewId": preview, "name": "My Weather!", "credentials": [{ "key": "WEATHER_KEY", "value": "s3cret-value" }] });
    let (_, body) = app.gql(Some(&key), CREATE, json!({ "input": input })).await;
    let out = &body["data"]["createServer"];
    assert_eq!(out["server"]["slug"], "my-weather", "{body}");
    assert_eq!(out["server"]["status"], "BUILDING");
    assert!(out["server"]["url"].as_str().unwrap().ends_with("/s/my-weather/mcp"));
    assert_eq!(out["server"]["tools"][0]["name"], "forecast");
    assert_eq!(out["server"]["secrets"], json!([{ "key": "WEATHER_KEY" }]));
    assert_eq!(out["build"]["status"], "QUEUED");
    let build_id: Uuid = out["build"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(out["build"]["workflowId"], format!("build-{build_id}"));
    assert_eq!(out["build"]["steps"].as_array().unwrap().len(), 6);

    let started = app.runner.started.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].build_id, build_id);
    assert_eq!(started[0].version, 1);
    assert_eq!(started[0].slug, "my-weather");
    assert_eq!(started[0].preview_id, Some(preview));

    // The secret is sealed, bound to its server and key.
    use bmm_db::schema::{secrets, server_versions};
    let mut conn = app.conn().await;
    let (nonce, ct): (Vec<u8>, Vec<u8>) =
        secrets::table.select((secrets::nonce, secrets::ciphertext)).first(&mut conn).await.unwrap();
    assert!(!ct.windows(6).any(|w| w == b"s3cret"));
    let sealed = bmm_core::crypto::Sealed { nonce, ciphertext: ct };
    let server_id = started[0].server_id;
    let plain = app.state.cfg.secret_box.open(&sealed, format!("secret:{server_id}:WEATHER_KEY").as_bytes()).unwrap();
    assert_eq!(plain, b"s3cret-value");
    let spec: Option<Value> = server_versions::table.select(server_versions::spec).first(&mut conn).await.unwrap();
    assert!(spec.is_some(), "a fresh preview's spec is used");

    // The same name again gets another slug; a preview past its cache time still builds its own spec.
    let expired = insert_preview(&app, org, user, -10).await;
    let input =
        json!({ "previewId": expired, "name": "My Weather!", "credentials": [{ "key": "WEATHER_KEY", "value": "v" }] });
    let (_, body) = app.gql(Some(&key), CREATE, json!({ "input": input })).await;
    assert_eq!(body["data"]["createServer"]["server"]["slug"], "my-weather-2", "{body}");
    let sid = app.runner.started.lock().unwrap()[1].server_id;
    let (spec, digest): (Option<Value>, Option<String>) = server_versions::table
        .filter(server_versions::server_id.eq(sid))
        .select((server_versions::spec, server_versions::spec_digest))
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(spec, Some(sample_spec()), "the reviewed spec, never a regenerated one");
    assert!(digest.is_some_and(|d| d.starts_with("sha256:")));

    // The audit log has the creation, with credential keys but never values.
    let (_, body) = app
        .gql(Some(&key), "{ auditLog(action: \"server.create\") { action resourceId metadata ip } }", json!({}))
        .await;
    let entries = body["data"]["auditLog"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{body}");
    assert_eq!(entries[1]["metadata"]["credentialKeys"], json!(["WEATHER_KEY"]));
    assert_eq!(entries[1]["ip"], "127.0.0.1");
    assert!(!body.to_string().contains("s3cret"));
}

#[tokio::test]
async fn mutations_write_the_audit_log_without_secret_values() {
    let app = TestApp::start().await;
    let (key, _, org) = app.user("audit@example.com").await;
    let (server, build) = app.seed_build(org, "audited").await;

    let (_, body) =
        app.gql(Some(&key), "mutation { createApiKey(name: \"ci\") { key apiKey { id prefix } } }", json!({})).await;
    let new_key = body["data"]["createApiKey"]["key"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("bmm_"));
    let (_, body) = app.gql(Some(&new_key), ME, json!({})).await;
    assert_eq!(body["data"]["me"]["email"], "audit@example.com");

    let (_, body) = app
        .gql(
            Some(&key),
            "mutation($s: ID!) { setServerSecret(serverId: $s, key: \"API_TOKEN\", value: \"hunter2-very-secret\") { key updatedAt } }",
            json!({ "s": server }),
        )
        .await;
    assert_eq!(body["data"]["setServerSecret"]["key"], "API_TOKEN", "{body}");
    let (_, body) = app
        .gql(
            Some(&key),
            "mutation($s: ID!) { setServerSecret(serverId: $s, key: \"bad key\", value: \"v\") { key } }",
            json!({ "s": server }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "key", "{body}");

    let (_, body) =
        app.gql(Some(&key), "mutation($b: ID!) { cancelBuild(id: $b) { id status } }", json!({ "b": build })).await;
    assert_eq!(body["data"]["cancelBuild"]["id"], build.to_string(), "{body}");
    assert_eq!(app.runner.cancelled.lock().unwrap().as_slice(), &[build]);

    let (_, body) =
        app.gql(Some(&key), "mutation($s: ID!) { deleteServer(id: $s) { status } }", json!({ "s": server })).await;
    assert_eq!(body["data"]["deleteServer"]["status"], "DELETED", "{body}");
    let (_, body) = app.gql(Some(&key), "{ servers { id } }", json!({})).await;
    assert_eq!(body["data"]["servers"], json!([]));

    let (_, body) = app.gql(Some(&key), "{ auditLog { action resourceType metadata } }", json!({})).await;
    let actions: Vec<&str> =
        body["data"]["auditLog"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["server.delete", "build.cancel", "server.secret.set", "api_key.create"], "{body}");
    assert!(!body.to_string().contains("hunter2"));

    // Paging: `after` is the last id of the previous page.
    let (_, body) = app.gql(Some(&key), "{ auditLog(limit: 2) { id action } }", json!({})).await;
    let last = body["data"]["auditLog"][1]["id"].as_str().unwrap().to_owned();
    let (_, body) =
        app.gql(Some(&key), "query($a: ID) { auditLog(limit: 2, after: $a) { action } }", json!({ "a": last })).await;
    assert_eq!(body["data"]["auditLog"], json!([{ "action": "server.secret.set" }, { "action": "api_key.create" }]));
    let (_, body) = app.gql(Some(&key), "{ auditLog(limit: 0) { id } }", json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "limit");
}

#[tokio::test]
async fn build_query_shows_steps_events_and_temporal_link() {
    let app = TestApp::start().await;
    let (key, _, org) = app.user("steps@example.com").await;
    let (_, build) = app.seed_build(org, "steps").await;
    use bmm_db::events::{EventKind, NewEvent, append};
    let mut conn = app.conn().await;
    for (step, kind) in [
        ("generate", EventKind::StepStarted),
        ("generate", EventKind::StepSucceeded),
        ("check", EventKind::StepStarted),
        ("check", EventKind::StepRetrying),
        ("check", EventKind::StepStarted),
        ("check", EventKind::Log),
    ] {
        append(&mut conn, NewEvent { build_id: build, step, kind, message: "m", data: None }).await.unwrap();
    }
    let (_, body) = app
        .gql(
            Some(&key),
            "query($id: ID!) { build(id: $id) { status temporalUrl steps { name status attempts } events(after: 4, limit: 1) { seq kind } } }",
            json!({ "id": build }),
        )
        .await;
    let b = &body["data"]["build"];
    assert_eq!(b["steps"][0], json!({ "name": "generate", "status": "SUCCEEDED", "attempts": 1 }), "{body}");
    assert_eq!(b["steps"][1], json!({ "name": "check", "status": "RUNNING", "attempts": 2 }));
    assert_eq!(b["steps"][2]["status"], "PENDING");
    assert_eq!(b["events"], json!([{ "seq": 5, "kind": "STEP_STARTED" }]));
    assert!(b["temporalUrl"].as_str().unwrap().ends_with(&format!("/namespaces/default/workflows/build-{build}")));
}

#[tokio::test]
async fn health_readiness_metrics_and_dashboard() {
    let app = TestApp::start().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["components"]["postgres"]["status"], "ok", "{body}");
    assert_eq!(body["components"]["temporal"]["status"], "ok", "{body}");
    assert_eq!(body["components"]["buildEventListener"]["status"], "ok", "{body}");
    // No container runtime is configured in this test, so the API is not ready.
    assert_eq!(body["components"]["docker"]["status"], "not_configured");
    assert_eq!(status, 503);

    let (key, _, org) = app.user("m@example.com").await;
    let (_, build) = app.seed_build(org, "metrics").await;
    let _ = key;
    {
        use bmm_db::events::{EventKind, NewEvent, append};
        let mut conn = app.state.pool.get().await.unwrap();
        for kind in [EventKind::StepStarted, EventKind::StepSucceeded] {
            append(&mut conn, NewEvent { build_id: build, step: "generate", kind, message: "m", data: None })
                .await
                .unwrap();
        }
        // A step that has not succeeded is not counted.
        append(
            &mut conn,
            NewEvent { build_id: build, step: "check", kind: EventKind::StepStarted, message: "m", data: None },
        )
        .await
        .unwrap();
    }
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("bmm_builds{status=\"QUEUED\"} 1"), "{text}");
    assert!(text.contains("bmm_build_step_duration_seconds_count{step=\"generate\"} 1"), "{text}");
    assert!(text.contains("bmm_build_step_duration_seconds_sum{step=\"generate\"}"), "{text}");
    assert!(!text.contains("bmm_build_step_duration_seconds_count{step=\"check\"}"), "{text}");
    assert!(text.contains("bmm_subscriptions_active 0"));
    assert!(text.contains("bmm_build_event_listener_up 1"));

    let r = app.http.get(app.url("/servers/abc")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let r = app.http.get(app.url("/oauth/nothing-here")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = app.http.get(app.url("/missing.js")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = app.http.get(app.url("/graphiql")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // The auth routes and the gateway are mounted on the same app.
    let r = app.http.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let meta: Value = r.json().await.unwrap();
    assert_eq!(meta["issuer"], app.state.cfg.issuer());
    let r = app.http.get(app.url("/auth/sign-in")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app.http.post(app.url("/s/no-such-server/mcp")).body("{}").send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 404), "gateway answers for /s/…/mcp: {}", r.status());
}

#[tokio::test]
async fn degraded_and_down_servers_show_their_reason_events_and_metrics() {
    use bmm_db::server_events::{Health, NewServerEvent, ServerEventKind, append, set_health};
    let app = TestApp::start().await;
    let (key, _, org) = app.user("status@example.com").await;
    let (key_b, _, _) = app.user("status-b@example.com").await;
    let (server, _) = app.seed_build(org, "status").await;
    {
        let mut conn = app.conn().await;
        diesel::update(bmm_db::schema::servers::table.find(server))
            .set(bmm_db::schema::servers::status.eq("LIVE"))
            .execute(&mut conn)
            .await
            .unwrap();
        set_health(&mut conn, server, Health::Degraded, Some("its container is gone; redeploying")).await.unwrap();
        append(
            &mut conn,
            NewServerEvent {
                server_id: server,
                kind: ServerEventKind::Redeployed,
                message: "redeployed from its bundle",
                data: Some(json!({ "port": 1234 })),
            },
        )
        .await
        .unwrap();
        set_health(&mut conn, server, Health::Down, Some("Docker is unreachable")).await.unwrap();
    }
    let q = "query($id: ID!) { server(id: $id) { status statusReason statusChangedAt events(limit: 2) { id kind message data at } } }";
    let (_, body) = app.gql(Some(&key), q, json!({ "id": server })).await;
    let s = &body["data"]["server"];
    assert_eq!(s["status"], "DOWN", "{body}");
    assert_eq!(s["statusReason"], "Docker is unreachable");
    assert!(s["statusChangedAt"].is_string());
    let events = s["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["kind"], "STATUS_CHANGED");
    assert_eq!(events[0]["message"], "DEGRADED → DOWN: Docker is unreachable");
    assert_eq!(events[1]["kind"], "REDEPLOYED");
    assert_eq!(events[1]["data"]["port"], 1234);

    let (_, body) = app
        .gql(Some(&key), "query($id: ID!) { server(id: $id) { events(limit: 0) { id } } }", json!({ "id": server }))
        .await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    // Another org sees neither the server nor its events.
    let (_, body) = app.gql(Some(&key_b), q, json!({ "id": server })).await;
    assert_eq!(code(&body), Some("NOT_FOUND"), "{body}");

    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("bmm_servers{status=\"DOWN\"} 1"), "{text}");
    assert!(text.contains("bmm_servers{status=\"DEGRADED\"} 0"), "{text}");

    // Back to LIVE: the reason goes.
    set_health(&mut *app.conn().await, server, Health::Live, None).await.unwrap();
    let (_, body) = app.gql(Some(&key), q, json!({ "id": server })).await;
    assert_eq!(body["data"]["server"]["status"], "LIVE", "{body}");
    assert!(body["data"]["server"]["statusReason"].is_null(), "{body}");
}

/// Connected apps: each OAuth grant (client, server, scopes, last use) is
/// listed, and revoking one ends its refresh family at the token endpoint.
#[tokio::test]
async fn connected_apps_list_grants_and_revoke_their_refresh_family() {
    use bmm_db::schema::oauth_refresh_tokens as rt;
    let app = TestApp::start().await;
    let (key, user, org) = app.user("apps@example.com").await;
    let (other_key, _, _) = app.user("apps-other@example.com").await;
    let (server, _) = app.seed_build(org, "apps").await;
    let reg: Value = app
        .http
        .post(app.url("/oauth/register"))
        .json(&json!({
            "client_name": "Claude",
            "redirect_uris": ["http://127.0.0.1:9/cb"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client = reg["client_id"].as_str().unwrap().to_owned();
    let family = uuid::Uuid::now_v7();
    let refresh = "test-refresh-token-of-the-connected-app";
    let resource = app.state.cfg.server_url("apps");
    let mut conn = app.conn().await;
    diesel::insert_into(rt::table)
        .values((
            rt::token_hash.eq(bmm_core::crypto::hash_token(refresh)),
            rt::family_id.eq(family),
            rt::client_id.eq(&client),
            rt::user_id.eq(user),
            rt::org_id.eq(org),
            rt::resource.eq(&resource),
            rt::scope.eq("mcp offline_access"),
            rt::expires_at.eq(chrono::Utc::now() + chrono::Duration::days(1)),
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let refresh_at_token_endpoint = |token: String| {
        let http = app.http.clone();
        let (url, client) = (app.url("/oauth/token"), client.clone());
        async move {
            let resp = http
                .post(url)
                .form(&[("grant_type", "refresh_token"), ("refresh_token", token.as_str()), ("client_id", &client)])
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // The app uses its grant once: it rotates, and the grant shows the use.
    let (status, tok) = refresh_at_token_endpoint(refresh.to_owned()).await;
    assert_eq!(status, 200, "{tok}");
    let live = tok["refresh_token"].as_str().unwrap().to_owned();

    const LIST: &str = "{ connectedApps { id clientId clientName verified email resource serverId serverName scopes grantedAt lastUsedAt } }";
    let (_, body) = app.gql(Some(&key), LIST, json!({})).await;
    let apps = body["data"]["connectedApps"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(apps.len(), 1, "{body}");
    let a = &apps[0];
    assert_eq!(a["id"], family.to_string());
    assert_eq!((a["clientId"].as_str(), a["clientName"].as_str()), (Some(client.as_str()), Some("Claude")));
    assert_eq!(a["verified"], false);
    assert_eq!(a["email"], "apps@example.com");
    assert_eq!((a["resource"].as_str(), a["serverId"].as_str()), (Some(resource.as_str()), Some(&*server.to_string())));
    assert_eq!(a["serverName"], "apps");
    assert_eq!(a["scopes"], json!(["mcp", "offline_access"]));
    assert!(a["lastUsedAt"].as_str().unwrap() > a["grantedAt"].as_str().unwrap(), "{a}");

    const REVOKE: &str = "mutation($id: ID!) { revokeConnectedApp(id: $id) { id clientId } }";
    // Another org neither sees nor revokes it.
    let (_, body) = app.gql(Some(&other_key), LIST, json!({})).await;
    assert_eq!(body["data"]["connectedApps"], json!([]));
    let (_, body) = app.gql(Some(&other_key), REVOKE, json!({ "id": family })).await;
    assert_eq!(code(&body), Some("NOT_FOUND"), "{body}");
    let (_, body) = app.gql(Some(&key), REVOKE, json!({ "id": "not-an-id" })).await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");

    let (_, body) = app.gql(Some(&key), REVOKE, json!({ "id": family })).await;
    assert_eq!(body["data"]["revokeConnectedApp"]["clientId"], client.as_str(), "{body}");
    let (status, body) = refresh_at_token_endpoint(live).await;
    assert_eq!(status, 400, "the revoked grant's refresh token no longer works: {body}");
    assert!(body["error_description"].as_str().unwrap().contains("revoked"), "{body}");
    let (_, body) = app.gql(Some(&key), LIST, json!({})).await;
    assert_eq!(body["data"]["connectedApps"], json!([]), "{body}");
}

/// Outside dev: `/metrics` and the details of `/readyz` (they name every
/// org's servers) need the ops token, `/healthz` stays public, and GraphQL
/// introspection is off.
#[tokio::test]
async fn ops_endpoints_need_the_token_and_introspection_is_off_outside_dev() {
    const TOKEN: &str = "ops-token-for-the-metrics-scraper";
    let app = TestApp::with_config(generous_limits(), |c| {
        c.dev = false;
        c.ops_token = Some(TOKEN.into());
    })
    .await;
    let (key, _, org) = app.user("ops@example.com").await;
    app.seed_build(org, "secret-slug").await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = app.http.get(app.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz", None).await.0, 200);
    for token in [None, Some("wrong-token-wrong-token"), Some(key.as_str())] {
        let (status, text) = get("/metrics", token).await;
        assert_eq!(status, 401, "{token:?}: {text}");
        assert!(!text.contains("secret-slug"));
        let (_, text) = get("/readyz", token).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(body.get("components").is_none() && body["status"].is_string(), "{text}");
    }
    let (status, text) = get("/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("bmm_builds{status=\"QUEUED\"} 1"), "{text}");
    let (_, text) = get("/readyz", Some(TOKEN)).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["components"]["postgres"]["status"], "ok", "{text}");

    let (_, body) = app.gql(Some(&key), "{ __schema { types { name } } }", json!({})).await;
    // async-graphql answers a disabled introspection with null.
    assert!(body["data"]["__schema"].is_null(), "{body}");
    let (_, body) = app.gql(Some(&key), "{ me { email } }", json!({})).await;
    assert_eq!(body["data"]["me"]["email"], "ops@example.com", "{body}");
    // In dev (the two-command start) introspection stays on for GraphiQL.
    let dev = TestApp::start().await;
    let (key, _, _) = dev.user("ops-dev@example.com").await;
    let (_, body) = dev.gql(Some(&key), "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "QueryRoot", "{body}");
}

/// The dashboard sends a strict Content-Security-Policy, and its shell needs
/// nothing the policy refuses (no inline script, no style attributes).
#[tokio::test]
async fn dashboard_sends_a_strict_content_security_policy() {
    let app = TestApp::start().await;
    for path in ["/", "/servers/abc", "/js/app.js", "/style.css"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
    }
    let html = app.http.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains(" style="), "inline style attributes are refused by the policy");
    for script in html.split("<script").skip(1) {
        let open = &script[..script.find('>').unwrap()];
        assert!(open.contains("src="), "inline scripts are refused by the policy: <script{open}>");
    }
}

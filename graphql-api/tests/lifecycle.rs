//! Every version lifecycle through the real workflow, driven through GraphQL
//! the way the dashboard does: real Temporal, PostgreSQL, Docker and the
//! gateway (see `stack`). A preview past its cache time builds the spec the
//! user reviewed.

mod stack;

use serde_json::json;
use stack::{Stack, code_spec};

/// Tool names of a `tools { name }` list.
fn names(tools: &serde_json::Value) -> Vec<String> {
    tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_past_its_cache_time_builds_the_spec_the_user_reviewed() {
    // The model would answer differently the second time.
    let reviewed = code_spec("Reviewed", &[("reviewed_tool", "return 'the reviewed tool';")]);
    let other = code_spec("Other", &[("regenerated_tool", "return 'a regenerated tool';")]);
    let s = Stack::start("reviewed", vec![reviewed, other]).await;
    let p = s
        .gql("mutation { previewServer(input: {description: \"a test server\"}) { id tools { name } } }", json!({}))
        .await;
    assert_eq!(names(&p["previewServer"]["tools"]), ["reviewed_tool"]);
    assert_eq!(s.model.calls(), 1);
    // The preview's cache time passes before the user builds it.
    {
        use diesel_async::RunQueryDsl;
        let mut conn = s.state.pool.get().await.unwrap();
        diesel::sql_query("UPDATE previews SET expires_at = now() - interval '1 minute'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let c = s
        .gql(
            "mutation($p: ID!) { createServer(input: {previewId: $p, name: \"Reviewed\"}) {
               server { id slug versions { specDigest tools { name } } } build { id } } }",
            json!({ "p": p["previewServer"]["id"] }),
        )
        .await;
    let server = &c["createServer"]["server"];
    // The version holds the reviewed spec from the start.
    assert_eq!(names(&server["versions"][0]["tools"]), ["reviewed_tool"], "{c}");
    assert!(server["versions"][0]["specDigest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{c}");
    let build = c["createServer"]["build"]["id"].as_str().unwrap();
    let slug = server["slug"].as_str().unwrap();
    assert_eq!(s.wait_build(build).await, "SUCCEEDED", "{}", s.events(build).await);

    // Built, smoked and served: the reviewed tools, and no second model call.
    assert_eq!(s.model.calls(), 1, "the build asked the model again");
    let events = s.events(build).await;
    assert!(events.contains("the server answers MCP") && events.contains("reviewed_tool"), "{events}");
    assert!(!events.contains("regenerated_tool"), "{events}");
    let v = s.gql("query($id: ID!) { server(id: $id) { status tools { name } } }", json!({ "id": server["id"] })).await;
    assert_eq!(v["server"]["status"], "LIVE");
    assert_eq!(names(&v["server"]["tools"]), ["reviewed_tool"]);
    let out = s.call(slug, "reviewed_tool", json!({})).await.expect("the reviewed tool answers");
    assert!(out.to_string().contains("the reviewed tool"), "{out}");
    let out = s.call(slug, "regenerated_tool", json!({})).await;
    assert!(out.as_ref().map_or(true, |r| r["isError"] == json!(true)), "a tool nobody reviewed answered: {out:?}");
}

/// `tools/call` through the gateway; the text the tool answered.
async fn answer(s: &Stack, slug: &str, tool: &str) -> String {
    let out = s.call(slug, tool, json!({})).await.unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert_ne!(out["isError"], json!(true), "{tool}: {out}");
    out["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

/// Assert the tool answers `expected` through the gateway: at once, or
/// within a few seconds (every API process follows a cut-over by NOTIFY).
async fn expect_answer(s: &Stack, slug: &str, tool: &str, expected: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = answer(s, slug, tool).await;
        if got == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{tool} answers {got:?}, not {expected:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The server's deployments as (version number, status), newest first, and
/// its live version, once the cut-over has stopped what it retired (it
/// drains for a moment after the build succeeded).
async fn deployments(s: &Stack, server: &str) -> (Vec<(i64, String)>, Option<i64>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (deps, live) = deployments_now(s, server).await;
        if !deps.iter().any(|(_, status)| status == "DRAINING") || std::time::Instant::now() > deadline {
            return (deps, live);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn deployments_now(s: &Stack, server: &str) -> (Vec<(i64, String)>, Option<i64>) {
    let v = s
        .gql(
            "query($id: ID!) { server(id: $id) { currentVersion versions { id version } deployments { versionId status } } }",
            json!({ "id": server }),
        )
        .await;
    let versions = v["server"]["versions"].as_array().unwrap();
    let number =
        |id: &serde_json::Value| versions.iter().find(|x| &x["id"] == id).unwrap()["version"].as_i64().unwrap();
    let deps = v["server"]["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (number(&d["versionId"]), d["status"].as_str().unwrap().to_owned()))
        .collect();
    (deps, v["server"]["currentVersion"].as_i64())
}

/// States of the server's containers, newest first.
fn container_states(server: &str) -> Vec<String> {
    stack::containers(&format!("bmm.server={server}")).into_iter().map(|(_, state)| state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterate_rollback_and_delete_through_the_real_workflow() {
    let v1 = code_spec("Lifecycle", &[("first_tool", "return 'v1 answers';")]);
    let v2 = code_spec("Lifecycle", &[("first_tool", "return 'v2 answers';"), ("second_tool", "return 'only v2';")]);
    let s = Stack::start("lifecycle", vec![v1, v2]).await;
    let (server, slug, b1) = s.create("Lifecycle", json!([])).await;
    assert_eq!(s.wait_build(&b1).await, "SUCCEEDED", "{}", s.events(&b1).await);
    expect_answer(&s, &slug, "first_tool", "v1 answers").await;

    // Iterate: v2 is built, routed, and v1 drained and stopped.
    let it = s
        .gql(
            "mutation($s: ID!) { iterateServer(input: {serverId: $s, instruction: \"add a second tool\"}) {
               preview { id } diff { added changed } } }",
            json!({ "s": server }),
        )
        .await;
    assert_eq!(it["iterateServer"]["diff"]["added"], json!(["second_tool"]), "{it}");
    let c = s
        .gql(
            "mutation($s: ID!, $p: ID!) { createServerVersion(input: {serverId: $s, previewId: $p}) { build { id version } } }",
            json!({ "s": server, "p": it["iterateServer"]["preview"]["id"] }),
        )
        .await;
    let b2 = c["createServerVersion"]["build"]["id"].as_str().unwrap().to_owned();
    assert_eq!(c["createServerVersion"]["build"]["version"], 2);
    assert_eq!(s.wait_build(&b2).await, "SUCCEEDED", "{}", s.events(&b2).await);
    expect_answer(&s, &slug, "first_tool", "v2 answers").await;
    expect_answer(&s, &slug, "second_tool", "only v2").await;
    let (deps, live) = deployments(&s, &server).await;
    assert_eq!(live, Some(2));
    assert_eq!(deps, vec![(2, "LIVE".to_owned()), (1, "STOPPED".to_owned())]);
    assert_eq!(container_states(&server), ["running", "exited"], "v1's container is stopped");

    // Rollback to v1: a new build of v1's spec through Temporal, every step run.
    let r = s
        .gql(
            "mutation($s: ID!) { rollbackServer(serverId: $s, version: 1) { build { id version workflowId } } }",
            json!({ "s": server }),
        )
        .await;
    let b3 = r["rollbackServer"]["build"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r["rollbackServer"]["build"]["version"], 1);
    assert_eq!(r["rollbackServer"]["build"]["workflowId"], format!("build-{b3}"));
    assert_eq!(s.wait_build(&b3).await, "SUCCEEDED", "{}", s.events(&b3).await);
    let events = s.events(&b3).await;
    assert!(events.contains("spec of version 1"), "{events}");
    let steps = s.gql("query($id: ID!) { build(id: $id) { steps { name status } } }", json!({ "id": b3 })).await;
    for step in steps["build"]["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "SUCCEEDED", "{steps}");
    }
    expect_answer(&s, &slug, "first_tool", "v1 answers").await;
    let gone = s.call(&slug, "second_tool", json!({})).await;
    assert!(gone.as_ref().map_or(true, |r| r["isError"] == json!(true)), "v2's tool still answers: {gone:?}");
    let (deps, live) = deployments(&s, &server).await;
    assert_eq!(live, Some(1));
    assert_eq!(deps, vec![(1, "LIVE".to_owned()), (2, "STOPPED".to_owned()), (1, "STOPPED".to_owned())]);
    assert_eq!(container_states(&server).iter().filter(|st| *st == "running").count(), 1);
    // The live version is not rolled back to: redeployServer restarts it.
    let again = s
        .raw("mutation($s: ID!) { rollbackServer(serverId: $s, version: 1) { build { id } } }", json!({ "s": server }))
        .await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{again}");
    assert!(again["errors"][0]["message"].as_str().unwrap().contains("redeployServer"), "{again}");
    assert_eq!(s.model.calls(), 2, "one preview, one iteration; no build asked the model");

    // Delete: the URL stops answering and every container goes.
    let d = s.gql("mutation($s: ID!) { deleteServer(id: $s) { status } }", json!({ "s": server })).await;
    assert_eq!(d["deleteServer"]["status"], "DELETED");
    let after = s.call(&slug, "first_tool", json!({})).await;
    assert!(after.is_err(), "a deleted server answered: {after:?}");
    assert_eq!(container_states(&server), Vec::<String>::new());
    let again =
        s.raw("mutation($s: ID!) { redeployServer(serverId: $s) { build { id } } }", json!({ "s": server })).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "NOT_FOUND", "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_takes_a_changed_secret() {
    let mut spec = code_spec("Secretive", &[("whoami", "return `token=${ctx.credentials[\"API_TOKEN\"]}`;")]);
    spec["credentials"] = json!([{ "key": "API_TOKEN", "label": "API token", "required": true }]);
    let s = Stack::start("redeploy", vec![spec]).await;

    // Bad input first: nothing is live yet, an id that is not one, another org's server.
    {
        use diesel_async::RunQueryDsl;
        let mut conn = s.state.pool.get().await.unwrap();
        diesel::sql_query(
            "INSERT INTO servers (id, org_id, slug, name) VALUES ('00000000-0000-7000-8000-000000000001', $1, 'not-yet', 'x')",
        )
        .bind::<diesel::sql_types::Uuid, _>(s.org_id)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    const REDEPLOY: &str =
        "mutation($s: ID!) { redeployServer(serverId: $s) { server { id } build { id version status } } }";
    let refused = s.raw(REDEPLOY, json!({ "s": "00000000-0000-7000-8000-000000000001" })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("no version is live"), "{refused}");
    let refused = s.raw(REDEPLOY, json!({ "s": "nope" })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");

    let (server, slug, b1) = s.create("Secretive", json!([{ "key": "API_TOKEN", "value": "first-secret" }])).await;
    assert_eq!(s.wait_build(&b1).await, "SUCCEEDED", "{}", s.events(&b1).await);
    expect_answer(&s, &slug, "whoami", "token=first-secret").await;
    let stranger = s.stranger().await;
    let refused = s.raw_as(&stranger, REDEPLOY, json!({ "s": server })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "NOT_FOUND", "{refused}");

    // A new value: the running server keeps the old one until it is redeployed.
    s.gql(
        "mutation($s: ID!) { setServerSecret(serverId: $s, key: \"API_TOKEN\", value: \"second-secret\") { key } }",
        json!({ "s": server }),
    )
    .await;
    expect_answer(&s, &slug, "whoami", "token=first-secret").await;
    let r = s.gql(REDEPLOY, json!({ "s": server })).await;
    let b2 = r["redeployServer"]["build"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r["redeployServer"]["build"]["version"], 1, "the live version, built again");
    assert_eq!(s.wait_build(&b2).await, "SUCCEEDED", "{}", s.events(&b2).await);
    expect_answer(&s, &slug, "whoami", "token=second-secret").await;

    let (deps, live) = deployments(&s, &server).await;
    assert_eq!(live, Some(1));
    assert_eq!(deps, vec![(1, "LIVE".to_owned()), (1, "STOPPED".to_owned())]);
    assert_eq!(container_states(&server), ["running", "exited"]);
    let events = s.events(&b2).await;
    assert!(!events.contains("second-secret") && !events.contains("first-secret"), "a secret in an event: {events}");
    assert!(events.contains("1 credential(s) (API_TOKEN)"), "{events}");
    let audit = s.gql("{ auditLog(action: \"server.redeploy\") { resourceId metadata } }", json!({})).await;
    assert_eq!(audit["auditLog"][0]["resourceId"], server.as_str(), "{audit}");
    assert_eq!(audit["auditLog"][0]["metadata"]["buildId"], b2.as_str(), "{audit}");
}

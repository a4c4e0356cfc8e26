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

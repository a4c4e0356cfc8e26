//! previewServer / createServer / iterateServer / createServerVersion with
//! the offline generator, through the real server.

mod common;

use common::*;
use serde_json::{Value, json};

const PREVIEW: &str = "mutation($input: PreviewServerInput!) { previewServer(input: $input) {
    id expiresAt generator warnings name tools { name description inputSchema annotations { readOnlyHint } }
    credentials { key label description required } } }";

const OPENAPI: &str = r#"{
  "openapi": "3.0.3",
  "info": { "title": "Notes", "version": "1.0.0" },
  "servers": [{ "url": "https://notes.example.com/v1" }],
  "components": { "securitySchemes": { "key": { "type": "apiKey", "in": "header", "name": "X-Api-Key" } } },
  "security": [{ "key": [] }],
  "paths": {
    "/notes": {
      "get": { "operationId": "listNotes", "summary": "List notes", "responses": { "200": { "description": "ok" } } },
      "post": { "operationId": "createNote", "summary": "Create a note",
        "requestBody": { "required": true, "content": { "application/json": { "schema": {
          "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } } } } },
        "responses": { "201": { "description": "created" } } }
    }
  }
}"#;

#[tokio::test]
async fn preview_from_openapi_returns_its_tools_and_exactly_its_credentials() {
    let app = TestApp::start().await;
    let (key, _, _) = app.user("preview@example.com").await;
    let (_, body) = app.gql(Some(&key), PREVIEW, json!({ "input": { "openapi": OPENAPI } })).await;
    let p = &body["data"]["previewServer"];
    let mut names: Vec<&str> =
        p["tools"].as_array().unwrap_or_else(|| panic!("{body}")).iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{body}");
    assert!(p["generator"].as_str().unwrap().starts_with("offline"));
    let creds = p["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 1, "one security scheme, one credential: {body}");
    assert_eq!(creds[0]["required"], true);
    let create = p["tools"].as_array().unwrap().iter().find(|t| t["inputSchema"]["properties"]["text"].is_object());
    assert!(create.is_some(), "the request body became the input schema: {body}");

    // The preview is cached for five minutes.
    let expires: chrono::DateTime<chrono::Utc> = p["expiresAt"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(4) && left <= chrono::Duration::minutes(5));

    // Building from it asks for that credential and no other.
    let preview_id = p["id"].as_str().unwrap();
    let cred_key = creds[0]["key"].as_str().unwrap();
    let create_q = "mutation($input: CreateServerInput!) { createServer(input: $input) { server { slug tools { name } } build { status } } }";
    let (_, body) = app
        .gql(Some(&key), create_q, json!({ "input": { "previewId": preview_id, "name": "Notes", "credentials": [] } }))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.credentials", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains(cred_key));
    let (_, body) = app
        .gql(
            Some(&key),
            create_q,
            json!({ "input": { "previewId": preview_id, "name": "Notes", "credentials": [{ "key": cred_key, "value": "k-123" }] } }),
        )
        .await;
    assert_eq!(body["data"]["createServer"]["server"]["slug"], "notes", "{body}");
    assert_eq!(body["data"]["createServer"]["build"]["status"], "QUEUED");
}

#[tokio::test]
async fn preview_from_a_description_and_bad_input_naming_the_field() {
    let app = TestApp::start().await;
    let (key, _, _) = app.user("desc@example.com").await;
    let (_, body) = app
        .gql(
            Some(&key),
            PREVIEW,
            json!({ "input": { "description": "A server with a tool that echoes the text back" } }),
        )
        .await;
    let p = &body["data"]["previewServer"];
    assert_eq!(p["tools"][0]["name"], "echo", "{body}");
    assert_eq!(p["credentials"], json!([]));

    let (_, body) = app.gql(Some(&key), PREVIEW, json!({ "input": { "description": "   " } })).await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"));
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.description", "{body}");

    let (_, body) = app.gql(Some(&key), PREVIEW, json!({ "input": { "openapi": "openapi: [this is not" } })).await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.openapi", "{body}");

    let (_, body) = app.gql(Some(&key), PREVIEW, json!({ "input": { "description": "x".repeat(9000) } })).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.description", "{body}");

    // previewServer writes the audit log.
    let (_, body) =
        app.gql(Some(&key), "{ auditLog(action: \"server.preview\") { resourceType metadata } }", json!({})).await;
    assert_eq!(body["data"]["auditLog"].as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn iterate_shows_the_diff_and_builds_the_next_version() {
    let app = TestApp::start().await;
    let (key, _, _) = app.user("iter@example.com").await;
    let (_, body) = app.gql(Some(&key), PREVIEW, json!({ "input": { "description": "echo the text back" } })).await;
    let preview_id = body["data"]["previewServer"]["id"].as_str().unwrap().to_owned();
    let (_, body) = app
        .gql(
            Some(&key),
            "mutation($i: CreateServerInput!) { createServer(input: $i) { server { id } } }",
            json!({ "i": { "previewId": preview_id, "name": "Echo" } }),
        )
        .await;
    let server_id = body["data"]["createServer"]["server"]["id"].as_str().unwrap().to_owned();

    let iterate = "mutation($i: IterateServerInput!) { iterateServer(input: $i) {
        preview { id tools { name } } diff { added removed changed breaking } } }";
    let (_, body) = app
        .gql(
            Some(&key),
            iterate,
            json!({ "i": { "serverId": server_id, "instruction": "add a tool that counts words" } }),
        )
        .await;
    let it = &body["data"]["iterateServer"];
    assert_eq!(it["diff"]["removed"], json!([]), "{body}");
    assert_eq!(it["diff"]["added"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(it["diff"]["breaking"], json!([]));
    let (_, bad) = app.gql(Some(&key), iterate, json!({ "i": { "serverId": server_id, "instruction": "" } })).await;
    assert_eq!(bad["errors"][0]["extensions"]["field"], "input.instruction", "{bad}");

    // The preview of another server cannot be built here, and createServer refuses an iteration preview.
    let version_preview = it["preview"]["id"].as_str().unwrap().to_owned();
    let (_, body) = app
        .gql(
            Some(&key),
            "mutation($i: CreateServerInput!) { createServer(input: $i) { server { id } } }",
            json!({ "i": { "previewId": version_preview, "name": "Other" } }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.previewId", "{body}");

    let (_, body) = app
        .gql(
            Some(&key),
            "mutation($i: CreateServerVersionInput!) { createServerVersion(input: $i) {
                server { versions { version instruction } } build { status version } } }",
            json!({ "i": { "serverId": server_id, "previewId": version_preview } }),
        )
        .await;
    let out: &Value = &body["data"]["createServerVersion"];
    assert_eq!(out["build"]["version"], 2, "{body}");
    assert_eq!(out["server"]["versions"][0]["instruction"], "add a tool that counts words");
    assert_eq!(app.runner.started.lock().unwrap().len(), 2);

    // Rollback to version 1 starts a build of that version.
    let (_, body) = app
        .gql(
            Some(&key),
            "mutation($s: ID!) { rollbackServer(serverId: $s, version: 1) { build { version status } } }",
            json!({ "s": server_id }),
        )
        .await;
    assert_eq!(body["data"]["rollbackServer"]["build"]["version"], 1, "{body}");
    let (_, body) = app
        .gql(
            Some(&key),
            "mutation($s: ID!) { rollbackServer(serverId: $s, version: 9) { build { id } } }",
            json!({ "s": server_id }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "version", "{body}");
}

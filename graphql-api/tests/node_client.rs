//! The npm `graphql-ws` client (e2e/node) against this server: a client
//! nobody here wrote follows a build. Runs when `e2e/node/node_modules`
//! exists (`npm ci` there); otherwise it says so and does nothing.

mod common;

use bmm_db::events::EventKind;
use common::*;

#[tokio::test]
async fn npm_graphql_ws_client_follows_a_build() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/node");
    if !std::path::Path::new(dir).join("node_modules/graphql-ws").exists() {
        eprintln!("skipped: run `npm ci` in e2e/node to run the graphql-ws client test");
        return;
    }
    let app = TestApp::start().await;
    let (key, _, org) = app.user("node@example.com").await;
    let (_, build) = app.seed_build(org, "node-client").await;
    for i in 0..5 {
        app.append(build, EventKind::Log, &format!("before {i}")).await;
    }
    // The rest arrives while the client is subscribed.
    let writer = {
        let pool = app.state.pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let mut conn = pool.get().await.unwrap();
            for (kind, msg) in
                [(EventKind::Log, "live 1"), (EventKind::Log, "live 2"), (EventKind::BuildSucceeded, "done")]
            {
                bmm_db::events::append(
                    &mut conn,
                    bmm_db::events::NewEvent { build_id: build, step: "cutover", kind, message: msg, data: None },
                )
                .await
                .unwrap();
            }
        })
    };
    let out = tokio::process::Command::new("node")
        .args(["--test", "build-events.test.mjs"])
        .current_dir(dir)
        .env("BMM_API_URL", app.url(""))
        .env("BMM_API_KEY", &key)
        .env("BMM_BUILD_ID", build.to_string())
        .env("BMM_TIMEOUT_MS", "30000")
        .output()
        .await
        .expect("node runs");
    writer.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "node test failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("8 events, ending with BUILD_SUCCEEDED"), "{stdout}");
}

//! `serverLogs` streams the live container's own log lines: the thing users of
//! every hosting peer miss first when a server misbehaves.

use std::time::Duration;

use bmm_e2e::{Gql, Platform, PlatformOptions, ws};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn server_logs_stream_the_live_containers_output() {
    let platform = Platform::start(PlatformOptions::default()).await;
    let key = platform.api_key("logs@example.test").await;
    let gql = Gql::new(platform.url(), &key);
    let (server, build) = gql.create_server("An echo tool.", "logged").await;
    assert_eq!(gql.wait_build(&build, Duration::from_secs(300)).await, "SUCCEEDED", "{}", platform.logs());
    let lines = ws::collect(
        platform.url(),
        &key,
        "subscription($id: ID!) { serverLogs(serverId: $id, tail: 50) }",
        json!({ "id": server["id"] }),
        Duration::from_secs(30),
        |items| !items.is_empty(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", platform.logs()));
    assert!(!lines.is_empty(), "no log line from the container within 30 s");
    let first = lines[0]["serverLogs"].as_str().expect("a log line");
    // The generated server logs JSON lines on stdout.
    assert!(first.contains('{'), "not the container's JSON log: {first}");
    // Another org cannot read them.
    let other = Gql::new(platform.url(), &platform.api_key("intruder@example.test").await);
    let refused = ws::collect(
        platform.url(),
        &other.key,
        "subscription($id: ID!) { serverLogs(serverId: $id, tail: 5) }",
        json!({ "id": server["id"] }),
        Duration::from_secs(10),
        |items| !items.is_empty(),
    )
    .await;
    assert!(matches!(&refused, Err(e) if e.contains("NOT_FOUND")), "{refused:?}");
}

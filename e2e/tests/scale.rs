//! Two API processes and two workers on one machine: builds run on either
//! worker, and a subscriber on the other API process receives every event.

use std::time::Duration;

use bmm_e2e::{Gql, Platform, PlatformOptions, ws};

#[tokio::test(flavor = "multi_thread")]
async fn two_apis_and_two_workers_serve_every_event() {
    let platform = Platform::start(PlatformOptions { apis: 2, workers: 2, ..Default::default() }).await;
    let key = platform.api_key("scale@example.test").await;
    let first = Gql::new(&platform.urls[0], &key);
    let (_server, build) = first.create_server("An echo tool.", "scaled").await;
    // Subscribe through the OTHER API process from the very start.
    let events = tokio::time::timeout(Duration::from_secs(300), ws::build_events(&platform.urls[1], &key, &build, 0))
        .await
        .unwrap_or_else(|_| panic!("no terminal event within 300 s\n{}", platform.logs()))
        .unwrap_or_else(|e| panic!("{e}\n{}", platform.logs()));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gaps or duplicates: {seqs:?}");
    assert_eq!(events.last().unwrap()["kind"], "BUILD_SUCCEEDED", "{events:#?}\n{}", platform.logs());
    // Both API processes agree on the outcome.
    let second = Gql::new(&platform.urls[1], &key);
    assert_eq!(second.wait_build(&build, Duration::from_secs(10)).await, "SUCCEEDED");
}

//! One trace from the GraphQL request through the workflow to each activity,
//! collected by an OTLP receiver on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use bmm_e2e::otlp::Receiver;
use bmm_e2e::{Gql, Platform, PlatformOptions};

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_covers_request_workflow_and_every_activity() {
    let otlp = Receiver::start().await;
    let platform = Platform::start(PlatformOptions {
        env: vec![
            ("BMM_OTLP_ENDPOINT".into(), otlp.endpoint.clone()),
            ("BMM_OTLP_PROTOCOL".into(), "http/protobuf".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ],
        ..Default::default()
    })
    .await;
    let gql = Gql::new(platform.url(), &platform.api_key("trace@example.test").await);
    let (_server, build) = gql.create_server("An echo tool.", "traced").await;
    let status = gql.wait_build(&build, Duration::from_secs(300)).await;
    assert_eq!(status, "SUCCEEDED", "{:?}\n{}", gql.events(&build).await, platform.logs());

    // Spans arrive in batches; wait until every activity's span is in.
    let steps = ["generate", "check", "bundle", "deploy", "smoke", "cutover"];
    let mut by_trace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..60 {
        by_trace.clear();
        for s in otlp.spans() {
            by_trace.entry(s.trace_id.clone()).or_default().push(s.name.clone());
        }
        let complete = by_trace
            .values()
            .any(|names| steps.iter().all(|st| names.iter().any(|n| n.starts_with("RunActivity:") && n.contains(st))));
        if complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The trace that starts at the GraphQL mutation.
    let (trace, names) = by_trace
        .iter()
        .find(|(_, names)| names.iter().any(|n| n.contains("createServer")))
        .unwrap_or_else(|| panic!("no trace starts at createServer; traces: {by_trace:#?}"));
    for st in steps {
        assert!(
            names.iter().any(|n| n.starts_with("RunActivity:") && n.contains(st)),
            "trace {trace} lacks activity {st}: {names:?}\nall traces: {by_trace:#?}"
        );
    }
    assert!(names.iter().any(|n| n.starts_with("RunWorkflow:")), "trace {trace} lacks the workflow span: {names:?}");
    assert!(names.iter().any(|n| n.starts_with("StartWorkflow:")), "trace {trace} lacks the start span: {names:?}");
    // The build records its trace, for the dashboard's link.
    let v = gql.data("query($id: ID!) { build(id: $id) { traceId } }", serde_json::json!({ "id": build })).await;
    assert_eq!(v["build"]["traceId"].as_str(), Some(trace.as_str()), "{v}");
    // Every activity span of this build is in that one trace. The worker's
    // reconciler (ReconcileWorkflow) runs its passes in traces of its own.
    let build_activity = |n: &String| n.starts_with("RunActivity:") && steps.iter().any(|st| n.contains(st));
    let activity_traces: Vec<&String> =
        by_trace.iter().filter(|(_, n)| n.iter().any(build_activity)).map(|(t, _)| t).collect();
    assert_eq!(activity_traces, vec![trace], "the build's activities spread over several traces: {by_trace:#?}");
}

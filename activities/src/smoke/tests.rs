use std::time::Duration;

use serde_json::json;

use super::*;
use bmm_runtime::docker::testing::{Cleanup, TEST_SERVER, docker, spec};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn sse_parser_handles_split_chunks_multiline_data_and_comments() {
    let mut p = SseParser::default();
    let mut events = Vec::new();
    let input =
        b": keep-alive\r\n\r\nevent: message\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: second\n\nretry: 5\n\n";
    // Feed one byte at a time: no event may depend on chunk boundaries.
    for b in input.iter() {
        events.extend(p.push(std::slice::from_ref(b)));
    }
    assert_eq!(
        events,
        vec![
            SseEvent { event: Some("message".into()), data: "{\"a\":\n1}".into(), id: Some("7".into()) },
            SseEvent { event: None, data: "second".into(), id: None },
        ]
    );
}

#[test]
fn tool_comparison_names_missing_extra_and_duplicates() {
    assert!(compare_tools(&names(&["b", "a"]), &names(&["a", "b"])).is_ok());
    let err = compare_tools(&names(&["a", "c", "c"]), &names(&["a", "b"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server's tools differ from the spec: missing b; not in the spec c; listed more than once c"
    );
    assert!(!err.is_retryable());
}

#[test]
fn responses_are_found_in_batches_and_errors_are_reported() {
    let batch = json!([{"jsonrpc":"2.0","id":1,"result":{}}, {"jsonrpc":"2.0","id":2,"result":{"x":1}}]);
    assert_eq!(find_response(batch, 2).unwrap()["result"]["x"], 1);
    assert!(find_response(json!({"jsonrpc":"2.0","method":"notifications/x"}), 1).is_none());
    let err = into_result(json!({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}}), "tools/list");
    assert_eq!(
        err.unwrap_err().to_string(),
        "the server broke the MCP protocol: tools/list failed: nope (code -32601)"
    );
}

#[tokio::test]
async fn smoke_unreachable_server_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = smoke_test(&format!("http://127.0.0.1:{port}/mcp"), "secret-bearer", &[], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, SmokeError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.to_string().contains("secret-bearer"));
}

#[tokio::test]
async fn smoke_timeout_is_reported() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let err =
        smoke_test(&format!("http://127.0.0.1:{port}/mcp"), "t", &[], Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(err, SmokeError::Timeout(Duration::from_millis(300)));
    hold.abort();
}

#[tokio::test]
async fn smoke_against_a_real_container() {
    let (spec, _jwks) = spec(TEST_SERVER, &[("TEST_BEARER", "smoke-token"), ("TEST_TOOLS", "echo,add,search")]);
    let _cleanup = Cleanup(spec.build_id);
    let deployed = docker().deploy(&spec).await.expect("deploy");
    let base = format!("http://127.0.0.1:{}", deployed.port);
    let expected = names(&["add", "echo", "search"]);
    let t = Duration::from_secs(10);

    // JSON answers.
    let report = smoke_test(&format!("{base}/mcp"), "smoke-token", &expected, t).await.expect("json smoke");
    assert_eq!(report.server_name, "test-server");
    assert_eq!(report.protocol_version, PROTOCOL_VERSION);
    assert_eq!(report.tools, names(&["echo", "add", "search"]));
    assert!(report.elapsed < t);

    // SSE answers.
    let report = smoke_test(&format!("{base}/mcp-sse"), "smoke-token", &expected, t).await.expect("sse smoke");
    assert_eq!(report.tools, names(&["echo", "add", "search"]));

    // Pagination is followed.
    let report = smoke_test(&format!("{base}/mcp-paged"), "smoke-token", &expected, t).await.expect("paged smoke");
    assert_eq!(report.tools, names(&["echo", "add", "search"]));

    // A different tool list is named tool by tool.
    let err =
        smoke_test(&format!("{base}/mcp"), "smoke-token", &names(&["echo", "add", "weather"]), t).await.unwrap_err();
    assert_eq!(
        err,
        SmokeError::ToolMismatch { missing: names(&["weather"]), extra: names(&["search"]), duplicated: vec![] }
    );
    assert!(err.to_string().contains("missing weather; not in the spec search"), "{err}");

    // A wrong token is refused with the server's challenge, and the token is not echoed.
    let err = smoke_test(&format!("{base}/mcp"), "wrong-token", &expected, t).await.unwrap_err();
    assert!(
        matches!(&err, SmokeError::Unauthorized { status: 401, detail } if detail.contains("invalid_token")),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong-token"));

    // Something that is not an MCP endpoint.
    let err = smoke_test(&format!("{base}/healthz"), "smoke-token", &expected, t).await.unwrap_err();
    assert!(matches!(&err, SmokeError::Protocol(m) if m.contains("not a JSON-RPC response")), "{err:?}");
    let err = smoke_test(&format!("{base}/nowhere"), "smoke-token", &expected, t).await.unwrap_err();
    assert!(matches!(&err, SmokeError::Protocol(m) if m.contains("HTTP 404")), "{err:?}");

    // tools/call, over JSON and SSE.
    let out = call_tool(&format!("{base}/mcp"), "smoke-token", "add", json!({"a": 2, "b": 40})).await.unwrap();
    assert_eq!(out["content"][0]["text"], "42");
    let out = call_tool(&format!("{base}/mcp-sse"), "smoke-token", "echo", json!({"text": "hi"})).await.unwrap();
    assert_eq!(out["content"][0]["text"], "hi");

    assert_eq!(docker().remove_build(spec.build_id).await.unwrap(), 1);
}

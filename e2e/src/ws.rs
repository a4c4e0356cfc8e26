//! A `graphql-transport-ws` client, written from the protocol document, for
//! tests that subscribe the way the dashboard and third-party clients do.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Subscribe to `buildEvents(buildId, after)` and collect every `next`
/// payload's event until the server completes the subscription.
pub async fn build_events(base: &str, key: &str, build_id: &str, after: i64) -> Result<Vec<Value>, String> {
    let url = format!("{}/graphql", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| format!("connect: {e}"))?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } });
    ws.send(Message::Text(init.to_string().into())).await.map_err(|e| e.to_string())?;
    match ws.next().await {
        Some(Ok(Message::Text(t)))
            if serde_json::from_str::<Value>(&t).map(|v| v["type"] == "connection_ack").unwrap_or(false) => {}
        other => return Err(format!("no connection_ack: {other:?}")),
    }
    let sub = json!({
        "id": "1",
        "type": "subscribe",
        "payload": {
            "query": "subscription($id: ID!, $after: Int) { buildEvents(buildId: $id, after: $after) { seq step kind message } }",
            "variables": { "id": build_id, "after": after }
        }
    });
    ws.send(Message::Text(sub.to_string().into())).await.map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some("next") => {
                if let Some(errors) = v["payload"].get("errors") {
                    return Err(format!("subscription error: {errors}"));
                }
                events.push(v["payload"]["data"]["buildEvents"].clone());
            }
            Some("complete") => return Ok(events),
            Some("error") => return Err(format!("subscription error: {}", v["payload"])),
            Some("ping") => {
                ws.send(Message::Text(json!({"type": "pong"}).to_string().into())).await.map_err(|e| e.to_string())?
            }
            _ => {}
        }
    }
    Err(format!("socket closed before complete after {} events", events.len()))
}

/// Subscribe to any subscription and collect `data` payloads until `done`
/// says enough, the server completes, or `timeout` passes.
pub async fn collect(
    base: &str,
    key: &str,
    query: &str,
    variables: Value,
    timeout: std::time::Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Result<Vec<Value>, String> {
    let url = format!("{}/graphql", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| format!("connect: {e}"))?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } });
    ws.send(Message::Text(init.to_string().into())).await.map_err(|e| e.to_string())?;
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } });
    let mut items = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut subscribed = false;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(items),
            Ok(None) => return Err(format!("socket closed after {} items", items.len())),
            Ok(Some(m)) => m.map_err(|e| e.to_string())?,
        };
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some("connection_ack") if !subscribed => {
                subscribed = true;
                ws.send(Message::Text(sub.to_string().into())).await.map_err(|e| e.to_string())?;
            }
            Some("next") => {
                if let Some(errors) = v["payload"].get("errors") {
                    return Err(format!("subscription error: {errors}"));
                }
                items.push(v["payload"]["data"].clone());
                if done(&items) {
                    return Ok(items);
                }
            }
            Some("complete") => return Ok(items),
            Some("error") => return Err(format!("subscription error: {}", v["payload"])),
            Some("ping") => {
                ws.send(Message::Text(json!({"type": "pong"}).to_string().into())).await.map_err(|e| e.to_string())?
            }
            _ => {}
        }
    }
}

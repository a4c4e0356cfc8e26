//! A `graphql-transport-ws` subscriber to `buildEvents` that stamps each
//! event's arrival, for delays measured against the event's commit (`at`).
//!
//! Connecting and subscribing are split so a benchmark can hold many
//! subscribers open before the build starts producing events.

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One received event: its fields and when it arrived here.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub seq: i64,
    pub step: String,
    pub kind: String,
    /// The event's `at` (its commit in the platform's database).
    pub at: DateTime<Utc>,
    pub arrived: DateTime<Utc>,
}

impl Arrival {
    /// Milliseconds from the event's commit to its arrival here.
    pub fn delay_ms(&self) -> f64 {
        (self.arrived - self.at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
    }
}

pub struct Subscriber {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

const QUERY: &str =
    "subscription($id: ID!, $after: Int) { buildEvents(buildId: $id, after: $after) { seq step kind at } }";

impl Subscriber {
    /// Open the socket and wait for `connection_ack`.
    pub async fn connect(base: &str, key: &str) -> anyhow::Result<Subscriber> {
        let url = format!("{}/graphql", base.replacen("http", "ws", 1));
        let mut req = url.into_client_request()?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } });
        ws.send(Message::Text(init.to_string().into())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t)?;
                    match v["type"].as_str() {
                        Some("connection_ack") => return Ok(Subscriber { ws }),
                        Some("ping") => ws.send(Message::Text(json!({"type": "pong"}).to_string().into())).await?,
                        _ => anyhow::bail!("expected connection_ack, got {t}"),
                    }
                }
                Some(Ok(_)) => {}
                other => anyhow::bail!("no connection_ack: {other:?}"),
            }
        }
    }

    /// Send the subscription (stored events after `after`, then live ones).
    pub async fn subscribe(&mut self, build_id: &str, after: i64) -> anyhow::Result<()> {
        let sub = json!({
            "id": "1",
            "type": "subscribe",
            "payload": { "query": QUERY, "variables": { "id": build_id, "after": after } }
        });
        self.ws.send(Message::Text(sub.to_string().into())).await?;
        Ok(())
    }

    /// Read events until the subscription completes (terminal event).
    pub async fn collect(mut self) -> anyhow::Result<Vec<Arrival>> {
        let mut out = Vec::new();
        while let Some(msg) = self.ws.next().await {
            let arrived = Utc::now();
            let Message::Text(t) = msg? else { continue };
            let v: Value = serde_json::from_str(&t)?;
            match v["type"].as_str() {
                Some("next") => {
                    if let Some(errors) = v["payload"].get("errors") {
                        anyhow::bail!("subscription error: {errors}");
                    }
                    let e = &v["payload"]["data"]["buildEvents"];
                    out.push(Arrival {
                        seq: e["seq"].as_i64().unwrap_or(-1),
                        step: e["step"].as_str().unwrap_or_default().to_owned(),
                        kind: e["kind"].as_str().unwrap_or_default().to_owned(),
                        at: e["at"].as_str().and_then(|s| s.parse().ok()).unwrap_or(arrived),
                        arrived,
                    });
                }
                Some("complete") => {
                    let _ = self.ws.close(None).await;
                    return Ok(out);
                }
                Some("error") => anyhow::bail!("subscription error: {}", v["payload"]),
                Some("ping") => self.ws.send(Message::Text(json!({"type": "pong"}).to_string().into())).await?,
                _ => {}
            }
        }
        anyhow::bail!("socket closed before complete after {} events", out.len())
    }
}

/// Subscribe from the start and collect until the build ends.
pub async fn follow_build(base: &str, key: &str, build_id: &str) -> anyhow::Result<Vec<Arrival>> {
    let mut s = Subscriber::connect(base, key).await?;
    s.subscribe(build_id, 0).await?;
    s.collect().await
}

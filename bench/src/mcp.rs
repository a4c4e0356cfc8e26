//! A bare MCP Streamable HTTP caller: one JSON-RPC POST, the answer read as
//! JSON or as an SSE stream. Enough to time `tools/call` through the gateway
//! and straight at a container.

use serde_json::{Value, json};

pub const PROTOCOL_VERSION: &str = "2025-06-18";

#[derive(Clone)]
pub struct Mcp {
    pub url: String,
    token: String,
    http: reqwest::Client,
}

impl Mcp {
    pub fn new(url: &str, token: &str, http: reqwest::Client) -> Mcp {
        Mcp { url: url.to_owned(), token: token.to_owned(), http }
    }

    /// POST one request and return its `result` (an error for a JSON-RPC error or a non-2xx answer).
    pub async fn request(&self, id: u64, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .header("MCP-Protocol-Version", PROTOCOL_VERSION)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!("{method} answered {status}: {}", text.chars().take(300).collect::<String>());
        }
        let message: Value = if sse {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|m| m["id"] == json!(id))
                .ok_or_else(|| anyhow::anyhow!("{method}: no answer in the event stream"))?
        } else {
            serde_json::from_str(&text)?
        };
        if let Some(e) = message.get("error") {
            anyhow::bail!("{method}: JSON-RPC error {e}");
        }
        Ok(message["result"].clone())
    }

    pub async fn initialize(&self) -> anyhow::Result<Value> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "bmm-bench", "version": "0" }
        });
        self.request(0, "initialize", params).await
    }

    /// `tools/call`; fails when the tool reports an error.
    pub async fn call_tool(&self, id: u64, name: &str, args: Value) -> anyhow::Result<Value> {
        let r = self.request(id, "tools/call", json!({ "name": name, "arguments": args })).await?;
        if r["isError"] == json!(true) {
            anyhow::bail!("tool {name} failed: {r}");
        }
        Ok(r)
    }
}

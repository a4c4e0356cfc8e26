//! The MCP smoke client (see docs/ARCHITECTURE.md): a real MCP client over
//! Streamable HTTP, written with reqwest, that a new container must satisfy
//! before it is routed: `initialize`, `notifications/initialized`, `tools/list`
//! (all pages), and a tool list equal to the spec's.
//!
//! Responses may come as JSON or as an SSE stream; both are handled. The bearer
//! token never appears in an error.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

/// The protocol version this client asks for (the newest the runner's SDK speaks).
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// Versions a server may answer with.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// tools/list pages followed at most (a server repeating cursors must not loop us forever).
const MAX_PAGES: usize = 100;
/// Longest response body read (a misbehaving server must not exhaust memory).
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeReport {
    pub server_name: String,
    pub protocol_version: String,
    /// Tool names in the order the server listed them.
    pub tools: Vec<String>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SmokeError {
    /// No HTTP answer at all (connection refused, reset, DNS).
    #[error("the server is not reachable: {0}")]
    Unreachable(String),
    /// 401 or 403: the token was refused.
    #[error("the server refused the token ({status}): {detail}")]
    Unauthorized { status: u16, detail: String },
    /// An answer that is not what the MCP protocol says.
    #[error("the server broke the MCP protocol: {0}")]
    Protocol(String),
    /// The tools differ from the spec's.
    #[error("{}", mismatch_message(missing, extra, duplicated))]
    ToolMismatch { missing: Vec<String>, extra: Vec<String>, duplicated: Vec<String> },
    #[error("the smoke test did not finish within {}s", .0.as_secs_f32())]
    Timeout(Duration),
}

impl SmokeError {
    /// Worth another attempt: the container may still be coming up.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SmokeError::Unreachable(_) | SmokeError::Timeout(_))
    }
}

fn mismatch_message(missing: &[String], extra: &[String], duplicated: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("not in the spec {}", extra.join(", ")));
    }
    if !duplicated.is_empty() {
        parts.push(format!("listed more than once {}", duplicated.join(", ")));
    }
    format!("the server's tools differ from the spec: {}", parts.join("; "))
}

/// `initialize` → `notifications/initialized` → `tools/list` (every page), and
/// the listed tools must equal `expected_tools` as a set.
pub async fn smoke_test(
    url: &str,
    bearer: &str,
    expected_tools: &[String],
    timeout: Duration,
) -> Result<SmokeReport, SmokeError> {
    let started = Instant::now();
    let run = async {
        let mut client = McpClient::new(url, bearer)?;
        let (server_name, protocol_version) = client.initialize().await?;
        let tools = client.list_tools().await?;
        compare_tools(&tools, expected_tools)?;
        Ok(SmokeReport { server_name, protocol_version, tools, elapsed: started.elapsed() })
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| SmokeError::Timeout(timeout))?
}

/// Initialize a session and call one tool; returns the `result` object
/// (`content`, `isError`, …). Used by tests and benchmarks.
pub async fn call_tool(url: &str, bearer: &str, name: &str, args: Value) -> Result<Value, SmokeError> {
    let mut client = McpClient::new(url, bearer)?;
    client.initialize().await?;
    client.request("tools/call", json!({ "name": name, "arguments": args })).await
}

fn compare_tools(listed: &[String], expected: &[String]) -> Result<(), SmokeError> {
    let have: BTreeSet<&String> = listed.iter().collect();
    let want: BTreeSet<&String> = expected.iter().collect();
    let mut seen = BTreeSet::new();
    let duplicated: BTreeSet<String> = listed.iter().filter(|t| !seen.insert(*t)).cloned().collect();
    let missing: Vec<String> = want.difference(&have).map(|s| (*s).clone()).collect();
    let extra: Vec<String> = have.difference(&want).map(|s| (*s).clone()).collect();
    if missing.is_empty() && extra.is_empty() && duplicated.is_empty() {
        Ok(())
    } else {
        Err(SmokeError::ToolMismatch { missing, extra, duplicated: duplicated.into_iter().collect() })
    }
}

/// One Streamable HTTP client session.
struct McpClient {
    http: reqwest::Client,
    url: String,
    bearer: String,
    session_id: Option<String>,
    protocol_version: Option<String>,
    next_id: u64,
}

impl McpClient {
    fn new(url: &str, bearer: &str) -> Result<McpClient, SmokeError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| SmokeError::Unreachable(format!("bad URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SmokeError::Unreachable(format!("URL {url:?} is not http(s)")));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            // The MCP endpoint must answer itself; a redirect is a protocol error.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SmokeError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(McpClient {
            http,
            url: url.to_owned(),
            bearer: bearer.to_owned(),
            session_id: None,
            protocol_version: None,
            next_id: 1,
        })
    }

    async fn initialize(&mut self) -> Result<(String, String), SmokeError> {
        let result = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": { "name": "bmm-smoke", "version": env!("CARGO_PKG_VERSION") },
                }),
            )
            .await?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| SmokeError::Protocol("initialize result has no protocolVersion".into()))?
            .to_owned();
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&version.as_str()) {
            return Err(SmokeError::Protocol(format!(
                "the server speaks protocol {version}, not one of {}",
                SUPPORTED_PROTOCOL_VERSIONS.join(", ")
            )));
        }
        if result.pointer("/capabilities/tools").is_none() {
            return Err(SmokeError::Protocol("the server does not declare the tools capability".into()));
        }
        let name = result
            .pointer("/serverInfo/name")
            .and_then(Value::as_str)
            .ok_or_else(|| SmokeError::Protocol("initialize result has no serverInfo.name".into()))?
            .to_owned();
        self.protocol_version = Some(version.clone());
        self.notify("notifications/initialized").await?;
        Ok((name, version))
    }

    async fn list_tools(&mut self) -> Result<Vec<String>, SmokeError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        let mut cursors_seen = BTreeSet::new();
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.request("tools/list", params).await?;
            let list = page
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| SmokeError::Protocol("tools/list result has no tools array".into()))?;
            for tool in list {
                let name = tool
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SmokeError::Protocol("a tool in tools/list has no name".into()))?;
                tools.push(name.to_owned());
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => {
                    if !cursors_seen.insert(next.to_owned()) {
                        return Err(SmokeError::Protocol(format!("tools/list repeated the cursor {next:?}")));
                    }
                    cursor = Some(next.to_owned());
                }
                _ => return Ok(tools),
            }
        }
        Err(SmokeError::Protocol(format!("tools/list did not end after {MAX_PAGES} pages")))
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .bearer_auth(&self.bearer)
            .json(body);
        if let Some(id) = &self.session_id {
            req = req.header("Mcp-Session-Id", id);
        }
        if let Some(v) = &self.protocol_version {
            req = req.header("MCP-Protocol-Version", v);
        }
        req
    }

    async fn send(&self, body: &Value, what: &str) -> Result<reqwest::Response, SmokeError> {
        let resp = self.post(body).send().await.map_err(|e| SmokeError::Unreachable(plain(&e, &self.url)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no WWW-Authenticate header")
                .to_owned();
            return Err(SmokeError::Unauthorized { status: status.as_u16(), detail: challenge });
        }
        if status.is_redirection() {
            let to = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("?");
            return Err(SmokeError::Protocol(format!("{what} was redirected ({status}) to {to}")));
        }
        Ok(resp)
    }

    /// A JSON-RPC request; returns its `result`.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, SmokeError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let resp = self.send(&body, method).await?;
        let status = resp.status();
        if !status.is_success() {
            let text = read_limited(resp).await.unwrap_or_default();
            return Err(SmokeError::Protocol(format!("{method} answered HTTP {status}: {}", excerpt(&text))));
        }
        if method == "initialize"
            && let Some(sid) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok())
        {
            self.session_id = Some(sid.to_owned());
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let message = if content_type.starts_with("text/event-stream") {
            read_sse_response(resp, id, method).await?
        } else if content_type.starts_with("application/json") {
            let text = read_limited(resp).await?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|_| SmokeError::Protocol(format!("{method} answered invalid JSON: {}", excerpt(&text))))?;
            find_response(value, id).ok_or_else(|| {
                SmokeError::Protocol(format!(
                    "{method} answer is not a JSON-RPC response to id {id}: {}",
                    excerpt(&text)
                ))
            })?
        } else {
            return Err(SmokeError::Protocol(format!(
                "{method} answered with content type {content_type:?}, expected application/json or text/event-stream"
            )));
        };
        into_result(message, method)
    }

    /// A JSON-RPC notification; the server must answer 202 Accepted.
    async fn notify(&mut self, method: &str) -> Result<(), SmokeError> {
        let body = json!({ "jsonrpc": "2.0", "method": method });
        let resp = self.send(&body, method).await?;
        let status = resp.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = read_limited(resp).await.unwrap_or_default();
            return Err(SmokeError::Protocol(format!(
                "{method} answered HTTP {status}, expected 202 Accepted: {}",
                excerpt(&text)
            )));
        }
        Ok(())
    }
}

/// The response with `id` in a single message or a batch.
fn find_response(value: Value, id: u64) -> Option<Value> {
    let matches = |v: &Value| v.get("id").and_then(Value::as_u64) == Some(id);
    match value {
        Value::Array(items) => items.into_iter().find(matches),
        v if matches(&v) => Some(v),
        _ => None,
    }
}

fn into_result(message: Value, method: &str) -> Result<Value, SmokeError> {
    if let Some(err) = message.get("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or_default();
        let text = err.get("message").and_then(Value::as_str).unwrap_or("no message");
        return Err(SmokeError::Protocol(format!("{method} failed: {text} (code {code})")));
    }
    message.get("result").cloned().ok_or_else(|| SmokeError::Protocol(format!("{method} answer has no result")))
}

/// Read SSE events until the JSON-RPC response with `id` arrives; server
/// requests and notifications on the stream are skipped.
async fn read_sse_response(resp: reqwest::Response, id: u64, method: &str) -> Result<Value, SmokeError> {
    let mut parser = SseParser::default();
    let mut stream = resp.bytes_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SmokeError::Unreachable(format!("the event stream broke: {}", plain(&e, ""))))?;
        total += chunk.len();
        if total > MAX_BODY {
            return Err(SmokeError::Protocol(format!("{method} event stream exceeded {MAX_BODY} bytes")));
        }
        for event in parser.push(&chunk) {
            if event.event.as_deref().is_some_and(|e| e != "message") || event.data.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&event.data).map_err(|_| {
                SmokeError::Protocol(format!("{method} sent an event that is not JSON: {}", excerpt(&event.data)))
            })?;
            if let Some(found) = find_response(value, id) {
                return Ok(found);
            }
        }
    }
    Err(SmokeError::Protocol(format!("{method} event stream ended without a response to id {id}")))
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SseEvent {
    event: Option<String>,
    data: String,
    id: Option<String>,
}

/// An incremental `text/event-stream` parser (WHATWG rules: `\n`, `\r\n` or
/// `\r` line ends; multi-line `data`; comments; events end at a blank line).
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A '\r' at the very end may be the first half of "\r\n": wait for more.
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                break;
            }
            let skip = if self.buf[pos] == b'\r' && self.buf.get(pos + 1) == Some(&b'\n') { 2 } else { 1 };
            let line: Vec<u8> = self.buf.drain(..pos + skip).take(pos).collect();
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data {
                    events.push(std::mem::take(&mut self.current));
                } else {
                    self.current = SseEvent::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "event" => self.current.event = Some(value.to_owned()),
                "id" => self.current.id = Some(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

async fn read_limited(resp: reqwest::Response) -> Result<String, SmokeError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SmokeError::Unreachable(format!("the answer broke off: {}", plain(&e, ""))))?;
        if out.len() + chunk.len() > MAX_BODY {
            return Err(SmokeError::Protocol(format!("the answer exceeded {MAX_BODY} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn excerpt(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 200 { format!("{}…", t.chars().take(200).collect::<String>()) } else { t.to_owned() }
}

/// reqwest's error in plain words, without the request (and so without the token).
fn plain(e: &reqwest::Error, url: &str) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused"
    } else if e.is_body() || e.is_decode() {
        "the response body broke off"
    } else {
        "the request failed"
    };
    if url.is_empty() { what.to_owned() } else { format!("{what} ({url})") }
}

#[cfg(test)]
mod tests;

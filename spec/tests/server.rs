//! End-to-end tests of the generated server: render a spec, type-check and
//! bundle it with the real toolchain (`$BMM_TOOLCHAIN_DIR`, default
//! `.bmm/toolchain`), run the bundle with node on a loopback port, and speak
//! MCP over HTTP with RS256 tokens signed by a test key.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bmm_spec::model::{Handler, Tool, ToolSpec};
use bmm_spec::testing::{echo_spec, http_spec};
use bmm_spec::{CheckError, Toolchain, render, scan, validate, write_tree};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderMap;
use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};

const KEY_1: &str = include_str!("fixtures/test-rsa-1.pem");
const KEY_2: &str = include_str!("fixtures/test-rsa-2.pem");
const ISSUER: &str = "http://127.0.0.1:9";
const PROTOCOL: &str = "2025-06-18";

/// Runs a test body on a runtime whose threads have room: signing with the
/// unoptimised RSA code of a debug build overflows the default 2 MiB stack.
fn run(test: impl std::future::Future<Output = ()> + Send + 'static) {
    const STACK: usize = 32 * 1024 * 1024;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .unwrap()
                .block_on(test)
        })
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn toolchain() -> Toolchain {
    let tc = Toolchain::from_env();
    assert!(
        tc.dir.join("node_modules").is_dir(),
        "the node toolchain is missing at {} (run scripts/stack.sh toolchain)",
        tc.dir.display()
    );
    tc
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn jwk(pem: &str, kid: &str) -> Value {
    let key = RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
    let public = key.to_public_key();
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    })
}

fn sign(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
}

/// The spec every server test runs: echo, a scoped tool, and a few behaviours to probe.
fn test_spec() -> ToolSpec {
    let mut spec = echo_spec();
    let base = spec.tools[0].clone();
    let code = |name: &str, ts: &str| Tool {
        name: name.into(),
        title: None,
        description: format!("Test tool {name}."),
        handler: Handler::Code { typescript: ts.into() },
        input_schema: json!({"type": "object", "properties": {}}),
        scopes: vec![],
        ..base.clone()
    };
    spec.tools.push(Tool { scopes: vec!["admin".into()], ..code("admin_only", "return 'secret';") });
    spec.tools.push(code("api_key", "return ctx.credentials.TEST_API_KEY;"));
    spec.tools.push(code("missing_key", "return ctx.credentials.OTHER_KEY;"));
    spec.tools.push(code("fetch_loopback", "const r = await ctx.fetch('http://127.0.0.1:1/');\nreturn r.status;"));
    spec.tools
        .push(code("fetch_elsewhere", "const r = await ctx.fetch('https://evil.example.net/');\nreturn r.status;"));
    spec.tools.push(code("fails", "throw new Error('the upstream is down');"));
    spec.tools.push(code("structured", "return { temperature: 21, unit: 'C' };"));
    spec.tools.push(code("slow", "await new Promise((r) => setTimeout(r, 800));\nreturn 'done';"));
    spec.credentials = vec![
        bmm_spec::model::Credential {
            key: "TEST_API_KEY".into(),
            label: "Test key".into(),
            description: None,
            used_in: None,
            required: true,
        },
        bmm_spec::model::Credential {
            key: "OTHER_KEY".into(),
            label: "Other key".into(),
            description: None,
            used_in: None,
            required: false,
        },
    ];
    spec.allowed_hosts = vec!["api.example.com".into()];
    validate(&spec).unwrap();
    spec
}

async fn bundle(spec: &ToolSpec) -> Vec<u8> {
    let dir = TempDir::new().unwrap();
    write_tree(&render(spec), dir.path()).unwrap();
    toolchain().bundle(dir.path()).await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running generated server; killed when dropped.
struct Server {
    child: Child,
    base: String,
    /// BMM_SERVER_URL: the token audience.
    url: String,
    jwks_dir: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    async fn start(spec: &ToolSpec, env: &[(&str, &str)]) -> Server {
        let code = bundle(spec).await;
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("server.mjs"), code).unwrap();
        // Like the container: the JWKS lives in a directory and is replaced by rename.
        let jwks_dir = dir.path().join("jwks");
        std::fs::create_dir(&jwks_dir).unwrap();
        write_jwks(&jwks_dir, &[jwk(KEY_1, "k1")]);
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let url = format!("{base}/mcp");
        let log = dir.path().join("server.log");
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("BMM_LISTEN_HOST", "127.0.0.1")
            .env("BMM_SERVER_URL", &url)
            .env("BMM_ISSUER", ISSUER)
            .env("BMM_JWKS_FILE", jwks_dir.join("jwks.json"))
            .env("TEST_API_KEY", "key-from-env")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("node runs");
        let server = Server { child, base, url, jwks_dir, log, _dir: dir };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not become healthy; log:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn claims(&self) -> Value {
        json!({
            "iss": ISSUER, "aud": self.url, "sub": "user-1", "org": "org-1", "scope": "mcp",
            "client_id": "test-client", "iat": now(), "nbf": now(), "exp": now() + 300, "jti": "t1",
        })
    }

    fn token(&self) -> String {
        sign(KEY_1, "k1", &self.claims())
    }

    fn token_with(&self, patch: Value) -> String {
        let mut claims = self.claims();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(KEY_1, "k1", &claims)
    }

    fn metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base)
    }
}

fn write_jwks(dir: &Path, keys: &[Value]) {
    let tmp = dir.join(".jwks.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("jwks.json")).unwrap();
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }
}

async fn post(url: &str, token: Option<&str>, body: &Value, extra: &[(&str, &str)]) -> Reply {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    Reply { status: res.status().as_u16(), headers: res.headers().clone(), body: res.text().await.unwrap() }
}

fn rpc(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn initialize() -> Value {
    rpc(
        1,
        "initialize",
        json!({"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
    )
}

async fn call_tool(s: &Server, name: &str, args: Value) -> Value {
    let r = post(
        &s.url,
        Some(&s.token()),
        &rpc(3, "tools/call", json!({"name": name, "arguments": args})),
        &[("mcp-protocol-version", PROTOCOL)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["result"].clone()
}

/// A refused token: 401, `invalid_token` challenge pointing at the metadata, and the reason.
async fn assert_refused(s: &Server, token: &str, reason: &str) {
    let r = post(&s.url, Some(token), &initialize(), &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let challenge = r.header("www-authenticate");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains(&format!("resource_metadata=\"{}\"", s.metadata_url())), "{challenge}");
    assert!(r.json()["error_description"].as_str().unwrap().contains(reason), "{}", r.body);
    assert!(!s.logs().contains(token), "tokens must never be logged");
}

#[test]
fn echo_spec_checks_bundles_identically_and_serves_mcp() {
    run(async {
        let spec = test_spec();
        let tc = toolchain();
        let a = TempDir::new().unwrap();
        let b = TempDir::new().unwrap();
        let rendered = render(&spec);
        assert!(scan(&rendered).is_empty(), "{:?}", scan(&rendered));
        write_tree(&rendered, a.path()).unwrap();
        write_tree(&rendered, b.path()).unwrap();
        tc.check(a.path()).await.unwrap();
        let first = tc.bundle(a.path()).await.unwrap();
        let second = tc.bundle(b.path()).await.unwrap();
        assert!(first == second, "the same spec must bundle to the same bytes wherever it is built");
        let text = String::from_utf8(first).unwrap();
        for dir in [a.path(), b.path(), &tc.dir] {
            assert!(!text.contains(dir.to_str().unwrap()), "the bundle holds the absolute path {}", dir.display());
        }
        assert!(!text.contains("from \"@modelcontextprotocol"), "dependencies must be inlined");

        let s = Server::start(&spec, &[]).await;
        let token = s.token();
        let r = post(&s.url, Some(&token), &initialize(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let init = r.json();
        assert_eq!(init["result"]["protocolVersion"], PROTOCOL);
        assert_eq!(init["result"]["serverInfo"]["name"], "Echo");
        assert!(init["result"]["capabilities"]["tools"].is_object());

        let r = post(
            &s.url,
            Some(&token),
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            &[("mcp-protocol-version", PROTOCOL)],
        )
        .await;
        assert_eq!(r.status, 202);

        let r =
            post(&s.url, Some(&token), &rpc(2, "tools/list", json!({})), &[("mcp-protocol-version", PROTOCOL)]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let tools = r.json()["result"]["tools"].as_array().unwrap().clone();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        let want: Vec<&str> = spec.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, want);
        assert_eq!(tools[0]["inputSchema"], spec.tools[0].input_schema, "schemas are served verbatim");
        assert_eq!(tools[0]["annotations"]["readOnlyHint"], true);
        assert_eq!(tools[0]["title"], "Echo");

        let result = call_tool(&s, "echo", json!({"text": "hello"})).await;
        assert_eq!(result["content"][0], json!({"type": "text", "text": "hello"}));
        assert_ne!(result["isError"], true);

        // An unsupported protocol version header is refused by the SDK.
        let r = post(&s.url, Some(&token), &rpc(4, "tools/list", json!({})), &[("mcp-protocol-version", "1999-01-01")])
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
    });
}

#[test]
fn tool_results_errors_and_arguments() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let r = call_tool(&s, "echo", json!({})).await;
        assert_eq!(r["isError"], true);
        assert!(r["content"][0]["text"].as_str().unwrap().contains("Invalid arguments"), "{r}");
        let r = call_tool(&s, "echo", json!({"text": 5})).await;
        assert_eq!(r["isError"], true, "{r}");

        let r = call_tool(&s, "fails", json!({})).await;
        assert_eq!(r, json!({"isError": true, "content": [{"type": "text", "text": "the upstream is down"}]}));

        let r = call_tool(&s, "structured", json!({})).await;
        assert_eq!(r["structuredContent"], json!({"temperature": 21, "unit": "C"}));

        let r = call_tool(&s, "api_key", json!({})).await;
        assert_eq!(r["content"][0]["text"], "key-from-env");
        assert!(!s.logs().contains("key-from-env"), "credentials never reach the log");
        let r = call_tool(&s, "missing_key", json!({})).await;
        assert_eq!(r["isError"], true);
        assert!(r["content"][0]["text"].as_str().unwrap().contains("OTHER_KEY is not configured"), "{r}");

        let r = post(
            &s.url,
            Some(&s.token()),
            &rpc(9, "tools/call", json!({"name": "nope", "arguments": {}})),
            &[("mcp-protocol-version", PROTOCOL)],
        )
        .await;
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("Unknown tool"), "{}", r.body);
    });
}

#[test]
fn handlers_fetch_only_allowed_https_hosts() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let r = call_tool(&s, "fetch_loopback", json!({})).await;
        assert_eq!(r["isError"], true);
        assert!(r["content"][0]["text"].as_str().unwrap().contains("only https"), "{r}");
        let r = call_tool(&s, "fetch_elsewhere", json!({})).await;
        assert_eq!(r["isError"], true);
        assert!(r["content"][0]["text"].as_str().unwrap().contains("not in this server's allowed hosts"), "{r}");
    });
}

#[test]
fn refuses_a_request_without_a_token() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let r = post(&s.url, None, &initialize(), &[]).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), format!("Bearer resource_metadata=\"{}\"", s.metadata_url()));
        let r = post(&s.url, None, &initialize(), &[("authorization", "Basic dXNlcjpwYXNz")]).await;
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").contains("error=\"invalid_request\""));
    });
}

#[test]
fn refuses_alg_none() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(s.claims().to_string());
        assert_refused(&s, &format!("{header}.{payload}."), "not RS256").await;
    });
}

#[test]
fn refuses_hs256_signed_with_the_public_key() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let public_pem =
            RsaPrivateKey::from_pkcs8_pem(KEY_1).unwrap().to_public_key().to_public_key_pem(LineEnding::LF);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let token =
            jsonwebtoken::encode(&header, &s.claims(), &EncodingKey::from_secret(public_pem.unwrap().as_bytes()))
                .unwrap();
        assert_refused(&s, &token, "not RS256").await;
    });
}

#[test]
fn refuses_a_token_for_another_server() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let other = format!("{}/s/other/mcp", s.base);
        assert_refused(&s, &s.token_with(json!({"aud": other})), "audience").await;
        // A prefix or a trailing slash is not the same audience.
        assert_refused(&s, &s.token_with(json!({"aud": format!("{}/", s.url)})), "audience").await;
    });
}

#[test]
fn refuses_an_expired_token() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        assert_refused(
            &s,
            &s.token_with(json!({"iat": now() - 900, "nbf": now() - 900, "exp": now() - 600})),
            "expired",
        )
        .await;
    });
}

#[test]
fn refuses_a_token_not_yet_valid() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        assert_refused(&s, &s.token_with(json!({"nbf": now() + 600, "exp": now() + 900})), "not yet valid").await;
    });
}

#[test]
fn refuses_a_token_without_exp() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let mut claims = s.claims();
        claims.as_object_mut().unwrap().remove("exp");
        assert_refused(&s, &sign(KEY_1, "k1", &claims), "exp").await;
    });
}

#[test]
fn refuses_the_wrong_issuer() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        assert_refused(&s, &s.token_with(json!({"iss": "https://evil.example.net"})), "issuer").await;
    });
}

#[test]
fn refuses_a_tampered_signature() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let token = s.token();
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bytes[10] ^= 0x55;
        assert_refused(&s, &format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes)), "signature").await;
        // A payload swapped under a valid signature fails too.
        let (_, payload_sig) = token.split_once('.').unwrap();
        let (_, sig) = payload_sig.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(s.claims().to_string().replace("mcp", "mcp admin"));
        let header = token.split('.').next().unwrap();
        assert_refused(&s, &format!("{header}.{forged}.{sig}"), "signature").await;
    });
}

#[test]
fn refuses_an_unknown_kid_and_a_key_not_in_the_jwks() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        assert_refused(&s, &sign(KEY_1, "k-unknown", &s.claims()), "signing key is unknown").await;
        // Right kid, wrong key: the signature does not verify.
        assert_refused(&s, &sign(KEY_2, "k1", &s.claims()), "signature").await;
    });
}

#[test]
fn a_rotated_jwks_file_is_picked_up_by_path() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        assert_eq!(post(&s.url, Some(&s.token()), &initialize(), &[]).await.status, 200);
        let rotated = sign(KEY_2, "k2", &s.claims());
        // Replace the file by rename, as the platform does; the new kid is fetched on first sight
        // (after the 2 s unknown-kid cool-down of the refusal above, if any).
        write_jwks(&s.jwks_dir, &[jwk(KEY_1, "k1"), jwk(KEY_2, "k2")]);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let r = post(&s.url, Some(&rotated), &initialize(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // A key dropped from the file stops verifying once the change is noticed (stat every 5 s).
        write_jwks(&s.jwks_dir, &[jwk(KEY_2, "k2")]);
        tokio::time::sleep(Duration::from_millis(5200)).await;
        assert_refused(&s, &s.token(), "signing key is unknown").await;
    });
}

#[test]
fn a_tool_needing_more_scope_is_refused_with_a_scope_challenge() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let call = rpc(5, "tools/call", json!({"name": "admin_only", "arguments": {}}));
        let r = post(&s.url, Some(&s.token()), &call, &[("mcp-protocol-version", PROTOCOL)]).await;
        assert_eq!(r.status, 403, "{}", r.body);
        let challenge = r.header("www-authenticate");
        assert!(challenge.starts_with("Bearer error=\"insufficient_scope\""), "{challenge}");
        assert!(challenge.contains("scope=\"mcp admin\""), "{challenge}");
        assert!(challenge.contains(&format!("resource_metadata=\"{}\"", s.metadata_url())), "{challenge}");
        assert_eq!(r.json()["error"], "insufficient_scope");

        let admin = s.token_with(json!({"scope": "mcp admin"}));
        let r = post(&s.url, Some(&admin), &call, &[("mcp-protocol-version", PROTOCOL)]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["result"]["content"][0]["text"], "secret");

        // Without the base scope nothing is served.
        let r = post(&s.url, Some(&s.token_with(json!({"scope": "other"}))), &initialize(), &[]).await;
        assert_eq!(r.status, 403);
        assert!(r.header("www-authenticate").contains("scope=\"mcp\""));
    });
}

#[test]
fn a_foreign_origin_is_refused_and_allowed_origins_get_cors() {
    run(async {
        let s = Server::start(&test_spec(), &[("BMM_ALLOWED_ORIGINS", "https://app.example.com")]).await;
        let token = s.token();
        let r = post(&s.url, Some(&token), &initialize(), &[("origin", "https://evil.example.net")]).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.header("access-control-allow-origin").is_empty());
        let r = post(&s.url, Some(&token), &initialize(), &[("origin", "null")]).await;
        assert_eq!(r.status, 403);

        let r = post(&s.url, Some(&token), &initialize(), &[("origin", "https://app.example.com")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), "https://app.example.com");
        assert!(r.header("access-control-expose-headers").contains("WWW-Authenticate"));

        // Same origin as BMM_SERVER_URL is allowed without configuration.
        let r = post(&s.url, Some(&token), &initialize(), &[("origin", &s.base)]).await;
        assert_eq!(r.status, 200, "{}", r.body);

        // A 401 to an allowed origin still carries CORS, so browser clients can read the challenge.
        let r = post(&s.url, None, &initialize(), &[("origin", "https://app.example.com")]).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("access-control-allow-origin"), "https://app.example.com");
    });
}

#[test]
fn preflight_is_answered_without_auth() {
    run(async {
        let s = Server::start(&test_spec(), &[("BMM_ALLOWED_ORIGINS", "https://app.example.com")]).await;
        let client = reqwest::Client::new();
        let r = client
            .request(reqwest::Method::OPTIONS, &s.url)
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, mcp-protocol-version")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert_eq!(h("access-control-allow-origin"), "https://app.example.com");
        for name in ["Authorization", "Content-Type", "Mcp-Session-Id", "MCP-Protocol-Version", "Last-Event-ID"] {
            assert!(h("access-control-allow-headers").contains(name), "{name} missing");
        }
        assert!(h("access-control-allow-methods").contains("POST"));
        let r = client
            .request(reqwest::Method::OPTIONS, &s.url)
            .header("origin", "https://evil.example.net")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    });
}

#[test]
fn protected_resource_metadata_is_served_at_both_paths() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let client = reqwest::Client::new();
        for path in ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"] {
            let r =
                client.get(format!("{}{path}", s.base)).header("origin", "https://any.example").send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["access-control-allow-origin"], "*");
            let doc: Value = r.json().await.unwrap();
            assert_eq!(doc["resource"], s.url);
            assert_eq!(doc["authorization_servers"], json!([ISSUER]));
            assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
            assert_eq!(doc["scopes_supported"], json!(["mcp", "admin", "offline_access"]));
        }
    });
}

#[test]
fn the_endpoint_never_redirects_and_is_stateless() {
    run(async {
        let s = Server::start(&test_spec(), &[]).await;
        let slash = format!("{}/", s.url);
        let r = post(&slash, None, &initialize(), &[]).await;
        assert_eq!(r.status, 401, "a trailing slash is served, not redirected");
        let r = post(&slash, Some(&s.token()), &initialize(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.header("mcp-session-id").is_empty(), "stateless servers hand out no session");

        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let r = client
                .request(method.clone(), &s.url)
                .header("authorization", format!("Bearer {}", s.token()))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{method}");
            assert_eq!(r.headers()["allow"], "POST, OPTIONS");
        }
        let r = client.get(format!("{}/healthz", s.base)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = client.get(format!("{}/elsewhere", s.base)).send().await.unwrap();
        assert_eq!(r.status(), 404);
    });
}

#[test]
fn sigterm_finishes_in_flight_calls_then_exits() {
    run(async {
        let mut s = Server::start(&test_spec(), &[]).await;
        let url = s.url.clone();
        let token = s.token();
        let call = tokio::spawn(async move {
            post(
                &url,
                Some(&token),
                &rpc(7, "tools/call", json!({"name": "slow", "arguments": {}})),
                &[("mcp-protocol-version", PROTOCOL)],
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = s.child.id().unwrap();
        // SAFETY: sends SIGTERM to the node process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let r = call.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["result"]["content"][0]["text"], "done");
        let status = tokio::time::timeout(Duration::from_secs(10), s.child.wait()).await.expect("exits").unwrap();
        assert!(status.success(), "{status:?}");
        let logs = s.logs();
        assert!(logs.contains("\"msg\":\"shutting down\""), "{logs}");
        for line in logs.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
            assert!(v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string(), "{line}");
        }
    });
}

#[test]
fn a_type_error_names_the_tools_file_and_line() {
    run(async {
        let mut spec = echo_spec();
        spec.tools[0].name = "get_weather".into();
        spec.tools[0].handler =
            Handler::Code { typescript: "const ok = 1;\nconst n: number = \"not a number\";\nreturn n + ok;".into() };
        validate(&spec).unwrap();
        let rendered = render(&spec);
        let dir = TempDir::new().unwrap();
        write_tree(&rendered, dir.path()).unwrap();
        match toolchain().check(dir.path()).await {
            Err(CheckError::Failed(f)) => {
                assert_eq!(f.diagnostics.len(), 1, "{f:?}");
                let d = &f.diagnostics[0];
                assert_eq!(d.file, "src/tools/get_weather.ts");
                assert_eq!(d.line, 8);
                assert!(d.message.starts_with("TS2322"), "{}", d.message);
                let at = rendered.locate(&d.file, d.line).unwrap();
                assert_eq!((at.tool.as_str(), at.line), ("get_weather", 2));
            }
            other => panic!("expected a type error, got {other:?}"),
        }
    });
}

#[test]
fn a_syntax_error_is_reported_in_the_tools_file() {
    run(async {
        let mut spec = echo_spec();
        spec.tools[0].handler = Handler::Code { typescript: "return args.text +;".into() };
        let dir = TempDir::new().unwrap();
        write_tree(&render(&spec), dir.path()).unwrap();
        match toolchain().check(dir.path()).await {
            Err(CheckError::Failed(f)) => {
                assert!(f.diagnostics.iter().all(|d| d.file == "src/tools/echo.ts"), "{f:?}");
                assert_eq!(f.diagnostics[0].line, 7);
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    });
}

#[test]
fn banned_code_is_found_with_file_and_line() {
    run(async {
        let mut spec = echo_spec();
        spec.tools[0].handler = Handler::Code {
            typescript: "const cmd = String(args.text);\nconst cp = await import(cmd);\nreturn String(cp);".into(),
        };
        assert!(validate(&spec).is_err(), "validation refuses it already");
        let findings = scan(&render(&spec));
        assert!(!findings.is_empty());
        assert!(findings.iter().all(|f| f.file == "src/tools/echo.ts" && f.line == 8), "{findings:?}");
        assert!(findings.iter().any(|f| f.pattern == "import("), "{findings:?}");
    });
}

#[test]
fn the_http_spec_type_checks_and_bundles() {
    run(async {
        let spec = http_spec();
        let dir = TempDir::new().unwrap();
        write_tree(&render(&spec), dir.path()).unwrap();
        let tc = toolchain();
        tc.check(dir.path()).await.unwrap();
        let code = tc.bundle(dir.path()).await.unwrap();
        let text = String::from_utf8(code).unwrap();
        assert!(text.contains("https://api.example.com/v1/forecast/{city}"));
    });
}

/// Drives the rendered `http` handlers with a recording `ctx.fetch`, so the
/// templating is checked without any traffic leaving the machine.
const HTTP_HARNESS: &str = r#"
import { TOOLS } from "./tools.js";
import type { ToolContext } from "./runtime/types.js";

const seen: unknown[] = [];
const ctx = (reply: Response): ToolContext => ({
  credentials: { WEATHER_API_KEY: "k&y 1" },
  fetch: async (input, init) => {
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((v, k) => { headers[k] = v; });
    seen.push({ url: String(input), method: init?.method, headers, body: init?.body ?? null });
    return reply;
  },
  log: () => {},
  signal: new AbortController().signal,
});
const tool = (name: string) => TOOLS.find((t) => t.name === name)!;
const results: unknown[] = [];
results.push(await tool("get_forecast").handler({ city: "São Paulo/x", days: 3 }, ctx(Response.json({ temp: 21 }))));
results.push(await tool("get_forecast").handler({ city: "Oslo" }, ctx(new Response("plain", { headers: { "content-type": "text/plain" } }))));
results.push(await tool("create-note").handler({ title: "t", body: "b" }, ctx(new Response("{}", { status: 201, headers: { "content-type": "application/json" } }))));
let error = "";
try {
  await tool("get_forecast").handler({ city: "x" }, ctx(new Response("upstream broke", { status: 500 })));
} catch (e) {
  error = (e as Error).message;
}
process.stdout.write(JSON.stringify({ seen, results, error }));
"#;

#[test]
fn http_handlers_expand_templates_into_the_request() {
    run(async {
        let dir = TempDir::new().unwrap();
        write_tree(&render(&http_spec()), dir.path()).unwrap();
        std::fs::write(dir.path().join("src/harness.ts"), HTTP_HARNESS).unwrap();
        let code = toolchain().bundle_entry(dir.path(), "src/harness.ts").await.unwrap();
        std::fs::write(dir.path().join("harness.mjs"), code).unwrap();
        let out = Command::new("node").arg("harness.mjs").current_dir(dir.path()).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let seen = &v["seen"];
        assert_eq!(seen[0]["url"], "https://api.example.com/v1/forecast/S%C3%A3o%20Paulo%2Fx?days=3");
        assert_eq!(seen[0]["method"], "GET");
        assert_eq!(seen[0]["headers"]["authorization"], "Bearer k&y 1");
        assert_eq!(seen[0]["body"], Value::Null);
        assert_eq!(
            seen[1]["url"], "https://api.example.com/v1/forecast/Oslo",
            "an absent optional query argument is left out"
        );
        assert_eq!(seen[2]["url"], "https://api.example.com:8443/v1/notes");
        assert_eq!(seen[2]["method"], "POST");
        assert_eq!(seen[2]["headers"]["x-api-key"], "k&y 1");
        assert_eq!(seen[2]["headers"]["content-type"], "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(seen[2]["body"].as_str().unwrap()).unwrap(),
            json!({"title": "t", "body": "b"})
        );
        assert_eq!(v["results"], json!([{"temp": 21}, "plain", {}]));
        assert!(v["error"].as_str().unwrap().contains("answered HTTP 500: upstream broke"), "{v}");
    });
}

/// The official Python MCP client (PyPI `mcp`) against a generated server.
const PY_CLIENT: &str = r#"
import asyncio, json, os, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

async def main():
    headers = {"Authorization": "Bearer " + os.environ["TOKEN"]}
    async with create_mcp_http_client(headers=headers) as http, \
            streamable_http_client(os.environ["URL"], http_client=http) as (read, write, *_):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("echo", {"text": "from python"})
            print(json.dumps({
                "server": init.server_info.name,
                "tools": [t.name for t in tools.tools],
                "text": result.content[0].text,
                "isError": result.is_error,
            }))

asyncio.run(main())
"#;

#[test]
fn the_official_python_client_talks_to_the_server() {
    run(async {
        let spec = test_spec();
        let s = Server::start(&spec, &[]).await;
        let out = Command::new("python3")
            .args(["-c", PY_CLIENT])
            .env("URL", &s.url)
            .env("TOKEN", s.token())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), s.logs());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["server"], "Echo");
        assert_eq!(v["tools"].as_array().unwrap().len(), spec.tools.len());
        assert_eq!(v["text"], "from python");
        assert_eq!(v["isError"], false);
    });
}

/// Serves `body` as JSON to every connection on a loopback port; counts requests.
async fn serve_json(body: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/oauth/jwks", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[test]
fn tokens_verify_against_a_remote_jwks_url() {
    run(async {
        let (jwks_url, hits) = serve_json(json!({"keys": [jwk(KEY_1, "k1")]}).to_string()).await;
        let s = Server::start(&test_spec(), &[("BMM_JWKS_FILE", ""), ("BMM_JWKS_URL", &jwks_url)]).await;
        let r = post(&s.url, Some(&s.token()), &initialize(), &[]).await;
        assert_eq!(r.status, 200, "{}\n{}", r.body, s.logs());
        assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the JWKS was fetched");
        assert_refused(&s, &sign(KEY_2, "k2", &s.claims()), "signing key is unknown").await;
        assert_refused(&s, &s.token_with(json!({"aud": "https://elsewhere.example/mcp"})), "audience").await;
    });
}

#[test]
fn a_misconfigured_server_exits_with_every_problem_listed() {
    run(async {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("server.mjs"), bundle(&test_spec()).await).unwrap();
        let out = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "99999")
            .env("BMM_ISSUER", "not a url")
            .env("BMM_ALLOWED_ORIGINS", "https://ok.example.com,https://bad.example.com/path")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(78));
        let line: Value = serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(line["msg"], "cannot start");
        let problems = line["problems"].to_string();
        for needle in [
            "PORT must be at most 65535",
            "BMM_SERVER_URL is not set",
            "BMM_ISSUER is not a URL",
            "BMM_JWKS_FILE or BMM_JWKS_URL",
            "not an origin: https://bad.example.com/path",
        ] {
            assert!(problems.contains(needle), "{needle} missing from {problems}");
        }
    });
}

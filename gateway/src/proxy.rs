//! The `/s/{slug}/mcp` handler: route lookup, resource-server checks, and a
//! streaming reverse proxy to the LIVE container (bodies streamed both ways,
//! SSE unbuffered, hop-by-hop headers dropped).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use hyper::body::{Frame, Incoming, SizeHint};
use serde_json::json;

use crate::guard::{Refusal, TraceEvent};
use crate::metrics::InFlightGuard;
use crate::routes::ServerRoute;
use crate::state::GatewayState;

/// The scope every MCP call needs.
pub const MCP_SCOPE: &str = "mcp";
/// How long a client should wait before retrying a server that is not live.
const NOT_LIVE_RETRY_AFTER: u64 = 10;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) async fn mcp(State(st): State<GatewayState>, Path(slug): Path<String>, req: Request) -> Response {
    let started = Instant::now();
    let (label, mut response) = handle(&st, &slug, req).await;
    mark_untrusted(response.headers_mut());
    st.metrics.requests.with_label_values(&[label.as_str(), response.status().as_str()]).inc();
    st.metrics.duration.with_label_values(&[label.as_str()]).observe(started.elapsed().as_secs_f64());
    response
}

/// Every `/s/` response is a tenant's (or about one) and is served on the
/// platform's own origin: a browser that opens one must not treat it as a page
/// of that origin (`sandbox` without tokens blocks scripts, forms and plugins
/// and gives the document an opaque origin, so it can neither read the
/// dashboard's storage nor act with the user's cookies) nor sniff a more
/// dangerous type than the one declared. Inserted, never appended,
/// so a server cannot weaken them with its own values.
fn mark_untrusted(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// Returns the metrics label (the slug, or "unknown") and the response.
async fn handle(st: &GatewayState, slug: &str, req: Request) -> (String, Response) {
    const UNKNOWN: &str = "unknown";
    if !bmm_core::slug::is_slug(slug) {
        return (UNKNOWN.into(), not_found(slug));
    }
    let route = match st.routes.lookup(slug).await {
        Ok(Some(r)) => r,
        // Without a token a server that does not exist answers like one
        // that does (401 to the metadata), so slugs cannot be enumerated.
        Ok(None) => {
            return match bearer(req.headers()) {
                Bearer::Missing => (UNKNOWN.into(), unauthorized(st, slug, None)),
                Bearer::Malformed => {
                    (UNKNOWN.into(), unauthorized(st, slug, Some("the Authorization header is not a Bearer token")))
                }
                Bearer::Token(_) => (UNKNOWN.into(), not_found(slug)),
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "gateway cannot read its routes");
            return (UNKNOWN.into(), unavailable("the gateway cannot read its routes right now", 5));
        }
    };
    let label = slug.to_owned();

    let token = match bearer(req.headers()) {
        Bearer::Missing => {
            st.trace_in_background(TraceEvent {
                org_id: route.org_id,
                server_id: route.server_id,
                client_id: None,
                ok: false,
                detail: "MCP request without a bearer token; the client was sent to the protected-resource metadata"
                    .into(),
            });
            return (label, unauthorized(st, slug, None));
        }
        Bearer::Malformed => {
            let cause = "the Authorization header is not a Bearer token";
            st.trace_in_background(refusal(&route, None, cause));
            return (label, unauthorized(st, slug, Some(cause)));
        }
        Bearer::Token(t) => t,
    };
    let audience = st.cfg.server_url(slug);
    let verified = match st.verifier.verify(&token, &audience).await {
        Ok(v) => v,
        Err(Refusal::Invalid(cause)) => {
            st.trace_in_background(refusal(&route, None, &cause));
            return (label, unauthorized(st, slug, Some(&cause)));
        }
        Err(Refusal::Unavailable(e)) => {
            tracing::error!(error = %e, "token verification unavailable");
            return (label, unavailable("the gateway cannot verify tokens right now", 5));
        }
    };
    if !verified.scopes.iter().any(|s| s == MCP_SCOPE) {
        let cause = format!("the token lacks the {MCP_SCOPE} scope (it has: {})", verified.scopes.join(" "));
        st.trace_in_background(refusal(&route, Some(&verified.client_id), &cause));
        return (label, insufficient_scope(st, slug, &cause));
    }
    if st.first_calls.first(route.server_id, verified.user_id, &verified.client_id) {
        st.trace_in_background(TraceEvent {
            org_id: route.org_id,
            server_id: route.server_id,
            client_id: Some(verified.client_id.clone()),
            ok: true,
            detail: "first MCP call with a valid token".into(),
        });
    }

    let Some(upstream) = route.live.clone() else {
        return (
            label,
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_live",
                &format!(
                    "the server {slug} has no live version yet (it may be building or stopped); try again shortly"
                ),
                Some(NOT_LIVE_RETRY_AFTER),
            ),
        );
    };

    let guard = st.in_flight.start(upstream.deployment_id);
    let gauge = st.metrics.in_flight.with_label_values(&[slug]);
    gauge.inc();
    let gauge = GaugeGuard(gauge);

    let outbound = match build_upstream_request(st, req, &upstream.host, upstream.port) {
        Ok(r) => r,
        Err(msg) => return (label, error_response(StatusCode::BAD_REQUEST, "bad_request", &msg, None)),
    };
    match st.client.request(outbound).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // A tenant's server must not set cookies on the platform's origin
            // (a session fixation or a cookie shadowing the dashboard's).
            parts.headers.remove(header::SET_COOKIE);
            let is_sse = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if is_sse {
                // Ask any proxy in front of us not to buffer the stream either.
                parts.headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            }
            let body = Body::new(Tracked { inner: body, _guard: guard, _gauge: gauge });
            (label, Response::from_parts(parts, body))
        }
        Err(e) => {
            let cause = if e.is_connect() { "not reachable" } else { "broke off the connection" };
            tracing::warn!(
                slug,
                deployment = %upstream.deployment_id,
                port = upstream.port,
                error = %e,
                "upstream container {cause}"
            );
            // The route may be stale (a cut-over whose NOTIFY we missed): reload soon.
            let routes = st.routes.clone();
            tokio::spawn(async move {
                let _ = routes.reload().await;
            });
            (
                label,
                error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    &format!("the server {slug} is {cause}; it may be restarting, try again shortly"),
                    None,
                ),
            )
        }
    }
}

/// RFC 9728 metadata of `{issuer}/s/{slug}/mcp`.
/// The same document for every well-formed slug, live or not: an
/// unauthenticated caller must not learn which servers exist.
pub(crate) async fn protected_resource(State(st): State<GatewayState>, Path(slug): Path<String>) -> Response {
    if !bmm_core::slug::is_slug(&slug) {
        return not_found(&slug);
    }
    let body = json!({
        "resource": st.cfg.server_url(&slug),
        "authorization_servers": [st.cfg.issuer()],
        "scopes_supported": [MCP_SCOPE, "offline_access"],
        "bearer_methods_supported": ["header"],
    });
    ([(header::CACHE_CONTROL, "public, max-age=60")], axum::Json(body)).into_response()
}

/// The metadata URL a 401 points clients to.
pub fn resource_metadata_url(cfg: &bmm_core::Config, slug: &str) -> String {
    format!("{}/.well-known/oauth-protected-resource/s/{slug}/mcp", cfg.issuer())
}

fn refusal(route: &ServerRoute, client_id: Option<&str>, cause: &str) -> TraceEvent {
    TraceEvent {
        org_id: route.org_id,
        server_id: route.server_id,
        client_id: client_id.map(str::to_owned),
        ok: false,
        detail: format!("refused: {cause}"),
    }
}

enum Bearer {
    Missing,
    Malformed,
    Token(String),
}

fn bearer(headers: &HeaderMap) -> Bearer {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Bearer::Missing };
    let Ok(value) = value.to_str() else { return Bearer::Malformed };
    let mut parts = value.trim().splitn(2, ' ');
    match (parts.next(), parts.next().map(str::trim)) {
        (Some(scheme), Some(token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Bearer::Token(token.to_owned())
        }
        _ => Bearer::Malformed,
    }
}

/// A quoted-string for an auth-param: no quotes, backslashes or control characters.
fn quoted(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\').collect()
}

fn unauthorized(st: &GatewayState, slug: &str, cause: Option<&str>) -> Response {
    let meta = resource_metadata_url(&st.cfg, slug);
    let (challenge, body) = match cause {
        // No credentials: no error code (RFC 6750 §3.1), just where to start.
        None => (
            format!("Bearer resource_metadata=\"{meta}\""),
            json!({ "error": "unauthorized", "error_description": "this MCP server needs an OAuth access token" }),
        ),
        Some(cause) => (
            format!(
                "Bearer resource_metadata=\"{meta}\", error=\"invalid_token\", error_description=\"{}\"",
                quoted(cause)
            ),
            json!({ "error": "invalid_token", "error_description": cause }),
        ),
    };
    let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn insufficient_scope(st: &GatewayState, slug: &str, cause: &str) -> Response {
    let meta = resource_metadata_url(&st.cfg, slug);
    let challenge = format!(
        "Bearer resource_metadata=\"{meta}\", error=\"insufficient_scope\", scope=\"{MCP_SCOPE}\", error_description=\"{}\"",
        quoted(cause)
    );
    let body = json!({ "error": "insufficient_scope", "error_description": cause });
    let mut resp = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn not_found(slug: &str) -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", &format!("no MCP server is published at /s/{slug}/mcp"), None)
}

fn unavailable(message: &str, retry_after: u64) -> Response {
    error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message, Some(retry_after))
}

fn error_response(status: StatusCode, code: &str, message: &str, retry_after: Option<u64>) -> Response {
    let mut resp = (status, axum::Json(json!({ "error": code, "message": message }))).into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn build_upstream_request(
    st: &GatewayState,
    req: Request,
    host: &str,
    port: u16,
) -> Result<http::Request<Body>, String> {
    let peer = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let (mut parts, body) = req.into_parts();
    let path = match parts.uri.query() {
        Some(q) => format!("/mcp?{q}"),
        None => "/mcp".to_owned(),
    };
    let uri: Uri =
        format!("http://{host}:{port}{path}").parse().map_err(|_| "the request URI is not valid".to_owned())?;
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    // The platform's cookies (the dashboard session) are sent by browsers to
    // every path of its origin; a tenant's server never gets to read them.
    headers.remove(header::COOKIE);
    if let Some(ip) = peer {
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(st.cfg.public_url.scheme()) {
        headers.insert("x-forwarded-proto", v);
    }
    if let Some(h) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", h);
    }
    let mut out = http::Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Keeps the in-flight count (and gauge) up until the response body ends.
struct Tracked {
    inner: Incoming,
    _guard: InFlightGuard,
    _gauge: GaugeGuard,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Connect timeout to a container (all on the same host).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

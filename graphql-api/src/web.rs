//! The dashboard: the files of `web/`, embedded in the binary, with the
//! single-page-app fallback to `index.html` for paths that are not the API's.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../web"]
#[exclude = "node_modules/*"]
#[exclude = "tests/*"]
#[exclude = "test-results/*"]
#[exclude = "package.json"]
#[exclude = "package-lock.json"]
#[exclude = "*.md"]
pub struct WebAssets;

/// Paths owned by the API: an unknown one is a 404, never the dashboard.
const API_PREFIXES: [&str; 8] =
    ["/graphql", "/auth/", "/oauth/", "/s/", "/.well-known/", "/healthz", "/readyz", "/metrics"];

pub async fn serve(req: Request) -> Response {
    let path = req.uri().path();
    if API_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
    }
    let rel = path.trim_start_matches('/');
    let (file, name) = match WebAssets::get(rel).filter(|_| !rel.is_empty()) {
        Some(f) => (f, rel.to_owned()),
        // Client-side routes (no extension) get the app; a missing asset is a 404.
        None if !rel.rsplit('/').next().unwrap_or("").contains('.') => match WebAssets::get("index.html") {
            Some(f) => (f, "index.html".to_owned()),
            None => return (StatusCode::NOT_FOUND, "the dashboard is not built into this binary\n").into_response(),
        },
        None => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let etag = format!("\"{}\"", hex_of(&file.metadata.sha256_hash()));
    if req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mime = file.metadata.mimetype().to_owned();
    let mut resp = (StatusCode::OK, file.data.into_owned()).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    let cache = if name == "index.html" { "no-cache" } else { "public, max-age=300" };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DASHBOARD_CSP));
    resp
}

/// The dashboard is buildless and loads nothing from elsewhere: scripts,
/// styles, images and connections (HTTP and the WebSocket) only from its own
/// origin, no inline code or style attributes, never framed.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'; object-src 'none'";

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

//! The gateway: `{public}/s/{slug}/mcp` as a streaming reverse proxy to the
//! server's LIVE container, with the resource-server checks in front of it
//! (bearer token, audience, scope; RFC 9728 metadata), CORS, the route table
//! (PostgreSQL + `NOTIFY bmm_routes`), the cut-over, in-flight counts and metrics.
//!
//! It must not build or deploy anything: deployments come from the database.

mod guard;
mod metrics;
mod proxy;
mod routes;
mod state;

#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use http::{HeaderName, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use guard::{DbTrace, Refusal, TokenVerifier, TraceEvent, TraceSink, VerifiedToken};
pub use metrics::{GatewayMetrics, InFlight};
pub use proxy::{MCP_SCOPE, resource_metadata_url};
pub use routes::{ROUTES_CHANNEL, RouteError, RouteTable, ServerRoute, Upstream, cut_over, notify_routes};
pub use state::GatewayState;

/// `/s/{slug}/mcp` (and with a trailing slash; never a redirect) and
/// `/.well-known/oauth-protected-resource/s/{slug}/mcp`, with CORS.
pub fn router(state: GatewayState) -> Router {
    let mcp_session = HeaderName::from_static("mcp-session-id");
    let protocol = HeaderName::from_static("mcp-protocol-version");
    let cors = CorsLayer::new()
        // Bearer tokens, not cookies: any origin may call, credentials are never implied.
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            mcp_session.clone(),
            protocol.clone(),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::WWW_AUTHENTICATE, mcp_session, protocol])
        .max_age(Duration::from_secs(86400));
    Router::new()
        .route("/s/{slug}/mcp", any(proxy::mcp))
        .route("/s/{slug}/mcp/", any(proxy::mcp))
        .route("/.well-known/oauth-protected-resource/s/{slug}/mcp", get(proxy::protected_resource))
        .layer(cors)
        .with_state(state)
}

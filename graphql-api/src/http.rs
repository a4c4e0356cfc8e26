//! The axum app: `/graphql` (POST and WebSocket), GraphiQL, health,
//! readiness, metrics and the dashboard.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{Data, Response as GqlResponse};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tracing::Instrument;

use crate::context::{Caller, RequestMeta, authenticate_headers, authenticate_init_payload};
use crate::error::{ApiError, code};
use crate::schema::{AppSchema, build_schema};
use crate::state::AppState;

#[derive(Clone)]
pub struct AppCtx {
    pub state: AppState,
    pub schema: AppSchema,
}

/// The whole API as one router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so per-IP rate
/// limits and audit IPs see the client's address.
pub fn app(state: AppState) -> Router {
    let schema = build_schema(state.clone());
    let dev = state.cfg.dev;
    let ctx = AppCtx { state, schema };
    let mut router = Router::new()
        .route("/graphql", get(graphql_ws).post(graphql_post))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if dev {
        router = router.route("/graphiql", get(graphiql));
    }
    let auth = bmm_auth::routes(bmm_auth::AuthState::new(
        ctx.state.pool.clone(),
        ctx.state.cfg.clone(),
        ctx.state.keys.clone(),
    ));
    let gateway = bmm_gateway::router(ctx.state.gateway.clone());
    router.fallback(crate::web::serve).with_state(ctx).merge(auth).merge(gateway)
}

fn peer_ip(req_ext: &axum::http::Extensions) -> Option<String> {
    req_ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

/// A GraphQL-shaped error response with an HTTP status.
pub fn error_response(status: StatusCode, e: ApiError) -> Response {
    let err = e.to_graphql();
    let body = json!({ "errors": [{ "message": err.message, "extensions": err.extensions }] });
    let mut resp = (status, axum::Json(body)).into_response();
    if let ApiError::RateLimited { retry_after_secs } = e
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A short name for a request in traces: the operation name, else the
/// operation type and its first field (`mutation createServer`).
fn operation_label(name: Option<&str>, query: &str) -> String {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        return n.to_owned();
    }
    let kind = ["mutation", "subscription"].into_iter().find(|k| query.trim_start().starts_with(k)).unwrap_or("query");
    let field = query
        .split_once('{')
        .map(|(_, rest)| rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
        .unwrap_or_default();
    format!("{kind} {field}").trim().to_owned()
}

async fn graphql_post(State(app): State<AppCtx>, req: Request) -> Response {
    let ip = peer_ip(req.extensions());
    let (parts, body) = req.into_parts();
    let limit = app.state.limits.max_body_bytes;
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::bad_input("Content-Type", "send the GraphQL request as application/json"),
        );
    }
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiError::bad_input("body", format!("the request is larger than {limit} bytes")),
            );
        }
    };
    let request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                ApiError::bad_input("body", format!("not a GraphQL request ({e})")),
            );
        }
    };
    let principal = match authenticate_headers(&app.state, &parts.headers).await {
        Ok(p) => p,
        Err(e @ ApiError::Unauthenticated(_)) => return error_response(StatusCode::UNAUTHORIZED, e),
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    // One span per request, so a trace starts here and follows the build
    // into Temporal (the workflow client propagates the span's context).
    let label = operation_label(request.operation_name.as_deref(), &request.query);
    let span =
        tracing::info_span!("graphql.request", otel.name = %format!("graphql {label}"), graphql.operation = %label);
    let request = request.data(Caller(principal)).data(RequestMeta { ip });
    let resp: GqlResponse = app.schema.execute(request).instrument(span).await;
    let retry_after = resp.errors.iter().find_map(|e| {
        let ext = e.extensions.as_ref()?;
        (ext.get("code")? == &async_graphql::Value::from(code::RATE_LIMITED))
            .then(|| ext.get("retryAfter").map(|v| v.to_string()).unwrap_or_else(|| "1".into()))
    });
    let mut out = async_graphql_axum::GraphQLResponse::from(resp).into_response();
    if let Some(secs) = retry_after {
        *out.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(v) = HeaderValue::from_str(&secs) {
            out.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    out.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}

async fn graphql_ws(
    State(app): State<AppCtx>,
    protocol: GraphQLProtocol,
    ws: WebSocketUpgrade,
    req: Request,
) -> Response {
    let ip = peer_ip(req.extensions());
    // A session cookie on the upgrade request counts; a key in connection_init wins.
    let cookie_principal = match bmm_auth::principal::session_token_from_headers(req.headers()) {
        Some(_) => authenticate_headers(&app.state, &strip_authorization(req.headers())).await.ok().flatten(),
        None => None,
    };
    // Browsers attach the cookie to a WebSocket upgrade from any page and
    // WebSockets have no CORS, so a signed-in upgrade is only accepted from
    // the platform's own pages (cross-site WebSocket hijacking). Keys sent
    // in connection_init are not ambient and work from anywhere.
    if cookie_principal.is_some() && !same_origin(&app.state.cfg, req.headers()) {
        let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("(none)");
        tracing::warn!(origin, "refused a cookie-authenticated WebSocket from another origin");
        return error_response(
            StatusCode::FORBIDDEN,
            ApiError::Forbidden(format!(
                "a signed-in WebSocket must come from {}; Origin {origin} is not allowed \
                 (send an API key in connection_init instead)",
                app.state.cfg.issuer()
            )),
        );
    }
    let mut data = Data::default();
    data.insert(RequestMeta { ip });
    let state = app.state.clone();
    let schema = app.schema.clone();
    ws.protocols(ALL_WEBSOCKET_PROTOCOLS).max_message_size(app.state.limits.max_ws_message_bytes).on_upgrade(
        move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .with_data(data)
                .on_connection_init(move |payload| async move {
                    let principal = match authenticate_init_payload(&state, &payload).await {
                        Ok(Some(p)) => p,
                        Ok(None) => cookie_principal.ok_or_else(|| {
                            async_graphql::Error::new(
                                "UNAUTHENTICATED: send {\"Authorization\":\"Bearer bmm_…\"} in connection_init",
                            )
                        })?,
                        Err(ApiError::Unauthenticated(m)) => {
                            return Err(async_graphql::Error::new(format!("UNAUTHENTICATED: {m}")));
                        }
                        Err(e) => return Err(async_graphql::Error::new(e.to_graphql().message)),
                    };
                    let mut d = Data::default();
                    d.insert(Caller(Some(principal)));
                    Ok(d)
                })
                .keepalive_timeout(Duration::from_secs(60))
                .serve()
        },
    )
}

/// Whether the request's `Origin` is the platform's public origin (in dev
/// also the origin the browser used to reach this listener, so
/// `localhost` and `127.0.0.1` both work). No `Origin` is not the platform's.
pub(crate) fn same_origin(cfg: &bmm_core::Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    if origin.eq_ignore_ascii_case(&cfg.public_url.origin().ascii_serialization()) {
        return true;
    }
    cfg.dev
        && headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("{}://{host}", cfg.public_url.scheme())))
}

fn strip_authorization(h: &HeaderMap) -> HeaderMap {
    let mut h = h.clone();
    h.remove(header::AUTHORIZATION);
    h
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql").finish())
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

async fn check<F>(f: F) -> serde_json::Value
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let t0 = Instant::now();
    match tokio::time::timeout(Duration::from_secs(3), f).await {
        Ok(Ok(())) => json!({ "status": "ok", "latencyMs": t0.elapsed().as_millis() as u64 }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            json!({ "status": "down", "error": "unreachable (see the API log)" })
        }
        Err(_) => json!({ "status": "down", "error": "timed out after 3 s" }),
    }
}

/// Whether the request may read operational details (`/metrics`, the
/// components of `/readyz`): they name every org's servers. With
/// `BMM_OPS_TOKEN` set, only its bearer may; without one, only in dev.
fn ops_allowed(cfg: &bmm_core::Config, headers: &HeaderMap) -> bool {
    match &cfg.ops_token {
        Some(want) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|got| bmm_core::crypto::constant_time_eq(got.trim().as_bytes(), want.trim().as_bytes())),
        None => cfg.dev,
    }
}

async fn readyz(State(app): State<AppCtx>, headers: HeaderMap) -> Response {
    let st = &app.state;
    let details = ops_allowed(&st.cfg, &headers);
    let postgres = check(async {
        use diesel_async::RunQueryDsl;
        let mut conn = st.pool.get().await.map_err(|e| e.to_string())?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
    });
    let temporal = async {
        match &st.builds {
            Some(b) => check(b.ping()).await,
            None => json!({ "status": "not_configured" }),
        }
    };
    let docker = async {
        match &st.runtime {
            Some(r) => check(r.ping()).await,
            None => json!({ "status": "not_configured" }),
        }
    };
    let (postgres, temporal, docker) = tokio::join!(postgres, temporal, docker);
    let listening = st.hub.stats().listening;
    let listener = json!({ "status": if listening { "ok" } else { "down" } });
    let all_ok = [&postgres, &temporal, &docker, &listener].iter().all(|c| c["status"] == "ok");
    let mut body = json!({ "status": if all_ok { "ok" } else { "unavailable" } });
    if details {
        body["components"] =
            json!({ "postgres": postgres, "temporal": temporal, "docker": docker, "buildEventListener": listener });
    }
    let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(app): State<AppCtx>, headers: HeaderMap) -> Response {
    if !ops_allowed(&app.state.cfg, &headers) {
        let mut resp =
            (StatusCode::UNAUTHORIZED, "metrics need `Authorization: Bearer <BMM_OPS_TOKEN>`\n").into_response();
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"bmm-ops\""));
        return resp;
    }
    match render_metrics(&app.state).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

#[derive(diesel::QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct StepTime {
    #[diesel(sql_type = diesel::sql_types::Text)]
    step: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    secs: f64,
}

async fn render_metrics(st: &AppState) -> Result<String, String> {
    use diesel_async::RunQueryDsl;
    use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
    let reg = Registry::new();
    let e = |e: prometheus::Error| e.to_string();
    let builds = IntGaugeVec::new(Opts::new("bmm_builds", "Builds by status"), &["status"]).map_err(e)?;
    for s in ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] {
        builds.with_label_values(&[s]).set(0);
    }
    let mut conn = st.pool.get().await.map_err(|e| e.to_string())?;
    let rows: Vec<StatusCount> = diesel::sql_query("SELECT status, count(*) AS n FROM builds GROUP BY status")
        .load(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    drop(conn);
    for r in rows {
        builds.with_label_values(&[r.status.as_str()]).set(r.n);
    }
    reg.register(Box::new(builds)).map_err(e)?;
    // Servers by status: DEGRADED / DOWN are live versions that do not answer.
    let servers = IntGaugeVec::new(Opts::new("bmm_servers", "Servers by status"), &["status"]).map_err(e)?;
    for s in ["BUILDING", "LIVE", "DEGRADED", "DOWN", "FAILED", "STOPPED"] {
        servers.with_label_values(&[s]).set(0);
    }
    let mut conn = st.pool.get().await.map_err(|e| e.to_string())?;
    let rows: Vec<StatusCount> =
        diesel::sql_query("SELECT status, count(*) AS n FROM servers WHERE deleted_at IS NULL GROUP BY status")
            .load(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    drop(conn);
    for r in rows {
        servers.with_label_values(&[r.status.as_str()]).set(r.n);
    }
    reg.register(Box::new(servers)).map_err(e)?;
    // Step durations over the last day, from each step's first start to its
    // success (retries included), as a Prometheus summary's _sum and _count.
    let mut conn = st.pool.get().await.map_err(|e| e.to_string())?;
    let steps: Vec<StepTime> = diesel::sql_query(
        "SELECT step, count(*) AS n, COALESCE(sum(secs), 0)::float8 AS secs FROM ( \
           SELECT step, EXTRACT(EPOCH FROM max(at) FILTER (WHERE kind = 'STEP_SUCCEEDED') \
                                      - min(at) FILTER (WHERE kind = 'STEP_STARTED'))::float8 AS secs \
           FROM build_events WHERE kind IN ('STEP_STARTED', 'STEP_SUCCEEDED') AND at > now() - interval '1 day' \
           GROUP BY build_id, step) t WHERE secs IS NOT NULL GROUP BY step",
    )
    .load(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    drop(conn);
    let sum = prometheus::GaugeVec::new(
        Opts::new("bmm_build_step_duration_seconds_sum", "Seconds spent in succeeded build steps (last day)"),
        &["step"],
    )
    .map_err(e)?;
    let count = IntGaugeVec::new(
        Opts::new("bmm_build_step_duration_seconds_count", "Succeeded build steps (last day)"),
        &["step"],
    )
    .map_err(e)?;
    for t in steps {
        sum.with_label_values(&[t.step.as_str()]).set(t.secs);
        count.with_label_values(&[t.step.as_str()]).set(t.n);
    }
    reg.register(Box::new(sum)).map_err(e)?;
    reg.register(Box::new(count)).map_err(e)?;
    let stats = st.hub.stats();
    let gauge = |name: &str, help: &str, v: i64| -> Result<IntGauge, String> {
        let g = IntGauge::new(name, help).map_err(e)?;
        g.set(v);
        Ok(g)
    };
    reg.register(Box::new(gauge("bmm_subscriptions_active", "Live buildEvents subscriptions", stats.subscribers)?))
        .map_err(e)?;
    reg.register(Box::new(gauge("bmm_build_event_feeds", "Builds with live subscribers", stats.feeds as i64)?))
        .map_err(e)?;
    reg.register(Box::new(gauge(
        "bmm_build_event_listener_up",
        "Whether the LISTEN connection is up",
        stats.listening as i64,
    )?))
    .map_err(e)?;
    let counter = |name: &str, help: &str, v: u64| -> Result<IntCounter, String> {
        let c = IntCounter::new(name, help).map_err(e)?;
        c.inc_by(v);
        Ok(c)
    };
    reg.register(Box::new(counter("bmm_build_event_notifications_total", "NOTIFYs received", stats.notifications)?))
        .map_err(e)?;
    reg.register(Box::new(counter(
        "bmm_build_event_listener_reconnects_total",
        "Times the LISTEN connection was re-established",
        stats.reconnects,
    )?))
    .map_err(e)?;
    reg.register(Box::new(gauge(
        "bmm_api_uptime_seconds",
        "Seconds since start",
        st.started.elapsed().as_secs() as i64,
    )?))
    .map_err(e)?;
    st.gateway.metrics.register(&reg).map_err(e)?;
    let mut buf = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut buf).map_err(e)?;
    String::from_utf8(buf).map_err(|e| e.to_string())
}

#[cfg(test)]
mod label_tests {
    use super::operation_label;

    #[test]
    fn labels_name_the_operation() {
        assert_eq!(operation_label(Some("Create"), "mutation Create { x }"), "Create");
        assert_eq!(
            operation_label(None, "mutation($p: ID!) { createServer(input: {}) { id } }"),
            "mutation createServer"
        );
        assert_eq!(operation_label(None, "{ me { id } }"), "query me");
        assert_eq!(operation_label(None, "garbage"), "query");
    }
}

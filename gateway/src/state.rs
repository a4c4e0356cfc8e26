//! The gateway's shared state.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::guard::{DbTrace, FirstCalls, TokenVerifier, TraceEvent, TraceSink};
use crate::metrics::{GatewayMetrics, InFlight};
use crate::proxy::CONNECT_TIMEOUT;
use crate::routes::RouteTable;

/// Everything the gateway's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub cfg: Arc<bmm_core::Config>,
    pub routes: RouteTable,
    pub verifier: Arc<dyn TokenVerifier>,
    pub trace: Arc<dyn TraceSink>,
    pub metrics: GatewayMetrics,
    pub in_flight: InFlight,
    pub(crate) client: Client<HttpConnector, Body>,
    pub(crate) first_calls: Arc<FirstCalls>,
}

impl GatewayState {
    /// A gateway verifying tokens with `verifier` and recording the trace in `trace`.
    /// The route table starts empty: call [`GatewayState::spawn_route_listener`].
    pub fn new(
        cfg: Arc<bmm_core::Config>,
        pool: bmm_db::Pool,
        verifier: Arc<dyn TokenVerifier>,
        trace: Arc<dyn TraceSink>,
    ) -> GatewayState {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(connector);
        GatewayState {
            cfg,
            routes: RouteTable::new(pool),
            verifier,
            trace,
            metrics: GatewayMetrics::new(),
            in_flight: InFlight::default(),
            client,
            first_calls: Arc::new(FirstCalls::new()),
        }
    }

    /// The production wiring: the platform's keys verify, the trace goes to the database.
    pub fn with_keys(cfg: Arc<bmm_core::Config>, pool: bmm_db::Pool, keys: bmm_auth::KeyStore) -> GatewayState {
        let trace = Arc::new(DbTrace::new(pool.clone()));
        GatewayState::new(cfg, pool, Arc::new(keys), trace)
    }

    /// Start the LISTEN task that keeps the route table fresh (one per process).
    pub fn spawn_route_listener(&self) -> tokio::task::JoinHandle<()> {
        self.routes.listen(&self.cfg.database_url)
    }

    pub(crate) fn trace_in_background(&self, event: TraceEvent) {
        let sink = self.trace.clone();
        tokio::spawn(async move { sink.record(event).await });
    }
}

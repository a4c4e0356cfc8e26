//! Everything a request handler needs, built once per process.

use std::sync::Arc;
use std::time::Instant;

use bmm_core::Config;
use bmm_db::Pool;

use crate::hub::EventHub;
use crate::ports::{BuildRunner, Runtime, SpecGenerator};
use crate::ratelimit::{Rate, RateLimiter};

/// Guard-rail settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection nesting a query may have.
    pub max_depth: usize,
    /// Most fields (weighted) a query may select.
    pub max_complexity: usize,
    /// Largest request body (an OpenAPI document travels in one).
    pub max_body_bytes: usize,
    /// Largest WebSocket message.
    pub max_ws_message_bytes: usize,
    /// Per API key / session.
    pub authenticated: Rate,
    /// Per client IP, for requests without credentials.
    pub anonymous: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 10,
            max_complexity: 1000,
            max_body_bytes: 4 * 1024 * 1024,
            max_ws_message_bytes: 1024 * 1024,
            authenticated: Rate { burst: 120, per_second: 20.0 },
            anonymous: Rate { burst: 30, per_second: 2.0 },
        }
    }
}

pub struct StateInner {
    pub cfg: Arc<Config>,
    pub pool: Pool,
    pub hub: EventHub,
    pub limits: Limits,
    pub limiter: RateLimiter,
    pub builds: Option<Arc<dyn BuildRunner>>,
    pub generator: Option<Arc<dyn SpecGenerator>>,
    pub runtime: Option<Arc<dyn Runtime>>,
    /// The platform's signing keys (OAuth routes and the gateway's token checks).
    pub keys: bmm_auth::KeyStore,
    /// The MCP gateway mounted at `/s/{slug}/mcp`.
    pub gateway: bmm_gateway::GatewayState,
    pub started: Instant,
}

/// Shared application state; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<StateInner>);

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// The production state of one API process: the generator the
    /// configuration names, builds on Temporal (when a client is given),
    /// Docker for logs and deletion, the signing keys and the gateway.
    /// Starts the build-event listener (one PostgreSQL LISTEN connection and
    /// its fan-out) and the gateway's route listener. Call inside a Tokio runtime.
    pub fn new(cfg: Arc<Config>, pool: Pool, temporal: Option<bmm_workflows::client::TemporalClient>) -> AppState {
        let mut b = AppStateBuilder::new(cfg.clone(), pool).spec_generator(bmm_generator::from_config(&cfg.generator));
        if let Some(client) = temporal {
            b = b.builds(Arc::new(crate::adapters::TemporalBuilds { client, cfg: cfg.clone() }));
        }
        match bmm_runtime::connect(&cfg) {
            Ok(r) => b = b.runtime(Arc::new(crate::adapters::ServerRuntime(r))),
            Err(e) => tracing::warn!(error = %e, "Docker is not reachable: serverLogs and container removal are off"),
        }
        b.build()
    }

    pub fn builder(cfg: Arc<Config>, pool: Pool) -> AppStateBuilder {
        AppStateBuilder::new(cfg, pool)
    }
}

/// Builds an [`AppState`] with optional parts (build runner, generator, container runtime, limits).
pub struct AppStateBuilder {
    cfg: Arc<Config>,
    pool: Pool,
    limits: Limits,
    builds: Option<Arc<dyn BuildRunner>>,
    generator: Option<Arc<dyn SpecGenerator>>,
    runtime: Option<Arc<dyn Runtime>>,
}

impl AppStateBuilder {
    pub fn new(cfg: Arc<Config>, pool: Pool) -> Self {
        let generator: Option<Arc<dyn SpecGenerator>> = match cfg.generator {
            bmm_core::config::GeneratorConfig::Offline => {
                Some(Arc::new(crate::adapters::Generator(Arc::new(bmm_generator::OfflineGenerator))))
            }
            _ => None,
        };
        AppStateBuilder { cfg, pool, limits: Limits::default(), builds: None, generator, runtime: None }
    }

    /// Generate specs with this `bmm_generator` generator (e.g. `bmm_generator::from_config(&cfg.generator)`).
    pub fn spec_generator(mut self, g: Arc<dyn bmm_generator::Generator>) -> Self {
        self.generator = Some(Arc::new(crate::adapters::Generator(g)));
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn builds(mut self, b: Arc<dyn BuildRunner>) -> Self {
        self.builds = Some(b);
        self
    }

    pub fn generator(mut self, g: Arc<dyn SpecGenerator>) -> Self {
        self.generator = Some(g);
        self
    }

    pub fn runtime(mut self, r: Arc<dyn Runtime>) -> Self {
        self.runtime = Some(r);
        self
    }

    pub fn build(self) -> AppState {
        let hub = EventHub::start(self.pool.clone(), self.cfg.database_url.clone());
        let keys = bmm_auth::KeyStore::new(self.pool.clone(), self.cfg.clone());
        let gateway = bmm_gateway::GatewayState::with_keys(self.cfg.clone(), self.pool.clone(), keys.clone());
        gateway.spawn_route_listener();
        AppState(Arc::new(StateInner {
            limiter: RateLimiter::new(self.limits.authenticated, self.limits.anonymous),
            cfg: self.cfg,
            pool: self.pool,
            hub,
            limits: self.limits,
            builds: self.builds,
            generator: self.generator,
            runtime: self.runtime,
            keys,
            gateway,
            started: Instant::now(),
        }))
    }
}

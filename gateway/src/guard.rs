//! The gateway as a resource server: bearer-token verification (through
//! `bmm_auth::tokens::verify_access_token` in production) and the connection
//! trace of first MCP calls and refusals.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

/// What the gateway needs from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub client_id: String,
    pub scopes: Vec<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token is bad; `cause` is a plain sentence for the client and the trace.
    Invalid(String),
    /// Verification could not run (keys unavailable); not the token's fault.
    Unavailable(String),
}

/// Checks access tokens for one audience (a server's MCP URL).
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    async fn verify(&self, token: &str, audience: &str) -> Result<VerifiedToken, Refusal>;
}

/// The platform's own verification: RS256 against its signing keys.
#[async_trait]
impl TokenVerifier for bmm_auth::KeyStore {
    async fn verify(&self, token: &str, audience: &str) -> Result<VerifiedToken, Refusal> {
        use bmm_auth::tokens::TokenError;
        match bmm_auth::tokens::verify_access_token(self, token, audience).await {
            Ok(c) => Ok(VerifiedToken {
                user_id: c.sub,
                org_id: c.org,
                client_id: c.client_id.clone(),
                scopes: c.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            }),
            Err(TokenError::Unavailable(e)) => Err(Refusal::Unavailable(e)),
            Err(e) => Err(Refusal::Invalid(e.to_string())),
        }
    }
}

/// One step of a client's connection, as the trace records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub client_id: Option<String>,
    pub ok: bool,
    /// A plain sentence: "first MCP call", or the cause of a refusal.
    pub detail: String,
}

/// Where trace events go. Recording must not fail a request: errors are logged.
#[async_trait]
pub trait TraceSink: Send + Sync + 'static {
    async fn record(&self, event: TraceEvent);
}

/// Writes trace events as `mcp` steps of `oauth_connection_events`, the table
/// the connection trace on the server page reads.
pub struct DbTrace {
    pool: bmm_db::Pool,
}

impl DbTrace {
    pub fn new(pool: bmm_db::Pool) -> DbTrace {
        DbTrace { pool }
    }
}

#[async_trait]
impl TraceSink for DbTrace {
    async fn record(&self, event: TraceEvent) {
        use bmm_db::schema::oauth_connection_events as t;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let result = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            diesel::insert_into(t::table)
                .values((
                    t::org_id.eq(event.org_id),
                    t::server_id.eq(event.server_id),
                    t::client_id.eq(event.client_id.as_deref()),
                    t::step.eq("mcp"),
                    t::ok.eq(event.ok),
                    t::detail.eq(&event.detail),
                ))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, server = %event.server_id, "could not record the connection trace");
        }
    }
}

/// Remembers which (server, user, client) made a first call, so the trace
/// records it once per process rather than on every request. Bounded: when
/// full it forgets everything, which at worst records a first call again.
pub(crate) struct FirstCalls {
    seen: Mutex<HashSet<(Uuid, Uuid, String)>>,
}

const FIRST_CALLS_CAPACITY: usize = 100_000;

impl FirstCalls {
    pub(crate) fn new() -> FirstCalls {
        FirstCalls { seen: Mutex::new(HashSet::new()) }
    }

    /// True the first time this key is seen.
    pub(crate) fn first(&self, server_id: Uuid, user_id: Uuid, client_id: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= FIRST_CALLS_CAPACITY {
            seen.clear();
        }
        seen.insert((server_id, user_id, client_id.to_owned()))
    }
}

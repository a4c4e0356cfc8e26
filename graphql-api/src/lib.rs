//! The GraphQL API of BuildMyMCP and the axum app that serves it: the
//! org-scoped schema (one module per domain), `/graphql` over HTTP and
//! `graphql-transport-ws`, live build events from one LISTEN connection per
//! process fanned out in memory, guard rails (limits, rate limits, stable
//! error codes), health, metrics and the embedded dashboard.
//!
//! It talks to the build runner, the spec generator and the container
//! runtime only through the traits in [`ports`]; it owns no build logic.

pub mod adapters;
pub mod context;
pub mod error;
pub mod guard;
pub mod http;
pub mod hub;
pub mod ports;
pub mod ratelimit;
pub mod schema;
pub mod state;
pub mod web;

pub use error::{ApiError, ApiResult};
pub use http::app;
pub use schema::{AppSchema, build_schema};
pub use state::{AppState, AppStateBuilder, Limits};

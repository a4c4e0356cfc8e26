//! The data model: diesel schema, row types, the connection pool, embedded
//! migrations, the build-event log and the server-event log (both with
//! NOTIFY), servers' health, the audit log, and isolated test databases.
//!
//! Every org-owned table carries `org_id`, and every query on one here takes
//! the caller's org: no function reads another org's rows. This crate knows
//! nothing of HTTP, GraphQL, Temporal or Docker.

pub mod audit;
pub mod events;
pub mod master_keys;
pub mod migrate;
pub mod models;
pub mod pool;
pub mod schema;
pub mod server_events;
pub mod testing;

pub use pool::{Conn, DbError, Pool, connect};

/// The NOTIFY channel build events are announced on; payload `{"build_id":…,"seq":…}`.
pub const BUILD_EVENTS_CHANNEL: &str = "bmm_build_events";

#[cfg(test)]
mod tests;

//! End-to-end harness: starts the real platform (`bmm` processes on their own
//! database, port and task queue, against the running PostgreSQL, Temporal and
//! Docker) and drives it the way users and clients do.
//!
//! It must not reach into the platform's crates beyond configuration and test
//! databases: everything goes through HTTP, GraphQL and WebSocket.

pub mod dockerd;
pub mod otlp;
pub mod platform;
pub mod ws;

pub use dockerd::PrivateDockerd;
pub use platform::{Gql, Platform, PlatformOptions};
